"""Provider webhooks: authenticate, parse into one Event, store durably, then acknowledge.

A 200 means the event is in the Redis stream (or was already); when Redis cannot take it
the error middleware answers 503, so the provider retries instead of losing it.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from aiohttp import web

from config.lines import Line, Provider, ProviderKind
from config.phones import normalize
from config.vocabulary import EventKind
from gateway.api import params
from gateway.api.routing import Endpoint, Param, refuse_declared_too_large
from gateway.appkeys import SETTINGS, STORE
from gateway.errors import UNDECODABLE, ApiError
from gateway.ingest import Refused, accept, accept_all, refuse
from webhooks.errors import MalformedWebhook
from webhooks.events import Event
from webhooks.signatures import (
    TWILIO_SIGNATURE_SETTINGS_HEADER,
    VOXIMPLANT_SIGNATURE_HEADER,
    VOXIMPLANT_TIMESTAMP_HEADER,
    robocall_secret,
    twilio_signing,
    verify_twilio,
    verify_voximplant,
    verify_voximplant_callback,
)
from webhooks.twilio import (
    CallLine,
    dial_twiml,
    empty_twiml,
    is_amd,
    parse_amd,
    parse_sms,
    parse_sms_status,
    parse_voice,
    parse_voice_status,
)
from webhooks.voximplant import parse_account_callbacks, parse_robocall, parse_voximplant

TWIML = "application/xml"
DIAL_TIMEOUT_SECONDS = 20
STATUS_PATH = "/webhooks/twilio/voice/status"

Parser = Callable[[Mapping[str, str], str, float, CallLine], list[Event]]
# A Twilio webhook's fields, and what its signature covers (see _twilio_fields).
Form = tuple[dict[str, str], list[tuple[str, str]] | str]
Hook = Callable[[web.Request], Awaitable[web.Response]]

PUBLIC_URL_HINT = "if the provider posts to another URL (a proxy, a tunnel), set CALLGATE_PUBLIC_URL to its base"

_DIAL = re.compile(r"[0-9]{1,9}")


def _visible_refusals(kind: ProviderKind) -> Callable[[Hook], Hook]:
    """Every 4xx a webhook handler raises is logged, counted and put in the feed; a body
    declared too large is one, before any of it is read."""

    def wrap(handler: Hook) -> Hook:
        @functools.wraps(handler)
        async def handle(request: web.Request) -> web.Response:
            try:
                refuse_declared_too_large(request)
                return await handler(request)
            except Refused as exc:
                await refuse(request, exc, kind.value)
                raise
            except ApiError as exc:
                refusal = Refused(exc.status, exc.code, exc.message, provider=kind.value, field=exc.field)
                await refuse(request, refusal, kind.value)
                raise refusal from None

        return handle

    return wrap


async def _twilio_fields(request: web.Request) -> Form:
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
    except web.RequestPayloadError:
        raise ApiError(400, "malformed_webhook", UNDECODABLE) from None
    # UnicodeDecodeError is a ValueError; LookupError is a charset Python does not know.
    except (ValueError, RecursionError, LookupError) as exc:
        raise ApiError(400, "malformed_webhook", f"the body cannot be read: {exc}") from None
    pairs = [(name, value) for name, value in form.items() if isinstance(value, str)]
    return dict(pairs), pairs


def _check_twilio_signature(
    request: web.Request, signed: list[tuple[str, str]] | str, name: str, provider: Provider, line: str = ""
) -> None:
    """Refuse the request unless ``provider`` signed it (auth token, or SharedKey when the
    signature settings header says so)."""
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        message = "X-Twilio-Signature header is missing: only Twilio's signed requests are accepted"
        raise Refused(403, "missing_signature", message, provider=name, line=line)
    # The raw target, not a normalised path_qs: Twilio signs the URL as it requested it, so
    # "%7E" must stay "%7E" and a lowercase "%2f" stay lowercase.
    url = request.app[SETTINGS].base_url + request.raw_path
    settings_header = request.headers.get(TWILIO_SIGNATURE_SETTINGS_HEADER)
    secret, algorithm = twilio_signing(provider.credentials, settings_header)
    if not verify_twilio(url, signed, signature, secret, algorithm):
        key = "auth token" if settings_header is None else f"shared_key ({algorithm})"
        message = (
            f"X-Twilio-Signature does not match the signature computed for {url} with the {key} of "
            f"provider {name}; {PUBLIC_URL_HINT}"
        )
        raise Refused(403, "bad_signature", message, provider=name, line=line)


async def _twilio_line(request: web.Request, form: Form) -> tuple[Mapping[str, str], str, Line]:
    """The form's fields, and the line (number and record) it is for, once its signature checks out.

    The line is the call's or message's ``To`` or ``From``; failing both, the ``line`` query
    parameter of the URL Twilio posted to (it is signed with the rest): a status callback of
    an agent's softphone leg, from ``client:``/``sip:`` to the customer, names its line so.
    """
    fields, signed = form
    store = request.app[STORE]
    numbers = [normalize(fields[name]) for name in ("To", "From") if fields.get(name)]
    named = request.query.get("line")
    found = await store.lines.first(numbers + ([normalize(named)] if named else []))
    if found is None:
        shown = ", ".join(numbers) or "none"
        raise Refused(
            403,
            "unknown_line",
            f"no line of this gateway is on this call or message (To/From: {shown})",
            provider="twilio",
            line=numbers[0] if numbers else "",
        )
    number, line = found
    provider = await store.providers.get(line.provider)
    if provider is None or provider.kind is not ProviderKind.TWILIO:
        raise Refused(403, "unknown_line", f"line {number} is not on a Twilio provider", provider="twilio", line=number)
    account = provider.credentials["account_sid"]
    if fields.get("AccountSid", account) != account:
        message = f"AccountSid {fields['AccountSid']} is not the account of provider {line.provider}"
        raise Refused(403, "wrong_account", message, provider=line.provider, line=number)
    _check_twilio_signature(request, signed, line.provider, provider, number)
    return fields, number, line


def _single(parse: Callable[[Mapping[str, str], str, float], Event]) -> Parser:
    return lambda form, provider, now, line: [parse(form, provider, now)]


async def _twilio_events(request: web.Request, parse: Parser, form: Form) -> tuple[list[Event], Line]:
    """The webhook's events, once its signature checks out, and its line."""
    fields, number, line = await _twilio_line(request, form)
    try:
        events = parse(fields, line.provider, time.time(), CallLine(number, frozenset(line.forward_to)))
    except MalformedWebhook as exc:
        raise Refused(
            400, "malformed_webhook", exc.message, provider=line.provider, line=fields.get("To", ""), field=exc.field
        ) from None
    return events, line


