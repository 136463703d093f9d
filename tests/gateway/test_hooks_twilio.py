"""Twilio webhooks end to end: signed posts in, stage moves and timeline entries out."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from twilio.request_validator import RequestValidator
from yarl import URL

from tests.conftest import API, Client
from tests.support import (
    AGENT,
    AUTH_TOKEN,
    PUBLIC_URL,
    add_item,
    add_trigger,
    call_form,
    configure,
    eventually,
    item,
    sign,
    sms_form,
    stage_of,
    timeline_types,
    twilio_post,
)


async def test_incoming_call_answers_dial_twiml_and_fires_trigger(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.incoming", target_stage="CONTACTED")
    resp = await twilio_post(client, "/webhooks/twilio/voice", call_form())
    assert resp.status == 200
    twiml = ET.fromstring(await resp.text())
    dial = twiml.find("Dial")
    assert dial is not None
    assert dial.get("action") == "https://gw.example.com/webhooks/twilio/voice/status"
    assert [n.text for n in dial.iter("Number")] == [AGENT]

    async def moved() -> bool:
        return await stage_of(client) == "CONTACTED"

    await eventually(moved)
    data = await item(client)
    assert "call.incoming" in timeline_types(data)
    change = [e for e in data["timeline"] if e["type"] == "item.stage_changed"][-1]["data"]
    assert change["from"] == "NEW" and change["to"] == "CONTACTED" and change["act_as"] == "maria"


async def test_missed_call_from_dial_action_moves_once_despite_retries(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.missed")
    dial = call_form(CallStatus="in-progress", DialCallStatus="no-answer", DialCallSid="CA" + "2" * 32)
    for _ in range(3):  # Twilio retries
        assert (await twilio_post(client, "/webhooks/twilio/voice/status", dial)).status == 200
    # The parent call's own status callback reports the same miss another way.
    parent = call_form(CallStatus="canceled", SequenceNumber="2")
    assert (await twilio_post(client, "/webhooks/twilio/voice/status", parent)).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    data = await item(client)
    assert timeline_types(data).count("item.stage_changed") == 1
    assert timeline_types(data).count("call.missed") == 1


async def test_bad_or_missing_signature_is_403_and_changes_nothing(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.incoming")
    for signature, code in [("", "missing_signature"), ("bm90IGEgc2lnbmF0dXJl", "bad_signature")]:
        resp = await twilio_post(client, "/webhooks/twilio/voice", call_form(), signature=signature)
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == code
    data = await item(client)
    assert data["stage"] == "NEW" and "call.incoming" not in timeline_types(data)


async def test_unknown_line_is_403(client: Client) -> None:
    await configure(client)
    form = call_form(To="+34910009999")
    resp = await twilio_post(client, "/webhooks/twilio/voice", form)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "unknown_line"


async def test_sms_keyword_trigger(client: Client) -> None:
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="sms.incoming", keywords=["cancelar pedido"], target_stage="WON", allow_back=True)
    resp = await twilio_post(client, "/webhooks/twilio/sms", sms_form(body="hola"))
    assert resp.status == 200
    resp = await twilio_post(
        client, "/webhooks/twilio/sms", sms_form(sid="SM" + "2" * 32, body="Quiero CANCELÁR pedido")
    )
    assert resp.status == 200

    async def moved() -> bool:
        return await stage_of(client) == "WON"

    await eventually(moved)
    assert timeline_types(await item(client)).count("sms.incoming") == 2


async def test_unknown_number_creates_lead_on_line(client: Client) -> None:
    await configure(client, lead=True)
    stranger = "+34600999888"
    resp = await twilio_post(client, "/webhooks/twilio/sms", sms_form(From=stranger, body="info?"))
    assert resp.status == 200

    async def created() -> list[dict[str, Any]]:
        found = await client.get("/v1/items", params={"phone": stranger}, headers=API)
        items: list[dict[str, Any]] = (await found.json())["items"]
        return items

    async def one() -> bool:
        return len(await created()) == 1

    await eventually(one)
    lead = (await created())[0]
    assert lead["id"].startswith("lead-") and (lead["pipeline"], lead["stage"]) == ("sales", "NEW")
    assert lead["contacts"][0]["phones"][0]["value"] == stranger
    assert "sms.incoming" in timeline_types(await item(client, lead["id"]))


async def test_signature_is_checked_against_the_public_url(client: Client) -> None:
    """Behind a proxy Twilio signs the public URL, not the address the gateway listens on."""
    await configure(client)
    form = call_form()
    internal = str(client.make_url("/webhooks/twilio/voice"))
    wrong = RequestValidator(AUTH_TOKEN).compute_signature(internal, form)
    assert (await twilio_post(client, "/webhooks/twilio/voice", form, signature=wrong)).status == 403
    other_token = RequestValidator("another-token").compute_signature(PUBLIC_URL + "/webhooks/twilio/voice", form)
    assert (await twilio_post(client, "/webhooks/twilio/voice", form, signature=other_token)).status == 403
    assert (await twilio_post(client, "/webhooks/twilio/voice", form)).status == 200


async def test_query_string_is_part_of_the_signed_url(client: Client) -> None:
    await configure(client)
    form = sms_form()
    path = "/webhooks/twilio/sms?source=console"
    good = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    without_query = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/webhooks/twilio/sms", form)
    assert (await client.post(path, data=form, headers={"X-Twilio-Signature": without_query})).status == 403
    assert (await client.post(path, data=form, headers={"X-Twilio-Signature": good})).status == 200


async def test_json_body_signed_with_body_sha256(client: Client) -> None:
    await configure(client)
    await add_item(client)
    body = json.dumps(sms_form(body="json hola"))
    validator = RequestValidator(AUTH_TOKEN)
    path = f"/webhooks/twilio/sms?bodySHA256={validator.compute_hash(body)}"
    signature = validator.compute_signature(PUBLIC_URL + path, {})
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    assert (await client.post(path, data=body, headers=headers)).status == 200
    tampered = body.replace("json hola", "json adios")
    assert (await client.post(path, data=tampered, headers=headers)).status == 403

    async def recorded() -> bool:
        return "sms.incoming" in timeline_types(await item(client))

    await eventually(recorded)
    assert [e["data"]["text"] for e in (await item(client))["timeline"] if e["type"] == "sms.incoming"] == ["json hola"]


async def test_json_body_with_a_lone_surrogate_is_stored(client: Client) -> None:
    """A JSON body may carry "\\ud800", which is no character, and which neither orjson nor
    Redis's Lua reads: it is stored as U+FFFD, not refused with a 500 on every retry."""
    await configure(client)
    await add_item(client)
    body = json.dumps(sms_form(body="\ud800 hola"))
    assert "\\ud800" in body
    validator = RequestValidator(AUTH_TOKEN)
    path = f"/webhooks/twilio/sms?bodySHA256={validator.compute_hash(body)}"
    signature = validator.compute_signature(PUBLIC_URL + path, {})
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    assert (await client.post(path, data=body, headers=headers)).status == 200

    async def recorded() -> bool:
        return "sms.incoming" in timeline_types(await item(client))

    await eventually(recorded)
    assert [e["data"]["text"] for e in (await item(client))["timeline"] if e["type"] == "sms.incoming"] == [
        "\ufffd hola"
    ]


