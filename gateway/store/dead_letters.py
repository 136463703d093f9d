"""Dead letters: stream entries that failed every delivery, kept with their last error."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: Any = redis
        self._keys = keys

    async def newest(self, stream: str, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered entries, newest first, each with ``_id`` and ``_error``."""
        entries = await self._redis.xrevrange(self._keys.dead(stream), count=count)
        return [{"dead_id": entry_id, **fields} for entry_id, fields in entries]