async def _twilio_accept(request: web.Request, events: list[Event], reported: int = -1) -> None:
    """Store the webhook's events, in their order, in one round trip.

    The idempotency token names this delivery: it goes with the event the delivery reports,
    ``events[reported]``. An event the same webhook implies (the call.outgoing before a
    status, the call.missed after an inbound call nobody can answer) has its own dedup.
    """
    await accept_all(request, events, params.header_token(request, "I-Twilio-Idempotency-Token"), reported)


def _twiml(body: str) -> web.Response:
    return web.Response(text=body, content_type=TWIML)


@_visible_refusals(ProviderKind.TWILIO)
async def twilio_voice(request: web.Request) -> web.Response:
    """An inbound call: record it, then ring the line's agents with a Dial whose action
    reports how it ended (that report is what makes a call missed)."""
    (event,), line = await _twilio_events(request, _single(parse_voice), await _twilio_fields(request))
    agents = line.forward_to if line.voice else []
    events = [event]
    if not agents:
        # Nobody can answer this call: it is missed now, not when a status arrives later.
        events.append(replace(event, kind=EventKind.CALL_MISSED, status="no-agents", dedup=f"{event.dedup}:no-agents"))
    await _twilio_accept(request, events, reported=0)
    action = request.app[SETTINGS].base_url + STATUS_PATH
    return _twiml(dial_twiml(agents, action, DIAL_TIMEOUT_SECONDS))


