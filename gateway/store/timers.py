"""Overdue timers: armed on a sorted set, moved into the events stream when due."""

from __future__ import annotations

from redis.asyncio import Redis

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


class Timers:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._fire_due = redis.register_script(FIRE_DUE)

    async def arm(self, timer: Event) -> None:
        """Schedule ``timer`` (a ``response.overdue``) for its ``at``; arming twice is harmless."""
        await self._redis.zadd(self._keys.timers, {timer.to_json(): timer.at})

    async def fire_due(self, now: float, limit: int = 100) -> int:
        stream = self._keys.stream(EVENTS_STREAM)
        return int(await self._fire_due(keys=[self._keys.timers, stream], args=[now, limit, "event"]))
