"""Real Twilio traffic, as Twilio documents it: outgoing calls however they are reported,
out-of-order callbacks, withheld callers, every SMS status, MMS media."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.appkeys import STORE
from gateway.engine.leads import lead_id
from tests.conftest import ADMIN, API, Client
from tests.support import (
    ACCOUNT_SID,
    AGENT,
    CUSTOMER,
    LINE,
    add_item,
    add_trigger,
    call_form,
    configure,
    eventually,
    item,
    metric,
    processed,
    sign,
    sms_form,
    sms_status_form,
    stage_of,
    status_form,
    timeline_types,
    twilio_post,
)

STATUS = "/webhooks/twilio/voice/status"
OUTBOUND_SID = "CA" + "5" * 32
# A click-to-call placed through the REST API: From is our line, To the customer.
OUTBOUND = {"From": LINE, "To": CUSTOMER, "Direction": "outbound-api"}


async def moved_to(client: Client, stage: str, item_id: str = "D1") -> None:
    async def check() -> bool:
        return await stage_of(client, item_id) == stage

    await eventually(check)


async def test_outgoing_call_reported_only_by_completed(client: Client) -> None:
    """Twilio's default StatusCallback sends only `completed`: that alone is the outgoing call."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    completed = status_form(OUTBOUND_SID, "completed", **OUTBOUND)
    for _ in range(2):  # a retry adds nothing
        assert (await twilio_post(client, STATUS, completed)).status == 200
    await moved_to(client, "CONTACTED")
    data = await item(client)
    assert timeline_types(data).count("call.outgoing") == 1
    outgoing = next(e for e in data["timeline"] if e["type"] == "call.outgoing")["data"]
    assert (outgoing["line"], outgoing["customer"], outgoing["status"]) == (LINE, CUSTOMER, "completed")
    assert outgoing["CallDuration"] == "42"


@pytest.mark.parametrize(
    ("path", "form", "agents", "kinds"),
    [
        # The outgoing call the status implies, then the status the delivery reports.
        (STATUS, status_form(OUTBOUND_SID, "completed", **OUTBOUND), [AGENT], ["call.outgoing", "call.completed"]),
        # An inbound call nobody can answer, then its miss.
        ("/webhooks/twilio/voice", call_form(), [], ["call.incoming", "call.missed"]),
    ],
)
async def test_a_webhook_s_events_are_stored_once_in_their_order_however_often_it_comes(
    client: Client, path: str, form: dict[str, str], agents: list[str], kinds: list[str]
) -> None:
    await configure(client, forward_to=agents)
    await add_item(client)
    token = {"I-Twilio-Idempotency-Token": "5b2e7c1d-0000-4000-8000-000000000002"}
    # The delivery and a retry at once (their events share a round trip), then a later retry.
    sent = await asyncio.gather(*(twilio_post(client, path, form, headers=token) for _ in range(2)))
    assert [resp.status for resp in sent] == [200, 200]
    assert (await twilio_post(client, path, form, headers=token)).status == 200
    feed = await client.get("/v1/events", headers=ADMIN)
    assert [event["kind"] for event in reversed((await feed.json())["events"])] == kinds
    for kind in kinds:
        assert await metric(client, "callgate_events_total", kind=kind, outcome="accepted") == 1
        assert await metric(client, "callgate_events_total", kind=kind, outcome="duplicate") == 2
    await processed(client, len(kinds))
    assert [kind for kind in timeline_types(await item(client)) if kind in kinds] == kinds


async def test_outgoing_call_reported_first_by_answered(client: Client) -> None:
    """Subscribed to answered+completed, `in-progress` comes first; the call counts once."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    answered = status_form(OUTBOUND_SID, "in-progress", "1", **OUTBOUND)
    assert (await twilio_post(client, STATUS, answered)).status == 200
    await moved_to(client, "CONTACTED")
    completed = status_form(OUTBOUND_SID, "completed", "2", **OUTBOUND)
    assert (await twilio_post(client, STATUS, completed)).status == 200

    async def completed_recorded() -> bool:
        return "call.completed" in timeline_types(await item(client))

    await eventually(completed_recorded)
    types = timeline_types(await item(client))
    assert types.count("call.outgoing") == 1 and types.count("item.stage_changed") == 1


async def test_softphone_dial_child_leg_is_the_outgoing_call(client: Client) -> None:
    """An agent's softphone (client:anna) reaches the customer through a <Dial> child leg; its
    status callback URL names the line, since neither From nor To is one."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    leg = status_form(
        OUTBOUND_SID,
        "completed",
        From="client:anna",
        To=CUSTOMER,
        Direction="outbound-dial",
        ParentCallSid="CA" + "6" * 32,
    )
    path = f"{STATUS}?line=%2B{LINE[1:]}"
    resp = await client.post(path, data=leg, headers={"X-Twilio-Signature": sign(path, leg)})
    assert resp.status == 200, await resp.text()
    await moved_to(client, "CONTACTED")
    outgoing = next(e for e in (await item(client))["timeline"] if e["type"] == "call.outgoing")["data"]
    assert outgoing["ParentCallSid"] == "CA" + "6" * 32


