"""Twilio (and Twilio-compatible SignalWire, Somleng) through the official SDK's async client.

The call plays its audio with TwiML ``<Play>`` and reports initiated, ringing, answered and
completed to the status callback, whose URL names the job and dial (Twilio signs it whole).
Credentials: ``account_sid``, ``auth_token`` and optional ``api_base`` (another API host).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from gateway.providers import OutboundCall, PlacementError

# Below the stream's claim idle time, so a slow create never overlaps another worker's retry.
REQUEST_TIMEOUT_SECONDS = 10.0
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Clocks differ: a call created this long before the dial began still counts as its call.
CLOCK_SLACK_SECONDS = 60.0


def play_twiml(audio_url: str) -> str:
    response = VoiceResponse()
    response.play(audio_url)
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


class Twilio:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._http = AsyncTwilioHttpClient(timeout=REQUEST_TIMEOUT_SECONDS)
        self._client = Client(credentials["account_sid"], credentials["auth_token"], http_client=self._http)
        if credentials.get("api_base"):
            self._client.api.base_url = credentials["api_base"].rstrip("/")

    async def place(self, call: OutboundCall) -> str:
        try:
            created = await self._client.calls.create_async(
                to=call.to,
                from_=call.line,
                twiml=play_twiml(call.audio_url),
                status_callback=call.status_url,
                status_callback_event=STATUS_EVENTS,
                status_callback_method="POST",
                machine_detection="Enable" if call.machine_detection else values.unset,
            )
        except TwilioRestException as exc:
            transient = exc.status == 429 or exc.status >= 500
            raise PlacementError(f"Twilio HTTP {exc.status} ({exc.code}): {exc.msg}", transient=transient) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlacementError(f"Twilio unreachable: {type(exc).__name__}: {exc}", transient=True) from None
        return str(created.sid)

    async def find(self, call: OutboundCall) -> str | None:
        """A call from our line to the customer created since the dial began: Twilio keeps
        no idempotency key, so the pair and the time identify the call a crash left unknown."""
        try:
            calls = await self._client.calls.list_async(to=call.to, from_=call.line, limit=20)
        except TwilioRestException as exc:
            raise PlacementError(f"Twilio HTTP {exc.status} listing calls: {exc.msg}", transient=True) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlacementError(f"Twilio unreachable: {type(exc).__name__}: {exc}", transient=True) from None
        for found in calls:
            created = _created_at(found.date_created)
            if created is not None and created >= call.since - CLOCK_SLACK_SECONDS:
                return str(found.sid)
        return None

    async def close(self) -> None:
        await self._http.close()
