"""Overdue timers: armed on a sorted set, moved into the events stream when due."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway.keys import Keys
from gateway.store.inbox import EVENTS_STREAM
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


async def fire_all_due(script: AsyncScript, due: str, stream: str, field: str, now: float, batch: int = 500) -> int:
    """Move every member of ``due`` due by ``now`` into ``stream`` (FIRE_DUE); how many.

    In batches (one script call each, so Redis is never blocked long) until none is left:
    a backlog is worked off at once, not ``batch`` per poll.
    """
    fired = 0
    while True:
        moved = int(await script(keys=[due, stream], args=[now, batch, field]))
        fired += moved
        if moved < batch:
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
        if timers:
            await self._redis.zadd(self._keys.timers, {timer.to_json(): timer.at for timer in timers})

    async def fire_due(self, now: float) -> int:
        return await fire_all_due(self._fire_due, self._keys.timers, self._keys.stream(EVENTS_STREAM), "event", now)
