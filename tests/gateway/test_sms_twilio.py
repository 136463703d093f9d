"""SMS through Twilio: the real SDK's async client against the local emulator of the
Messages API. The message is created with its status callback, Twilio's signed callbacks
move the job (a worker SIGKILLed mid-send: test_placement_crash)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import API, Client, ClientFactory
from tests.gateway.test_robocalls import final, job_statuses
from tests.gateway.test_robocalls_twilio import setup_twilio
from tests.support import PUBLIC_URL, item, sms_status_form, twilio_post
from tests.twilio_api import TwilioApi

LINE = "+34910000001"
CUSTOMER = "+34600111222"


async def send(client: Client, text: str = "Hola {{name}}, su pedido {{order}}") -> dict[str, Any]:
    resp = await client.post("/v1/sms", json={"item_id": "D1", "text": text}, headers=API)
    assert resp.status == 202, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def report(client: Client, job_id: str, sid: str, status: str, **fields: str) -> None:
    form = sms_status_form(sid, status, From=LINE, To=CUSTOMER, **fields)
    resp = await twilio_post(client, f"/webhooks/twilio/sms/status?job={job_id}", form)
    assert resp.status == 200, await resp.text()


async def test_a_twilio_sms_is_created_and_its_callbacks_move_the_job(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    accepted = await send(client)
    sent = await final(client, accepted["id"], "sent")

    [request] = api.requests
    assert request["To"] == CUSTOMER and request["From"] == LINE
    assert request["Body"] == "Hola Ana, su pedido A-17"
    assert request["StatusCallback"] == f"{PUBLIC_URL}/webhooks/twilio/sms/status?job={accepted['id']}"
    assert sent["provider_ref"] == api.messages[0]["sid"] and api.calls == []

    await report(client, accepted["id"], sent["provider_ref"], "sent")
    await report(client, accepted["id"], sent["provider_ref"], "delivered")
    await final(client, accepted["id"], "delivered")
    # A late or repeated "sent" moves nothing back.
    await report(client, accepted["id"], sent["provider_ref"], "sent")
    timeline = (await item(client, "D1"))["timeline"]
    assert job_statuses(timeline, accepted["id"]) == ["queued", "sending", "sent", "delivered"]
    assert not [e for e in timeline if e["type"] == "sms.status"]


@pytest.mark.parametrize("status", ["undelivered", "failed"])
async def test_undelivered_and_failed_end_the_job_failed_with_the_error_code(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, status: str
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    accepted = await send(client)
    sent = await final(client, accepted["id"], "sent")
    await report(client, accepted["id"], sent["provider_ref"], status, ErrorCode="30006")
    done = await final(client, accepted["id"], "failed")
    assert done["reason"] == f"the provider reported the message {status} (ErrorCode 30006)"


async def test_a_twilio_4xx_fails_the_sms_and_a_5xx_is_retried(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi
) -> None:
    api.script = [503, 400]
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    accepted = await send(client)
    failed = await final(client, accepted["id"], "failed")
    assert failed["reason"].startswith("Twilio HTTP 400 (21211)")
    assert len(api.requests) == 2 and api.messages == []


async def test_a_5xx_while_looking_for_an_earlier_try_is_retried_as_any_5xx(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, caplog: pytest.LogCaptureFixture
) -> None:
    """Before a retry the worker lists the messages a try may have created; Twilio's SDK
    raises its plain TwilioException when that page answers 5xx: a transient failure of the
    job, not an error of callgate's that the stream redelivers."""
    api.script = [503]
    api.list_script = [500]
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    accepted = await send(client)
    await final(client, accepted["id"], "sent")
    assert len(api.requests) == 2 and len(api.messages) == 1 and api.list_script == []
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