def _job_call_status(request: web.Request) -> Parser:
    """``parse_voice_status``, with the events of a robocall tagged with the job and dial its
    status callback URL names (callgate put them there; Twilio's signature covers the URL).

    A job follows every step of its call, so its ``call.outgoing`` (which reports initiated
    and ringing) is deduplicated per status, not once per call.
    """
    job, dial = request.query.get("job"), request.query.get("dial", "1")

    def tagged(event: Event) -> Event:
        dedup = f"{event.dedup}:{event.status}" if event.kind is EventKind.CALL_OUTGOING else event.dedup
        return replace(event, dedup=dedup, extra={**event.extra, "job": job or "", "dial": dial})

    def parse(fields: Mapping[str, str], provider: str, now: float, line: CallLine) -> list[Event]:
        events = parse_voice_status(fields, provider, now, line)
        return [tagged(event) for event in events] if job else events

    return parse


@_visible_refusals(ProviderKind.TWILIO)
async def twilio_voice_status(request: web.Request) -> web.Response:
    form = await _twilio_fields(request)
    if is_amd(form[0]):
        # An AsyncAmdStatusCallback pointed at the status URL: it names no line.
        return await _twilio_amd(request, form)
    events, _ = await _twilio_events(request, _job_call_status(request), form)
    await _twilio_accept(request, events)
    return _twiml(empty_twiml())


async def _twilio_account(request: web.Request, fields: Mapping[str, str], signed: list[tuple[str, str]] | str) -> str:
    """The Twilio provider a callback that names no line is for: the one of its
    ``AccountSid`` whose credentials signed it."""
    account = fields.get("AccountSid", "")
    providers = await request.app[STORE].providers.all()
    candidates = [
        (name, provider)
        for name, provider in providers.items()
        if provider.kind is ProviderKind.TWILIO and provider.credentials["account_sid"] == account
    ]
    if not candidates:
        message = f"no Twilio provider has AccountSid {account or '(none)'}"
        raise Refused(403, "unknown_provider", message, provider="twilio")
    refusals = []
    for name, provider in candidates:
        try:
            _check_twilio_signature(request, signed, name, provider)
        except Refused as refusal:
            refusals.append(refusal)
            continue
        return name
    raise refusals[0]


async def _twilio_amd(request: web.Request, form: Form) -> web.Response:
    fields, signed = form
    name = await _twilio_account(request, fields, signed)
    try:
        result = parse_amd(fields)
    except MalformedWebhook as exc:
        raise Refused(400, "malformed_webhook", exc.message, provider=name, field=exc.field) from None
    store = request.app[STORE]
    await store.calls.record_answered_by(name, result.call_sid, result.answered_by, result.detection_ms)
    details = {"ref": result.call_sid, "answered_by": result.answered_by}
    await store.feed.record("call.amd", provider=name, details=details)
    return _twiml(empty_twiml())


@_visible_refusals(ProviderKind.TWILIO)
async def twilio_voice_amd(request: web.Request) -> web.Response:
    """Answering-machine detection (``AsyncAmdStatusCallback``): only CallSid, AccountSid,
    AnsweredBy and MachineDetectionDuration, so the account, not a line, names the provider."""
    return await _twilio_amd(request, await _twilio_fields(request))


@_visible_refusals(ProviderKind.TWILIO)
async def twilio_sms(request: web.Request) -> web.Response:
    events, _ = await _twilio_events(request, _single(parse_sms), await _twilio_fields(request))
    await _twilio_accept(request, events)
    return _twiml(empty_twiml())


def _job_sms_status(request: web.Request) -> Parser:
    """``parse_sms_status``, with a job's message tagged with the job its status callback URL
    names (callgate put it there; the signature covers the URL)."""
    job = request.query.get("job")

    def parse(fields: Mapping[str, str], provider: str, now: float, line: CallLine) -> list[Event]:
        event = parse_sms_status(fields, provider, now)
        return [replace(event, extra={**event.extra, "job": job, "dial": "1"}) if job else event]

    return parse


@_visible_refusals(ProviderKind.TWILIO)
async def twilio_sms_status(request: web.Request) -> web.Response:
    events, _ = await _twilio_events(request, _job_sms_status(request), await _twilio_fields(request))
    await _twilio_accept(request, events)
    return _twiml(empty_twiml())


