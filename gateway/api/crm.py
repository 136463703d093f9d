"""CRM API: customer cards, lookup by phone and the timeline (api token)."""

from __future__ import annotations

import re

from aiohttp import web

from config.cards import Card
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import STORE
from gateway.errors import NotFound, UnknownReference
from gateway.store import Store
from gateway.store.items import ItemQuery

# The newest entries come with the card; older ones a page at a time (?before=).
TIMELINE_PAGE = 100
TIMELINE_PAGE_MAX = 1000


async def _check_stage(store: Store, card: Card) -> None:
    pipeline = await store.pipelines.get(card.pipeline)
    if pipeline is None:
        raise UnknownReference(
            "pipeline", f"pipeline: no pipeline {card.pipeline!r}; an admin must PUT /v1/pipelines first"
        )
    if card.stage not in pipeline.stages:
        raise UnknownReference(
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
    size = params.limit(request, default=TIMELINE_PAGE, most=TIMELINE_PAGE_MAX)
    entries, older = await store.items.timeline(item_id, size, params.position(request, "before"))
    return web.json_response({**item.view(), "timeline": entries, "timeline_before": older})


async def find_items(request: web.Request) -> web.Response:
    """By phone (the items a number belongs to), or every item in update order, a page at
    a time; either narrowed to a pipeline, a stage, or items updated since a time."""
    store = request.app[STORE]
    query = ItemQuery(
        pipeline=params.matching(request, "pipeline", params.NAME, "a pipeline id"),
        stage=params.matching(request, "stage", params.NAME, "a stage name"),
        since_ms=_ms(params.iso_time(request, "updated_since")),
        after=_cursor(params.matching(request, "cursor", _CURSOR, "a next_cursor from an earlier page")),
        limit=params.limit(request),
    )
    phone = params.optional_phone(request, "phone")
    if phone is None:
        items, cursor = await store.items.page(query)
        return web.json_response({"items": [item.view() for item in items], "next_cursor": cursor})
    since = query.since_ms or 0
    found = [i for i in await store.items.by_phone(phone) if query.matches(i) and i.updated_ms() >= since]
    return web.json_response({"items": [item.view() for item in found], "next_cursor": None})


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _cursor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    ms, _, item_id = value.partition(":")
    return int(ms), item_id


async def delete_item(request: web.Request) -> web.Response:
    item_id = params.item_id(request)
    if not await request.app[STORE].items.delete(item_id):
        raise NotFound(f"item {item_id}")
    return web.Response(status=204)


_CURSOR = re.compile(r"[0-9]{1,16}:[A-Za-z0-9_.:-]{1,128}")

_API = Scope.API
ENDPOINTS_CRM = [
    Endpoint(
        "PUT",
        "/v1/items/{id}",
        put_item,
        "Create or replace a customer card",
        _API,
        Card,
        tag="crm",
        also=(201,),
        path_params={"id": params.ITEM_ID_SCHEMA},
    ),
    Endpoint(
        "GET",
        "/v1/items/{id}",
        get_item,
        "A card with its stage and its newest timeline entries (oldest first); "
        "timeline_before is the position to page back from",
        _API,
        query=(
            Param(
                "limit",
                f"timeline entries (1-{TIMELINE_PAGE_MAX}, default {TIMELINE_PAGE})",
                schema=params.limit_schema(TIMELINE_PAGE_MAX),
            ),
            Param(
                "before",
                "only entries before this position (a previous timeline_before)",
                schema=params.POSITION_SCHEMA,
            ),
        ),
        tag="crm",
        path_params={"id": params.ITEM_ID_SCHEMA},
    ),
    Endpoint(
        "DELETE",
        "/v1/items/{id}",
        delete_item,
        "Delete a card with its phone index entries and timeline",
        _API,
        status=204,
        tag="crm",
        path_params={"id": params.ITEM_ID_SCHEMA},
    ),
    Endpoint(
        "GET",
        "/v1/items",
        find_items,
        "The items a phone number belongs to, or every item in update order (oldest first), a page at a time",
        _API,
        query=(
            Param("phone", "E.164 number, + encoded or not: the items holding it", schema=params.PHONE),
            Param("pipeline", "only items in this pipeline", schema=params.NAME_SCHEMA),
            Param("stage", "only items in this stage", schema=params.NAME_SCHEMA),
            Param("updated_since", "only items updated at or after this ISO-8601 time", schema=params.TIME_SCHEMA),
            Param("cursor", "the next_cursor of the previous page", schema=params.pattern_schema(_CURSOR)),
            Param("limit", "page size, 1-500 (default 50)", schema=params.limit_schema()),
        ),
        tag="crm",
    ),
]