async def test_dial_child_leg_from_the_line(client: Client) -> None:
    """Click-to-call: <Dial callerId=line> from the agent's call; the child leg comes From the line."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    leg = status_form(
        OUTBOUND_SID,
        "ringing",
        "1",
        Direction="outbound-dial",
        ParentCallSid="CA" + "6" * 32,
        **{
            "From": LINE,
            "To": CUSTOMER,
        },
    )
    assert (await twilio_post(client, STATUS, leg)).status == 200
    await moved_to(client, "CONTACTED")


async def test_a_leg_forwarding_an_inbound_call_to_an_agent_is_not_outgoing(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    leg = status_form(
        OUTBOUND_SID, "completed", From=CUSTOMER, To=AGENT, Direction="outbound-dial", ParentCallSid="CA" + "6" * 32
    )
    path = f"{STATUS}?line=%2B{LINE[1:]}"
    assert (await client.post(path, data=leg, headers={"X-Twilio-Signature": sign(path, leg)})).status == 200
    assert await metric(client, "callgate_events_total", kind="call.outgoing", outcome="accepted") == 0
    assert await stage_of(client) == "NEW"


async def test_call_back_reported_only_by_completed_is_our_answer(client: Client) -> None:
    """An agent's call-back that completed with a duration voids response.overdue timers."""
    await configure(client)
    since = time.time() - 1
    completed = status_form(OUTBOUND_SID, "completed", **OUTBOUND)
    assert (await twilio_post(client, STATUS, completed)).status == 200
    calls = client.app[STORE].calls

    async def answered() -> bool:
        return await calls.responded_since(CUSTOMER, since)

    await eventually(answered)


async def test_late_event_that_fires_a_trigger_is_on_the_timeline(client: Client) -> None:
    """Callbacks arrive out of order: call.incoming processed after the call was answered is
    behind the call's progress, yet it fires its trigger, so it is recorded too."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.incoming", target_stage="CONTACTED")
    answered = status_form(status="in-progress", sequence="1", CallDuration="")
    assert (await twilio_post(client, STATUS, answered)).status == 200

    async def answered_recorded() -> bool:
        return "call.answered" in timeline_types(await item(client))

    await eventually(answered_recorded)
    assert (await twilio_post(client, "/webhooks/twilio/voice", call_form())).status == 200
    await moved_to(client, "CONTACTED")
    timeline = (await item(client))["timeline"]
    types = [e["type"] for e in timeline]
    assert types.index("call.incoming") < types.index("item.stage_changed")
    assert timeline[types.index("item.stage_changed")]["data"]["cause"] == "call.incoming"


async def test_stale_progress_is_not_recorded(client: Client) -> None:
    """`ringing` and `in-progress` after `completed` fire nothing and add nothing."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.outgoing", target_stage="CONTACTED")
    assert (await twilio_post(client, STATUS, status_form(OUTBOUND_SID, "completed", "3", **OUTBOUND))).status == 200
    await moved_to(client, "CONTACTED")
    for status, sequence in (("ringing", "1"), ("in-progress", "2")):
        late = status_form(OUTBOUND_SID, status, sequence, **OUTBOUND)
        assert (await twilio_post(client, STATUS, late)).status == 200
    # outgoing + completed, then the late in-progress (the late ringing adds no event at all).
    await processed(client, 3)
    types = timeline_types(await item(client))
    assert types.count("call.outgoing") == 1 and types.count("item.stage_changed") == 1
    assert "call.answered" not in types


ANONYMOUS = "+266696687"
UNAVAILABLE = "+86282452253"


