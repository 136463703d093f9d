"""The durable stream core: events, jobs and CRM deliveries all ride on it.

A producer XADDs an entry; consumers of one group read it (``XREADGROUP``), run the
processor and XACK+XDEL it only after the processor returned, so an entry survives any
crash in between. Entries a dead or stuck consumer left pending are claimed by another
(``XPENDING`` with an idle filter, then ``XCLAIM``, which counts the delivery) batch after
batch while any are left, so a backlog drains at processing speed; an entry delivered
``max_deliveries`` times goes to the dead-letter stream with its last error. Processors
must therefore be idempotent: an entry may be processed more than once.

A consumer never dies of what it meets: any failure (Redis away, out of memory, read-only,
a deleted group) restarts it with backoff and a log line saying why, and ``live`` says
whether it is consuming right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError, ResponseError

from gateway.keys import Keys
from gateway.store.connection import UNAVAILABLE, DecodedRedis, RedisHealth
from gateway.store.nodes import on_owners, pipelined, raise_first
from gateway.store.scripts import Call, Looped, run_many

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    id: str
    fields: Mapping[str, str]
    partition: int | None = None  # of a partitioned stream: whose key holds the entry

    @property
    def key(self) -> str:
        """The entry's name in a batch: partitions' streams make their ids apart, so two
        entries of one read may have the same id."""
        return self.id if self.partition is None else f"{self.partition}/{self.id}"


Processor = Callable[[Entry], Awaitable[None]]
# Processes a batch at once; returns the entries that failed (by ``Entry.key``), each with its
# error. It raises only when Redis is unavailable: then nothing of the batch is acknowledged.
BatchProcessor = Callable[[list[Entry]], Awaitable[dict[str, Exception]]]


def one_by_one(process: Processor) -> BatchProcessor:
    """A batch processor running ``process`` on each entry in turn."""

    async def batch(entries: list[Entry]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        for entry in entries:
            try:
                await process(entry)
            except UNAVAILABLE:
                raise  # not the entry's fault: leave it pending and let run() wait Redis out
            except Exception as exc:
                failed[entry.key] = exc
        return failed

    return batch


Outcome = Callable[[str], None]
# Told of each entry given up on (its fields and last error) once it is dead-lettered, so
# what it stood for can end where its owner sees it (a job fails) instead of waiting forever.
# At least once: told again when the telling is not known to have finished.
GaveUp = Callable[[Mapping[str, str], str], Awaitable[None]]


class _GivenUp(NamedTuple):
    """An entry given up on, for the stream's owner to hear of: its dead letter's id (for
    the untold set), its fields and its last error."""

    letter: str
    fields: dict[str, str]
    error: str

    @classmethod
    def of(cls, letter: str, flat: Sequence[str]) -> _GivenUp:
        """From the dead letter ``letter``'s fields as Redis lists them: the entry's own, then
        the dead letter's ``_id`` and ``_error``."""
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        fields.pop("_id", None)
        return cls(letter, fields, fields.pop("_error", ""))


