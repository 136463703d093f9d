"""Provider webhooks: authenticate, parse into one Event, store durably, then acknowledge.

A 200 means the event is in the Redis stream (or was already); when Redis cannot take it
the error middleware answers 503, so the provider retries instead of losing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from aiohttp import web

from config.lines import Line, ProviderKind
from config.phones import normalize
from config.vocabulary import EventKind
from gateway.api.routing import Endpoint
from gateway.appkeys import METRICS, SETTINGS, STORE
from gateway.errors import ApiError, Forbidden
from webhooks.errors import MalformedWebhook
from webhooks.events import Event
from webhooks.signatures import (
    VOXIMPLANT_SIGNATURE_HEADER,
    VOXIMPLANT_TIMESTAMP_HEADER,
    verify_twilio,
    verify_voximplant,
)
from webhooks.twilio import dial_twiml, empty_twiml, parse_sms, parse_sms_status, parse_voice, parse_voice_status
from webhooks.voximplant import parse_voximplant

TWIML = "application/xml"
DIAL_TIMEOUT_SECONDS = 20
STATUS_PATH = "/webhooks/twilio/voice/status"

Parser = Callable[[Mapping[str, str], str, float], Event | None]


async def _accept(request: web.Request, event: Event, token: str | None = None) -> None:
    new = await request.app[STORE].inbox.accept(event, token)
    request.app[METRICS].events.labels(event.kind.value, "accepted" if new else "duplicate").inc()


async def _twilio_fields(request: web.Request) -> tuple[dict[str, str], list[tuple[str, str]] | str]:
    """The webhook's fields, and what its signature covers: the form pairs (repeated names
    kept), or for a JSON body the raw text, which Twilio binds by ``bodySHA256`` in the URL."""
    try:
        if request.content_type == "application/json":
            raw = await request.text()
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("a Twilio JSON webhook is an object")
            return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}, raw
        form = await request.post()
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise ApiError(400, "malformed_webhook", f"the body cannot be read: {exc}") from None
    pairs = [(name, value) for name, value in form.items() if isinstance(value, str)]
    return dict(pairs), pairs


async def _twilio_line(request: web.Request) -> tuple[Mapping[str, str], Line]:
    """The form, and the line and provider it is for, once its signature checks out."""
    fields, signed = await _twilio_fields(request)
    store = request.app[STORE]
    found = await store.lines.first([normalize(fields[name]) for name in ("To", "From") if fields.get(name)])
    if found is None:
        raise Forbidden("no line of this gateway is on this call or message", code="unknown_line")
    number, line = found
    provider = await store.providers.get(line.provider)
    if provider is None or provider.kind is not ProviderKind.TWILIO:
        raise Forbidden(f"line {number} is not on a Twilio provider", code="unknown_line")
    account = provider.credentials["account_sid"]
    if fields.get("AccountSid", account) != account:
        raise Forbidden("AccountSid does not match the line's provider", code="bad_signature")
    url = request.app[SETTINGS].base_url + request.path_qs
    signature = request.headers.get("X-Twilio-Signature")
    if not verify_twilio(url, signed, signature, provider.credentials["auth_token"]):
        raise Forbidden("X-Twilio-Signature does not match", code="bad_signature")
    return fields, line


async def _twilio_event(request: web.Request, parse: Parser) -> tuple[Event | None, Line]:
    fields, line = await _twilio_line(request)
    try:
        event = parse(fields, line.provider, time.time())
    except MalformedWebhook as exc:
        raise ApiError(400, "malformed_webhook", exc.message, exc.field) from None
    if event is not None:
        await _accept(request, event, request.headers.get("I-Twilio-Idempotency-Token"))
    return event, line


def _twiml(body: str) -> web.Response:
    return web.Response(text=body, content_type=TWIML)


async def twilio_voice(request: web.Request) -> web.Response:
    """An inbound call: record it, then ring the line's agents with a Dial whose action
    reports how it ended (that report is what makes a call missed)."""
    event, line = await _twilio_event(request, parse_voice)
    assert event is not None
    agents = line.forward_to if line.voice else []
    if not agents:
        # Nobody can answer this call: it is missed now, not when a status arrives later.
        missed = replace(event, kind=EventKind.CALL_MISSED, status="no-agents", dedup=f"{event.dedup}:no-agents")
        await _accept(request, missed)
    action = request.app[SETTINGS].base_url + STATUS_PATH
    return _twiml(dial_twiml(agents, action, DIAL_TIMEOUT_SECONDS))


async def twilio_voice_status(request: web.Request) -> web.Response:
    await _twilio_event(request, parse_voice_status)
    return _twiml(empty_twiml())


async def twilio_sms(request: web.Request) -> web.Response:
    await _twilio_event(request, parse_sms)
    return _twiml(empty_twiml())


async def twilio_sms_status(request: web.Request) -> web.Response:
    await _twilio_event(request, parse_sms_status)
    return _twiml(empty_twiml())


async def voximplant(request: web.Request) -> web.Response:
    """An event from the VoxEngine scenario callgate ships (voice/voxengine/inbound.js)."""
    name = request.match_info["provider"]
    store = request.app[STORE]
    provider = await store.providers.get(name)
    if provider is None or provider.kind is not ProviderKind.VOXIMPLANT:
        raise Forbidden(f"no Voximplant provider named {name}", code="unknown_provider")
    body = await request.read()
    settings = request.app[SETTINGS]
    signed = verify_voximplant(
        provider.credentials["webhook_secret"],
        request.headers.get(VOXIMPLANT_TIMESTAMP_HEADER),
        request.headers.get(VOXIMPLANT_SIGNATURE_HEADER),
        body,
        time.time(),
        settings.webhook_tolerance_seconds,
    )
    if not signed:
        raise Forbidden("X-Callgate-Signature does not match (or the timestamp is stale)", code="bad_signature")
    try:
        event = parse_voximplant(body, name)
    except MalformedWebhook as exc:
        raise ApiError(400, "malformed_webhook", exc.message, exc.field) from None
    line = await store.lines.get(event.line)
    if line is None or line.provider != name:
        raise Forbidden(f"{event.line} is not a line of provider {name}", code="unknown_line")
    await _accept(request, event)
    if event.kind is EventKind.CALL_INCOMING:
        agents = line.forward_to if line.voice else []
        return web.json_response({"forward_to": agents, "timeout": DIAL_TIMEOUT_SECONDS})
    return web.json_response({"status": "accepted"})


ENDPOINTS_HOOKS = [
    Endpoint(
        "POST",
        "/webhooks/twilio/voice",
        twilio_voice,
        "Twilio incoming call (signed); answers TwiML that rings the line's agents",
        tag="webhooks",
    ),
    Endpoint(
        "POST", STATUS_PATH, twilio_voice_status, "Twilio call status callback and Dial action (signed)", tag="webhooks"
    ),
    Endpoint("POST", "/webhooks/twilio/sms", twilio_sms, "Twilio incoming SMS (signed)", tag="webhooks"),
    Endpoint(
        "POST", "/webhooks/twilio/sms/status", twilio_sms_status, "Twilio SMS status callback (signed)", tag="webhooks"
    ),
    Endpoint(
        "POST",
        "/webhooks/voximplant/{provider}",
        voximplant,
        "Events of callgate's VoxEngine scenario (HMAC-SHA256 signed)",
        tag="webhooks",
    ),
]
