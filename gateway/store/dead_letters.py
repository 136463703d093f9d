"""Dead letters: stream entries that failed every delivery, kept with their last error."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis

# Back into its stream as a new entry (a fresh delivery count), without the dead letter's
# own fields, and out of the dead letters, in one step: never in both, never in neither.
_RETRY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields, kept = found[1][2], {}
for i = 1, #fields, 2 do
  if fields[i] ~= '_id' and fields[i] ~= '_error' then
    table.insert(kept, fields[i])
    table.insert(kept, fields[i + 1])
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(kept))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: DecodedRedis = redis
        self._keys = keys
        self._retry = redis.register_script(_RETRY)

    async def newest(self, stream: str, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered entries, newest first, each with ``_id`` and ``_error``."""
        entries = await self._redis.xrevrange(self._keys.dead(stream), count=count)
        return [{"dead_id": entry_id, **fields} for entry_id, fields in entries]

    async def retry(self, stream: str, dead_id: str) -> str | None:
        """Put a dead letter back on its stream; the new entry's id, None when there is none."""
        keys = [self._keys.dead(stream), self._keys.stream(stream)]
        entry_id = await self._retry(keys=keys, args=[dead_id])
        return str(entry_id) if entry_id else None

    async def discard(self, stream: str, dead_id: str) -> bool:
        return bool(await self._redis.xdel(self._keys.dead(stream), dead_id))