def raise_if_cancelled() -> None:
    """Honour a cancel that was requested but lost, in loops that run until cancelled.

    Python 3.11's ``asyncio.wait_for`` (the leases' waits use it, and redis-py's own
    connections send under it when a socket timeout is set) returns normally when its inner
    call completes in the loop turn the cancel lands in (fixed in 3.12): the task goes on,
    but still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def consumer_name(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{index}"


@dataclass(frozen=True)
class StreamConfig:
    name: str
    claim_idle_ms: int
    max_deliveries: int
    batch: int = 64
    block_ms: int = 1000
    dead_max: int = 10000  # the dead-letter stream keeps this many, the oldest dropped
    # The partitions of a partitioned stream (``Keys.partitions_of``), each a key with a
    # group of its own; ``(None,)``: the stream is one key.
    partitions: tuple[int | None, ...] = (None,)
    # Each partition read by one consumer at a time (see ``Leases``), so a partition's
    # entries are processed in order across processes.
    exclusive: bool = False

    def label(self, partition: int | None) -> str:
        """The stream as logs name it: ``events/3`` for partition 3 of ``events``."""
        return self.name if partition is None else f"{self.name}/{partition}"


# On Redis Cluster a consumer blocks this long at most on its partitions' reads, which end
# together: an entry arriving meanwhile waits up to this long once the consumer was idle.
_CLUSTER_BLOCK_MS = 100


class IdleWatch:
    """Which one of a process's consumers of a stream, all reading every partition, waits
    for new entries on Redis Cluster; the others wait on it.

    There, an idle consumer's wait is a blocking read of each partition, ended after
    ``_CLUSTER_BLOCK_MS``: 16 commands ten times a second. A process's eight job consumers
    sent 1,280 a second between them, idle, and spent 12% of a core on it. Now one of them
    waits so; the others sleep until a consumer finds entries (it wakes them: it will be
    busy with those, and more may follow), stops or fails, and then read for themselves.
    """

    def __init__(self) -> None:
        self._watching = False
        self._news = asyncio.Event()

    def wake(self) -> None:
        """Send the sleeping consumers back to reading."""
        self._news.set()
        self._news = asyncio.Event()

    async def wait(self, read: Callable[[], Awaitable[list[Entry]]], most: float) -> list[Entry]:
        """What ``read`` (the blocking reads) finds, unless another consumer is in its own:
        then nothing, once woken, or after ``most`` seconds (the caller reads again)."""
        if self._watching:
            # Bounded, so that no wake-up missed could keep entries waiting for long.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(most):
                    await self._news.wait()
            return []
        self._watching = True
        try:
            return await read()
        except BaseException:
            self.wake()  # one of the others takes the wait over (once this one is out of it)
            raise
        finally:
            self._watching = False


# A consumer whose process has not vouched for it in this many claim intervals, and that
# owns nothing, is gone: its name leaves the group, so XINFO shows the consumers that exist.
_DEAD_AFTER_CLAIM_IDLES = 4

# Vouches for the caller's consumers (ARGV[3..]) and removes the group's consumers that own
# no entry and were not vouched for in ARGV[2] ms (Redis 7.0's XINFO idle does not move while
# a live consumer's reads come back empty, so it cannot tell). In one script, so a consumer
# cannot take an entry between the check and its removal: removing it drops what it owns.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], now) end
local removed = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  local seen = tonumber(redis.call('HGET', KEYS[2], info['name']) or '0')
  local silent = math.min(now - seen, info['idle'])
  if info['pending'] == 0 and silent >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    redis.call('HDEL', KEYS[2], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
"""


# Moves the hopeless entries ARGV[6..] of a stream (KEYS[1], group ARGV[1]) to its dead
# letters (KEYS[3], capped exactly at ARGV[4]: rare enough to trim exactly) with their last
# error (KEYS[2]), acknowledged and deleted, in one step: never in both, never in neither.
# Consumers of other processes may find the same hopeless entry at once; claiming it for
# consumer ARGV[2] idle ARGV[3] ms or more lets only one of them take it, so it is
# dead-lettered once. When the stream's owner is to hear of it (ARGV[5] = '1'), its dead
# letter's id goes into KEYS[4] in the same step, until the owner has heard; no more ids
# are kept there than letters (older letters are trimmed away anyway). Returns each
# dead-lettered entry's id, then its dead letter's id and fields, in turn.
_DEAD_LETTER = """
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ARGV, 6))
local out, ids = {}, {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, entry in ipairs(claimed) do
  local id, fields = entry[1], entry[2] or {}
  local why = redis.call('HGET', KEYS[2], id) or 'delivered too often without success'
  local letter = {}
  for i = 1, #fields, 2 do
    if fields[i] ~= '_id' and fields[i] ~= '_error' then
      table.insert(letter, fields[i])
      table.insert(letter, fields[i + 1])
    end
  end
  table.insert(letter, '_id')
  table.insert(letter, id)
  table.insert(letter, '_error')
  table.insert(letter, why)
  local dead = redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], '*', unpack(letter))
  if ARGV[5] == '1' then redis.call('ZADD', KEYS[4], now, dead) end
  table.insert(ids, id)
  table.insert(out, id)
  table.insert(out, dead)
  table.insert(out, letter)
end
if ARGV[5] == '1' then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[4]) - 1) end
if #ids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
  redis.call('HDEL', KEYS[2], unpack(ids))
end
return out
"""

