"""The durable stream core against a real Redis: ack after processing, claims of entries a
failed or crashed consumer left pending, dead letters, and groups that survive deletion."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import Keys
from gateway.store.connection import connect
from gateway.store.dead_letters import DeadLetter, DeadLetters
from gateway.store.inbox import EVENTS_STREAM
from gateway.streams import Claims, Entry, GaveUp, IdleWatch, Processor, StreamConfig, StreamConsumer, one_by_one
from tests.conftest import ADMIN, API, ClientFactory
from tests.support import eventually

CONFIG = StreamConfig(name="t", claim_idle_ms=200, max_deliveries=3, block_ms=100)


async def test_processed_entry_is_acked_and_deleted(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    recorder = Recorder()
    consumer = make_consumer(redis, prefix, "A", recorder)
    await consumer.ensure_group()
    entry_id = await redis.xadd(keys.stream("t"), {"n": "1"})

    async with running(consumer):
        await eventually(lambda: done(redis, keys, 1, recorder))
    assert [(e.id, dict(e.fields)) for e in recorder.calls] == [(entry_id, {"n": "1"})]
    assert await redis.xlen(keys.stream("t")) == 0
    assert (await redis.xpending(keys.stream("t"), "t"))["pending"] == 0


async def test_failed_entry_stays_pending_and_another_consumer_claims_it(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("t")
    failing = Recorder(fail=True)
    a = make_consumer(redis, prefix, "A", failing)
    await a.ensure_group()
    entry_id = await redis.xadd(stream, {"n": "1"})

    await a.process(await a.read_new())
    assert [e.id for e in failing.calls] == [entry_id]
    pending = await redis.xpending_range(stream, "t", min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending] == [(entry_id, "A", 1)]
    assert await redis.xlen(stream) == 1
    assert "RuntimeError: boom 1" in str(await redis.hget(f"{stream}:errors", entry_id))

    # The processor of B reads the entry's delivery count while it holds it.
    counts: list[int] = []

    async def count_deliveries(entry: Entry) -> None:
        info = await redis.xpending_range(stream, "t", min=entry.id, max=entry.id, count=1)
        counts.append(int(info[0]["times_delivered"]))
        assert info[0]["consumer"] == "B"

    claims = Claims(redis, keys, CONFIG, lambda outcome: None)
    assert await claims.take("B") == []  # not idle long enough yet: A may still be working on it

    b = StreamConsumer(redis, keys, CONFIG, "B", one_by_one(count_deliveries), claims=[claims])
    async with running(b):
        await eventually(lambda: drained(redis, stream, "t"))
    assert counts == [2]
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, "t"))["pending"] == 0
    assert not await redis.exists(f"{stream}:errors")


async def test_entry_failing_every_delivery_is_dead_lettered_once(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("t")
    failing = Recorder(fail=True)
    # Several consumers race for the same stale entry, as a worker's consumers do.
    consumers = [make_consumer(redis, prefix, f"C{i}", failing) for i in range(4)]
    await consumers[0].ensure_group()
    entry_id = await redis.xadd(stream, {"n": "7", "kind": "x"})

    async def dead() -> bool:
        return bool(await redis.xlen(keys.dead("t")))

    async with running(*consumers):
        await eventually(dead)
        # Out of the stream and acknowledged: no consumer can claim it again from here on.
        await eventually(lambda: drained(redis, stream, "t"))
    entries: Any = await redis.xrange(keys.dead("t"))  # decoded: (id, {field: value})
    assert len(entries) == 1, entries
    fields = entries[0][1]
    assert fields["_id"] == entry_id
    assert fields["_error"] == "RuntimeError: boom 7"
    assert {k: v for k, v in fields.items() if not k.startswith("_")} == {"n": "7", "kind": "x"}
    assert len(failing.calls) == CONFIG.max_deliveries  # each delivery ran the processor once
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, "t"))["pending"] == 0
    assert not await redis.exists(f"{stream}:errors")


async def test_the_owner_of_the_stream_hears_of_each_entry_given_up(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    heard: list[tuple[Mapping[str, str], str]] = []

    async def gave_up(fields: Mapping[str, str], why: str) -> None:
        heard.append((fields, why))
        if fields["n"] == "1":
            raise RuntimeError("the owner's own failure")  # told of the next one all the same

    consumer = await two_jobs_failing(redis, keys, gave_up)
    async with running(consumer):
        await eventually(lambda: drained(redis, keys.stream("t"), "t"))
        await eventually(lambda: untold(redis, keys, 1))
        ((letter, first),) = cast(list[tuple[str, float]], await redis.zrange(keys.untold("t"), 0, -1, withscores=True))

        async def told_again() -> bool:
            # The one the owner failed to hear of is told again, and each failure sends it
            # to the back of the line.
            return len(heard) >= 4 and cast(float, await redis.zscore(keys.untold("t"), letter)) > first

        await eventually(told_again)
    told = sorted({(told[0]["n"], told[0]["job"], told[1]) for told in heard})
    assert told == [("1", "job_1", "RuntimeError: boom 1"), ("2", "job_2", "RuntimeError: boom 2")]
    assert [fields["n"] for fields, _ in heard].count("2") == 1
    assert await redis.xlen(keys.dead("t")) == 2


async def test_an_entry_given_up_by_a_process_that_died_before_telling_is_told_by_another(
    redis: Redis, prefix: str
) -> None:
    """Burying an entry and telling its owner are two steps: a process killed between them
    leaves the telling to the next process that claims on the stream."""
    keys = Keys(prefix)
    telling = asyncio.Event()

    async def dies_while_told(fields: Mapping[str, str], why: str) -> None:
        telling.set()
        await asyncio.Event().wait()  # until the process is killed

    a = await two_jobs_failing(redis, keys, dies_while_told)
    async with running(a):
        await eventually(lambda: drained(redis, keys.stream("t"), "t"))
        await asyncio.wait_for(telling.wait(), 10)
    assert await untold(redis, keys, 2)

    # One of the two letters is retried before anyone tells: it runs again instead.
    letters: Any = await redis.xrange(keys.dead("t"))  # decoded: (id, {field: value})
    assert await DeadLetters(redis, keys).retry(DeadLetter("t", None, letters[0][0]))
    heard: list[tuple[Mapping[str, str], str]] = []

    async def hears(fields: Mapping[str, str], why: str) -> None:
        heard.append((fields, why))

    living = Claims(redis, keys, CONFIG, lambda outcome: None, on_dead=hears)
    runs = Recorder()
    b = StreamConsumer(redis, keys, CONFIG, "B", one_by_one(runs), claims=[living])
    async with running(b):
        await eventually(lambda: untold(redis, keys, 0))
        await eventually(lambda: drained(redis, keys.stream("t"), "t"))
    assert heard == [({"n": "2", "job": "job_2"}, "RuntimeError: boom 2")]
    assert [dict(entry.fields) for entry in runs.calls] == [{"n": "1", "job": "job_1"}]


async def two_jobs_failing(redis: Redis, keys: Keys, owner: GaveUp) -> StreamConsumer:
    """A consumer whose every run fails, the stream's owner told by ``owner``, and two jobs'
    entries (``n`` 1 and 2) on its stream."""
    claims = Claims(redis, keys, CONFIG, lambda outcome: None, on_dead=owner)
    consumer = StreamConsumer(redis, keys, CONFIG, "A", one_by_one(Recorder(fail=True)), claims=[claims])
    await consumer.ensure_group()
    for n in ("1", "2"):
        await redis.xadd(keys.stream("t"), {"n": n, "job": f"job_{n}"})
    return consumer


async def untold(redis: Redis, keys: Keys, count: int) -> bool:
    return await redis.zcard(keys.untold("t")) == count


async def test_the_dead_letters_are_capped(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    config = StreamConfig(name="t", claim_idle_ms=50, max_deliveries=1, block_ms=100, dead_max=3)
    consumer = make_consumer(redis, prefix, "C0", Recorder(fail=True), config)
    await consumer.ensure_group()
    for n in range(7):
        await redis.xadd(keys.stream("t"), {"n": str(n)})

    async def all_dead() -> bool:
        return await redis.xlen(keys.stream("t")) == 0

    async with running(consumer):
        await eventually(all_dead)
    entries: Any = await redis.xrange(keys.dead("t"))
    assert [fields["n"] for _, fields in entries] == ["4", "5", "6"]  # the newest kept


async def test_the_letters_still_to_be_told_are_capped_as_the_letters_are(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    config = StreamConfig(name="t", claim_idle_ms=50, max_deliveries=1, block_ms=100, dead_max=3)

    async def never_hears(fields: Mapping[str, str], why: str) -> None:
        raise RuntimeError("the owner is broken")

    claims = Claims(redis, keys, config, lambda outcome: None, on_dead=never_hears)
    await StreamConsumer(redis, keys, config, "C0", one_by_one(Recorder()), claims=[claims]).ensure_group()
    for n in range(7):
        await redis.xadd(keys.stream("t"), {"n": str(n)})
    await redis.xreadgroup("t", "C0", {keys.stream("t"): ">"})  # delivered once: hopeless now

    async def buried() -> bool:
        assert await claims.take("C0") == []
        return await redis.xlen(keys.stream("t")) == 0

    await eventually(buried)
    letters: Any = await redis.xrange(keys.dead("t"))
    assert [fields["n"] for _, fields in letters] == ["4", "5", "6"]
    assert set(await redis.zrange(keys.untold("t"), 0, -1)) == {letter for letter, _ in letters}


async def test_dead_letters_api_lists_a_malformed_event(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    """A malformed events entry fails in the app's own workers until it is dead-lettered."""
    settings = make_settings(max_deliveries=2)
    client = await aiohttp_client(create_app(settings))
    keys = Keys(prefix)
    stream = keys.stream(EVENTS_STREAM, 5)  # any partition: its consumers dead-letter it
    entry_id = await redis.xadd(stream, {"event": "not-json"})

    async def listed() -> list[dict[str, Any]]:
        resp = await client.get("/v1/dead-letters", headers=ADMIN)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["stream"] == EVENTS_STREAM
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    async def dead() -> bool:
        return bool(await listed())

    await eventually(dead, timeout=15)
    await eventually(lambda: drained(redis, stream, EVENTS_STREAM))
    entries = await listed()
    assert len(entries) == 1, entries
    assert entries[0]["_id"] == entry_id
    assert entries[0]["event"] == "not-json"
    assert entries[0]["_error"].startswith("JSONDecodeError: ")  # the processor's last error
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, EVENTS_STREAM))["pending"] == 0
    assert (await client.get("/v1/dead-letters", headers=API)).status == 403
    resp = await client.get("/v1/dead-letters", params={"stream": "nope"}, headers=ADMIN)
    assert resp.status == 422


