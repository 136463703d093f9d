"""Per-customer caps: how many jobs of a kind a number got in a day."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys

# A job counts once however often it is tried; a new one only while under the cap (none
# when ARGV[2] is empty: it counts towards other lines' caps).
_TAKE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if ARGV[2] ~= '' and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"""


class Caps:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._take: Any = redis.register_script(_TAKE)

    async def take(self, number: str, kind: str, day: str, job_id: str, cap: int | None) -> bool:
        """Count ``job_id`` in the day's jobs of ``number``; False when ``cap`` (None: no
        cap) is already reached."""
        args = [job_id, "" if cap is None else cap]
        return bool(await self._take(keys=[self._keys.cap(number, kind, day)], args=args))