# The dead letters (KEYS[2]) whose owner was to hear of them (KEYS[1]) ARGV[1] ms ago or
# more, at most ARGV[2]: the process that buried them died before telling, or its owner
# failed to hear. Ids whose letter is gone (retried, discarded, trimmed) are dropped.
# Returns each one's dead letter id and fields, in turn.
_UNTOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, ARGV[2])) do
  local found = redis.call('XRANGE', KEYS[2], dead, dead)
  if #found == 0 then
    redis.call('ZREM', KEYS[1], dead)
  else
    table.insert(out, dead)
    table.insert(out, found[1][2])
  end
end
return out
"""


# The first ARGV[1] of the dead letter ids ARGV[2..] were told to the stream's owner: out of
# the untold set (KEYS[1]). The owner failed to hear of the rest: they go to the back of the
# line, so one it keeps failing to hear of does not hold up the others.
_TOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local told = tonumber(ARGV[1])
for i = 2, #ARGV do
  if i <= told + 1 then
    redis.call('ZREM', KEYS[1], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
  end
end
return 0
"""

# At most this many entries given up on earlier are told in one claim check.
_RECALL_AT_ONCE = 100


# The lease of a partition (KEYS[1]) for consumer ARGV[1], by mode ARGV[3]: 'take' it unless
# another holds it, 'keep' it only while the caller holds it still (an expired lease is not
# kept: another may have held it in between), each for ARGV[2] ms more, 1 when done; 'drop'
# gives it back.
_LEASE = """
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[1] and (owner or ARGV[3] ~= 'take') then return 0 end
if ARGV[3] == 'drop' then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Vouches for consumer ARGV[1] in the hash of a stream's readers (Redis time, ms) and counts
# those seen within ARGV[2] ms; those silent for ten times that are forgotten.
_READERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
local live, all = 0, redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local silent = now - tonumber(all[i + 1])
  if silent <= tonumber(ARGV[2]) then
    live = live + 1
  elseif silent > 10 * tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""


# The live consumers of an exclusive stream look at their share at least this often, so
# partitions move within about this long of a process starting or stopping.
_REBALANCE_SECONDS = 1.0


class Leases:
    """The partitions one consumer reads, when each is read by one consumer at a time.

    A partition's lease lasts ``claim_idle_ms`` and is renewed at least three times as often.
    The live consumers (those that renewed within a lease) share the partitions evenly: each
    takes free ones up to its share and gives back what is beyond it, so a new process gets
    its share within a renewal or two, a stopping one's partitions go to the others at their
    next renewal, and a dead one's are taken over once its leases lapse.

    A lease is held from its take until it is dropped or found lapsed: a lapsed one is never
    renewed but lost, since another consumer may have held it in between. ``keep`` renews the
    leases while a batch is processed, however long it takes; the batch is settled in Redis
    only where its lease is this consumer's still (``guard``), so a consumer that stalled past
    its lease settles nothing of the partition's new reader, whatever its clock says.
    """

    def __init__(self, redis: Redis, keys: Keys, config: StreamConfig, name: str) -> None:
        self._redis = redis
        self._name = name
        self._label = config.name
        self._ttl = config.claim_idle_ms
        self._every = max(min(config.claim_idle_ms / 3000, _REBALANCE_SECONDS), 0.05)
        self._next = 0.0
        self._partitions = config.partitions
        self._keys = {p: keys.lease(config.name, p) for p in config.partitions}
        self._readers = keys.consumers(config.name)
        # Consumers start their search at different places, so they rarely race for one.
        start = zlib.crc32(name.encode()) % len(config.partitions)
        self._order = config.partitions[start:] + config.partitions[:start]
        self.owned: list[int | None] = []
        self._lease = redis.register_script(_LEASE)
        self._count = redis.register_script(_READERS)

    @property
    def every_ms(self) -> int:
        return int(self._every * 1000)

    def due(self) -> bool:
        return time.monotonic() >= self._next

    async def renew(self) -> list[int | None]:
        """Renew, take and give back leases to hold this consumer's share; the partitions newly
        taken (their previous reader may have left entries pending)."""
        live = max(int(await self._count(keys=[self._readers], args=[self._name, self._ttl])), 1)
        share = -(-len(self._partitions) // live)
        # A consumer holding its share only renews it: taking free partitions just to give
        # them back would cost a call each and race the consumers still short of theirs.
        free = [p for p in self._order if p not in self.owned] if len(self.owned) < share else []
        kept = self.owned[:share]
        calls = [self._call(p, "keep") for p in kept] + [self._call(p, "take") for p in free]
        held = raise_first(await run_many(self._redis, self._lease, calls))
        got = [p for p, ok in zip(kept + free, held, strict=True) if ok]
        keep, extra = got[:share], got[share:] + self.owned[share:]
        if extra:
            raise_first(await run_many(self._redis, self._lease, [self._call(p, "drop") for p in extra]))
        taken = [p for p in keep if p not in self.owned]
        self.lose([p for p in kept if p not in got])
        self.owned = sorted(keep, key=self._order.index)
        # Only once renewed: after a failure the next try is due at once.
        self._next = time.monotonic() + self._every
        return taken

    async def keep(self, done: asyncio.Event) -> None:
        """Renew the leases held, taking and giving back none, until ``done``: runs while a
        batch is processed, so a batch longer than a lease keeps its partitions. Told, not
        cancelled: a cancel could land mid-command and cost the connection."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._every)
                return
            try:
                await self._hold()
            except Exception as exc:
                # Should the lease lapse meanwhile, the batch's settling finds it not ours.
                log.warning("stream=%s consumer=%s could not renew its leases: %r", self._label, self._name, exc)

    def guard(self, partition: int | None) -> tuple[str, str]:
        """The lease key of ``partition`` and the name its holder has there: what a step in
        Redis compares to tell whether this consumer holds the partition."""
        return self._keys[partition], self._name

    async def _hold(self) -> None:
        owned = list(self.owned)
        held = raise_first(await run_many(self._redis, self._lease, [self._call(p, "keep") for p in owned]))
        self.lose([p for p, ok in zip(owned, held, strict=True) if not ok])

    def lose(self, partitions: list[int | None]) -> None:
        """Stop reading ``partitions``: their leases lapsed or went to another consumer."""
        partitions = [p for p in partitions if p in self.owned]
        if not partitions:
            return
        log.warning(
            "stream=%s consumer=%s lost the lease of partition(s) %s (renewed too late)",
            self._label,
            self._name,
            ", ".join(map(str, partitions)),
        )
        self.owned = [p for p in self.owned if p not in partitions]

    async def release(self) -> None:
        """Give every lease back and leave the live consumers (a process stopping), so the
        others take its partitions over at their next renewal."""
        owned, self.owned = self.owned, []
        await run_many(self._redis, self._lease, [self._call(p, "drop") for p in owned])
        await self._redis.hdel(self._readers, self._name)

    def _call(self, partition: int | None, mode: str) -> Call:
        return [self._keys[partition]], [self._name, self._ttl, mode]


