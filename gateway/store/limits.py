"""Provider rate limits shared by every process: GCRA in one Lua step on Redis' clock.

Each call reserves the next free slot (the theoretical arrival time moves on by one
interval), so any number of workers in any number of processes place at most one call per
interval, never a burst; a slot further away than the caller will wait is not taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.keys import Keys

_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if start - now > max_wait then
  return {0, string.format('%.6f', start), string.format('%.6f', start - now)}
end
local next_free = start + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_free), 'PX', math.ceil((next_free - now) * 1000) + 1000)
return {1, string.format('%.6f', start), string.format('%.6f', start - now)}
"""


@dataclass(frozen=True)
class Slot:
    granted: bool
    at: float  # Redis time (unix seconds) of the slot
    wait: float  # seconds from now until it


class Limits:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._reserve = redis.register_script(_RESERVE)

    async def reserve(self, name: str, per_second: float, max_wait: float) -> Slot:
        """The next slot of limit ``name`` (``per_second`` slots a second), taken when it is
        at most ``max_wait`` seconds away."""
        granted, at, wait = await self._reserve(keys=[self._keys.limit(name)], args=[1 / per_second, max_wait])
        return Slot(bool(int(granted)), float(at), float(wait))
