"""Rate limits shared by every process: GCRA in one Lua step on Redis' clock.

Each send reserves the next free slot (the theoretical arrival time moves on by one
interval), so any number of workers in any number of processes send at most one message or
call per interval, never a burst; a slot further away than the caller will wait is not taken.
A send under several limits at once (its provider's and its line's) takes one slot that is
free in all of them, in the same step: none is taken unless all are, so nothing leaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.keys import Keys

# KEYS: the limits; ARGV[1]: the longest wait, ARGV[1 + i]: the interval of KEYS[i].
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local max_wait = tonumber(ARGV[1])
local start = now
for _, key in ipairs(KEYS) do
  start = math.max(start, tonumber(redis.call('GET', key) or '0'))
end
if start - now > max_wait then
  return {0, string.format('%.6f', start), string.format('%.6f', start - now)}
end
for i, key in ipairs(KEYS) do
  local next_free = start + tonumber(ARGV[i + 1])
  redis.call('SET', key, string.format('%.6f', next_free), 'PX', math.ceil((next_free - now) * 1000) + 1000)
end
return {1, string.format('%.6f', start), string.format('%.6f', start - now)}
"""

# A pause moves the next free slot to ``seconds`` from now unless it is later already: many
# processes told "429" at once hold the limit off once, not once each.
_PAUSE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local resume = now + tonumber(ARGV[1])
if resume > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.6f', resume), 'PX', math.ceil((resume - now) * 1000) + 1000)
end
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
        self._pause = redis.register_script(_PAUSE)

    async def reserve(self, rates: Mapping[str, float], max_wait: float) -> Slot:
        """The next slot free in every limit of ``rates`` (name -> slots a second), taken in
        all of them when it is at most ``max_wait`` seconds away."""
        names = sorted(rates)
        args = [max_wait, *(1 / rates[name] for name in names)]
        granted, at, wait = await self._reserve(keys=[self._keys.limit(name) for name in names], args=args)
        return Slot(bool(int(granted)), float(at), float(wait))

    async def pause(self, name: str, seconds: float) -> None:
        """Give limit ``name`` no slot for ``seconds`` from now (the provider said it is over
        its rate); slots taken before stay taken."""
        await self._pause(keys=[self._keys.limit(name)], args=[seconds])
