"""Crashes and scale-out: a ``callgate worker`` SIGKILLed mid-batch loses nothing and doubles
nothing, and several workers on one Redis share the work with every effect applied once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import OUTBOX_STREAM, Keys
from gateway.store.backlog import Backlogs
from gateway.store.dead_letters import DeadLetters
from gateway.store.inbox import EVENTS_STREAM
from gateway.streams import consumer_name
from tests.conftest import ADMIN_TOKEN, API_TOKEN, ClientFactory
from tests.support import add_item, add_trigger, call_form, configure, eventually, twilio_post

STATUS_PATH = "/webhooks/twilio/voice/status"
LEASED = (EVENTS_STREAM, OUTBOX_STREAM)  # read by one process at a time, partition by partition


async def test_worker_killed_mid_batch_loses_and_doubles_nothing(
    aiohttp_client: ClientFactory, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    n = 200
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup_items(client, n)
    statuses = await asyncio.gather(*(twilio_post(client, STATUS_PATH, dial_action(i)) for i in range(n)))
    assert [r.status for r in statuses] == [200] * n  # acknowledged = stored
    keys = Keys(settings.key_prefix)
    backlogs = Backlogs(redis, keys)
    assert (await backlogs.of(EVENTS_STREAM)).length == n
    assert await moved(redis, keys, n) == 0  # nothing processes them until a worker starts

    with workers(settings, tmp_path, 2) as (first, second):
        first.start()

        async def started_moving() -> bool:
            return await moved(redis, keys, n) > 0

        await eventually(started_moving, timeout=15)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        at_kill = await moved(redis, keys, n)
        pending_at_kill = (await backlogs.of(EVENTS_STREAM)).pending
        # Typically a few dozen of 200 moved, and a batch was read but never acknowledged.
        assert 0 < at_kill < n, at_kill
        assert pending_at_kill > 0

        second.start()

        async def all_moved() -> bool:
            return await moved(redis, keys, n) == n

        await eventually(all_moved, timeout=20)
        await settled(redis, keys)
    await assert_exactly_once(redis, keys, n)


async def test_workers_and_server_share_the_work_without_double_effects(
    aiohttp_client: ClientFactory, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """Each missed call arrives twice (the Dial action and the call's own status callback,
    two stream entries) plus a retry; any consumer of three processes may take either."""
    n = 100
    keys = Keys(settings.key_prefix)
    with workers(settings, tmp_path, 2) as procs:
        for proc in procs:
            proc.start()
        for proc in procs:
            await proc.ready()
        client = await aiohttp_client(create_app(settings))  # with its own workers
        await setup_items(client, n)

        async def deliver(i: int) -> list[int]:
            parent = call_form(call_sid(i), From=customer(i), CallStatus="canceled", SequenceNumber="2")
            sent = [dial_action(i), parent, dial_action(i)]
            return [(await twilio_post(client, STATUS_PATH, form)).status for form in sent]

        statuses = await asyncio.gather(*(deliver(i) for i in range(n)))
        assert statuses == [[200, 200, 200]] * n

        async def all_moved() -> bool:
            return await moved(redis, keys, n) == n

        await eventually(all_moved, timeout=20)
        await settled(redis, keys)
        done_here = await processed_in(client)
        # The worker processes took their share (the server's one events consumer may get
        # none of it when the workers' consumers, blocked first, are woken first).
        assert done_here < 2 * n, done_here
        for proc in procs:
            assert proc.alive()
    await assert_exactly_once(redis, keys, n)


async def test_a_server_and_a_worker_split_the_partitions_and_hand_them_over_on_stop(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path
) -> None:
    """Leases as long as the default: the split and a stopped process's hand-over take a
    renewal or two, not a lease. The outbox stream is leased as the events stream is, so an
    item's deliveries to the CRM queue in order however many processes run."""
    settings = make_settings(claim_idle_seconds=30)
    keys = Keys(settings.key_prefix)
    await aiohttp_client(create_app(settings))  # serve, with its workers
    server = consumer_name(0)
    with workers(settings, tmp_path, 1) as (worker,):
        worker.env["CALLGATE_CLAIM_IDLE_SECONDS"] = "30"
        worker.start()
        await worker.ready()
        worker_name = server.replace(f"-{os.getpid()}-", f"-{worker.pid}-")

        half = keys.partitions // 2

        async def split() -> bool:
            for stream in LEASED:
                held = await lease_holders(redis, keys, stream)
                if {name: len(partitions) for name, partitions in held.items()} != {server: half, worker_name: half}:
                    return False
            return True

        await eventually(split)
        held = await lease_holders(redis, keys)
        # Both renewed three more times (each vouching for itself): the split stays.
        vouched = await redis.hgetall(keys.consumers(EVENTS_STREAM))

        async def renewed() -> bool:
            now = await redis.hgetall(keys.consumers(EVENTS_STREAM))
            return all(int(now[name]) >= int(vouched[name]) + 3000 for name in (server, worker_name))

        await eventually(renewed)
        assert await lease_holders(redis, keys) == held
        worker.stop()

        async def server_holds_all() -> bool:
            everything = {server: list(range(keys.partitions))}
            return all([await lease_holders(redis, keys, stream) == everything for stream in LEASED])

        await eventually(server_holds_all)


