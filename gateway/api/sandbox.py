"""``POST /v1/sandbox/sms`` and ``POST /v1/sandbox/calls`` (admin token): a demo "texts" or
"calls" the gateway on a sandbox line, and the message or the missed call takes the path a
provider's webhook takes (timeline, leads, triggers, consent keywords, conversations)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import Field

from config.lines import ProviderKind, Strict
from config.phones import E164
from config.vocabulary import EventKind
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import STORE
from gateway.errors import UnknownReference
from gateway.ingest import accept
from webhooks.events import Event


class SandboxSms(Strict):
    from_: E164 = Field(alias="from")
    to: E164  # a line on a sandbox provider
    text: Annotated[str, Field(min_length=1, max_length=1600)]
    # When it "arrived" (default now): demos of working hours need no waiting for the night.
    at: datetime | None = None


class SandboxCall(Strict):
    """A customer's call to a sandbox line that nobody answers."""

    from_: E164 = Field(alias="from")
    to: E164  # a line on a sandbox provider
    at: datetime | None = None


async def _sandbox_provider(request: web.Request, number: str) -> str:
    """The provider of the sandbox line ``number`` (422 for any other number)."""
    store = request.app[STORE]
    line = await store.lines.get(number)
    provider = await store.providers.get(line.provider) if line is not None else None
    if line is None or provider is None or provider.kind is not ProviderKind.SANDBOX:
        raise UnknownReference("to", f"to: {number} is not a line on a sandbox provider")
    return line.provider


async def sandbox_sms(request: web.Request, body: SandboxSms) -> web.Response:
    provider = await _sandbox_provider(request, body.to)
    ref = "SBIN" + secrets.token_hex(14)
    event = Event(
        kind=EventKind.SMS_INCOMING,
        provider=provider,
        line=body.to,
        customer=body.from_,
        ref=ref,
        dedup=f"sandbox:{ref}:incoming",
        at=body.at.timestamp() if body.at is not None else time.time(),
        text=body.text,
    )
    await accept(request, event)
    return web.json_response({"ref": ref}, status=202)


async def sandbox_call(request: web.Request, body: SandboxCall) -> web.Response:
    """The call rings (``call.incoming``), then nobody answers (``call.missed``), as a
    provider reports an unanswered inbound call."""
    provider = await _sandbox_provider(request, body.to)
    ref = "SBCA" + secrets.token_hex(14)
    at = body.at.timestamp() if body.at is not None else time.time()
    for kind, status in ((EventKind.CALL_INCOMING, "ringing"), (EventKind.CALL_MISSED, "no-answer")):
        event = Event(
            kind=kind,
            provider=provider,
            line=body.to,
            customer=body.from_,
            ref=ref,
            dedup=f"sandbox:{ref}:{kind.value}",
            at=at,
            status=status,
            direction="inbound",
        )
        await accept(request, event)
    return web.json_response({"ref": ref}, status=202)


ENDPOINTS_SANDBOX = [
    Endpoint(
        "POST",
        "/v1/sandbox/sms",
        sandbox_sms,
        "Text the gateway on a sandbox line, as a customer would (demos and tests)",
        Scope.ADMIN,
        SandboxSms,
        status=202,
        tag="sandbox",
    ),
    Endpoint(
        "POST",
        "/v1/sandbox/calls",
        sandbox_call,
        "Call a sandbox line as a customer would, and hang up unanswered: a missed call (demos and tests)",
        Scope.ADMIN,
        SandboxCall,
        status=202,
        tag="sandbox",
    ),
]
