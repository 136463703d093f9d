"""Bounded state: dead letters retried or discarded, untouched leads expiring, the timeline
paged, and overdue timers fired however many are due."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from config.settings import Settings
from config.vocabulary import EventKind
from gateway.app import create_app
from gateway.keys import JOBS_STREAM, Keys
from gateway.store import Store
from gateway.store.inbox import EVENTS_STREAM
from gateway.store.records import Snapshots
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import (
    CUSTOMER,
    LINE,
    add_item,
    configure,
    eventually,
    item,
    sms_form,
    stage_of,
    twilio_post,
    watch_missed_calls,
)
from webhooks.events import Event


def missed(ref: str, at: float | None = None, kind: EventKind = EventKind.CALL_MISSED) -> Event:
    return Event(
        kind=kind,
        provider="tw",
        line=LINE,
        customer=CUSTOMER,
        ref=ref,
        dedup=f"test:{ref}",
        at=time.time() if at is None else at,
    )


async def test_a_dead_letter_can_be_retried_or_discarded(client: Client, redis: Redis, prefix: str) -> None:
    await watch_missed_calls(client)
    keys = Keys(prefix)
    dead = keys.dead(EVENTS_STREAM, keys.partition_of(CUSTOMER))
    # An event that failed every delivery while, say, its pipeline was missing.
    first, second = [
        str(await redis.xadd(dead, {"event": missed(ref).to_json(), "_id": "1-0", "_error": "KeyError: 'sales'"}))
        for ref in ("CA1", "CA2")
    ]

    resp = await client.post(f"/v1/dead-letters/{first}/retry", headers=ADMIN)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "requeued"

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)  # processed this time
    assert (await client.post(f"/v1/dead-letters/{first}/retry", headers=ADMIN)).status == 404

    assert (await client.delete(f"/v1/dead-letters/{second}", headers=ADMIN)).status == 204
    assert (await client.delete(f"/v1/dead-letters/{second}", headers=ADMIN)).status == 404
    listed = await (await client.get("/v1/dead-letters", headers=ADMIN)).json()
    assert listed["entries"] == []
    assert (await client.delete("/v1/dead-letters/not-an-id", headers=ADMIN)).status == 422
    assert (await client.post(f"/v1/dead-letters/{second}/retry", headers=API)).status == 403


async def test_dead_letters_of_partitions_sharing_an_id_are_named_by_partition(
    client: Client, redis: Redis, prefix: str
) -> None:
    """Each partition numbers its dead letters itself: a dead_id says whose it is, and an entry
    id alone names a dead letter only while one partition holds it."""
    await watch_missed_calls(client)
    keys = Keys(prefix)
    p = keys.partition_of(CUSTOMER)
    q = (p + 1) % keys.partitions
    for partition, ref in ((p, "CA1"), (q, "CA2")):
        fields: dict[Any, Any] = {"event": missed(ref).to_json(), "_id": "1-0", "_error": "KeyError: 'sales'"}
        await redis.xadd(keys.dead(EVENTS_STREAM, partition), fields, id="7-0")
    for stream in (EVENTS_STREAM, JOBS_STREAM):
        for partition in (p, q):
            await redis.xadd(keys.dead(stream, partition), {"n": str(partition), "_id": "1-0", "_error": "x"}, id="9-0")

    async def dead_ids(stream: str) -> list[str]:
        resp = await client.get("/v1/dead-letters", params={"stream": stream}, headers=ADMIN)
        return [entry["dead_id"] for entry in (await resp.json())["entries"]]

    newer, older = sorted((p, q), reverse=True)
    assert await dead_ids(EVENTS_STREAM) == [f"9-0.{newer}", f"9-0.{older}", f"7-0.{newer}", f"7-0.{older}"]
    assert await dead_ids(JOBS_STREAM) == [f"9-0.{newer}", f"9-0.{older}"]

    resp = await client.post("/v1/dead-letters/7-0/retry", headers=ADMIN)
    assert resp.status == 409, await resp.text()
    error = (await resp.json())["error"]
    assert error["field"] == "id"
    assert f"7-0.{p}" in error["message"] and f"7-0.{q}" in error["message"], error
    assert (await client.delete("/v1/dead-letters/7-0", headers=ADMIN)).status == 409

    resp = await client.post(f"/v1/dead-letters/7-0.{q}/retry", headers=ADMIN)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["dead_id"] == f"7-0.{q}"
    assert [await redis.xlen(keys.dead(EVENTS_STREAM, partition)) for partition in (p, q)] == [2, 1]
    # Partition p alone holds 7-0 now: its entry id names it, as before partitions.
    assert (await client.delete("/v1/dead-letters/7-0", headers=ADMIN)).status == 204
    assert await dead_ids(EVENTS_STREAM) == [f"9-0.{newer}", f"9-0.{older}"]
    assert (await client.delete(f"/v1/dead-letters/7-0.{p}", headers=ADMIN)).status == 404
    assert (await client.delete(f"/v1/dead-letters/9-0.{keys.partitions}", headers=ADMIN)).status == 404

    resp = await client.delete(f"/v1/dead-letters/9-0.{q}", params={"stream": JOBS_STREAM}, headers=ADMIN)
    assert resp.status == 204
    assert await dead_ids(JOBS_STREAM) == [f"9-0.{p}"]
    assert await dead_ids(EVENTS_STREAM) == [f"9-0.{newer}", f"9-0.{older}"]  # another stream's


async def test_a_lead_nobody_touched_expires(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(lead_ttl_seconds=1)))
    await configure(client, lead=True)
    kept_number = "+34600333444"
    for number, sid in [(CUSTOMER, "SM" + "1" * 32), (kept_number, "SM" + "2" * 32)]:
        assert (await twilio_post(client, "/webhooks/twilio/sms", sms_form(sid, From=number))).status == 200

    async def leads() -> list[dict[str, Any]]:
        found = []
        for number in (CUSTOMER, kept_number):
            resp = await client.get("/v1/items", params={"phone": number}, headers=API)
            found += (await resp.json())["items"]
        return found

    async def both_created() -> bool:
        return len(await leads()) == 2

    await eventually(both_created)
    gone, kept = sorted(await leads(), key=lambda lead: lead["fields"]["phone"] != CUSTOMER)
    card = {key: kept[key] for key in ("pipeline", "stage", "fields", "contacts")}
    assert (await client.put(f"/v1/items/{kept['id']}", json=card, headers=API)).status == 200  # the CRM took it

    async def expired() -> bool:
        return (await client.get(f"/v1/items/{gone['id']}", headers=API)).status == 404

    await eventually(expired)
    assert (await client.get(f"/v1/items/{kept['id']}", headers=API)).status == 200
    assert not [key async for key in redis.scan_iter(match=f"{prefix}*{gone['id']}")]
    assert await redis.smembers(Keys(prefix).phone(CUSTOMER)) == set()


async def test_the_timeline_is_paged_newest_first(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(timeline_max=5), workers=False))
    await configure(client)
    stages = ["NEW", "CALL_BACK", "CONTACTED", "WON", "NEW", "CALL_BACK", "CONTACTED", "WON"]
    for stage in stages:  # item.created, then 7 stage changes: 8 entries, the newest 5 kept
        await add_item(client, stage=stage)

    whole = await item(client)
    assert [e["data"]["to"] for e in whole["timeline"]] == stages[3:]
    assert whole["timeline_before"] is None

    def targets(page: dict[str, Any]) -> list[str]:
        return [entry["data"]["to"] for entry in page["timeline"]]

    pages = []
    query: dict[str, str | int] = {"limit": 2}
    while True:
        resp = await client.get("/v1/items/D1", params=query, headers=API)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        pages.append(targets(page))
        if page["timeline_before"] is None:
            break
        query = {"limit": 2, "before": page["timeline_before"]}
    assert pages == [stages[6:8], stages[4:6], stages[3:4]]

    await add_item(client, stage="NEW")  # appended (and the oldest trimmed) while paging
    resp = await client.get("/v1/items/D1", params={"limit": 2, "before": 6}, headers=API)
    assert targets(await resp.json()) == stages[4:6]  # the cursor still means the same entries
    for bad in ["x", "-1", "1.5"]:
        resp = await client.get("/v1/items/D1", params={"before": bad}, headers=API)
        assert resp.status == 422, bad


async def test_overdue_timers_fire_however_many_are_due(settings: Settings, redis: Redis, prefix: str) -> None:
    store = Store.open(redis, settings, Snapshots())
    now = time.time()
    for n in range(1200):
        await store.timers.arm(missed(f"T{n}", at=now - 60, kind=EventKind.RESPONSE_OVERDUE))
    await store.timers.arm(missed("later", at=now + 3600, kind=EventKind.RESPONSE_OVERDUE))
    assert await store.timers.fire_due(now) == 1200
    keys = Keys(prefix)
    assert (await store.backlogs.of(EVENTS_STREAM)).length == 1200
    assert sum([await redis.zcard(keys.timers(p)) for p in range(keys.partitions)]) == 1
