"""Triggers through the public API: every kind, filters, allow_back, act_as, leads, overdue."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import STORE
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import (
    CUSTOMER,
    LINE,
    add_item,
    add_trigger,
    call_form,
    configure,
    eventually,
    item,
    processed,
    sms_form,
    stage_of,
    timeline_types,
    twilio_post,
)

MISSED = call_form(CallStatus="completed", DialCallStatus="busy")


async def _moves(client: Client, item_id: str = "D1") -> list[dict[str, Any]]:
    return [e["data"] for e in (await item(client, item_id))["timeline"] if e["type"] == "item.stage_changed"]


async def _settle(client: Client, count: int, item_id: str = "D1") -> None:
    async def enough() -> bool:
        types = timeline_types(await item(client, item_id))
        return len([t for t in types if not t.startswith("item.")]) >= count

    await eventually(enough)
    await processed(client)  # any (wrong) extra effect has landed by now


async def test_trigger_validation_errors(client: Client) -> None:
    await configure(client)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"event": "call.missed", "pipeline": "nope"}, "pipeline"),
        ({"event": "call.missed", "target_stage": "NOPE"}, "target_stage"),
        ({"event": "call.missed", "line": "+34910009999"}, "line"),
        ({"event": "call.missed", "line": "not a number"}, "line"),
        ({"event": "sms.incoming", "keywords": [""]}, "keywords.0"),
        ({"event": "call.ringing"}, "event"),
    ]
    for body, field in cases:
        resp = await client.post(
            "/v1/triggers", json={"name": "t", "pipeline": "sales", "target_stage": "WON", **body}, headers=ADMIN
        )
        assert resp.status == 422, (body, await resp.text())
        assert (await resp.json())["error"]["field"] == field
    resp = await client.post(
        "/v1/triggers",
        json={"name": "t", "event": "response.overdue", "pipeline": "sales", "target_stage": "WON"},
        headers=ADMIN,
    )
    error = (await resp.json())["error"]
    assert (resp.status, error["field"]) == (422, "seconds")  # a rule between fields names its field
    assert error["message"] == "seconds is required for response.overdue triggers, and only for them"
    assert (await client.post("/v1/triggers", json={}, headers=API)).status == 403


async def test_trigger_crud(client: Client) -> None:
    await configure(client)
    first = await add_trigger(client, event="call.missed")
    second = await add_trigger(client, event="sms.incoming", keywords=["hola"])
    listed = (await (await client.get("/v1/triggers", headers=ADMIN)).json())["triggers"]
    assert [t["id"] for t in listed] == [first, second]
    assert listed[0]["allow_back"] is False and listed[0]["act_as"] is None
    assert (await client.delete(f"/v1/triggers/{first}", headers=ADMIN)).status == 204
    assert (await client.delete(f"/v1/triggers/{first}", headers=ADMIN)).status == 404


async def test_no_backwards_move_unless_allowed(client: Client) -> None:
    await configure(client)
    await add_item(client, stage="CONTACTED")
    await add_trigger(client, event="call.missed", target_stage="CALL_BACK")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", MISSED)).status == 200
    await _settle(client, 1)
    assert await stage_of(client) == "CONTACTED"

    await add_item(client, "D2", stage="CONTACTED", phone="+34600111333")
    await add_trigger(client, event="call.missed", target_stage="NEW", allow_back=True, act_as="robot")
    form = call_form("CA" + "7" * 32, From="+34600111333", CallStatus="completed", DialCallStatus="no-answer")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", form)).status == 200

    async def moved_back() -> bool:
        return await stage_of(client, "D2") == "NEW"

    await eventually(moved_back)
    last = (await _moves(client, "D2"))[-1]
    assert last == {
        "from": "CONTACTED",
        "to": "NEW",
        "trigger_id": last["trigger_id"],
        "act_as": "robot",
        "cause": "call.missed",
        "entry_id": last["entry_id"],
    }
    assert last["entry_id"].startswith("ent_")


async def test_line_filter(client: Client) -> None:
    await configure(client)
    await client.put("/v1/lines/+34910000002", json={"provider": "tw", "forward_to": []}, headers=ADMIN)
    await add_item(client)
    await add_trigger(client, event="call.incoming", line="+34910000002", target_stage="WON")
    await add_trigger(client, event="call.incoming", line=LINE, target_stage="CONTACTED")
    assert (await twilio_post(client, "/webhooks/twilio/voice", call_form())).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CONTACTED"

    await eventually(moved)
    await processed(client)
    assert await stage_of(client) == "CONTACTED"


async def test_outgoing_call_fires_but_calls_we_placed_do_not(client: Client, redis: Redis, prefix: str) -> None:
    await configure(client)
    await add_item(client)
    await add_item(client, "D2", phone="+34600111333")
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    robocall = "CA" + "9" * 32
    await redis.hset(f"{prefix}call:tw:{robocall}", "job", "job-1")
    ours = call_form(robocall, From=LINE, To="+34600111333", Direction="outbound-api", CallStatus="initiated")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", ours)).status == 200
    manager = call_form(From=LINE, To=CUSTOMER, Direction="outbound-api", CallStatus="ringing")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", manager)).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CONTACTED"

    await eventually(moved)
    await processed(client)  # D2's status event too
    assert await stage_of(client, "D2") == "NEW"
    assert "call.outgoing" not in timeline_types(await item(client, "D2"))


async def test_out_of_order_status_does_not_move_call_backwards(client: Client, redis: Redis, prefix: str) -> None:
    await configure(client)
    await add_item(client)
    sid = "CA" + "5" * 32
    done = call_form(sid, From=LINE, To=CUSTOMER, Direction="outbound-api", CallStatus="completed", SequenceNumber="3")
    late = call_form(
        sid, From=LINE, To=CUSTOMER, Direction="outbound-api", CallStatus="in-progress", SequenceNumber="2"
    )
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", done)).status == 200
    await _settle(client, 1)
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", late)).status == 200
    await processed(client)
    assert await redis.hget(f"{prefix}call:tw:{sid}", "status") == "completed"
    assert "call.answered" not in timeline_types(await item(client))


async def test_callback_request_fires_trigger_and_creates_lead(client: Client) -> None:
    await configure(client, lead=True)
    await add_item(client)
    await add_trigger(client, event="callback.requested", target_stage="CALL_BACK")
    body = {"phone": CUSTOMER, "name": "Ana", "line": LINE}
    first = await client.post("/v1/callback-requests", json=body, headers={**API, "Idempotency-Key": "form-1"})
    again = await client.post("/v1/callback-requests", json=body, headers={**API, "Idempotency-Key": "form-1"})
    assert first.status == again.status == 202
    assert (await again.json())["status"] == "duplicate"

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    stranger = {"phone": "+34600555444", "name": "Luis", "line": LINE}
    assert (await client.post("/v1/callback-requests", json=stranger, headers=API)).status == 202

    async def lead() -> bool:
        found = await client.get("/v1/items", params={"phone": "+34600555444"}, headers=API)
        items = (await found.json())["items"]
        return bool(items) and items[0]["stage"] == "CALL_BACK" and items[0]["contacts"][0]["name"] == "Luis"

    await eventually(lead)
    found = await client.get("/v1/items", params={"phone": "+34600555444"}, headers=API)
    # The name is a field too, so stage rules' templates can say it ({{name}}).
    assert (await found.json())["items"][0]["fields"]["name"] == "Luis"
    (moved_lead,) = await _moves(client, (await found.json())["items"][0]["id"])
    assert moved_lead["act_as"] is None  # no act_as on the trigger, nobody responsible for a lead
    bad = await client.post("/v1/callback-requests", json={"phone": "12", "line": LINE}, headers=API)
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "phone"


async def test_response_overdue_fires_unless_answered(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_item(client, "D2", phone="+34600111333")
    await add_trigger(client, event="response.overdue", seconds=600, target_stage="CALL_BACK")
    await twilio_post(client, "/webhooks/twilio/sms", sms_form(body="hello?"))
    await twilio_post(client, "/webhooks/twilio/sms", sms_form("SM" + "3" * 32, From="+34600111333", body="hi"))
    # We call D2's customer back before the deadline: that answer voids its timer.
    callback = call_form(From=LINE, To="+34600111333", Direction="outbound-api", CallStatus="ringing")
    await twilio_post(client, "/webhooks/twilio/voice/status", callback)
    await processed(client)  # both timers armed, the answer recorded

    # The timers polled with a clock past their deadline, instead of waiting for it.
    assert await client.app[STORE].timers.fire_due(time.time() + 601) == 2
    await processed(client)
    assert await stage_of(client) == "CALL_BACK"
    assert await stage_of(client, "D2") == "NEW"
    assert "response.overdue" in timeline_types(await item(client))
    assert "response.overdue" not in timeline_types(await item(client, "D2"))


async def test_overdue_timer_fires_after_restart(aiohttp_client: ClientFactory, settings: Settings) -> None:
    first = await aiohttp_client(create_app(settings))
    await configure(first)
    await add_item(first)
    await add_trigger(first, event="response.overdue", seconds=2, target_stage="WON")
    assert (await twilio_post(first, "/webhooks/twilio/voice/status", MISSED)).status == 200
    await _settle(first, 1)
    await first.close()  # the gateway goes down with the timer armed

    second = await aiohttp_client(create_app(settings))

    async def fired() -> bool:
        return await stage_of(second) == "WON"

    await eventually(fired)


@pytest.mark.parametrize("token", ["same-token"])
async def test_idempotency_token_dedupes_retries(client: Client, redis: Redis, prefix: str, token: str) -> None:
    await configure(client)
    await add_item(client)
    headers = {"I-Twilio-Idempotency-Token": token}
    for _ in range(3):
        assert (await twilio_post(client, "/webhooks/twilio/sms", sms_form(), headers=headers)).status == 200
    await _settle(client, 1)
    assert timeline_types(await item(client)).count("sms.incoming") == 1
    keys = client.app[STORE].keys
    assert await redis.exists(keys.dedup(keys.partition_of(CUSTOMER), f"token:tw:{token}"))


async def test_triggers_of_one_event_apply_in_order_each_on_the_last_stage(client: Client) -> None:
    await configure(client)
    await add_item(client, stage="CONTACTED")
    await add_trigger(client, event="call.missed", target_stage="NEW", allow_back=True)
    await add_trigger(client, event="call.missed", target_stage="CALL_BACK")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", MISSED)).status == 200

    async def moved_twice() -> bool:
        return len(await _moves(client)) == 2

    await eventually(moved_twice)
    assert [(m["from"], m["to"]) for m in await _moves(client)] == [("CONTACTED", "NEW"), ("NEW", "CALL_BACK")]
    assert await stage_of(client) == "CALL_BACK"