# Helpers


def customer(i: int) -> str:
    return f"+3460{1_000_000 + i:07d}"  # valid Spanish mobiles, none the line's agent


def call_sid(i: int) -> str:
    return f"CA{i:032x}"


def dial_action(i: int) -> dict[str, str]:
    return call_form(
        call_sid(i),
        From=customer(i),
        CallStatus="in-progress",
        DialCallStatus="no-answer",
        DialCallSid=f"CA{i + 1_000_000:032x}",
    )


async def setup_items(client: TestClient, n: int) -> None:  # type: ignore[type-arg]
    await configure(client)
    await add_trigger(client, event="call.missed")
    # A CRM's bulk load, 25 at a time: setup, not a burst test (on a busy machine hundreds of
    # connects at once to a cluster's nodes can outlast the 0.5 s connect timeout: a 503).
    for start in range(0, n, 25):
        await asyncio.gather(*(add_item(client, f"K{i}", phone=customer(i)) for i in range(start, min(n, start + 25))))


async def moved(redis: Redis, keys: Keys, n: int) -> int:
    """How many of the items K0..K{n-1} left NEW."""
    # One GET each, pipelined: the cards are in their items' partitions (slots apart on a cluster).
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.get(keys.item(f"K{i}"))
        raws = await pipe.execute()
    return sum(1 for raw in raws if raw and json.loads(raw)["card"]["stage"] != "NEW")


async def settled(redis: Redis, keys: Keys) -> None:
    """Every events entry acknowledged and deleted: none pending, none waiting."""

    async def empty() -> bool:
        backlog = await Backlogs(redis, keys).of(EVENTS_STREAM)
        return backlog.pending == backlog.length == 0

    await eventually(empty, timeout=15)


async def assert_exactly_once(redis: Redis, keys: Keys, n: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.lrange(keys.timeline(f"K{i}"), 0, -1)
        timelines = await pipe.execute()
    for i, timeline in enumerate(timelines):
        kinds = [json.loads(raw)["type"] for raw in timeline]
        assert kinds.count("item.stage_changed") == 1, (i, kinds)
        assert kinds.count("call.missed") == 1, (i, kinds)
    backlog = await Backlogs(redis, keys).of(EVENTS_STREAM)
    assert backlog.pending == backlog.length == 0
    assert await DeadLetters(redis, keys).newest(EVENTS_STREAM) == []


async def lease_holders(redis: Redis, keys: Keys, stream: str = EVENTS_STREAM) -> dict[str, list[int]]:
    """The partitions of ``stream`` each consumer holds the lease of."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(keys.partitions):
            pipe.get(keys.lease(stream, partition))
        holders = await pipe.execute()
    held: dict[str, list[int]] = {}
    for partition, holder in enumerate(holders):
        if holder is not None:
            held.setdefault(holder, []).append(partition)
    return held


async def processed_in(client: TestClient) -> int:  # type: ignore[type-arg]
    """Events entries the in-process server's own consumers processed."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("callgate_stream_entries_total{") and 'outcome="done"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


class Worker:
    """``callgate worker`` as a child process on the test's Redis and key prefix."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        self.env = {
            **os.environ,
            "CALLGATE_REDIS_URL": str(settings.redis_url),
            "CALLGATE_KEY_PREFIX": settings.key_prefix,
            "CALLGATE_DATA_DIR": str(settings.data_dir),
            "CALLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "CALLGATE_API_TOKEN": API_TOKEN,
            "CALLGATE_CLAIM_IDLE_SECONDS": "1",
            "CALLGATE_CONSUMERS": "2",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "worker"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> None:
        assert self.process is not None
        self.process.wait(timeout=10)

    async def ready(self, timeout: float = 15) -> None:
        async def running() -> bool:
            assert self.alive(), self.log.read_text()
            return "callgate worker started" in self.log.read_text()

        await eventually(running, timeout=timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def workers(settings: Settings, tmp_path: Path, count: int) -> Iterator[list[Worker]]:
    procs = [Worker(settings, tmp_path / f"worker-{i}.log") for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()
