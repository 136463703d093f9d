"""``POST /v1/sandbox/sms`` (admin token): a demo "texts" the gateway on a sandbox line, and
the message takes the path a provider's inbound SMS takes (timeline, triggers, consent
keywords, conversations)."""

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


async def sandbox_sms(request: web.Request, body: SandboxSms) -> web.Response:
    store = request.app[STORE]
    line = await store.lines.get(body.to)
    provider = await store.providers.get(line.provider) if line is not None else None
    if line is None or provider is None or provider.kind is not ProviderKind.SANDBOX:
        raise UnknownReference("to", f"to: {body.to} is not a line on a sandbox provider")
    ref = "SBIN" + secrets.token_hex(14)
    event = Event(
        kind=EventKind.SMS_INCOMING,
        provider=line.provider,
        line=body.to,
        customer=body.from_,
        ref=ref,
        dedup=f"sandbox:{ref}:incoming",
        at=body.at.timestamp() if body.at is not None else time.time(),
        text=body.text,
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
]