class Claims:
    """The claim side of one group (of one partition's), shared by the consumers of one process.

    One consumer at a time claims (so they never race for the same batch), each claim takes
    a batch, and while the last one came back full the next is due at once: entries a dead
    consumer left drain as fast as the consumers process them.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: StreamConfig,
        on_outcome: Outcome,
        partition: int | None = None,
        on_dead: GaveUp | None = None,
    ) -> None:
        self._redis: DecodedRedis = redis
        self._config = config
        self._on_outcome = on_outcome
        self._on_dead = on_dead
        self._partition = partition
        self._label = config.label(partition)
        self._stream = keys.stream(config.name, partition)
        self._dead = keys.dead(config.name, partition)
        self._errors = keys.errors(config.name, partition)
        self._untold = keys.untold(config.name, partition)
        self._alive = keys.consumers(config.name, partition)
        self._group = config.name
        self.members: set[str] = set()
        self._lock = asyncio.Lock()
        self._every = max(config.claim_idle_ms / 2000, 0.1)
        self._next = 0.0
        self._next_prune = 0.0
        self.backlog = False
        self._adopt = False
        self._prune = redis.register_script(_PRUNE)
        self._bury = redis.register_script(_DEAD_LETTER)
        self._recall = redis.register_script(_UNTOLD)
        self._settle_told = redis.register_script(_TOLD)

    def due(self) -> bool:
        return self.backlog or self._adopt or time.monotonic() >= self._next

    def adopt(self) -> None:
        """The partition was just leased: its previous reader gave it back or is gone, so
        what it left pending is taken at once, however recently it was read, and before
        anything new: the partition's entries keep their order."""
        self._adopt = True

    async def take(self, consumer: str) -> list[Entry]:
        """A batch of entries idle longer than ``claim_idle_ms``, now owned by ``consumer``;
        the hopeless among them are dead-lettered instead."""
        given_up: list[_GivenUp] = []
        try:
            async with self._lock:
                return await self._take(consumer, given_up)
        finally:
            await self._tell_given_up(given_up)

    async def _take(self, consumer: str, given_up: list[_GivenUp]) -> list[Entry]:
        if not self.due():
            return []  # another consumer of this process just claimed
        self._next = time.monotonic() + self._every
        idle = 0 if self._adopt else self._config.claim_idle_ms
        self._adopt = False
        pending = await self._redis.xpending_range(
            self._stream, self._group, min="-", max="+", count=self._config.batch, idle=idle
        )
        self.backlog = len(pending) >= self._config.batch
        hopeless = [p["message_id"] for p in pending if p["times_delivered"] >= self._config.max_deliveries]
        retry = [p["message_id"] for p in pending if p["times_delivered"] < self._config.max_deliveries]
        if hopeless:
            given_up += await self._dead_letter(consumer, hopeless)
        if time.monotonic() >= self._next_prune:
            await self._prune_dead()
            given_up += await self._still_untold()
        if not retry:
            return []
        claimed = await self._redis.xclaim(self._stream, self._group, consumer, min_idle_time=idle, message_ids=retry)
        entries = [Entry(entry_id, fields, self._partition) for entry_id, fields in claimed if fields]
        # An entry trimmed away while pending comes back empty: nothing left to do but ack it.
        gone = [entry_id for entry_id, fields in claimed if not fields]
        if gone:
            await self._redis.xack(self._stream, self._group, *gone)
        return entries

    async def _prune_dead(self) -> None:
        # Vouching twice per dead-after period keeps a live consumer clear of the cut.
        self._next_prune = time.monotonic() + self._config.claim_idle_ms * _DEAD_AFTER_CLAIM_IDLES / 2000
        dead_after_ms = self._config.claim_idle_ms * _DEAD_AFTER_CLAIM_IDLES
        args: list[str | int] = [self._group, dead_after_ms, *sorted(self.members)]
        removed = await self._prune(keys=[self._stream, self._alive], args=args)
        if removed:
            log.info("stream=%s removed dead consumers that owned nothing: %s", self._label, ", ".join(removed))

    async def _dead_letter(self, consumer: str, entry_ids: list[str]) -> list[_GivenUp]:
        """Dead-letter ``entry_ids``; those of them this call buried, for the owner to hear of."""
        keys = [self._stream, self._errors, self._dead, self._untold]
        tell = "1" if self._on_dead else "0"
        args: list[str | int] = [self._group, consumer, self._config.claim_idle_ms, self._config.dead_max, tell]
        args += entry_ids
        dead = await self._bury(keys=keys, args=args)
        buried = []
        for entry_id, letter, fields in zip(dead[::3], dead[1::3], dead[2::3], strict=True):
            given_up = _GivenUp.of(letter, fields)
            log.error("stream=%s entry=%s dead-lettered: %s", self._label, entry_id, given_up.error)
            self._on_outcome("dead")
            buried.append(given_up)
        return buried

    async def _still_untold(self) -> list[_GivenUp]:
        """Entries given up on long enough ago that their owner should have heard and has not:
        their burier died first, or the owner failed to hear."""
        if self._on_dead is None:
            return []
        args = [self._config.claim_idle_ms, _RECALL_AT_ONCE]
        found = await self._recall(keys=[self._untold, self._dead], args=args)
        untold = [_GivenUp.of(letter, fields) for letter, fields in zip(found[::2], found[1::2], strict=True)]
        if untold:
            log.warning("stream=%s: telling the owner of %d entries given up on earlier", self._label, len(untold))
        return untold

    async def _tell_given_up(self, given_up: list[_GivenUp]) -> None:
        """Tell the stream's owner of each entry given up on, out of the claim lock; one
        failing to hear of an entry neither stops the others nor the consumer, and is told
        again later, as is one whose telling this process does not live to finish."""
        if self._on_dead is None or not given_up:
            return
        told, failed = [], []
        for letter, fields, error in given_up:
            try:
                await self._on_dead(fields, error)
            except Exception:
                log.exception("stream=%s: the owner failed to hear of an entry given up: %s", self._label, fields)
                failed.append(letter)
            else:
                told.append(letter)
        try:
            await self._settle_told(keys=[self._untold], args=[len(told), *told, *failed])
        except RedisError as exc:  # they are told again: the owner's hearing is idempotent
            log.warning("stream=%s: could not mark %d entries given up on as told: %s", self._label, len(told), exc)


