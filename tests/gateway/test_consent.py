"""One consent ledger for SMS and robocalls: STOP/START by signed inbound Twilio SMS, admin
changes through /v1/optouts, Twilio's 21610 refusals, later jobs to an opted-out number
skipped, and every change on the item's timeline with its source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_robocalls import final, post, robocall, setup
from tests.gateway.test_robocalls_twilio import setup_twilio
from tests.gateway.test_sms import send
from tests.gateway.test_sms_twilio import report
from tests.media import media_server
from tests.support import CUSTOMER, eventually, item, sms_form, twilio_post
from tests.twilio_api import OPTED_OUT, TwilioApi

OPTOUT = f"/v1/optouts/{CUSTOMER}"


@pytest.fixture
async def tw(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], api: TwilioApi) -> Client:
    client = await aiohttp_client(create_app(make_settings(job_retry_seconds=0.05)))
    await setup_twilio(client, api)
    return client


async def consent(client: Client) -> dict[str, Any]:
    resp = await client.get(OPTOUT, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def text_in(client: Client, body: str, sid: str) -> None:
    resp = await twilio_post(client, "/webhooks/twilio/sms", sms_form(sid, body))
    assert resp.status == 200, await resp.text()


def consent_entries(timeline: list[dict[str, Any]]) -> list[tuple[bool, str, str | None]]:
    return [
        (e["data"]["opted_out"], e["data"]["source"], e["data"]["detail"])
        for e in timeline
        if e["type"] == "consent.changed"
    ]


async def test_stop_then_start_by_signed_sms(tw: Client, api: TwilioApi) -> None:
    await text_in(tw, "Stop", "SM" + "a" * 32)

    async def opted_out() -> bool:
        return (await tw.get(OPTOUT, headers=ADMIN)).status == 200

    await eventually(opted_out)
    record = await consent(tw)
    assert record["opted_out"] is True and record["source"] == "sms" and record["detail"] == "STOP"

    skipped = await final(tw, (await send(tw, {"text": "oferta"}))[1]["id"], "skipped")
    assert skipped["reason"].startswith(f"{CUSTOMER} opted out (texted STOP at ")
    assert api.requests == []

    await text_in(tw, "START", "SM" + "b" * 32)

    async def opted_in() -> bool:
        return (await consent(tw))["opted_out"] is False

    await eventually(opted_in)
    await final(tw, (await send(tw, {"text": "oferta"}))[1]["id"], "sent")
    assert len(api.messages) == 1

    timeline = (await item(tw, "D1"))["timeline"]
    assert consent_entries(timeline) == [(True, "sms", "STOP"), (False, "sms", "START")]
    # The keywords are inbound messages like any other: on the timeline in order.
    kinds = [e["type"] for e in timeline if e["type"] in ("sms.incoming", "consent.changed")]
    assert kinds == ["sms.incoming", "consent.changed", "sms.incoming", "consent.changed"]


async def test_a_sentence_with_stop_in_it_changes_nothing(tw: Client) -> None:
    await text_in(tw, "please stop calling at night", "SM" + "c" * 32)

    async def recorded() -> bool:
        return "sms.incoming" in [e["type"] for e in (await item(tw, "D1"))["timeline"]]

    await eventually(recorded)
    assert (await tw.get(OPTOUT, headers=ADMIN)).status == 404


async def test_twilio_21610_opts_the_number_out_and_skips_the_job(tw: Client, api: TwilioApi) -> None:
    api.script = [OPTED_OUT]
    skipped = await final(tw, (await send(tw, {"text": "hola"}))[1]["id"], "skipped")
    assert "opted out" in skipped["reason"] and "21610" in skipped["reason"]
    record = await consent(tw)
    assert record["opted_out"] is True and record["source"] == "provider"


async def test_a_failed_status_with_21610_opts_the_number_out(tw: Client) -> None:
    _, accepted = await send(tw, {"text": "hola"})
    sent = await final(tw, accepted["id"], "sent")
    await report(tw, accepted["id"], sent["provider_ref"], "failed", ErrorCode="21610")
    await final(tw, accepted["id"], "failed")

    async def opted_out() -> bool:
        return (await tw.get(OPTOUT, headers=ADMIN)).status == 200

    await eventually(opted_out)
    assert (await consent(tw))["source"] == "provider"


async def test_admins_opt_a_number_out_and_robocalls_are_skipped_too(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    server = await media_server()
    try:
        client = await aiohttp_client(create_app(make_settings(media_allow_private=True)))
        await setup(client)
        assert (await client.get(OPTOUT, headers=ADMIN)).status == 404
        assert (await client.put(OPTOUT, json={"reason": "asked by phone"}, headers=API)).status == 403
        resp = await client.put(OPTOUT, json={"reason": "asked by phone"}, headers=ADMIN)
        assert resp.status == 200 and (await resp.json())["opted_out"] is True

        _, accepted = await post(client, robocall(str(server.make_url("/ok.mp3"))))
        skipped = await final(client, accepted["id"], "skipped")
        assert skipped["reason"].startswith(f"{CUSTOMER} opted out (an admin opted it out at ")

        resp = await client.delete(OPTOUT, headers=ADMIN)
        assert resp.status == 200 and (await resp.json())["opted_out"] is False
        await final(client, (await send(client, {"text": "hola"}))[1]["id"], "delivered")
        timeline = (await item(client, "D1"))["timeline"]
        assert consent_entries(timeline) == [(True, "admin", "asked by phone"), (False, "admin", None)]
    finally:
        await server.close()
