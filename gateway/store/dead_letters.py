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
        """The newest dead-lettered entries of all the stream's partitions, newest first,
        each with ``_id`` and ``_error``."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in self._keys.partitions_of(stream):
                pipe.xrevrange(self._keys.dead(stream, partition), count=count)
            found = [entry for entries in await pipe.execute() for entry in entries]
        found.sort(key=lambda entry: tuple(int(part) for part in entry[0].split("-")), reverse=True)
        return [{"dead_id": entry_id, **fields} for entry_id, fields in found[:count]]

    async def retry(self, stream: str, dead_id: str) -> str | None:
        """Put a dead letter back on its stream (its partition); the new entry's id, None
        when there is none."""
        for partition in self._keys.partitions_of(stream):
            keys = [self._keys.dead(stream, partition), self._keys.stream(stream, partition)]
            entry_id = await self._retry(keys=keys, args=[dead_id])
            if entry_id:
                return str(entry_id)
        return None

    async def discard(self, stream: str, dead_id: str) -> bool:
        for partition in self._keys.partitions_of(stream):
            if await self._redis.xdel(self._keys.dead(stream, partition), dead_id):
                return True
        return False
