"""How far a stream's consumers are behind: what an operator alerts on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis
from gateway.store.nodes import pipelined


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
        """The backlog of ``stream``, summed over its partitions (the oldest: of all), in
        one round trip."""
        keys = [self._keys.stream(stream, partition) for partition in self._keys.partitions_of(stream)]
        async with pipelined(self._redis) as pipe:
            for key in keys:
                pipe.xlen(key)
                pipe.xpending(key, stream)
            replies = await pipe.execute(raise_on_error=False)
        length, pending, oldest = 0, 0, None
        for count, summary in zip(replies[::2], replies[1::2], strict=True):
            for reply in (count, summary):
                # NOGROUP: the stream or its group does not exist yet (no consumer started).
                if isinstance(reply, Exception) and not (isinstance(reply, ResponseError) and "NOGROUP" in str(reply)):
                    raise reply
            length += int(count) if not isinstance(count, Exception) else 0
            if isinstance(summary, Exception) or not int(summary["pending"]):
                continue
            pending += int(summary["pending"])
            # An entry id starts with the Redis time it was added, in milliseconds.
            added = int(str(summary["min"]).split("-")[0])
            oldest = added if oldest is None else min(oldest, added)
        age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return Backlog(length, pending, age)
