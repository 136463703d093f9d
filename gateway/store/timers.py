"""Overdue timers: armed on a sorted set per partition, moved into the customer's events
partition when due."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway.keys import EVENTS_STREAM, Keys
from gateway.store.nodes import pipelined, raise_first
from gateway.store.scripts import Call, run_many
from webhooks.events import Event

# Due members of a sorted set (timers, scheduled jobs) move into a stream in one step, so
# each fires exactly once even with many workers polling, and none is lost if a worker dies
# mid-poll. ARGV[3] is the stream field the member goes into.
FIRE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', ARGV[3], member)
end
return #due
"""


async def fire_all_due(
    redis: Redis, script: AsyncScript, pairs: Sequence[tuple[str, str]], field: str, now: float, batch: int = 500
) -> int:
    """Move every member of each ``(due, stream)`` pair's ``due`` set due by ``now`` into its
    ``stream`` (FIRE_DUE); how many.

    In batches (one script call each, so Redis is never blocked long; the pairs' calls in one
    round trip) until none is left: a backlog is worked off at once, not ``batch`` per poll.
    """
    fired, todo = 0, list(pairs)
    while todo:
        calls: list[Call] = [([due, stream], [now, batch, field]) for due, stream in todo]
        moved = [int(count) for count in raise_first(await run_many(redis, script, calls))]
        fired += sum(moved)
        todo = [pair for pair, count in zip(todo, moved, strict=True) if count >= batch]
    return fired


class Timers:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._fire_due = redis.register_script(FIRE_DUE)

    async def arm(self, timer: Event) -> None:
        """Schedule ``timer`` (a ``response.overdue``) for its ``at``; arming twice is harmless."""
        await self.arm_all([timer])

    async def arm_all(self, timers: Sequence[Event]) -> None:
        """``arm`` for each of ``timers``, in one round trip."""
        by_partition: dict[int, dict[str, float]] = {}
        for timer in timers:
            by_partition.setdefault(self._keys.partition_of(timer.customer), {})[timer.to_json()] = timer.at
        if by_partition:
            async with pipelined(self._redis) as pipe:
                for partition, due in by_partition.items():
                    pipe.zadd(self._keys.timers(partition), due)
                await pipe.execute()

    async def fire_due(self, now: float) -> int:
        """Move the timers due by ``now`` into the events stream; how many."""
        pairs = [(self._keys.timers(p), self._keys.stream(EVENTS_STREAM, p)) for p in range(self._keys.partitions)]
        return await fire_all_due(self._redis, self._fire_due, pairs, "event", now)
