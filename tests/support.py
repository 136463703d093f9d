"""Helpers shared by the webhook tests: a configured Twilio line, signed posts, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import ClientResponse
from twilio.request_validator import RequestValidator

from tests.conftest import ADMIN, API, Client

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "twilio-auth-token-for-tests"
LINE = "+34910000001"
AGENT = "+34600000009"
CUSTOMER = "+34600111222"
PUBLIC_URL = "https://gw.example.com"
STAGES = ["NEW", "CALL_BACK", "CONTACTED", "WON"]


async def configure(client: Client, *, forward_to: list[str] | None = None, lead: bool = False) -> None:
    """A pipeline, a Twilio provider and one line on it."""
    for path, body in [
        ("/v1/pipelines/sales", {"stages": STAGES}),
        ("/v1/providers/tw", {"kind": "twilio", "credentials": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}}),
        (
            f"/v1/lines/{LINE}",
            {
                "provider": "tw",
                "forward_to": [AGENT] if forward_to is None else forward_to,
                **({"lead": {"pipeline": "sales", "stage": "NEW"}} if lead else {}),
            },
        ),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()


async def add_item(client: Client, item_id: str = "D1", stage: str = "NEW", phone: str = CUSTOMER) -> None:
    card = {
        "pipeline": "sales",
        "stage": stage,
        "responsible": "maria",
        "contacts": [{"name": "Ana", "phones": [{"type": "MOBILE", "value": phone}]}],
    }
    resp = await client.put(f"/v1/items/{item_id}", json=card, headers=API)
    assert resp.status in (200, 201), await resp.text()


async def add_trigger(client: Client, **fields: Any) -> str:
    body = {"name": "t", "pipeline": "sales", "target_stage": "CALL_BACK", **fields}
    resp = await client.post("/v1/triggers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


def sign(path: str, form: Mapping[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(PUBLIC_URL + path, dict(form)))


async def twilio_post(
    client: Client,
    path: str,
    form: Mapping[str, str],
    *,
    signature: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ClientResponse:
    sent = {"X-Twilio-Signature": sign(path, form) if signature is None else signature, **(headers or {})}
    return await client.post(path, data=dict(form), headers=sent)


def call_form(sid: str = "CA" + "1" * 32, **fields: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "To": LINE,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **fields,
    }


def sms_form(sid: str = "SM" + "1" * 32, body: str = "hola", **fields: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "To": LINE,
        "Body": body,
        "NumMedia": "0",
        **fields,
    }


async def item(client: Client, item_id: str = "D1") -> dict[str, Any]:
    resp = await client.get(f"/v1/items/{item_id}", headers=API)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds: the workers process events asynchronously."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def stage_of(client: Client, item_id: str = "D1") -> str:
    return str((await item(client, item_id))["stage"])


def timeline_types(data: Mapping[str, Any]) -> list[str]:
    return [entry["type"] for entry in data["timeline"]]
