"""CRM API: customer cards, lookup by phone and the timeline (api token)."""

from __future__ import annotations

from aiohttp import web

from config.cards import Card
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import STORE
from gateway.errors import Invalid, NotFound
from gateway.store import Store


async def _check_stage(store: Store, card: Card) -> None:
    pipeline = await store.pipelines.get(card.pipeline)
    if pipeline is None:
        raise Invalid("pipeline", f"pipeline: no pipeline {card.pipeline!r}; an admin must PUT /v1/pipelines first")
    if card.stage not in pipeline.stages:
        raise Invalid(
            "stage", f"stage: {card.stage!r} is not a stage of {card.pipeline} ({', '.join(pipeline.stages)})"
        )


async def put_item(request: web.Request, body: Card) -> web.Response:
    item_id = params.item_id(request)
    store = request.app[STORE]
    await _check_stage(store, body)
    item, created = await store.items.put(item_id, body)
    return web.json_response(item.view(), status=201 if created else 200)


async def get_item(request: web.Request) -> web.Response:
    item_id = params.item_id(request)
    store = request.app[STORE]
    item = await store.items.get(item_id)
    if item is None:
        raise NotFound(f"item {item_id}")
    return web.json_response({**item.view(), "timeline": await store.items.timeline(item_id)})


async def find_items(request: web.Request) -> web.Response:
    phone = params.phone(request.query.get("phone"), "phone")
    items = await request.app[STORE].items.by_phone(phone)
    return web.json_response({"items": [item.view() for item in items]})


_API = Scope.API
ENDPOINTS_CRM = [
    Endpoint("PUT", "/v1/items/{id}", put_item, "Create or replace a customer card", _API, Card, tag="crm"),
    Endpoint("GET", "/v1/items/{id}", get_item, "A card with its stage and timeline", _API, tag="crm"),
    Endpoint(
        "GET",
        "/v1/items",
        find_items,
        "The items a phone number belongs to",
        _API,
        query=(Param("phone", "E.164 number, + encoded or not", required=True),),
        tag="crm",
    ),
]
