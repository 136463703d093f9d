"""How far a stream's consumers are behind: what an operator alerts on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis


@dataclass(frozen=True)
class Backlog:
    length: int  # entries stored: processed entries are deleted, so all are still to do
    pending: int  # delivered to a consumer and not yet acknowledged
    oldest_pending_seconds: float  # since the oldest pending entry was added; 0 when none


class Backlogs:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: DecodedRedis = redis
        self._keys = keys

    async def of(self, stream: str) -> Backlog:
        key = self._keys.stream(stream)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(key)
            pipe.exists(key)
            length, exists = await pipe.execute()
        if not exists:
            return Backlog(0, 0, 0.0)
        try:
            summary = await self._redis.xpending(key, stream)
        except ResponseError as exc:  # NOGROUP: no consumer has started yet
            if "NOGROUP" not in str(exc):
                raise
            return Backlog(int(length), 0, 0.0)
        pending = int(summary["pending"])
        oldest = summary["min"] if pending else None
        # An entry id starts with the Redis time it was added, in milliseconds.
        age = max(0.0, time.time() - int(str(oldest).split("-")[0]) / 1000) if oldest else 0.0
        return Backlog(int(length), pending, age)