# Restart delays after consecutive failures: quick for a blip, at most this for an outage.
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
# While a failure repeats, one log line per this many restarts (about a minute at the cap).
_LOG_EVERY = 30


# A failure is kept this long at most (and so shown in its dead letter): an exception's
# message may carry a whole response body.
_WHY_MOST = 2000


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:_WHY_MOST]


# Settles a partition's entries of a batch: acknowledges and deletes the done ones
# (A[2], their ids separated by spaces) and forgets their errors; keeps why the failed ones
# failed (A[3], JSON id -> error, or ''). Of an exclusive stream (K[3], the partition's
# lease, and A[4], the consumer), only while the consumer holds the lease: 1 when settled,
# 0 when left to the lease's holder.
_SETTLE = """
if K[3] and redis.call('GET', K[3]) ~= A[4] then return 0 end
local done = {}
for id in string.gmatch(A[2], '%S+') do done[#done + 1] = id end
if A[3] ~= '' then
  for id, why in pairs(cjson.decode(A[3])) do redis.call('HSET', K[2], id, why) end
end
if #done > 0 then
  redis.call('XACK', K[1], A[1], unpack(done))
  redis.call('XDEL', K[1], unpack(done))
  redis.call('HDEL', K[2], unpack(done))
end
return 1
"""


