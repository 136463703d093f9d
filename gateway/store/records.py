"""Admin records (providers, lines, pipelines, triggers): one Redis hash per kind.

They are few and read on every webhook, so each kind is one hash of JSON values that is
read with one HGET or HGETALL.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

M = TypeVar("M", bound=BaseModel)


class Records(Generic[M]):
    def __init__(self, redis: Redis, key: str, model: type[M]) -> None:
        self._redis = redis
        self._key = key
        self._model = model

    async def put(self, name: str, record: M) -> bool:
        """Store ``record`` under ``name``; True when it is new."""
        return bool(await self._redis.hset(self._key, name, record.model_dump_json()))

    async def get(self, name: str) -> M | None:
        raw = await self._redis.hget(self._key, name)
        return None if raw is None else self._model.model_validate_json(raw)

    async def first(self, names: list[str]) -> tuple[str, M] | None:
        """The first of ``names`` that is stored, with its record, in one round trip."""
        if not names:
            return None
        for name, raw in zip(names, await self._redis.hmget(self._key, names), strict=True):
            if raw is not None:
                return name, self._model.model_validate_json(raw)
        return None

    async def all(self) -> dict[str, M]:
        raw = await self._redis.hgetall(self._key)
        return {str(name): self._model.model_validate_json(value) for name, value in sorted(raw.items())}

    async def delete(self, name: str) -> bool:
        return bool(await self._redis.hdel(self._key, name))
