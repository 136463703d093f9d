"""The outbox: events for the CRM, queued per subscription and per item, tried until the
endpoint takes them or the retry window ends.

Every timeline entry is added to the outbox stream in the same step that writes it (while
any subscription exists: ``PUBLISH_LUA``), so an effect and its event are durable together.
A fan-out consumer turns each stream entry into one delivery per interested subscription.
A subscription's deliveries wait in one queue per item (in the order they happened); only
the oldest of an item is tried, so an item's events arrive in order while other items go on,
and a subscription's queues never hold up another's.

Everything of an event is in its item's partition (the outbox stream it is added to, its
delivery record, the item's queue, the due set it waits in), so each step is in one Redis
Cluster slot; a subscription's delivery loop reads the due sets of all the partitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.nodes import pipelined

# A safety cap: entries leave the stream once fanned out, so it only fills while no worker runs.
OUTBOX_STREAM_MAX = 1_000_000
# A delivered event's record stays this long: a fan-out repeated after a crash finds it.
DELIVERED_TTL = 2 * 24 * 3600


def publish_lua(subscribed: str, stream: str, item_id: str, entry: str) -> str:
    """Lua that adds a timeline entry to its partition's outbox stream while any
    subscription exists (``Keys.subscribed``); the arguments are Lua expressions
    (``KEYS[4]``, ``ARGV[2]``)."""
    return (
        f"if redis.call('EXISTS', {subscribed}) == 1 then "
        f"redis.call('XADD', {stream}, 'MAXLEN', '~', {OUTBOX_STREAM_MAX}, '*', 'item', {item_id}, 'entry', {entry}) "
        "end\n"
    )


# A delivery, once per (subscription, event) and only while the subscription exists: the record, its place in the item's queue and
# the item in the due set (unless it waits already: a backoff in progress is kept).
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[4], ARGV[7]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[3], 'type', ARGV[4], 'item', ARGV[5], 'order', ARGV[2],
  'attempts', 0, 'first', ARGV[6], 'status', 'pending')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[6], ARGV[5])
return 1
"""

# The oldest event of a due item, leased until ARGV[3] (its due time moves there, so no
# other worker takes it meanwhile; a worker that dies holding it loses it when it ends).
_TAKE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if not head then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return head
"""

# After an attempt: delivered (ARGV[4] == 'delivered'), given up ('dead'), or to be tried at
# ARGV[5] ('retry'). The item's next event is due at once when this one left the queue.
_SETTLE = """
local now = ARGV[3]
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
elseif ARGV[4] == 'retry' then
  redis.call('HINCRBY', KEYS[3], 'attempts', 1)
  redis.call('HSET', KEYS[3], 'error', ARGV[6], 'last', now)
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  return 1
elseif ARGV[4] == 'delivered' then
  redis.call('HINCRBY', KEYS[3], 'attempts', 1)
  redis.call('HSET', KEYS[3], 'status', 'delivered', 'last', now)
  redis.call('HDEL', KEYS[3], 'body', 'error')
  redis.call('EXPIRE', KEYS[3], ARGV[7])
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('HINCRBY', KEYS[3], 'attempts', 1)
  redis.call('HSET', KEYS[3], 'status', 'dead', 'error', ARGV[6], 'last', now)
  redis.call('ZADD', KEYS[4], now, ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
if redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

# A dead event back in its item's queue with a fresh retry window.
_REPLAY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', 'pending', 'attempts', 0, 'first', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one subscription."""

    sub: str
    event_id: str
    fields: Mapping[str, str]

    @property
    def item_id(self) -> str:
        return self.fields["item"]

    @property
    def body(self) -> bytes:
        return self.fields["body"].encode()

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)

    @property
    def first(self) -> float:
        return float(self.fields["first"])


def event_id(entry_id: str, partition: int) -> str:
    """The id of the event of an outbox stream entry: the entry's id (``<ms>-<seq>``) and
    its partition, since each partition's stream numbers its entries on its own."""
    return f"evt_{entry_id}-{partition}"


def order_of(event_id: str) -> int:
    """The place of an event among its item's (all in one partition): its outbox stream id
    as one number (exact in a double for a thousand events per item per millisecond)."""
    ms, seq, *_ = event_id.removeprefix("evt_").split("-")
    return int(ms) * 1000 + min(int(seq), 999)