class StreamConsumer:
    """One consumer of a group (of each partition's group, for a partitioned stream); run
    several (in one process or many) to share the work.

    Consumers of one process share one ``Claims`` per partition (made here when not given).
    A consumer reads all partitions at once, so a batch is as large as the traffic allows
    however it spreads over them; a customer's entries are all in one partition, in order.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: StreamConfig,
        name: str,
        process: BatchProcessor,
        on_outcome: Outcome = lambda outcome: None,
        claims: Sequence[Claims] = (),
        health: RedisHealth | None = None,
        watch: IdleWatch | None = None,
    ) -> None:
        self._redis: DecodedRedis = redis
        self._config = config
        self.name = name
        self._process = process
        self._on_outcome = on_outcome
        made = claims or [Claims(redis, keys, config, on_outcome, p) for p in config.partitions]
        self._claims = dict(zip(config.partitions, made, strict=True))
        for part in self._claims.values():
            part.members.add(name)
        self._leases = Leases(redis, keys, config, name) if config.exclusive else None
        # A blocked read must not outlast a lease between two renewals.
        self._block_ms = config.block_ms if self._leases is None else min(config.block_ms, self._leases.every_ms)
        self._streams = {p: keys.stream(config.name, p) for p in config.partitions}
        self._partition_of = {key: p for p, key in self._streams.items()}
        self._errors = {p: keys.errors(config.name, p) for p in config.partitions}
        self._group = config.name
        self._settle = Looped(redis, _SETTLE)
        # A read or a transaction on Redis Cluster may only name the keys of one slot.
        self._per_slot = isinstance(redis, RedisCluster) and len(self._streams) > 1
        # Shared only by consumers that read the same partitions: those without leases.
        self._watch = watch if self._leases is None else None
        self._failures = 0
        # Outages are logged once per process by ``health``; without one, by each consumer.
        self._health = health
        self._outage = False
        self.live = True

    @property
    def stream(self) -> str:
        return self._config.name

    @property
    def reading(self) -> Sequence[int | None]:
        """The partitions this consumer reads now."""
        return self._config.partitions if self._leases is None else self._leases.owned

    async def ensure_group(self) -> None:
        async with pipelined(self._redis) as pipe:
            for key in self._streams.values():
                pipe.xgroup_create(key, self._group, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not (isinstance(reply, ResponseError) and "BUSYGROUP" in str(reply)):
                raise reply

    async def run(self) -> None:
        """Process until cancelled; whatever stops the consumer, it starts again."""
        try:
            while True:
                raise_if_cancelled()
                try:
                    await self._consume()
                except Exception as exc:
                    await self._back_off(exc)
        finally:
            if self._watch is not None:
                self._watch.wake()
            if self._leases is not None:
                # Stopping: the partitions go to the other readers now, not when the leases lapse.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._leases.release(), 1.0)

    async def _consume(self) -> None:
        await self.ensure_group()
        # On a (re)start, what a failure cut short is pending here still: it goes before
        # anything newer of its partition (of those still held: a lapsed lease is not kept).
        restarted = True
        while True:
            raise_if_cancelled()
            if self._leases is not None and (restarted or self._leases.due()):
                leased = await self._leases.renew()
                for partition in self._leases.owned if restarted else leased:
                    self._claims[partition].adopt()
                restarted = False
                self._resumed()
            claims = [self._claims[p] for p in self.reading]
            due = [part for part in claims if part.due()]
            if due:
                # Each partition's claim check is its own round trip: send them together.
                taken = await asyncio.gather(*(part.take(self.name) for part in due))
                claimed = [entry for entries in taken for entry in entries]
                self._resumed()
                if claimed:
                    await self._leased(claimed)
                    continue
            if not claims:
                await asyncio.sleep(self._block_ms / 1000)  # others read every partition
                continue
            # While a claim backlog is left, read without blocking to get back to it.
            backlog = any(part.backlog for part in claims)
            await self._leased(await self.read_new(block=not backlog))
            self._resumed()

    async def _leased(self, entries: list[Entry]) -> None:
        """Process a batch, keeping the leases of an exclusive stream's partitions meanwhile:
        were one to lapse, another consumer would take the partition and the entries pending
        here with it, and process them at the same time, out of order."""
        if entries and self._watch is not None:
            self._watch.wake()
        if self._leases is None or not entries:
            await self.process(entries)
            return
        done = asyncio.Event()
        keeper = asyncio.create_task(self._leases.keep(done))
        try:
            await self.process(entries)
        finally:
            done.set()
            await asyncio.wait([keeper])

    def _resumed(self) -> None:
        if self._health is not None:
            self._health.back()
        if self._failures and not self._outage:
            log.info("stream=%s consumer=%s resumed after %d restarts", self._config.name, self.name, self._failures)
        self._failures = 0
        self._outage = False
        self.live = True

    async def _back_off(self, exc: Exception) -> None:
        self.live = False
        if self._watch is not None:
            self._watch.wake()  # the others are not to wait on this one meanwhile
        where = f"stream={self._config.name} consumer={self.name}"
        if isinstance(exc, ResponseError) and ("NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)):
            # The stream was deleted (e.g. FLUSHALL, or a Redis without persistence restarted),
            # or a failover ended a blocked read (Redis 7 answers UNBLOCKED): start over now.
            log.warning("%s: its read was ended (%s); starting over", where, exc)
            return
        self._failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2)
        if isinstance(exc, UNAVAILABLE) and self._health is not None:
            self._outage = True
            self._health.lost(exc)
        elif self._failures % _LOG_EVERY == 1:
            if isinstance(exc, UNAVAILABLE):
                log.warning("%s redis unavailable: %s; restarting in %.1f s", where, exc, delay)
            elif isinstance(exc, RedisError):
                # OutOfMemoryError, ...: the class says more than the message.
                log.warning("%s stopped by redis: %s: %s; restarting in %.1f s", where, type(exc).__name__, exc, delay)
            else:
                log.exception("%s stopped by an unexpected error; restarting in %.1f s", where, delay)
        await asyncio.sleep(delay)

    async def read_new(self, block: bool = True) -> list[Entry]:
        """New entries of every partition: up to ``batch`` of each, in each one's order."""
        keys = [self._streams[p] for p in self.reading]
        if not self._per_slot:
            streams = {key: ">" for key in keys}
            return self._entries([await self._read(streams, block=self._block_ms if block else None)])
        # One read per partition: at once, without blocking; when all come back empty, once
        # more, blocking a short while (the reads end together, so not for long).
        entries = self._entries(
            raise_first(await on_owners(self._redis, [(key, self._read_args(key, None)) for key in keys]))
        )
        if entries or not block:
            return entries
        wait = min(self._block_ms, _CLUSTER_BLOCK_MS)

        async def blocking() -> list[Entry]:
            return self._entries(await asyncio.gather(*(self._read({key: ">"}, wait) for key in keys)))

        return await blocking() if self._watch is None else await self._watch.wait(blocking, self._block_ms / 1000)

    async def _read(self, streams: dict[str, str], block: int | None) -> Any:
        if not isinstance(self._redis, RedisCluster):
            return await self._redis.xreadgroup(self._group, self.name, streams, count=self._config.batch, block=block)
        (key,) = streams  # a read on a cluster names one partition
        return await self._redis.execute_command(*self._read_args(key, block), target_nodes=await self._node_of(key))

    def _read_args(self, key: str, block: int | None) -> list[str | int]:
        """XREADGROUP of the new entries of ``key``, as ``_read`` and ``read_new`` send it."""
        waits: list[str | int] = [] if block is None else ["BLOCK", block]
        return ["XREADGROUP", "GROUP", self._group, self.name, "COUNT", self._config.batch, *waits, "STREAMS", key, ">"]

    async def _node_of(self, key: str) -> ClusterNode:
        """The cluster node of ``key``'s slot. Named, it spares the cluster client the
        COMMAND GETKEYS it would send before each XREADGROUP to find the command's keys
        (they are movable), a round trip more per read. A slot that moved meanwhile answers
        MOVED, which the client follows and notes for the next look-up."""
        await self._redis.initialize()  # the slot map, after a reconnect dropped it
        node: ClusterNode = self._redis.nodes_manager.get_node_from_slot(self._redis.keyslot(key))
        return node

    def _entries(self, replies: list[Any]) -> list[Entry]:
        return [
            Entry(entry_id, fields, self._partition_of[key])
            for reply in replies
            for key, entries in reply or []
            for entry_id, fields in entries
            if fields
        ]

    async def process(self, entries: list[Entry]) -> None:
        """Run the batch; acknowledge what succeeded and keep why the rest failed, in one
        command (one per partition on Redis Cluster). A failed entry stays pending: a claim
        retries it later.

        Of an exclusive stream, a partition's entries are settled only while this consumer
        holds its lease, checked in the settling command itself: one whose lease went to
        another meanwhile (this consumer stalled longer than a lease) is left to that new
        reader, which takes its entries over; settling them here could acknowledge one it is
        processing, or record a failure of an entry it got done."""
        if not entries:
            return
        failed = await self._process(entries)
        by_partition: dict[int | None, list[Entry]] = {}
        for entry in entries:
            by_partition.setdefault(entry.partition, []).append(entry)
        settled = await self._settle([self._settlement(p, part, failed) for p, part in by_partition.items()])
        lost = [p for p, ok in zip(by_partition, settled, strict=True) if not ok]
        for entry in entries:
            if entry.partition in lost:
                self._on_outcome("unsettled")
            elif entry.key in failed:
                label = self._config.label(entry.partition)
                log.error("stream=%s entry=%s failed", label, entry.id, exc_info=failed[entry.key])
                self._on_outcome("failed")
            else:
                self._on_outcome("done")
        if lost and self._leases is not None:
            log.warning(
                "stream=%s consumer=%s leaves %d processed entries unsettled to the new readers of partition(s) %s",
                self._config.name,
                self.name,
                sum(len(by_partition[p]) for p in lost),
                ", ".join(map(str, lost)),
            )
            self._leases.lose(lost)

    def _settlement(self, partition: int | None, entries: list[Entry], failed: Mapping[str, Exception]) -> Call:
        """The ``_SETTLE`` call of a partition's entries of a batch."""
        why = {e.id: _why(failed[e.key]) for e in entries if e.key in failed}
        done = " ".join(e.id for e in entries if e.key not in failed)
        keys = [self._streams[partition], self._errors[partition]]
        args = [self._group, done, json.dumps(why) if why else ""]
        if self._leases is not None:
            lease, holder = self._leases.guard(partition)
            keys.append(lease)
            args.append(holder)
        return keys, args
