"""Voximplant through its management API SDK (``voximplant-apiclient``).

The SDK is synchronous (httpx, with no timeout of its own): each request runs on a few
threads of this client's own, off the event loop, and is given up on after
REQUEST_TIMEOUT_SECONDS as a transient failure (the next try reconciles before it dials).

A robocall is ``StartScenarios`` of the provider's ``rule_id``, a routing rule running the
shipped ``voice/voxengine/callgate.js`` and ``robocall.js``. VoxEngine keeps at most 200 bytes
of a session's custom data, too few for a number, a caller id, an audio URL and a callback
URL, so ``script_custom_data`` names only where the scenario reports and the dial's own
secret: ``{"url": ".../webhooks/voximplant/<provider>?job=<id>&dial=<n>", "secret": "..."}``.
When its session starts, the scenario asks that URL for the dial's script (the number, the
caller id, the audio URL or the text to say), then reports the call's progress there.

Exactly one call per dial: the first session to claim the dial (the scenario asking for its
script, or this client recording what StartScenarios returned) is the dial's call; any other
session of the dial is refused its script and ends without dialling. A dial whose placement
outcome a crash left unknown is reconciled from that claim, else from ``GetCallHistory``
filtered by the session's custom data, which is the same string on every try of a dial.

A dial whose scenario stops reporting (it cannot reach the gateway, or it crashed) would stay
``sent``, ``ringing`` or ``answered``: it is looked up in ``GetCallHistory`` by its session,
with its calls, CHECK_AFTER_SECONDS after it was placed (and as often again while the session
has not ended), and settled from what the history says; with no end there
GIVE_UP_AFTER_SECONDS after the dial began, it fails.

A message is ``SendSmsMessage`` from the line (a number of the account with SMS enabled);
Voximplant reports no delivery for it, so the job ends ``sent``. Its text is stored
(``store_body``) so that a send whose outcome a crash left unknown is recognised in
``GetSmsHistory``: a message from the line to the customer with this text, since the job
began sending.

Credentials: ``webhook_secret``; for robocalls and SMS also ``service_account`` (the JSON key file of
a service account, as text) and ``rule_id``; optional ``endpoint`` (the API host).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from voximplant.apiclient import VoximplantAPI, VoximplantException

from gateway.providers import CallEnd, OutboundCall, OutboundSms, PlacementError
from gateway.store import Store
from voice.spoken import voxengine_say
from webhooks.signatures import robocall_secret

SERVICE_ACCOUNT = "service_account"
# What the SDK reads from a service account's key file.
SERVICE_ACCOUNT_KEYS = ("account_id", "key_id", "private_key")
DEFAULT_ENDPOINT = "api.voximplant.com"
# Below the stream's claim idle time, so a slow request never overlaps another worker's retry.
REQUEST_TIMEOUT_SECONDS = 10.0
# Requests under way at once per provider; a request the timeout gave up on keeps its thread
# until the SDK returns, so a hung API holds at most these.
THREADS = 4
# VoxEngine.customData(): "Maximum size is 200 bytes".
CUSTOM_DATA_LIMIT = 200
# Clocks differ: a session started this long before the dial began still counts as its call.
CLOCK_SLACK_SECONDS = 60.0
# How the management API writes times (UTC).
API_TIME = "%Y-%m-%d %H:%M:%S"
# The management API's answer when more than 200 of the account's requests are under way.
TOO_MANY_REQUESTS = 429
# VoxEngine gives up ringing after 60 s (Failed 408); a scenario that reached the gateway has
# reported ringing or the end by then, so a dial still ``sent`` is looked up this long after.
CHECK_AFTER_SECONDS = 120.0
# Longer than any robocall lasts (ringing, an MP3 of at most 10 MB, robocall.js's retries of
# its reports): a dial the call history shows no end of by then is failed.
GIVE_UP_AFTER_SECONDS = 3600.0


def _failure(exc: Exception, method: str, *, listing: bool) -> PlacementError:
    """A failed request as a PlacementError: the network, timeouts, 429 and 5xx are transient
    (and so is any failure of ``listing``, which only looks for an earlier try); the API's
    other errors (an unknown rule, a number it refuses) are final."""
    if isinstance(exc, VoximplantException):
        code = int(exc.code) if str(exc.code).lstrip("-").isdigit() else -1
        transient = listing or code == TOO_MANY_REQUESTS or 500 <= code < 600
        return PlacementError(
            f"Voximplant {method} error {exc.code}: {exc.message}",
            transient=transient,
            throttled=code == TOO_MANY_REQUESTS,
        )
    return PlacementError(f"Voximplant unreachable ({method}): {type(exc).__name__}: {exc}", transient=True)


def _api_time(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _digits(number: str) -> str:
    """A number as the management API spells it: international, without the "+"."""
    return number.removeprefix("+")


def _failed_status(code: int) -> str:
    """A failed call's status by its SIP code, as robocall.js's failedStatus reports it."""
    if code in (486, 600):
        return "busy"
    if code in (408, 480, 487, 603):
        return "no-answer"
    return "failed"


def _call_end(session: Mapping[str, Any]) -> CallEnd | None:
    """How a session of the call history ended: None while it has no finish_reason (under way)."""
    finish = session.get("finish_reason")
    if not finish:
        return None
    dialled = [call for call in session.get("calls") or [] if not call.get("incoming")]
    if not dialled:
        return CallEnd("failed", unplaced=f"robocall.js never dialled: its session ended ({finish}) without a call")
    call = dialled[-1]
    duration = int(call.get("duration") or 0)
    if call.get("successful"):
        return CallEnd("completed", duration=duration)
    code = (call.get("end_reason") or {}).get("code")
    sip = int(str(code)) if str(code).isdigit() else 0
    return CallEnd(_failed_status(sip), duration=duration, code=str(sip) if sip else "")


class Voximplant:
    check_after = CHECK_AFTER_SECONDS
    give_up_after = GIVE_UP_AFTER_SECONDS

    def __init__(self, name: str, credentials: Mapping[str, str], store: Store, base_url: str) -> None:
        self._name = name
        self._credentials = credentials
        self._store = store
        self._base_url = base_url
        self._api: VoximplantAPI | None = None
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=f"voximplant-{name}")

    def _client(self, needs: str = "") -> VoximplantAPI:
        """The SDK's client; a final PlacementError when a credential it needs is missing."""
        missing = [key for key in (SERVICE_ACCOUNT, needs) if key and not self._credentials.get(key)]
        if missing:
            reason = f"provider {self._name} has no credentials {', '.join(missing)}"
            raise PlacementError(reason, transient=False)
        if self._api is None:
            try:
                account = json.loads(self._credentials[SERVICE_ACCOUNT])
            except ValueError:
                account = None
            if not isinstance(account, dict) or not all(account.get(key) for key in SERVICE_ACCOUNT_KEYS):
                keys = ", ".join(SERVICE_ACCOUNT_KEYS)
                reason = f"provider {self._name}'s service_account is not a service account's JSON key file ({keys})"
                raise PlacementError(reason, transient=False)
            # The SDK reads a service account from a file only: a private temporary one
            # (mode 0600), gone once the constructor has read it.
            with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
                file.write(self._credentials[SERVICE_ACCOUNT])
                file.flush()
                endpoint = self._credentials.get("endpoint") or DEFAULT_ENDPOINT
                api = VoximplantAPI(file.name, endpoint=endpoint)
            # The SDK signs a fresh JWT for every request with credentials["private_key"];
            # given the PEM text, PyJWT parses and validates the RSA key each time (about 55 ms
            # of CPU, bench/vox_requests.py). A key object parsed once signs in under 1 ms.
            try:
                api.credentials["private_key"] = load_pem_private_key(account["private_key"].encode(), None)
            except (ValueError, TypeError):
                reason = f"provider {self._name}'s service_account private_key is not a PEM private key"
                raise PlacementError(reason, transient=False) from None
            self._api = api
        return self._api

    async def _request(self, method: str, request: Callable[[], Any], *, listing: bool = False) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(self._pool, request), REQUEST_TIMEOUT_SECONDS)
        except (VoximplantException, httpx.HTTPError, TimeoutError, OSError) as exc:
            raise _failure(exc, method, listing=listing) from None
        if not isinstance(answer, dict):
            raise PlacementError(f"Voximplant {method} answered {type(answer).__name__}, not JSON", transient=True)
        return answer

    def custom_data(self, call: OutboundCall) -> str:
        """The session's custom data for ``call``: the same string on every try of its dial."""
        url = f"{self._base_url}/webhooks/voximplant/{self._name}?job={call.job_id}&dial={call.dial}"
        secret = robocall_secret(self._credentials["webhook_secret"], call.job_id, call.dial)
        return json.dumps({"url": url, "secret": secret}, separators=(",", ":"))

    async def place(self, call: OutboundCall) -> str:
        api = self._client(needs="rule_id")
        custom = self.custom_data(call)
        size = len(custom.encode())
        if size > CUSTOM_DATA_LIMIT:
            reason = (
                f"the session's custom data would be {size} bytes, over VoxEngine's {CUSTOM_DATA_LIMIT}: "
                f"shorten CALLGATE_PUBLIC_URL or the provider's name"
            )
            raise PlacementError(reason, transient=False)
        # The provider engine's text is spoken by VoxEngine (call.say), else the MP3 plays.
        speech = {"say": voxengine_say(call.say)} if call.say is not None else {"play": call.audio_url}
        script = {"to": call.to, "caller_id": call.line, **speech}
        await self._store.jobs.save_script(call.key, json.dumps(script))
        rule = int(self._credentials["rule_id"])
        started = await self._request(
            "StartScenarios", lambda: api.start_scenarios(rule_id=rule, script_custom_data=custom)
        )
        # The scenario may have claimed the dial already, with this very session.
        return await self._store.jobs.record_call(call.key, str(started["call_session_history_id"]))

    async def find(self, call: OutboundCall) -> str | None:
        """The session of this dial: claimed by its scenario or recorded when it started,
        else one in the call history with this dial's custom data, started since the dial began."""
        claimed = await self._store.jobs.recorded_call(call.key)
        if claimed is not None:
            return claimed
        api = self._client()
        custom = self.custom_data(call)
        since, until = _api_time(call.since - CLOCK_SLACK_SECONDS), _api_time(time.time() + CLOCK_SLACK_SECONDS)
        history = await self._request(
            "GetCallHistory",
            lambda: api.get_call_history(
                from_date=since, to_date=until, call_session_history_custom_data=custom, count=1
            ),
            listing=True,
        )
        sessions = history.get("result") or []
        if not sessions:
            return None
        return await self._store.jobs.record_call(call.key, str(sessions[0]["call_session_history_id"]))

    async def call_end(self, call: OutboundCall, ref: str) -> CallEnd | None:
        """How session ``ref`` ended, by ``GetCallHistory`` with its calls (robocall.js's
        reports never reached the gateway): its call's success and duration, or SIP code."""
        api = self._client()
        since, until = _api_time(call.since - CLOCK_SLACK_SECONDS), _api_time(time.time() + CLOCK_SLACK_SECONDS)
        history = await self._request(
            "GetCallHistory",
            lambda: api.get_call_history(
                from_date=since, to_date=until, call_session_history_id=ref, with_calls=True, count=1
            ),
            listing=True,
        )
        sessions = history.get("result") or []
        return _call_end(sessions[0]) if sessions else None

    async def send_sms(self, sms: OutboundSms) -> str:
        api = self._client()
        source, destination = _digits(sms.line), _digits(sms.to)
        sent = await self._request(
            "SendSmsMessage",
            lambda: api.send_sms_message(source=source, destination=destination, sms_body=sms.text, store_body=True),
        )
        return str(sent["message_id"])

    async def find_sms(self, sms: OutboundSms) -> str | None:
        api = self._client()
        params = {
            "source_number": _digits(sms.line),
            "destination_number": _digits(sms.to),
            "direction": "OUT",
            "from_date": _api_time(sms.since - CLOCK_SLACK_SECONDS).strftime(API_TIME),
            "to_date": _api_time(time.time() + CLOCK_SLACK_SECONDS).strftime(API_TIME),
        }
        # The SDK's get_sms_history parses processed_date ("yyyy-MM-dd HH:mm:ss", as the API
        # documents it) as a bare date and raises ValueError; its transport, authentication
        # included, is used as is.
        history = await self._request(
            "GetSmsHistory", lambda: api._perform_request("GetSmsHistory", params), listing=True
        )
        if "error" in history:
            error = VoximplantException(history["error"].get("msg"), history["error"].get("code"))
            raise _failure(error, "GetSmsHistory", listing=True)
        for message in history.get("result") or []:
            if message.get("text") == sms.text:
                return str(message["message_id"])
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