async def test_entries_of_a_crashed_consumer_are_claimed_and_processed_once(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("t")
    recorder = Recorder()
    effects = IdempotentEffect(redis, prefix)

    async def process(entry: Entry) -> None:
        await recorder(entry)
        await effects(entry)

    b, c = make_consumer(redis, prefix, "B", process), make_consumer(redis, prefix, "C", process)
    await b.ensure_group()
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(20)]
    # Consumer A reads everything and dies before acking any of it.
    read: Any = await redis.xreadgroup("t", "A", {stream: ">"}, count=100)
    assert [entry_id for entry_id, _ in read[0][1]] == ids

    async with running(b, c):
        # Every entry processed, acknowledged and deleted: nothing is left to deliver twice.
        await eventually(lambda: done(redis, keys, len(ids), recorder))
        # A, which owns nothing now and reads no more, is removed from the group.

        async def a_removed() -> bool:
            return {c["name"] for c in await redis.xinfo_consumers(stream, "t")} <= {"B", "C"}

        await eventually(a_removed)
    assert Counter(e.id for e in recorder.calls) == Counter(ids)
    assert await effects.applied() == Counter(ids)
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, "t"))["pending"] == 0


async def test_an_orphaned_backlog_is_reclaimed_at_processing_speed(redis: Redis, prefix: str) -> None:
    """2,000 entries a dead consumer left are claimed batch after batch, each by one consumer
    of the process, not one batch per claim interval (here 30 s: the drain must not wait)."""
    keys = Keys(prefix)
    stream = keys.stream("t")
    recorder = Recorder()
    config = StreamConfig(name="t", claim_idle_ms=60_000, max_deliveries=3, block_ms=100)
    claims = Claims(redis, keys, config, lambda outcome: None)
    consumers = [StreamConsumer(redis, keys, config, f"C{i}", one_by_one(recorder), claims=[claims]) for i in range(4)]
    await consumers[0].ensure_group()
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.xadd(stream, {"n": str(i)})
        ids = await pipe.execute()
    await redis.xreadgroup("t", "ghost", {stream: ">"}, count=2000)  # and then it died...
    # ...long ago: its entries have been idle for an hour.
    await redis.xclaim(stream, "t", "ghost", min_idle_time=0, message_ids=ids, idle=3_600_000, justid=True)

    started = time.monotonic()
    async with running(*consumers):
        await eventually(lambda: done(redis, keys, len(ids), recorder), timeout=20)
    print(f"reclaimed 2000 orphaned entries in {time.monotonic() - started:.1f} s")
    assert Counter(e.id for e in recorder.calls) == Counter(ids)  # each processed once
    assert (await redis.xpending(stream, "t"))["pending"] == 0