def _check_voximplant_signature(request: web.Request, name: str, secret: str, body: bytes, whose: str) -> None:
    settings = request.app[SETTINGS]
    stamp = request.headers.get(VOXIMPLANT_TIMESTAMP_HEADER)
    signature = request.headers.get(VOXIMPLANT_SIGNATURE_HEADER)
    if not stamp or not signature:
        message = f"{VOXIMPLANT_TIMESTAMP_HEADER} and {VOXIMPLANT_SIGNATURE_HEADER} are required: use callgate's VoxEngine scenario"
        raise Refused(403, "missing_signature", message, provider=name)
    tolerance = settings.webhook_tolerance_seconds
    if not verify_voximplant(secret, stamp, signature, body, time.time(), tolerance):
        message = (
            f"{VOXIMPLANT_SIGNATURE_HEADER} does not match the body signed with {whose}, "
            f"or {VOXIMPLANT_TIMESTAMP_HEADER} is more than {tolerance} s off this server's clock"
        )
        raise Refused(403, "bad_signature", message, provider=name)


async def _voximplant_provider(request: web.Request) -> tuple[str, Provider]:
    """The Voximplant provider the URL names, with its record."""
    name = request.match_info["provider"]
    provider = await request.app[STORE].providers.get(name)
    if provider is None or provider.kind is not ProviderKind.VOXIMPLANT:
        raise Refused(403, "unknown_provider", f"no Voximplant provider named {name}", provider=name)
    return name, provider


@_visible_refusals(ProviderKind.VOXIMPLANT)
async def voximplant(request: web.Request) -> web.Response:
    """An event from a VoxEngine scenario callgate ships: inbound.js, or robocall.js when the
    URL names a job and dial (the URL its session's custom data gave it)."""
    name, provider = await _voximplant_provider(request)
    store = request.app[STORE]
    try:
        body = await request.read()
    except web.RequestPayloadError:
        raise Refused(400, "malformed_webhook", UNDECODABLE, provider=name) from None
    if "job" in request.query:
        return await _voximplant_robocall(request, name, provider, body)
    secret = provider.credentials["webhook_secret"]
    _check_voximplant_signature(request, name, secret, body, f"provider {name}'s webhook_secret")
    try:
        event = parse_voximplant(body, name)
    except MalformedWebhook as exc:
        raise Refused(400, "malformed_webhook", exc.message, provider=name, field=exc.field) from None
    line = await store.lines.get(event.line)
    if line is None or line.provider != name:
        raise Refused(
            403, "unknown_line", f"{event.line} is not a line of provider {name}", provider=name, line=event.line
        )
    await accept(request, event)
    if event.kind is EventKind.CALL_INCOMING:
        agents = line.forward_to if line.voice else []
        return web.json_response({"forward_to": agents, "timeout": DIAL_TIMEOUT_SECONDS})
    return web.json_response({"status": "accepted"})


async def _voximplant_robocall(request: web.Request, name: str, provider: Provider, body: bytes) -> web.Response:
    """robocall.js: a session asking for its dial's script, or reporting the call's progress.

    Signed with the dial's own secret (``robocall_secret``), which only the session's custom
    data carries. The first session to claim a dial is its call: any other is refused (409)
    and ends without dialling, so a dial is one call even if it was started twice.
    """
    job, dial = request.query["job"], request.query.get("dial", "")
    # fullmatch, not isdigit/match: "²" is a digit int() refuses, and "$" lets a newline through.
    if not _DIAL.fullmatch(dial) or not params.NAME.fullmatch(job):
        raise Refused(400, "malformed_webhook", "the URL names no job and dial", provider=name, field="dial")
    secret = robocall_secret(provider.credentials["webhook_secret"], job, int(dial))
    _check_voximplant_signature(request, name, secret, body, f"the secret of dial {dial} of job {job}")
    try:
        post = parse_robocall(body, name)
    except MalformedWebhook as exc:
        raise Refused(400, "malformed_webhook", exc.message, provider=name, field=exc.field) from None
    session = post if isinstance(post, str) else post.ref
    script, holder = await request.app[STORE].jobs.claim_dial(f"{job}-{dial}", session)
    if script is None:
        message = f"dial {dial} of job {job} has no call to place here (unknown, or older than 2 days)"
        raise Refused(409, "not_the_call", message, provider=name)
    if holder != session:
        message = f"session {session} is not the call of dial {dial} of job {job}: session {holder} is"
        raise Refused(409, "not_the_call", message, provider=name)
    if isinstance(post, str):
        return web.Response(text=script, content_type="application/json")
    await accept(request, replace(post, extra={**post.extra, "job": job, "dial": dial}))
    return web.json_response({"status": "accepted"})


