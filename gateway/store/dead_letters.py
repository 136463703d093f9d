"""Dead letters: stream entries that failed every delivery, kept with their last error.

A partitioned stream keeps its dead letters per partition, each numbered by its own stream:
two partitions may hold the same id, so a dead letter is named ``<entry id>.<partition>``
(as the events feed's cursor is), or by its entry id alone when one partition holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis
from gateway.store.nodes import pipelined

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


class AmbiguousDeadLetter(Exception):
    """A dead letter named by its entry id alone, which several partitions hold."""

    def __init__(self, name: str, candidates: list[str]) -> None:
        super().__init__(f"{name} is the entry id of dead letters {', '.join(candidates)}")
        self.candidates = candidates


def dead_id(entry_id: str, partition: int | None) -> str:
    return entry_id if partition is None else f"{entry_id}.{partition}"


@dataclass(frozen=True)
class DeadLetter:
    stream: str
    partition: int | None
    entry_id: str  # in the partition's dead-letter stream


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: DecodedRedis = redis
        self._keys = keys
        self._retry = redis.register_script(_RETRY)

    async def newest(self, stream: str, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered entries of all the stream's partitions, newest first,
        each with its ``dead_id``, ``_id`` (its id in the stream) and ``_error``."""
        partitions = self._keys.partitions_of(stream)
        async with pipelined(self._redis) as pipe:
            for partition in partitions:
                pipe.xrevrange(self._keys.dead(stream, partition), count=count)
            replies = await pipe.execute()
        found = [
            (entry_id, p, fields)
            for p, entries in zip(partitions, replies, strict=True)
            for entry_id, fields in entries
        ]
        found.sort(key=lambda entry: (*map(int, entry[0].split("-")), entry[1] or 0), reverse=True)
        return [{"dead_id": dead_id(entry_id, p), **fields} for entry_id, p, fields in found[:count]]

    async def find(self, stream: str, name: str) -> DeadLetter | None:
        """The dead letter ``name`` names (its ``dead_id``, or an entry id one partition holds);
        None when there is none. Raises ``AmbiguousDeadLetter`` for an entry id several
        partitions hold."""
        partitions = self._keys.partitions_of(stream)
        entry_id, dot, qualifier = name.partition(".")
        if dot:
            named = int(qualifier)
            return DeadLetter(stream, named, entry_id) if named in partitions else None
        async with pipelined(self._redis) as pipe:
            for partition in partitions:
                pipe.xrange(self._keys.dead(stream, partition), min=entry_id, max=entry_id)
            replies = await pipe.execute()
        holders = [partition for partition, found in zip(partitions, replies, strict=True) if found]
        if len(holders) > 1:
            raise AmbiguousDeadLetter(name, [dead_id(entry_id, partition) for partition in holders])
        return DeadLetter(stream, holders[0], entry_id) if holders else None

    async def retry(self, letter: DeadLetter) -> str | None:
        """Put a dead letter back on its stream (its partition); the new entry's id, None
        when it is gone."""
        keys = [self._keys.dead(letter.stream, letter.partition), self._keys.stream(letter.stream, letter.partition)]
        entry_id = await self._retry(keys=keys, args=[letter.entry_id])
        return str(entry_id) if entry_id else None

    async def discard(self, letter: DeadLetter) -> bool:
        return bool(await self._redis.xdel(self._keys.dead(letter.stream, letter.partition), letter.entry_id))