def partition_of_event(event_id: str) -> int | None:
    """The partition ``event_id`` (as ``event_id`` makes them) is in; None for an id that
    is not one."""
    parts = event_id.removeprefix("evt_").split("-")
    return int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None


class Outbox:
    def __init__(self, redis: Redis, keys: Keys, dead_max: int) -> None:
        self._redis: Any = redis  # decoded replies (str); redis-py types both modes
        self._keys = keys
        self._dead_max = dead_max
        self._enqueue = redis.register_script(_ENQUEUE)
        self._take = redis.register_script(_TAKE)
        self._settle = redis.register_script(_SETTLE)
        self._replay = redis.register_script(_REPLAY)

    async def open(self, sub: str) -> None:
        """Let ``sub`` get events: from now on every partition adds its timeline entries to
        its outbox stream, and the fan-out queues them for ``sub``."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.sadd(self._keys.subscribed(partition), sub)
            await pipe.execute()

    async def enqueue(self, sub: str, event_id: str, event_type: str, item_id: str, body: bytes, now: float) -> bool:
        """Queue ``event_id`` for ``sub`` unless it was queued before; True when new."""
        partition = self._keys.partition_of(item_id)
        keys = [
            self._keys.outbox_event(sub, partition, event_id),
            self._keys.outbox_queue(sub, item_id),
            self._keys.outbox_due(sub, partition),
            self._keys.subscribed(partition),
        ]
        args: list[str | int] = [event_id, order_of(event_id), body.decode(), event_type, item_id, repr(now), sub]
        return bool(await self._enqueue(keys=keys, args=args))

    async def due_items(self, sub: str, now: float, count: int) -> list[str]:
        """Up to ``count`` items with an event for ``sub`` due by ``now``, the longest due first."""
        if count <= 0:
            return []
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zrangebyscore(
                    self._keys.outbox_due(sub, partition), "-inf", now, start=0, num=count, withscores=True
                )
            found: list[list[tuple[str, float]]] = await pipe.execute()
        due = sorted((score, str(item_id)) for rows in found for item_id, score in rows)
        return [item_id for _, item_id in due[:count]]

    async def next_due(self, sub: str) -> float | None:
        """When the earliest item of ``sub`` is due (None when nothing waits)."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zrange(self._keys.outbox_due(sub, partition), 0, 0, withscores=True)
            firsts: list[list[tuple[str, float]]] = await pipe.execute()
        return min((float(first[0][1]) for first in firsts if first), default=None)

    async def take(self, sub: str, item_id: str, now: float, lease_until: float) -> Delivery | None:
        """The item's oldest event for ``sub``, leased to the caller; None when another
        worker has it or nothing is left."""
        partition = self._keys.partition_of(item_id)
        keys = [self._keys.outbox_due(sub, partition), self._keys.outbox_queue(sub, item_id)]
        event_id = await self._take(keys=keys, args=[item_id, repr(now), repr(lease_until)])
        if not event_id:
            return None
        fields = await self._redis.hgetall(self._keys.outbox_event(sub, partition, str(event_id)))
        if not fields.get("body"):  # the subscription was deleted meanwhile
            await self._settle_as(sub, item_id, str(event_id), now, "delivered")
            return None
        return Delivery(sub, str(event_id), fields)

    async def release(self, delivery: Delivery, now: float) -> None:
        """Give a taken event back unattempted: due at ``now``."""
        due = self._keys.outbox_due(delivery.sub, self._keys.partition_of(delivery.item_id))
        await self._redis.zadd(due, {delivery.item_id: now}, xx=True)

    async def delivered(self, delivery: Delivery, now: float) -> None:
        await self._settle_as(delivery.sub, delivery.item_id, delivery.event_id, now, "delivered")

    async def retry_at(self, delivery: Delivery, now: float, at: float, error: str) -> None:
        await self._settle_as(delivery.sub, delivery.item_id, delivery.event_id, now, "retry", at, error)

    async def give_up(self, delivery: Delivery, now: float, error: str) -> None:
        """Dead-letter the event; the oldest dead letters of its partition beyond the
        partition's share of the cap are dropped."""
        await self._settle_as(delivery.sub, delivery.item_id, delivery.event_id, now, "dead", error=error)
        partition = self._keys.partition_of(delivery.item_id)
        dead = self._keys.outbox_dead(delivery.sub, partition)
        extra = int(await self._redis.zcard(dead)) - max(self._dead_max // self._keys.partitions, 1)
        if extra > 0:
            for event_id, _ in await self._redis.zpopmin(dead, extra):
                await self._redis.delete(self._keys.outbox_event(delivery.sub, partition, str(event_id)))

    async def _settle_as(
        self, sub: str, item_id: str, event_id: str, now: float, outcome: str, at: float = 0.0, error: str = ""
    ) -> None:
        partition = self._keys.partition_of(item_id)
        keys = [
            self._keys.outbox_due(sub, partition),
            self._keys.outbox_queue(sub, item_id),
            self._keys.outbox_event(sub, partition, event_id),
            self._keys.outbox_dead(sub, partition),
        ]
        args: list[str | int] = [item_id, event_id, repr(now), outcome, repr(at), error[:2000], DELIVERED_TTL]
        await self._settle(keys=keys, args=args)

    async def dead_letters(self, sub: str, count: int = 100) -> list[dict[str, Any]]:
        """The newest events ``sub`` never accepted (of all the partitions), newest first."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zrevrange(self._keys.outbox_dead(sub, partition), 0, count - 1, withscores=True)
            replies: list[list[tuple[str, float]]] = await pipe.execute()
        found = sorted(
            (
                (float(dead_at), partition, str(event_id))
                for partition, rows in enumerate(replies)
                for event_id, dead_at in rows
            ),
            reverse=True,
        )[:count]
        async with pipelined(self._redis) as pipe:
            for _, partition, event_id in found:
                pipe.hgetall(self._keys.outbox_event(sub, partition, event_id))
            records = await pipe.execute()
        return [
            {
                "event_id": event_id,
                "type": record.get("type"),
                "item_id": record.get("item"),
                "attempts": int(record.get("attempts") or 0),
                "error": record.get("error"),
                "dead_at": dead_at,
            }
            for (dead_at, _, event_id), record in zip(found, records, strict=True)
        ]

    async def replay(self, sub: str, event_ids: list[str] | None, now: float) -> int:
        """Dead letters of ``sub`` (all, or those named) back in their queues; how many."""
        if event_ids is None:
            async with pipelined(self._redis) as pipe:
                for partition in range(self._keys.partitions):
                    pipe.zrange(self._keys.outbox_dead(sub, partition), 0, -1)
                dead: list[list[str]] = await pipe.execute()
            named = [(partition, str(e)) for partition, ids in enumerate(dead) for e in ids]
        else:
            named = [
                (p, e) for e in event_ids if (p := partition_of_event(e)) is not None and p < self._keys.partitions
            ]
        replayed = 0
        for partition, event_id in named:
            record = self._keys.outbox_event(sub, partition, event_id)
            fields = await self._redis.hmget(record, "item", "order")
            if fields[0] is None:
                continue
            item_id, order = str(fields[0]), fields[1]
            keys = [
                self._keys.outbox_dead(sub, partition),
                record,
                self._keys.outbox_queue(sub, item_id),
                self._keys.outbox_due(sub, partition),
            ]
            replayed += int(await self._replay(keys=keys, args=[event_id, order, repr(now), item_id]))
        return replayed

    async def counts(self, sub: str) -> dict[str, int]:
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zcard(self._keys.outbox_due(sub, partition))
                pipe.zcard(self._keys.outbox_dead(sub, partition))
            sizes = await pipe.execute()
        return {"items_waiting": sum(sizes[0::2]), "dead": sum(sizes[1::2])}

    async def drop(self, sub: str) -> None:
        """Stop queueing events for ``sub`` and delete every record of it: its queues, its
        pending and dead events. Queueing stops first: an event queued before is deleted."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.srem(self._keys.subscribed(partition), sub)
            await pipe.execute()
        for partition in range(self._keys.partitions):
            due = self._keys.outbox_due(sub, partition)
            dead = self._keys.outbox_dead(sub, partition)
            for item_id in await self._redis.zrange(due, 0, -1):
                queue = self._keys.outbox_queue(sub, str(item_id))
                events = await self._redis.zrange(queue, 0, -1)
                await self._redis.delete(queue, *(self._keys.outbox_event(sub, partition, str(e)) for e in events))
            for event_id in await self._redis.zrange(dead, 0, -1):
                await self._redis.delete(self._keys.outbox_event(sub, partition, str(event_id)))
            await self._redis.delete(due, dead)
