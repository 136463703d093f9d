"""Stage entries: each time an item enters a stage, a record that the stage's rules are
still to run for that entry, written in the very step that moves the item (so a crash
after the move cannot lose them) and removed once every rule's outcome is on the timeline.

A worker takes due entries with a lease (their score moves to the lease's end); one that
dies holding them loses them when the lease ends, and another takes them again. Running an
entry's rules twice is harmless: each rule's job is keyed by (entry id, rule index). Each
take counts an attempt, so an entry that keeps failing can be given up.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.connection import Transactions
from gateway.store.scripts import Call, raise_first, run_many

# Due entries of one partition, leased until ARGV[2] and their attempts counted in the same
# step: {member, attempt, member, attempt, ...}.
_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local taken = {}
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
  table.insert(taken, member)
  table.insert(taken, redis.call('HINCRBY', KEYS[2], member, 1))
end
return taken
"""


def new_entry_id() -> str:
    return "ent_" + secrets.token_hex(8)


@dataclass(frozen=True)
class StageEntry:
    item_id: str
    entry_id: str
    pipeline: str
    stage: str
    # How many times a worker took it, this time included (0: not taken); not its identity.
    attempt: int = field(default=0, compare=False)

    @property
    def member(self) -> str:
        data = {"item": self.item_id, "entry": self.entry_id, "pipeline": self.pipeline, "stage": self.stage}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_member(cls, raw: str, attempt: int = 0) -> StageEntry:
        data = json.loads(raw)
        return cls(data["item"], data["entry"], data["pipeline"], data["stage"], attempt)


class StageEntries:
    def __init__(self, redis: Redis, transactions: Transactions, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str); redis-py types both modes
        self._transactions = transactions
        self._keys = keys
        self._take = redis.register_script(_TAKE)

    def _key(self, item_id: str) -> str:
        return self._keys.stage_entries(self._keys.partition_of(item_id))

    def enter(self, pipe: Any, entry: StageEntry) -> None:
        """Queue on ``pipe`` (the entering step's transaction) the entry's record, due now."""
        pipe.zadd(self._key(entry.item_id), {entry.member: time.time()})

    async def take(self, now: float, lease_until: float, count: int) -> list[list[StageEntry]]:
        """Up to ``count`` due entries of each partition (one list per partition), leased
        until ``lease_until``, each with its attempt."""
        calls: list[Call] = [
            (
                [self._keys.stage_entries(partition), self._keys.stage_entry_attempts(partition)],
                [repr(now), repr(lease_until), count],
            )
            for partition in range(self._keys.partitions)
        ]
        replies = raise_first(await run_many(self._redis, self._take, calls))
        return [
            [StageEntry.from_member(str(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]
            for reply in replies
        ]

    async def done(self, entry: StageEntry) -> None:
        """Drop the entry with its attempts, in one step."""
        partition = self._keys.partition_of(entry.item_id)
        async with self._transactions.pipeline(self._keys.stage_entries(partition)) as pipe:
            pipe.zrem(self._keys.stage_entries(partition), entry.member)
            pipe.hdel(self._keys.stage_entry_attempts(partition), entry.member)
            await pipe.execute()

    async def waiting(self) -> int:
        """How many entries wait, leased or not."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zcard(self._keys.stage_entries(partition))
            return sum(int(n) for n in await pipe.execute())
