"""Stage entries: each time an item enters a stage, a record that the stage's rules are
still to run for that entry, written in the very step that moves the item (so a crash
after the move cannot lose them) and removed once every rule's outcome is on the timeline.

A worker takes due entries with a lease (their score moves to the lease's end); one that
dies holding them loses them when the lease ends, and another takes them again. Running an
entry's rules twice is harmless: each rule's job is keyed by (entry id, rule index).

An attempt is counted when a worker starts an entry, not when it takes it: a worker takes a
whole batch under one lease, and entries it never reached (it died, or the lease ended
first) have not been tried. Counted before the entry runs, an attempt that kills its
worker still counts, so an entry that does so every time can be given up.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.keys import Keys
from gateway.store.connection import Transactions
from gateway.store.nodes import pipelined, raise_first
from gateway.store.scripts import Call, run_many

# Due entries of one partition, leased until ARGV[2].
_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
"""

# The entry's attempts, this one counted; 0 when it is gone (a worker that took it after this
# one's lease ended finished it), without counting: a count would outlive the entry.
_START = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""


def new_entry_id() -> str:
    return "ent_" + secrets.token_hex(8)


@dataclass(frozen=True)
class StageEntry:
    item_id: str
    entry_id: str
    pipeline: str
    stage: str

    @property
    def member(self) -> str:
        data = {"item": self.item_id, "entry": self.entry_id, "pipeline": self.pipeline, "stage": self.stage}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_member(cls, raw: str) -> StageEntry:
        data = json.loads(raw)
        return cls(data["item"], data["entry"], data["pipeline"], data["stage"])


class StageEntries:
    def __init__(self, redis: Redis, transactions: Transactions, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str); redis-py types both modes
        self._transactions = transactions
        self._keys = keys
        self._take = redis.register_script(_TAKE)
        self._start: Any = redis.register_script(_START)

    def _key(self, item_id: str) -> str:
        return self._keys.stage_entries(self._keys.partition_of(item_id))

    def enter(self, pipe: Any, entry: StageEntry) -> None:
        """Queue on ``pipe`` (the entering step's transaction) the entry's record, due now."""
        pipe.zadd(self._key(entry.item_id), {entry.member: time.time()})

    async def take(self, now: float, lease_until: float, count: int) -> list[list[StageEntry]]:
        """Up to ``count`` due entries of each partition (one list per partition), leased
        until ``lease_until``."""
        calls: list[Call] = [
            ([self._keys.stage_entries(partition)], [repr(now), repr(lease_until), count])
            for partition in range(self._keys.partitions)
        ]
        replies = raise_first(await run_many(self._redis, self._take, calls))
        return [[StageEntry.from_member(str(member)) for member in reply] for reply in replies]

    async def start(self, entry: StageEntry) -> int:
        """Count an attempt at a taken entry, as a worker starts it: how many there have been,
        this one included; 0 when the entry is already done."""
        partition = self._keys.partition_of(entry.item_id)
        keys = [self._keys.stage_entries(partition), self._keys.stage_entry_attempts(partition)]
        return int(await self._start(keys=keys, args=[entry.member]))

    async def done(self, entry: StageEntry) -> None:
        """Drop the entry with its attempts, in one step."""
        partition = self._keys.partition_of(entry.item_id)
        entries = self._keys.stage_entries(partition)

        def queue(pipe: Pipeline) -> None:
            pipe.zrem(entries, entry.member)
            pipe.hdel(self._keys.stage_entry_attempts(partition), entry.member)

        await self._transactions.multi(entries, queue)

    async def waiting(self) -> int:
        """How many entries wait, leased or not."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zcard(self._keys.stage_entries(partition))
            return sum(int(n) for n in await pipe.execute())
