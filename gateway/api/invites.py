"""Messenger invites (SPEC 1.3): ``POST /v1/invites`` (api token) texts the customer a
tracked link; ``GET /i/{token}`` (no token: the link is unguessable) redirects to the
messenger and reports the click as ``link.clicked``, which triggers can watch."""

from __future__ import annotations

import re
import secrets
import time

from aiohttp import web

from config.cards import Card
from config.recipients import NoRecipient, PhoneChoice, select_phone
from config.vocabulary import EventKind
from gateway.api import params
from gateway.api.queueing import idempotency_key
from gateway.api.routing import Endpoint, Scope
from gateway.api.sms import queue_sms
from gateway.appkeys import SETTINGS, STORE
from gateway.errors import NotFound
from gateway.ingest import accept
from gateway.store.items import timeline_entry
from sms.invite import LINK_FIELD, Invite, InviteRequest, destination
from webhooks.events import Event

_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


async def create_invite(request: web.Request, body: Invite) -> web.Response:
    token = secrets.token_urlsafe(16)
    link = f"{request.app[SETTINGS].base_url}/i/{token}"
    values = {LINK_FIELD: link}
    store = request.app[STORE]
    key = idempotency_key(request)
    queued = await queue_sms(store, body, body.template(), key=key, values=values, extra={"invite": token})
    fields = queued.fields
    if fields:  # not a replay of an earlier request
        invite = {
            "item_id": body.item_id,
            "channel": body.channel,
            "target": body.target,
            "line": fields["line"],
            "provider": fields["provider"],
            "phone_type": body.phone_type,
        }
        await store.invites.put(token, invite)
    return queued.response()


async def follow_invite(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    store = request.app[STORE]
    invite = await store.invites.get(token) if _TOKEN.fullmatch(token) else None
    if invite is None:
        raise NotFound("invite link (unknown or expired)")
    item = await store.items.get(invite["item_id"])
    if item is not None:
        await _clicked(request, token, invite, item.card)
    raise web.HTTPFound(destination(invite["channel"], invite["target"], token))


async def _clicked(request: web.Request, token: str, invite: dict[str, str], card: Card) -> None:
    """``invite.clicked`` on the item's timeline, and a ``link.clicked`` event for triggers."""
    store, now = request.app[STORE], time.time()
    click = secrets.token_hex(8)
    data = {"channel": invite["channel"], "target": invite["target"], "token": token}
    await store.items.record(invite["item_id"], f"invite:{click}", timeline_entry("invite.clicked", data, now))
    phone_type: PhoneChoice = invite["phone_type"]  # type: ignore[assignment]
    try:
        customer = select_phone(card, phone_type)
    except NoRecipient:
        return  # the card lost the number since: nobody to move by it
    event = Event(
        kind=EventKind.LINK_CLICKED,
        provider=invite["provider"],
        line=invite["line"],
        customer=customer,
        ref=token,
        dedup=f"invite:{token}:{click}",
        at=now,
        extra={"channel": invite["channel"], "item_id": invite["item_id"]},
    )
    await accept(request, event)


ENDPOINTS_INVITES = [
    Endpoint(
        "POST",
        "/v1/invites",
        create_invite,
        "Text the customer a tracked link to a Telegram bot or WhatsApp number (Idempotency-Key honoured)",
        Scope.API,
        InviteRequest,
        status=202,
        tag="jobs",
    ),
    Endpoint(
        "GET",
        "/i/{token}",
        follow_invite,
        "An invite's tracked link: redirects to the messenger and reports link.clicked",
        tag="invites",
        status=302,
        path_params={"token": params.pattern_schema(_TOKEN)},
    ),
]