async def test_ensure_group_is_idempotent(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    recorder = Recorder()
    consumer = make_consumer(redis, prefix, "A", recorder)
    await consumer.ensure_group()
    await consumer.ensure_group()
    first = await redis.xadd(keys.stream("t"), {"n": "1"})
    assert [e.id for e in await consumer.read_new()] == [first]
    # Creating it again neither fails nor rewinds the group to redeliver what was read.
    await consumer.ensure_group()
    assert await consumer.read_new() == []
    groups = await redis.xinfo_groups(keys.stream("t"))
    assert [(g["name"], g["pending"]) for g in groups] == [("t", 1)]


async def test_run_recreates_a_deleted_stream(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("t")
    recorder = Recorder()
    consumer = make_consumer(redis, prefix, "A", recorder)
    task = asyncio.create_task(consumer.run())
    try:
        await redis.xadd(stream, {"n": "1"})
        await eventually(lambda: done(redis, keys, 1, recorder))
        # Deleted while the consumer is blocked reading (NOGROUP, or Redis 7's UNBLOCKED).
        await redis.delete(stream)
        # The consumer saw the group gone and made it again (with its stream).
        await eventually(lambda: group_exists(redis, stream, "t"))
        assert not task.done(), task
        await redis.xadd(stream, {"n": "2"})
        await eventually(lambda: done(redis, keys, 2, recorder))
        assert not task.done()
        assert [e.fields["n"] for e in recorder.calls] == ["1", "2"]
        assert [g["name"] for g in await redis.xinfo_groups(stream)] == ["t"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_cancelled_consumer_stops_even_while_it_acks(redis_url: str, redis: Redis, prefix: str) -> None:
    """On Python 3.11 redis-py's ``wait_for`` around a send can drop a cancel that lands as
    the send completes; the consumer must stop anyway, or a shutdown waits on it forever."""
    client = connect(redis_url, blocking=True)  # the workers' client: sends under wait_for
    keys = Keys(prefix)
    tasks: list[asyncio.Task[None]] = []

    async def cancel_soon(entry: Entry) -> None:
        # Lands in the next loop turn: while the consumer sends its XACK+XDEL.
        asyncio.get_running_loop().call_soon(tasks[0].cancel)

    consumer = StreamConsumer(client, keys, CONFIG, "A", one_by_one(cancel_soon))
    try:
        await consumer.ensure_group()
        await redis.xadd(keys.stream("t"), {"n": "1"})
        tasks.append(asyncio.create_task(consumer.run()))
        finished, _ = await asyncio.wait(tasks, timeout=5)
        assert finished, "the consumer ignored its cancel"
        assert tasks[0].cancelled()
        assert await redis.xlen(keys.stream("t")) == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()


# Helpers


class Recorder:
    """A processor that remembers every call and, when ``fail``, raises on each."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[Entry] = []

    async def __call__(self, entry: Entry) -> None:
        self.calls.append(entry)
        if self.fail:
            raise RuntimeError(f"boom {entry.fields.get('n')}")


class IdempotentEffect:
    """An effect applied at most once per entry id, however often it is processed."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._done = f"{prefix}effects:done"
        self._log = f"{prefix}effects:log"

    async def __call__(self, entry: Entry) -> None:
        if await self._redis.sadd(self._done, entry.id):
            await self._redis.rpush(self._log, entry.id)

    async def applied(self) -> Counter[str]:
        return Counter(str(entry_id) for entry_id in await self._redis.lrange(self._log, 0, -1))


def make_consumer(
    redis: Redis,
    prefix: str,
    name: str,
    process: Processor,
    config: StreamConfig = CONFIG,
) -> StreamConsumer:
    return StreamConsumer(redis, Keys(prefix), config, name, one_by_one(process))


@contextlib.asynccontextmanager
async def running(*consumers: StreamConsumer) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        yield
        for task in tasks:
            assert not task.done(), task  # a consumer must never die of what it met
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def drained(redis: Redis, stream: str, group: str) -> bool:
    """Nothing waits in ``stream`` and nothing is pending in its group."""
    return await redis.xlen(stream) == 0 and (await redis.xpending(stream, group))["pending"] == 0


async def group_exists(redis: Redis, stream: str, group: str) -> bool:
    try:
        return group in [g["name"] for g in await redis.xinfo_groups(stream)]
    except ResponseError:  # no such stream (yet)
        return False


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def done(redis: Redis, keys: Keys, count: int, recorder: Recorder, name: str = "t") -> bool:
    """``count`` entries were processed and nothing is left in the stream."""
    return len(recorder.calls) >= count and await redis.xlen(keys.stream(name)) == 0


async def test_a_consumer_reads_every_partition_at_once_and_settles_each_in_its_own(redis: Redis, prefix: str) -> None:
    """Partitions' streams number their entries apart: two entries of one read may share an
    id, and each is still processed, failed or acknowledged as itself."""
    keys = Keys(prefix, partitions=3)
    config = replace(CONFIG, partitions=(0, 1, 2))

    async def fail_the_bad_one(entry: Entry) -> None:
        if entry.fields["n"] == "bad":
            raise RuntimeError("bad")

    consumer = StreamConsumer(redis, keys, config, "A", one_by_one(fail_the_bad_one))
    await consumer.ensure_group()
    added = {
        p: [await redis.xadd(keys.stream("t", p), {"n": str(p)}, id=f"{k + 1}-0") for k in range(3)] for p in (0, 1)
    }
    await redis.xadd(keys.stream("t", 2), {"n": "bad"}, id="1-0")  # the same id as partition 0's first
    entries = await consumer.read_new(block=False)
    for p in (0, 1):
        assert [e.id for e in entries if e.partition == p] == added[p]  # each in its own order
    await consumer.process(entries)
    assert [await redis.xlen(keys.stream("t", p)) for p in (0, 1, 2)] == [0, 0, 1]
    assert [(await redis.xpending(keys.stream("t", p), "t"))["pending"] for p in (0, 1, 2)] == [0, 0, 1]
    assert list(await redis.hgetall(keys.errors("t", 2))) == ["1-0"]
    assert not await redis.exists(keys.errors("t", 0))


async def test_each_partition_is_read_by_one_consumer_at_a_time_in_order(redis: Redis, prefix: str) -> None:
    """Consumers of an exclusive partitioned stream share its partitions evenly, each read by
    one of them: a partition's entries are processed in order; a consumer that stops gives
    its partitions to the others."""
    keys = Keys(prefix, partitions=4)
    config = replace(CONFIG, partitions=(0, 1, 2, 3), exclusive=True)
    seen: list[tuple[str, int]] = []

    def recorder(name: str) -> Processor:
        async def process(entry: Entry) -> None:
            seen.append((name, int(entry.fields["n"])))

        return process

    a, b = (StreamConsumer(redis, keys, config, name, one_by_one(recorder(name))) for name in ("A", "B"))
    tasks = {c.name: asyncio.create_task(c.run()) for c in (a, b)}
    try:

        async def shared() -> bool:
            return len(a.reading) == len(b.reading) == 2

        await eventually(shared)
        assert set(a.reading).isdisjoint(b.reading)
        for n in range(40):
            await redis.xadd(keys.stream("t", n % 4), {"n": str(n)})

        async def all_seen() -> bool:
            return len(seen) == 40

        await eventually(all_seen)
        for p in range(4):
            assert len({name for name, n in seen if n % 4 == p}) == 1  # one reader per partition
            assert [n for _, n in seen if n % 4 == p] == list(range(p, 40, 4))  # in order

        tasks["B"].cancel()
        await asyncio.gather(tasks["B"], return_exceptions=True)

        async def a_reads_all() -> bool:
            return len(a.reading) == 4

        await eventually(a_reads_all)
        for n in range(40, 44):
            await redis.xadd(keys.stream("t", n % 4), {"n": str(n)})

        async def a_took_over() -> bool:
            return sorted(n for name, n in seen if name == "A" and n >= 40) == [40, 41, 42, 43]

        await eventually(a_took_over)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_batch_longer_than_a_lease_keeps_its_partition(redis: Redis, prefix: str) -> None:
    """A consumer renews its partitions' leases while it processes a batch, however long it
    takes: the other consumer tries to take the partition meanwhile and cannot, so no entry
    is processed twice or out of order."""
    keys = Keys(prefix, partitions=2)
    config = replace(CONFIG, partitions=(0, 1), exclusive=True)
    seen: list[tuple[str, int]] = []

    def recorder(name: str) -> Processor:
        async def process(entry: Entry) -> None:
            if name == "A" and not seen:
                # Slow: until B renewed (and so tried to take the partition) three leases later.
                started = await redis_ms(redis)

                async def b_tried_long_after() -> bool:
                    vouched = await redis.hget(keys.consumers("t"), "B")
                    return int(vouched or 0) > started + 3 * config.claim_idle_ms

                await eventually(b_tried_long_after)
            seen.append((name, int(entry.fields["n"])))

        return process

    a, b = (StreamConsumer(redis, keys, config, name, one_by_one(recorder(name))) for name in ("A", "B"))
    async with running(a, b):

        async def shared() -> bool:
            return len(a.reading) == len(b.reading) == 1

        await eventually(shared)
        partition = a.reading[0]
        async with redis.pipeline(transaction=True) as pipe:  # one read takes them all
            for n in range(5):
                pipe.xadd(keys.stream("t", partition), {"n": str(n)})
            await pipe.execute()

        async def all_done() -> bool:
            return len(seen) >= 5 and await drained(redis, keys.stream("t", partition), "t")

        await eventually(all_done)
    assert seen == [("A", n) for n in range(5)]


async def test_a_partition_lost_mid_batch_is_left_to_its_new_reader(redis: Redis, prefix: str) -> None:
    """Should a partition's lease go to another consumer while a batch of it is processed (its
    renewals failed for longer than a lease), the new reader takes the entries over and the
    old one settles none of them: it cannot acknowledge away one the new reader failed."""
    keys = Keys(prefix, partitions=1)
    config = replace(CONFIG, partitions=(0,), exclusive=True)
    seen: list[tuple[str, int]] = []

    async def process_a(entry: Entry) -> None:
        if not seen:
            taken_over = await redis_ms(redis)
            await redis.set(keys.lease("t", 0), "B", px=10_000)  # as B would once A's lease lapsed

            async def b_has_it_and_a_lease_passed() -> bool:
                return ("B", 0) in seen and await redis_ms(redis) > taken_over + config.claim_idle_ms

            await eventually(b_has_it_and_a_lease_passed)
        seen.append(("A", int(entry.fields["n"])))

    async def process_b(entry: Entry) -> None:
        seen.append(("B", int(entry.fields["n"])))
        if seen.count(("B", 0)) == 1 and entry.fields["n"] == "0":

            async def a_done() -> bool:
                return ("A", 2) in seen

            await eventually(a_done)  # A is done with the batch, and settles it now if it does
            raise RuntimeError("first try")

    a = StreamConsumer(redis, keys, config, "A", one_by_one(process_a))
    b = StreamConsumer(redis, keys, config, "B", one_by_one(process_b))
    async with running(a):

        async def a_reads() -> bool:
            return a.reading == [0]

        await eventually(a_reads)
        async with running(b):
            async with redis.pipeline(transaction=True) as pipe:
                for n in range(3):
                    pipe.xadd(keys.stream("t", 0), {"n": str(n)})
                await pipe.execute()

            async def retried() -> bool:
                return seen.count(("B", 0)) == 2 and await drained(redis, keys.stream("t", 0), "t")

            await eventually(retried)
    assert [n for name, n in seen if name == "B"] == [0, 1, 2, 0]  # the failed one again, last
    assert not await redis.exists(keys.errors("t", 0))


async def test_a_consumer_whose_lease_went_to_another_before_it_settles_settles_nothing(
    redis: Redis, prefix: str
) -> None:
    """The lease is checked where a batch is settled, in Redis: a consumer whose partition
    went to another after its last renewal (it stalled past its lease, unseen by its own
    clock) settles none of the batch; the new reader takes the entries over, and each one's
    effect is applied once."""
    keys = Keys(prefix, partitions=1)
    config = replace(CONFIG, partitions=(0,), exclusive=True)
    stream = keys.stream("t", 0)
    effects = IdempotentEffect(redis, prefix)
    seen: list[tuple[str, str]] = []
    outcomes: dict[str, list[str]] = {"A": [], "B": []}

    def processor(name: str) -> Processor:
        async def process(entry: Entry) -> None:
            seen.append((name, entry.id))
            await effects(entry)
            if name == "A" and entry.fields["n"] == "2":
                # The batch's last entry: A stalls here past its lease and B takes the partition.
                await redis.set(keys.lease("t", 0), "B", px=60_000)

        return process

    a, b = (
        StreamConsumer(redis, keys, config, name, one_by_one(processor(name)), outcomes[name].append)
        for name in ("A", "B")
    )
    async with running(a):

        async def a_reads() -> bool:
            return a.reading == [0]

        await eventually(a_reads)
        async with redis.pipeline(transaction=True) as pipe:  # one read takes them all
            for n in range(3):
                pipe.xadd(stream, {"n": str(n)})
            ids = await pipe.execute()

        async def a_gave_up() -> bool:
            return len(outcomes["A"]) == 3 and a.reading == []

        await eventually(a_gave_up)
        assert outcomes["A"] == ["unsettled"] * 3
        assert seen == [("A", entry_id) for entry_id in ids]
        pending = await redis.xpending_range(stream, "t", min="-", max="+", count=10)
        assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry_id, "A") for entry_id in ids]

        async with running(b):

            async def b_done() -> bool:
                return len(outcomes["B"]) == 3 and await drained(redis, stream, "t")

            await eventually(b_done)
    assert outcomes["B"] == ["done"] * 3
    assert seen[3:] == [("B", entry_id) for entry_id in ids]  # all again, in order
    assert await effects.applied() == Counter(ids)  # once each, though processed twice


async def test_a_batch_cut_short_by_redis_goes_before_newer_entries_of_its_partition(redis: Redis, prefix: str) -> None:
    """Redis failing mid-batch restarts the consumer with the batch pending: it is taken up
    again first, so its partition's entries keep their order."""
    keys = Keys(prefix, partitions=1)
    config = replace(CONFIG, partitions=(0,), exclusive=True)
    seen: list[int] = []

    async def process(entry: Entry) -> None:
        seen.append(int(entry.fields["n"]))
        if seen == [0]:
            await redis.xadd(keys.stream("t", 0), {"n": "3"})  # arrives while Redis is away
            raise RedisConnectionError("Redis went away")

    consumer = StreamConsumer(redis, keys, config, "A", one_by_one(process))
    async with running(consumer):

        async def reads() -> bool:
            return consumer.reading == [0]

        await eventually(reads)
        async with redis.pipeline(transaction=True) as pipe:
            for n in range(3):
                pipe.xadd(keys.stream("t", 0), {"n": str(n)})
            await pipe.execute()

        async def all_done() -> bool:
            return 3 in seen and await drained(redis, keys.stream("t", 0), "t")

        await eventually(all_done)
    assert seen == [0, 0, 1, 2, 3]


async def test_one_consumer_waits_and_the_others_wait_on_it_until_woken() -> None:
    watch, gate, reads = IdleWatch(), asyncio.Event(), []
    found = [Entry("1-0", {"n": "1"}, 3)]

    async def read() -> list[Entry]:
        reads.append(1)
        await gate.wait()
        return found

    waiting = asyncio.create_task(watch.wait(read, 60))
    others = [asyncio.create_task(watch.wait(read, 60)) for _ in range(3)]
    while not reads:
        await asyncio.sleep(0)
    gate.set()
    assert await waiting == found
    watch.wake()  # as the consumer that found entries does
    assert await asyncio.gather(*others) == [[], [], []]  # to read for themselves
    assert reads == [1]  # the others sent no read of their own meanwhile


async def test_the_others_wake_when_the_wait_fails_and_one_takes_it_over() -> None:
    watch, gate = IdleWatch(), asyncio.Event()

    async def read() -> list[Entry]:
        await gate.wait()
        raise RedisConnectionError("gone")

    waiting = asyncio.create_task(watch.wait(read, 60))
    await asyncio.sleep(0)
    other = asyncio.create_task(watch.wait(read, 60))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await other == []

    async def nothing() -> list[Entry]:
        return []

    assert await asyncio.wait_for(watch.wait(nothing, 60), 5) == []  # its read ran: the wait was free


async def test_a_consumer_waiting_on_another_reads_again_after_a_while_unwoken() -> None:
    watch, gate = IdleWatch(), asyncio.Event()

    async def read() -> list[Entry]:
        await gate.wait()
        return []

    waiting = asyncio.create_task(watch.wait(read, 60))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(watch.wait(read, 0.05), 5) == []  # a missed wake-up costs this long
    gate.set()
    assert await waiting == []
