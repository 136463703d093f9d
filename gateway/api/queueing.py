"""Queueing a job (robocall or SMS) for a CRM request or a stage rule: one job per
idempotency key, its first ``job.updated`` on the item's timeline, and what to answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from config.jobs import JobKind, JobStatus
from gateway.api import params
from gateway.enqueue import enqueue
from gateway.errors import ApiError, UnknownReference
from gateway.store import Store
from gateway.store.items import Item

IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(request: web.Request) -> str | None:
    return params.header_token(request, IDEMPOTENCY_HEADER)


@dataclass(frozen=True)
class Queued:
    """The job a request made or found; ``fields`` only when this request made it."""

    job_id: str
    status: JobStatus
    fields: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.json_response({"id": self.job_id, "status": self.status.value}, status=202)


class IdempotencyConflict(ApiError):
    """A key already used with another body (409). ``job_id`` is the job it made, None when
    its first request has not made it (yet, or ever: that request died between the steps)."""

    def __init__(self, job_id: str | None) -> None:
        super().__init__(409, "idempotency_conflict", f"this {IDEMPOTENCY_HEADER} was used with a different body")
        self.job_id = job_id


class Queueing:
    """One request's way to its job: ``replayed()`` first (the same key answers the job it
    made), then ``queue()`` once the request is checked."""

    def __init__(self, store: Store, body: BaseModel, key: str | None) -> None:
        self._store = store
        self.key = key
        dumped = json.dumps(body.model_dump(mode="json"), sort_keys=True)
        self.body_hash = hashlib.sha256(dumped.encode()).hexdigest()
        self.body_json = body.model_dump_json()

    async def _found(self, job_id: str) -> Queued:
        job = await self._store.jobs.get(job_id)
        return Queued(job_id, job.status if job is not None else JobStatus.QUEUED)

    async def _conflict(self, job_id: str) -> IdempotencyConflict:
        """The conflict with the job ``job_id`` the key was claimed for, named once it is made."""
        return IdempotencyConflict(job_id if await self._store.jobs.exists(job_id) else None)

    async def replayed(self) -> Queued | None:
        """The job of a key already used (409 with another body), or None."""
        if self.key is None:
            return None
        jobs = self._store.jobs
        existing = await jobs.existing(self.key)
        if existing is None:
            return None
        if existing[1] != self.body_hash:
            raise await self._conflict(existing[0])
        job = await jobs.get(existing[0])
        if job is None:
            return None  # its request died before making it: this one makes it (``queue``)
        return Queued(job.id, job.status)

    async def item(self, item_id: str) -> Item:
        """The item the job is for (422 when the CRM has not synced it)."""
        item = await self._store.items.get(item_id)
        if item is None:
            raise UnknownReference("item_id", f"item_id: no item {item_id!r}")
        return item

    async def queue(
        self, kind: JobKind, item_id: str, fields: dict[str, str], *, delay_seconds: int, test: bool = False
    ) -> Queued:
        """Store the job (``fields`` add to the common ones) and queue it."""
        outcome = await enqueue(
            self._store,
            kind,
            item_id,
            fields,
            request_json=self.body_json,
            idempotency_key=self.key,
            body_hash=self.body_hash,
            delay_seconds=delay_seconds,
            test=test,
        )
        if not outcome.same_body:
            raise await self._conflict(outcome.job_id)
        if outcome.new:
            # A worker may already be sending it; the contract's answer to a new job is "queued".
            return Queued(outcome.job_id, JobStatus.QUEUED, fields)
        return await self._found(outcome.job_id)
