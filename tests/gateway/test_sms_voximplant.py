"""SMS through Voximplant: the real ``voximplant-apiclient`` against the local emulator of
the management API. SendSmsMessage goes from the line to the customer with the rendered
text, a 5xx is retried after asking the SMS history, and an API error fails the job.
Inbound SMS arrive as the account's HTTP callbacks, each checked by its MD5 hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import ADMIN, ClientFactory
from tests.gateway.test_robocalls import final
from tests.gateway.test_robocalls_voximplant import setup_voximplant
from tests.gateway.test_sms_twilio import send
from tests.support import CUSTOMER, eventually, item
from tests.voximplant_api import ACCOUNT_ID, VoximplantApi


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


SALT = "callback-salt-of-40-characters-at-most"
API_KEY = "account-api-key-3f1c"
CALLBACKS = "/webhooks/voximplant/vox/callbacks"


def sms_callback(callback_id: int, text: str, *, salt: str = SALT, source: str = "34600111222") -> dict[str, Any]:
    """One sms_inbound account callback, hashed as Voximplant documents it:
    md5(salt + account_id + api_key + callback_id)."""
    digest = hashlib.md5(f"{salt}{ACCOUNT_ID}{API_KEY}{callback_id}".encode(), usedforsecurity=False).hexdigest()
    return {
        "account_id": ACCOUNT_ID,
        "account_name": "callgate-test",
        "account_email": "robot@callgate.test",
        "callback_id": callback_id,
        "hash": digest,
        "type": "sms_inbound",
        "sms_inbound": {
            "sms_inbound": {"source_number": source, "destination_number": "34910000001", "sms_body": text}
        },
    }


async def test_an_inbound_sms_callback_with_the_account_s_salt_opts_out_and_a_wrong_hash_is_refused(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    unchecked = await client.post(CALLBACKS, json={"callbacks": [sms_callback(6, "STOP")]})
    assert unchecked.status == 403 and (await unchecked.json())["error"]["code"] == "missing_signature"
    await setup_voximplant(client, vox, callback_salt=SALT, api_key=API_KEY)
    malformed = await client.post(CALLBACKS, json={"callbacks": [{"type": "sms_inbound", "callback_id": 5}]})
    assert malformed.status == 400 and (await malformed.json())["error"]["code"] == "malformed_webhook"
    forged = await client.post(CALLBACKS, json={"callbacks": [sms_callback(7, "STOP", salt="guessed")]})
    assert forged.status == 403 and (await forged.json())["error"]["code"] == "bad_signature"
    elsewhere = sms_callback(8, "hi", source="34600999888") | {
        "sms_inbound": {
            "sms_inbound": {"source_number": "34600999888", "destination_number": "34919999999", "sms_body": "hi"}
        }
    }
    other = {"account_id": ACCOUNT_ID, "callback_id": 9, "type": "min_balance", "min_balance": {"balance": 1}}
    other["hash"] = sms_callback(9, "")["hash"]
    body = {"callbacks": [sms_callback(10, "STOP"), elsewhere, other]}
    for _ in range(2):  # Voximplant sends a callback again when it missed the answer
        resp = await client.post(CALLBACKS, json=body)
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"status": "accepted", "sms": 1}

    async def opted_out() -> bool:
        resp = await client.get(f"/v1/optouts/{CUSTOMER}", headers=ADMIN)
        return resp.status == 200 and (await resp.json())["opted_out"] is True

    await eventually(opted_out)
    timeline = (await item(client, "D1"))["timeline"]
    assert [e["data"].get("text") for e in timeline if e["type"] == "sms.incoming"] == ["STOP"]
    accepted = await send(client)
    skipped = await final(client, accepted["id"], "skipped")
    assert "opted out" in skipped["reason"]
    assert [r["cmd"] for r in vox.requests] == []
