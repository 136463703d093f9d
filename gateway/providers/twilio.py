"""Twilio (and Twilio-compatible SignalWire, Somleng) through the official SDK's async client.

The call plays its audio with TwiML ``<Play>`` (or speaks its text with ``<Say>``) and reports initiated, ringing, answered and
completed to the status callback, whose URL names the job and dial (Twilio signs it whole).
A message is ``messages.create`` with a status callback naming its job (sent, delivered,
undelivered, failed). Credentials: ``account_sid``, ``auth_token`` and optional ``api_base`` (another API host).
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from gateway.providers import OutboundCall, OutboundSms, PlacementError
from voice.spoken import locale, ssml_rate, ssml_volume

# Below the stream's claim idle time, so a slow create never overlaps another worker's retry.
REQUEST_TIMEOUT_SECONDS = 10.0
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Clocks differ: a call created this long before the dial began still counts as its call.
CLOCK_SLACK_SECONDS = 60.0
# "Attempt to send to unsubscribed recipient": the customer texted STOP to this sender.
OPTED_OUT = 21610


def call_twiml(call: OutboundCall) -> str:
    """``<Play>`` the call's audio, or ``<Say>`` its text (the ``provider`` engine) with SSML
    prosody for a speed or volume other than the default (voice.spoken: Polly and Google
    voices only). A named voice implies its language, so the language goes along only
    when there is no voice or it names a region."""
    response = VoiceResponse()
    spoken = call.say
    if spoken is None:
        response.play(call.audio_url)
        return str(response)
    language = locale(spoken.language)
    say = response.say(
        None if not spoken.plain else spoken.text,
        voice=spoken.voice,
        language=language if spoken.voice is None or "-" in language else None,
    )
    if not spoken.plain:
        say.prosody(spoken.text, rate=ssml_rate(spoken.speed), volume=ssml_volume(spoken.volume))
    return str(response)


def _created_at(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
    return None


@contextlib.contextmanager
def _errors(*, listing: str = "") -> Iterator[None]:
    """Twilio's failures as PlacementErrors: 429, 5xx and the network are transient (and so
    is any failure in ``listing``, which only looks for an earlier try); other 4xx are final."""
    try:
        yield
    except TwilioRestException as exc:
        transient = bool(listing) or exc.status == 429 or exc.status >= 500
        reason = f"Twilio HTTP {exc.status} " + (f"listing {listing}" if listing else f"({exc.code})") + f": {exc.msg}"
        raise PlacementError(
            reason, transient=transient, opted_out=exc.code == OPTED_OUT, throttled=exc.status == 429
        ) from None
    except TwilioException as exc:
        # The SDK's own failures, e.g. a page of a listing that answered 5xx ("Unable to
        # fetch page"): no answer of Twilio's says the request was refused, so it is retried.
        what = f"listing {listing}" if listing else "request"
        raise PlacementError(f"Twilio {what} failed: {exc}", transient=True) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PlacementError(f"Twilio unreachable: {type(exc).__name__}: {exc}", transient=True) from None


def _since(found: Iterable[Any], since: float, matches: Any = None) -> str | None:
    """The first resource created since ``since`` (and equal to ``matches`` on ``body``)."""
    for resource in found:
        created = _created_at(resource.date_created)
        recent = created is not None and created >= since - CLOCK_SLACK_SECONDS
        if recent and (matches is None or resource.body == matches):
            return str(resource.sid)
    return None


class Twilio:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._http = AsyncTwilioHttpClient(timeout=REQUEST_TIMEOUT_SECONDS)
        self._client = Client(credentials["account_sid"], credentials["auth_token"], http_client=self._http)
        if credentials.get("api_base"):
            self._client.api.base_url = credentials["api_base"].rstrip("/")

    async def place(self, call: OutboundCall) -> str:
        with _errors():
            created = await self._client.calls.create_async(
                to=call.to,
                from_=call.line,
                twiml=call_twiml(call),
                status_callback=call.status_url,
                status_callback_event=STATUS_EVENTS,
                status_callback_method="POST",
                machine_detection="Enable" if call.machine_detection else values.unset,
            )
        return str(created.sid)

    async def find(self, call: OutboundCall) -> str | None:
        """A call from our line to the customer created since the dial began: Twilio keeps
        no idempotency key, so the pair and the time identify the call a crash left unknown."""
        with _errors(listing="calls"):
            calls = await self._client.calls.list_async(to=call.to, from_=call.line, limit=20)
        return _since(calls, call.since)

    async def send_sms(self, sms: OutboundSms) -> str:
        with _errors():
            created = await self._client.messages.create_async(
                to=sms.to, from_=sms.line, body=sms.text, status_callback=sms.status_url
            )
        return str(created.sid)

    async def find_sms(self, sms: OutboundSms) -> str | None:
        """A message from our line to the customer with this text, created since the job
        began sending (messages have no idempotency key either)."""
        with _errors(listing="messages"):
            messages = await self._client.messages.list_async(to=sms.to, from_=sms.line, limit=20)
        return _since(messages, sms.since, sms.text)

    async def close(self) -> None:
        await self._http.close()
