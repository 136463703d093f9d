"""Creating a job: the one way a CRM request, a stage rule or an automatic reply puts a
robocall or SMS on the jobs core."""

from __future__ import annotations

import secrets
import time
from typing import Any

from config.jobs import JobKind, JobStatus
from gateway.store import Store
from gateway.store.items import now_iso, timeline_entry
from gateway.store.jobs import Created


async def enqueue(
    store: Store,
    kind: JobKind,
    item_id: str,
    fields: dict[str, str],
    *,
    request_json: str,
    idempotency_key: str | None,
    body_hash: str,
    delay_seconds: int = 0,
    test: bool = False,
) -> Created:
    """Store the job (``fields`` add to the common ones), its first ``job.updated`` on the
    item's timeline, and queue it; a job ``idempotency_key`` already made is not made again."""
    job_id = "job_" + secrets.token_hex(8)
    created = time.time()
    stamp = now_iso(created)
    common = {
        "id": job_id,
        "kind": kind.value,
        "status": JobStatus.QUEUED.value,
        "item_id": item_id,
        "test": "1" if test else "",
        "request": request_json,
        "dial": "1",
        "tries": "0",
        "created_at": stamp,
        "updated_at": stamp,
    }
    data: dict[str, Any] = {"job_id": job_id, "kind": kind.value, "status": "queued", "test": test}
    if kind is JobKind.SMS:
        data["text"] = fields["text"]  # the conversation reads in both directions on the timeline
    return await store.jobs.create(
        {**common, **fields},
        idempotency_key=idempotency_key,
        body_hash=body_hash,
        created=created,
        due=created + delay_seconds if delay_seconds else 0,
        entry=timeline_entry("job.updated", data, created),
    )
