"""Helpers shared by the webhook tests: a configured Twilio line, signed posts, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import ClientResponse
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from gateway.appkeys import STORE
from gateway.keys import Keys
from gateway.store.inbox import EVENTS_STREAM
from tests.conftest import ADMIN, API, Client
from webhooks.signatures import sign_voximplant

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "twilio-auth-token-for-tests"
LINE = "+34910000001"
AGENT = "+34600000009"
CUSTOMER = "+34600111222"
PUBLIC_URL = "https://gw.example.com"
STAGES = ["NEW", "CALL_BACK", "CONTACTED", "WON"]


async def configure(
    client: Client, *, forward_to: list[str] | None = None, lead: bool = False, shared_key: str | None = None
) -> None:
    """A pipeline, a Twilio provider and one line on it."""
    credentials = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    if shared_key is not None:
        credentials["shared_key"] = shared_key
    for path, body in [
        ("/v1/pipelines/sales", {"stages": STAGES}),
        ("/v1/providers/tw", {"kind": "twilio", "credentials": credentials}),
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
    if resp.status == 503:
        # Setup, not the test: a 503 says retry later (a Redis Cluster's connects can time out
        # while a busy machine starts the test's workers), and a CRM would.
        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
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


async def voximplant_post(
    client: Client, path: str, payload: Mapping[str, Any], secret: str, *, age: int = 0
) -> ClientResponse:
    """A POST as callgate's VoxEngine scenarios sign it (``age`` seconds old)."""
    body = json.dumps(payload).encode()
    stamp = int(time.time()) - age
    headers = {
        "Content-Type": "application/json",
        "X-Callgate-Timestamp": str(stamp),
        "X-Callgate-Signature": sign_voximplant(secret, stamp, body),
    }
    return await client.post(path, data=body, headers=headers)


def _geo(prefix: str, country: str) -> dict[str, str]:
    # Twilio sends the geo fields it cannot fill as empty strings.
    return {f"{prefix}City": "", f"{prefix}State": "", f"{prefix}Zip": "", f"{prefix}Country": country}


def call_form(sid: str = "CA" + "1" * 32, **fields: str) -> dict[str, str]:
    """The voice webhook request with every field Twilio documents (voice-webhooks page)."""
    base = {
        "CallSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "To": LINE,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
        "ForwardedFrom": "",
        "CallerName": "",
        "CallToken": "%7B%22parentCallInfoToken%22%3A%22eyJhbGciOiJFUzI1NiJ9%22%7D",
        "StirVerstat": "TN-Validation-Passed-A",
        **_geo("From", "ES"),
        **_geo("To", "ES"),
        **_geo("Caller", "ES"),
        **_geo("Called", "ES"),
    }
    base.update(fields)
    # The legacy Caller/Called mirror From/To.
    base.setdefault("Caller", base["From"])
    base.setdefault("Called", base["To"])
    return base


def status_form(
    sid: str = "CA" + "1" * 32, status: str = "completed", sequence: str = "0", **fields: str
) -> dict[str, str]:
    """A call StatusCallback (call-resource page): the voice fields plus the progress ones."""
    form = call_form(
        sid,
        CallStatus=status,
        CallbackSource="call-progress-events",
        Timestamp="Tue, 24 Nov 2026 07:00:00 +0000",
        SequenceNumber=sequence,
        SipResponseCode="200" if status == "completed" else "",
        **fields,
    )
    if status == "completed":
        form.setdefault("CallDuration", "42")
        form.setdefault("Duration", "1")
    return form


def sms_form(sid: str = "SM" + "1" * 32, body: str = "hola", **fields: str) -> dict[str, str]:
    """An inbound message webhook with every field Twilio documents (messaging webhook-request)."""
    base = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "MessagingServiceSid": "",
        "From": CUSTOMER,
        "To": LINE,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        **_geo("From", "ES"),
        **_geo("To", "ES"),
    }
    base.update(fields)
    return base


def sms_status_form(sid: str = "SM" + "1" * 32, status: str = "sent", **fields: str) -> dict[str, str]:
    """A message status callback: From is our line, To the customer."""
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "AccountSid": ACCOUNT_SID,
        "From": LINE,
        "To": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    if status in ("delivered", "undelivered"):
        form["RawDlrDoneDate"] = "2611240700"
    if status in ("failed", "undelivered"):
        form["ErrorCode"] = "30003"
    form.update(fields)
    return form


def jobs_due(prefix: str, job_id: str) -> str:
    """The due set a job waits in (its partition's)."""
    keys = Keys(prefix)
    return keys.jobs_due(keys.partition_of(job_id))


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


async def ready(client: Client) -> bool:
    return (await client.get("/readyz")).status == 200


async def stage_of(client: Client, item_id: str = "D1") -> str:
    return str((await item(client, item_id))["stage"])


async def metric(client: Client, name: str, **labels: str) -> float:
    """The value of one sample on ``GET /metrics`` (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def processed(client: Client, count: int = 0) -> None:
    """Wait until the event workers finished ``count`` entries and every event accepted so
    far (entries leave the events stream and its pending list only once processed), none of
    them failing: the positive signal to assert that something did not happen."""
    backlogs = client.app[STORE].backlogs

    async def done() -> bool:
        finished = await metric(client, "callgate_stream_entries_total", stream="events", outcome="done")
        if finished < count:
            return False
        backlog = await backlogs.of(EVENTS_STREAM)
        return backlog.length == backlog.pending == 0

    await eventually(done)
    assert await metric(client, "callgate_stream_entries_total", stream="events", outcome="failed") == 0


def timeline_types(data: Mapping[str, Any]) -> list[str]:
    return [entry["type"] for entry in data["timeline"]]


async def raw_request(client: Client, request: bytes) -> bytes:
    """Send ``request`` as raw bytes (headers no HTTP client would send) and read the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


def missed_call() -> dict[str, str]:
    """A Dial action reporting that nobody answered: a missed call."""
    return call_form(CallStatus="in-progress", DialCallStatus="no-answer", DialCallSid="CA" + "2" * 32)


async def watch_missed_calls(client: Client) -> None:
    """A line, the item D1 of its customer and a trigger moving it on a missed call."""
    await configure(client)
    await add_item(client)
    await add_trigger(client, event="call.missed")