async def test_hostile_bodies_get_4xx_never_500(client: Client) -> None:
    await configure(client)
    cases: list[tuple[bytes, str]] = [
        (b"\xff\xfe not utf8", "application/x-www-form-urlencoded"),
        (b"[1, 2, 3]", "application/json"),
        (b"{not json", "application/json"),
        (b"CallSid=CA1&To=%2B34910000001&From=" + b"9" * 5000, "application/x-www-form-urlencoded"),
    ]
    for data, content_type in cases:
        resp = await client.post(
            "/webhooks/twilio/voice", data=data, headers={"Content-Type": content_type, "X-Twilio-Signature": "x"}
        )
        assert 400 <= resp.status < 500, (data[:20], resp.status, await resp.text())


async def test_signature_covers_the_url_exactly_as_twilio_sent_it(client: Client) -> None:
    """ "%7E" and a lowercase "%2f" stay as sent: aiohttp's normalised path would be "~" and "/"."""
    await configure(client)
    form = sms_form()
    path = "/webhooks/twilio/sms?source=crm%7Eweb&next=a%2fb"
    exact = sign(path, form)
    normalised = sign("/webhooks/twilio/sms?source=crm~web&next=a/b", form)
    assert exact != normalised
    sent = URL(path, encoded=True)
    assert (await client.post(sent, data=form, headers={"X-Twilio-Signature": normalised})).status == 403
    assert (await client.post(sent, data=form, headers={"X-Twilio-Signature": exact})).status == 200


async def test_shared_key_hmac_sha256_signature(client: Client) -> None:
    """Webhooks configuration API: a SharedKey signs with the algorithm the settings header names."""
    shared_key = "webhooks-shared-key-secret-0123"
    await configure(client, shared_key=shared_key)
    await add_item(client)
    await add_trigger(client, event="sms.incoming", target_stage="CONTACTED")
    form = sms_form(body="firmado con SharedKey")
    path = "/webhooks/twilio/sms"
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_0123456789,algorithm=HMAC_SHA256"}
    sha256 = RequestValidator(shared_key).compute_signature(PUBLIC_URL + path, form, "HMAC_SHA256")
    # The auth token's SHA-1 signature, or the shared key's without the header, is refused.
    assert (await twilio_post(client, path, form, headers=settings)).status == 403
    assert (await twilio_post(client, path, form, signature=sha256)).status == 403
    resp = await twilio_post(client, path, form, signature=sha256, headers=settings)
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CONTACTED"

    await eventually(moved)
