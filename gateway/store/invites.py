"""Messenger invites by the token of their tracked link."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.keys import Keys
from gateway.store.connection import Transactions

# How long an invite's link keeps working (and counting clicks).
INVITE_TTL = 30 * 24 * 3600


class Invites:
    def __init__(self, redis: Redis, transactions: Transactions, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str)
        self._transactions = transactions
        self._keys = keys

    async def put(self, token: str, invite: Mapping[str, str]) -> None:
        key = self._keys.invite(token)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=dict(invite))  # type: ignore[arg-type]  # redis-py's mapping type is invariant
            pipe.expire(key, INVITE_TTL)

        await self._transactions.multi(key, queue)

    async def get(self, token: str) -> dict[str, str] | None:
        found: dict[str, str] = await self._redis.hgetall(self._keys.invite(token))
        return found or None
