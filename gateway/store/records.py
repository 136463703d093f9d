"""Admin records (providers, lines, pipelines, triggers): one Redis hash per kind.

They are few, rarely written and read on every webhook and event, so each process keeps
them parsed in memory for ``SNAPSHOT_SECONDS``: a write through this process is seen at
once, a write through another process within that time.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

M = TypeVar("M", bound=BaseModel)

SNAPSHOT_SECONDS = 1.0


class Snapshots:
    """Parsed records per hash, shared by every store of one process (API and workers).

    A snapshot read while this process wrote the hash is not kept: it may predate the write.
    """

    def __init__(self, ttl: float = SNAPSHOT_SECONDS) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self._writes: dict[str, int] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def writes(self, key: str) -> int:
        """How many times this process changed ``key``: pass it to ``put``."""
        return self._writes.get(key, 0)

    def put(self, key: str, records: dict[str, Any], writes: int) -> None:
        """Keep ``records``, read when ``writes(key)`` was ``writes``, unless a write came since."""
        if writes == self.writes(key):
            self._entries[key] = (time.monotonic() + self._ttl, records)

    def drop(self, key: str) -> None:
        self._writes[key] = self.writes(key) + 1
        self._entries.pop(key, None)


class Records(Generic[M]):
    def __init__(self, redis: Redis, key: str, model: type[M], snapshots: Snapshots) -> None:
        self._redis = redis
        self._key = key
        self._model = model
        self._snapshots = snapshots

    async def _snapshot(self) -> dict[str, M]:
        cached = self._snapshots.get(self._key)
        if cached is None:
            writes = self._snapshots.writes(self._key)
            raw = await self._redis.hgetall(self._key)
            cached = {str(name): self._model.model_validate_json(value) for name, value in raw.items()}
            self._snapshots.put(self._key, cached, writes)
        return cached

    async def put(self, name: str, record: M) -> bool:
        """Store ``record`` under ``name``; True when it is new."""
        created = bool(await self._redis.hset(self._key, name, record.model_dump_json()))
        self._snapshots.drop(self._key)
        return created

    async def put_many(self, records: dict[str, M]) -> None:
        """Store several records in one step (a reordering is seen whole or not at all)."""
        await self._redis.hset(self._key, mapping={name: r.model_dump_json() for name, r in records.items()})
        self._snapshots.drop(self._key)

    async def get(self, name: str) -> M | None:
        return (await self._snapshot()).get(name)

    async def first(self, names: list[str]) -> tuple[str, M] | None:
        """The first of ``names`` that is stored, with its record."""
        records = await self._snapshot()
        return next(((name, records[name]) for name in names if name in records), None)

    async def all(self) -> dict[str, M]:
        return dict(sorted((await self._snapshot()).items()))

    async def fresh(self) -> dict[str, M]:
        """``all`` as stored right now, another process's writes included."""
        self._snapshots.drop(self._key)
        return await self.all()

    async def delete(self, name: str) -> bool:
        deleted = bool(await self._redis.hdel(self._key, name))
        self._snapshots.drop(self._key)
        return deleted