@_visible_refusals(ProviderKind.VOXIMPLANT)
async def voximplant_callbacks(request: web.Request) -> web.Response:
    """Voximplant's account HTTP callbacks (the account's Callback URL): each callback is
    checked against its ``hash`` (the account's callback salt and API key), and an
    ``sms_inbound`` on a line of this provider is an ``sms.incoming``, taken the path a
    Twilio inbound SMS takes. Other callback types are acknowledged and ignored."""
    name, provider = await _voximplant_provider(request)
    store = request.app[STORE]
    salt, api_key = provider.credentials.get("callback_salt", ""), provider.credentials.get("api_key", "")
    if not salt or not api_key:
        message = f"provider {name} has no callback_salt and api_key credentials to check Voximplant's callbacks with"
        raise Refused(403, "missing_signature", message, provider=name)
    try:
        callbacks = parse_account_callbacks(await request.read())
    except web.RequestPayloadError:
        raise Refused(400, "malformed_webhook", UNDECODABLE, provider=name) from None
    except MalformedWebhook as exc:
        raise Refused(400, "malformed_webhook", exc.message, provider=name, field=exc.field) from None
    for callback in callbacks:
        if not verify_voximplant_callback(salt, api_key, callback.account_id, callback.callback_id, callback.hash):
            message = (
                f"callback {callback.callback_id}: hash is not md5(callback_salt + account_id + api_key + "
                f"callback_id) with provider {name}'s callback_salt and api_key"
            )
            raise Refused(403, "bad_signature", message, provider=name)
    events = []
    for callback in callbacks:
        if callback.sms is None:
            continue
        source, destination, text = callback.sms
        event = Event(
            kind=EventKind.SMS_INCOMING,
            provider=name,
            line=destination,
            customer=source,
            ref=f"{callback.account_id}-{callback.callback_id}",
            dedup=f"voximplant:callback:{callback.account_id}:{callback.callback_id}",
            at=time.time(),
            text=text,
            direction="inbound",
        )
        line = await store.lines.get(event.line)
        if line is None or line.provider != name:
            # The account's callbacks cover all its numbers: one that is not a line here is
            # refused visibly, but acknowledged, or Voximplant would send it again and again.
            message = f"{event.line} is not a line of provider {name}"
            refusal = Refused(403, "unknown_line", message, provider=name, line=event.line)
            await refuse(request, refusal, ProviderKind.VOXIMPLANT.value)
            continue
        events.append(event)
    await accept_all(request, events)
    return web.json_response({"status": "accepted", "sms": len(events)})


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
    Endpoint(
        "POST",
        "/webhooks/twilio/voice/amd",
        twilio_voice_amd,
        "Twilio answering-machine detection callback, AsyncAmdStatusCallback (signed)",
        tag="webhooks",
    ),
    Endpoint("POST", "/webhooks/twilio/sms", twilio_sms, "Twilio incoming SMS (signed)", tag="webhooks"),
    Endpoint(
        "POST", "/webhooks/twilio/sms/status", twilio_sms_status, "Twilio SMS status callback (signed)", tag="webhooks"
    ),
    Endpoint(
        "POST",
        "/webhooks/voximplant/{provider}",
        voximplant,
        "Events of callgate's VoxEngine scenarios (HMAC-SHA256 signed): inbound calls, and a robocall's "
        "script and progress when the URL names its job and dial",
        tag="webhooks",
        path_params={"provider": params.NAME_SCHEMA},
        query=(
            Param("job", "robocall.js: the job whose call this is", schema=params.NAME_SCHEMA),
            Param("dial", "robocall.js: which dial of the job", schema={"type": "string", "pattern": "^[0-9]+$"}),
        ),
    ),
    Endpoint(
        "POST",
        "/webhooks/voximplant/{provider}/callbacks",
        voximplant_callbacks,
        "Voximplant account HTTP callbacks (each checked by its MD5 hash): sms_inbound is an incoming SMS",
        tag="webhooks",
        path_params={"provider": params.NAME_SCHEMA},
    ),
]
