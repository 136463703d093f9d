"""SMS through Voximplant: the real ``voximplant-apiclient`` against the local emulator of
the management API. SendSmsMessage goes from the line to the customer with the rendered
text, a 5xx is retried after asking the SMS history, and an API error fails the job."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import ClientFactory
from tests.gateway.test_robocalls import final
from tests.gateway.test_robocalls_voximplant import setup_voximplant
from tests.gateway.test_sms_twilio import send
from tests.voximplant_api import VoximplantApi


@pytest.fixture
def vox_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(job_retry_seconds=0.05)


async def test_a_voximplant_sms_is_sent_from_the_line_and_ends_sent(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    accepted = await send(client)
    sent = await final(client, accepted["id"], "sent")
    [request] = vox.requests
    assert {key: request[key] for key in ("cmd", "source", "destination", "sms_body", "store_body")} == {
        "cmd": "SendSmsMessage",
        "source": "34910000001",
        "destination": "34600111222",
        "sms_body": "Hola Ana, su pedido A-17",
        "store_body": "True",
    }
    assert sent["provider_ref"] == str(vox.messages[0]["message_id"])


async def test_a_5xx_is_retried_after_asking_the_history_and_an_api_error_fails_the_sms(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi
) -> None:
    vox.script = [503, "error:470"]
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    accepted = await send(client)
    failed = await final(client, accepted["id"], "failed")
    assert failed["reason"] == "Voximplant SendSmsMessage error 470: Scripted refusal"
    assert [r["cmd"] for r in vox.requests] == ["SendSmsMessage", "GetSmsHistory", "SendSmsMessage"]
    assert vox.messages == []
