"""Subscriptions (admin): CRM endpoints that receive signed events, their dead letters and
replays."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from config.lines import Strict
from config.subscriptions import Subscription, SubscriptionBody
from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import SETTINGS, STORE
from gateway.errors import Invalid, NotFound
from gateway.media import MediaError
from gateway.outbox import address_policy, check_url
from gateway.store.items import now_iso


class ReplayBody(Strict):
    """Which dead letters to deliver again (all of them when the body is empty or names none)."""

    event_ids: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=1000)] | None = None


async def _view(request: web.Request, sub: Subscription) -> dict[str, Any]:
    return {**sub.view(), **await request.app[STORE].outbox.counts(sub.id)}


async def _subscription(request: web.Request) -> Subscription:
    sub_id = params.name(request, "id")
    sub = await request.app[STORE].subscriptions.get(sub_id)
    if sub is None:
        raise NotFound(f"subscription {sub_id}")
    return sub


async def create_subscription(request: web.Request, body: SubscriptionBody) -> web.Response:
    try:
        await check_url(body.url, address_policy(request.app[SETTINGS]))
    except MediaError as exc:
        raise Invalid("url", f"url: {exc}", code="url_refused") from None
    sub = Subscription(**body.model_dump(), id="sub_" + secrets.token_hex(6), created_at=now_iso())
    # The gate opens first: a crash between the two leaves an open gate with no subscription
    # (entries published that nobody wants), never a subscription that gets no events.
    await request.app[STORE].outbox.open(sub.id)
    await request.app[STORE].subscriptions.put(sub.id, sub)
    return web.json_response(await _view(request, sub), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    subs = (await request.app[STORE].subscriptions.all()).values()
    return web.json_response({"subscriptions": [await _view(request, sub) for sub in subs]})


async def get_subscription(request: web.Request) -> web.Response:
    return web.json_response(await _view(request, await _subscription(request)))


async def delete_subscription(request: web.Request) -> web.Response:
    sub = await _subscription(request)
    store = request.app[STORE]
    await store.subscriptions.delete(sub.id)
    await store.outbox.drop(sub.id)
    return web.Response(status=204)


async def list_subscription_dead_letters(request: web.Request) -> web.Response:
    sub = await _subscription(request)
    letters = await request.app[STORE].outbox.dead_letters(sub.id)
    return web.json_response(
        {"dead_letters": [{**letter, "dead_at": now_iso(letter["dead_at"])} for letter in letters]}
    )


async def replay_dead_letters(request: web.Request, body: ReplayBody | None) -> web.Response:
    sub = await _subscription(request)
    ids = body.event_ids if body is not None else None
    replayed = await request.app[STORE].outbox.replay(sub.id, ids, time.time())
    return web.json_response({"replayed": replayed}, status=202)


_ADMIN = Scope.ADMIN
_ID = {"id": params.NAME_SCHEMA}
ENDPOINTS_SUBSCRIPTIONS = [
    Endpoint(
        "POST",
        "/v1/subscriptions",
        create_subscription,
        "Subscribe a CRM endpoint to events (signed POSTs, retried for 24 h)",
        _ADMIN,
        SubscriptionBody,
        status=201,
        tag="subscriptions",
    ),
    Endpoint(
        "GET",
        "/v1/subscriptions",
        list_subscriptions,
        "Subscriptions (never their secrets)",
        _ADMIN,
        tag="subscriptions",
    ),
    Endpoint(
        "GET",
        "/v1/subscriptions/{id}",
        get_subscription,
        "One subscription, with the items waiting for it and its dead letters",
        _ADMIN,
        tag="subscriptions",
        path_params=_ID,
    ),
    Endpoint(
        "DELETE",
        "/v1/subscriptions/{id}",
        delete_subscription,
        "Delete a subscription and every event still queued for it",
        _ADMIN,
        status=204,
        tag="subscriptions",
        path_params=_ID,
    ),
    Endpoint(
        "GET",
        "/v1/subscriptions/{id}/dead-letters",
        list_subscription_dead_letters,
        "Events the endpoint never took within the retry window, newest first",
        _ADMIN,
        tag="subscriptions",
        path_params=_ID,
    ),
    Endpoint(
        "POST",
        "/v1/subscriptions/{id}/replay",
        replay_dead_letters,
        "Deliver dead letters again (all, or event_ids), with a fresh retry window",
        _ADMIN,
        ReplayBody | None,
        status=202,
        tag="subscriptions",
        path_params=_ID,
    ),
]
