"""Open SMS conversations, one per customer: which line it is on and which message opened it."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.keys import Keys
from gateway.store.connection import Transactions

# Opens a conversation unless one is open; either way it stays open ``idle`` seconds more.
# 1 when this message opened it (also when the same message is processed again after a
# crash: its reply may be what the crash prevented).
_TOUCH = """
local opener = redis.call('HGET', KEYS[1], 'opened_by')
local opened = 0
if not opener then
  redis.call('HSET', KEYS[1], 'opened_by', ARGV[1], 'line', ARGV[2])
  opened = 1
elseif opener == ARGV[1] then
  opened = 1
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return opened
"""


class Conversations:
    def __init__(self, redis: Redis, transactions: Transactions, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str)
        self._transactions = transactions
        self._keys = keys
        self._touch = redis.register_script(_TOUCH)

    async def touch(self, customer: str, line: str, message: str, idle_seconds: int) -> bool:
        """Note ``message`` from ``customer`` on ``line``; True when it opens the conversation."""
        args: list[str | int] = [message, line, idle_seconds]
        return bool(await self._touch(keys=[self._keys.conversation(customer)], args=args))

    async def close(self, customer: str) -> str | None:
        """End the customer's conversation; the line it was on, or None when none was open."""
        key = self._keys.conversation(customer)

        def queue(pipe: Pipeline) -> None:
            pipe.hget(key, "line")
            pipe.delete(key)

        line, _ = await self._transactions.multi(key, queue)
        return None if line is None else str(line)
