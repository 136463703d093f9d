"""Creating a job: the one way a CRM request, a stage rule or an automatic reply puts a
robocall or SMS on the jobs core."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from config.jobs import JobKind, JobStatus
from gateway.store import Store
from gateway.store.items import now_iso, timeline_entry


@dataclass(frozen=True)
class Created:
    job_id: str
    new: bool
    same_body: bool


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
    item's timeline, and queue it; a job ``idempotency_key`` already made is not made again.

    The key is claimed first, in its own step, with the id the job will have; the job is
    made in a second step (in the item's slot) that any request holding that id may run:
    a request that died between the two leaves its retry able to finish the job.
    """
    job_id = store.jobs.new_id(item_id)
    if idempotency_key is not None:
        job_id, claimed_hash = await store.jobs.claim(idempotency_key, job_id, body_hash)
        if claimed_hash != body_hash:
            return Created(job_id, new=False, same_body=False)
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
    new = await store.jobs.create(
        {**common, **fields},
        created=created,
        due=created + delay_seconds if delay_seconds else 0,
        entry=timeline_entry("job.updated", data, created),
    )
    return Created(job_id, new=new, same_body=True)
