"""Replays and idempotency keys: a signed webhook replayed after its dedup key expired moves
nothing twice; an unsigned delivery token never suppresses another event; an
Idempotency-Key reused with another body is a conflict."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from config.settings import Settings
from gateway.api.hooks import STATUS_PATH
from gateway.keys import Keys
from gateway.store import Store
from gateway.store.backlog import Backlogs
from gateway.store.inbox import EVENTS_STREAM
from gateway.store.records import Snapshots
from tests.conftest import API, Client
from tests.support import (
    CUSTOMER,
    add_item,
    configure,
    eventually,
    item,
    missed_call,
    sms_form,
    stage_of,
    timeline_types,
    twilio_post,
    watch_missed_calls,
)


async def expire_what_expires(redis: Redis, prefix: str) -> int:
    """Time passes: every key of this test that has a TTL (dedup keys, ...) is gone."""
    gone = 0
    async for key in redis.scan_iter(match=prefix + "*"):
        if await redis.ttl(key) > 0:
            gone += await redis.delete(key)
    return gone


async def processed(redis: Redis, prefix: str) -> None:
    """Wait until the events stream is drained: every entry processed and deleted."""
    backlogs = Backlogs(redis, Keys(prefix))

    async def drained() -> bool:
        return (await backlogs.of(EVENTS_STREAM)).length == 0

    await eventually(drained)


async def test_a_webhook_replayed_after_its_dedup_key_expired_moves_nothing_twice(
    client: Client, redis: Redis, prefix: str
) -> None:
    await watch_missed_calls(client)
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    await add_item(client, stage="NEW")  # the CRM moves the deal back by hand
    assert await expire_what_expires(redis, prefix) > 0

    # Twilio signatures carry no timestamp: the same signed request is valid forever.
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200
    await processed(redis, prefix)
    data = await item(client)
    assert data["stage"] == "NEW"
    assert timeline_types(data).count("call.missed") == 1
    assert timeline_types(data).count("item.stage_changed") == 2  # the trigger's and the CRM's
    assert await redis.exists(Keys(prefix).effects("D1"))
    assert (await client.delete("/v1/items/D1", headers=API)).status == 204  # the markers go with the item
    assert not await redis.exists(Keys(prefix).effects("D1"))


async def test_effect_markers_are_bounded_with_the_timeline(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    store = Store.open(redis, make_settings(timeline_max=3), Snapshots())
    for n in range(20):
        assert await store.items.record("D1", f"call.missed:tw:CA{n}", f'{{"n": {n}}}')
    assert not await store.items.record("D1", "call.missed:tw:CA19", '{"n": 19}')  # the newest are kept
    assert await redis.llen(store.keys.timeline("D1")) == 3
    assert 3 <= await redis.zcard(store.keys.effects("D1")) <= 6
    assert await redis.ttl(store.keys.effects("D1")) == -1  # kept as long as the item


async def test_a_delivery_token_never_suppresses_another_event(client: Client, redis: Redis, prefix: str) -> None:
    await configure(client)
    await add_item(client)
    token = {"I-Twilio-Idempotency-Token": "3f1c9e2a-0000-4000-8000-000000000001"}
    call = missed_call()
    assert (await twilio_post(client, STATUS_PATH, call, headers=token)).status == 200
    assert (await twilio_post(client, STATUS_PATH, call, headers=token)).status == 200  # a retry
    # Someone reuses the (unsigned) token on another, validly signed event.
    sms = sms_form(body="call me")
    assert (await twilio_post(client, "/webhooks/twilio/sms", sms, headers=token)).status == 200
    await processed(redis, prefix)
    kinds = timeline_types(await item(client))
    assert kinds.count("call.missed") == 1 and kinds.count("sms.incoming") == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'callgate_events_total{kind="call.missed",outcome="duplicate"} 1.0' in metrics
    assert 'callgate_events_total{kind="sms.incoming",outcome="accepted"} 1.0' in metrics


async def test_an_idempotency_key_reused_with_another_body_is_409(client: Client) -> None:
    key = {**API, "Idempotency-Key": "form-42"}
    first = await client.post("/v1/callback-requests", json={"phone": CUSTOMER, "name": "Ana"}, headers=key)
    assert first.status == 202 and (await first.json())["status"] == "accepted"
    again = await client.post("/v1/callback-requests", json={"phone": CUSTOMER, "name": "Ana"}, headers=key)
    assert again.status == 202 and (await again.json())["status"] == "duplicate"
    other = await client.post("/v1/callback-requests", json={"phone": "+34600999888", "name": "Eve"}, headers=key)
    assert other.status == 409, await other.text()
    assert (await other.json())["error"]["code"] == "idempotency_conflict"