async def test_withheld_callers_ring_the_agents_and_make_no_lead(client: Client) -> None:
    await configure(client, lead=True)
    await add_trigger(client, event="call.incoming", target_stage="CONTACTED")
    callers = [(ANONYMOUS, "anonymous"), (UNAVAILABLE, "unavailable"), ("sip:ana@pbx.example.com", "sip")]
    for index, (caller, _) in enumerate(callers):
        form = call_form(f"CA{index:032d}", From=caller, Caller=caller)
        resp = await twilio_post(client, "/webhooks/twilio/voice", form)
        assert resp.status == 200
        assert AGENT in await resp.text()  # the call still rings the line's agents
    missed = status_form(f"CA{0:032d}", "no-answer", "2", From=ANONYMOUS, Caller=ANONYMOUS)
    assert (await twilio_post(client, STATUS, missed)).status == 200
    await processed(client, len(callers) + 1)  # none failed, so none is on its way to the dead letters
    for caller, reason in callers:
        assert await metric(client, "callgate_withheld_callers_total", kind="call.incoming", caller=reason) == 1
        # The lead such a caller would have made does not exist.
        assert (await client.get(f"/v1/items/{lead_id(caller)}", headers=API)).status == 404
    feed = await client.get("/v1/events", params={"kind": "call.incoming"}, headers=ADMIN)
    assert feed.status == 200, await feed.text()
    withheld = {entry["customer"]: entry.get("withheld") for entry in (await feed.json())["events"]}
    assert withheld == {caller: reason for caller, reason in callers}
    dead = await client.get("/v1/dead-letters", headers=ADMIN)
    assert (await dead.json())["entries"] == []


async def test_every_sms_status_is_on_the_timeline(client: Client) -> None:
    await configure(client)
    await add_item(client)
    for status in ("sent", "undelivered"):
        assert (await twilio_post(client, "/webhooks/twilio/sms/status", sms_status_form(status=status))).status == 200

    async def both() -> bool:
        return timeline_types(await item(client)).count("sms.status") == 2

    await eventually(both)
    entries = [e["data"] for e in (await item(client))["timeline"] if e["type"] == "sms.status"]
    assert sorted(e["status"] for e in entries) == ["sent", "undelivered"]
    assert [e.get("ErrorCode") for e in entries if e["status"] == "undelivered"] == ["30003"]


async def test_mms_media_is_on_the_timeline(client: Client) -> None:
    await configure(client)
    await add_item(client)
    media = "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM{0}/Media/ME{1}"
    form = sms_form(
        "MM" + "7" * 32,
        body="la factura",
        NumMedia="2",
        MediaUrl0=media.format("7" * 32, "1" * 32),
        MediaContentType0="image/jpeg",
        MediaUrl1=media.format("7" * 32, "2" * 32),
        MediaContentType1="application/pdf",
    )
    assert (await twilio_post(client, "/webhooks/twilio/sms", form)).status == 200

    async def recorded() -> bool:
        return "sms.incoming" in timeline_types(await item(client))

    await eventually(recorded)
    entry = next(e for e in (await item(client))["timeline"] if e["type"] == "sms.incoming")["data"]
    assert entry["NumMedia"] == "2"
    assert (entry["MediaUrl0"], entry["MediaContentType0"]) == (form["MediaUrl0"], "image/jpeg")
    assert (entry["MediaUrl1"], entry["MediaContentType1"]) == (form["MediaUrl1"], "application/pdf")


def amd_form(answered_by: str = "machine_start") -> dict[str, str]:
    """AsyncAmdStatusCallback, complete: Twilio sends only these four fields."""
    return {
        "CallSid": OUTBOUND_SID,
        "AccountSid": ACCOUNT_SID,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": "2400",
    }


@pytest.mark.parametrize("path", ["/webhooks/twilio/voice/amd", STATUS])
async def test_amd_callback_is_recorded_on_the_call(client: Client, path: str) -> None:
    """No To/From: the account names the provider, its signature authenticates it; never a 403."""
    await configure(client)
    resp = await twilio_post(client, path, amd_form())
    assert resp.status == 200, await resp.text()
    calls = client.app[STORE].calls
    assert await calls.answered_by("tw", OUTBOUND_SID) == "machine_start"
    # A later verdict (DetectMessageEnd) replaces it.
    assert (await twilio_post(client, path, amd_form("machine_end_beep"))).status == 200
    assert await calls.answered_by("tw", OUTBOUND_SID) == "machine_end_beep"
    feed = await client.get("/v1/events", params={"kind": "call.amd"}, headers=ADMIN)
    assert [e["answered_by"] for e in (await feed.json())["events"]] == ["machine_end_beep", "machine_start"]


async def test_amd_callback_must_be_signed_by_its_account(client: Client) -> None:
    await configure(client)
    path = "/webhooks/twilio/voice/amd"
    forged = await twilio_post(client, path, amd_form(), signature=sign(path, amd_form(), token="not-the-token"))
    assert forged.status == 403
    assert (await forged.json())["error"]["code"] == "bad_signature"
    other = {**amd_form(), "AccountSid": "AC" + "9" * 32}
    assert (await twilio_post(client, path, other)).status == 403
    assert await client.app[STORE].calls.answered_by("tw", OUTBOUND_SID) is None
