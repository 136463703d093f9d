"""The events feed: what reached the gateway, accepted or refused, newest first (admin)."""

from __future__ import annotations

import re

from aiohttp import web

from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import STORE
from gateway.store.feed import FeedQuery

_KIND = re.compile(r"[a-z_]{1,32}(\.[a-z_]{1,32}){0,3}")
# A next_cursor: the entry id and partition of a page's last entry.
_CURSOR = re.compile(r"[0-9]{1,19}-[0-9]{1,19}(\.[0-9]{1,4})?")


async def list_events(request: web.Request) -> web.Response:
    query = FeedQuery(
        line=params.optional_phone(request, "line"),
        customer=params.optional_phone(request, "customer"),
        kind=params.matching(request, "kind", _KIND, "an event kind such as sms.incoming or webhook.refused"),
        since=params.iso_time(request, "since"),
        before=params.matching(request, "cursor", _CURSOR, "a next_cursor from an earlier page"),
        limit=params.limit(request),
    )
    events, cursor = await request.app[STORE].feed.query(query)
    return web.json_response({"events": events, "next_cursor": cursor})


ENDPOINTS_FEED = [
    Endpoint(
        "GET",
        "/v1/events",
        list_events,
        "Events that reached the gateway (accepted, or refused with the reason), newest first",
        Scope.ADMIN,
        query=(
            Param("line", "only events of this line (E.164)", schema=params.PHONE),
            Param("customer", "only events of this customer number (E.164)", schema=params.PHONE),
            Param(
                "kind",
                "only this kind, e.g. sms.incoming, call.missed, webhook.refused",
                schema=params.pattern_schema(_KIND),
            ),
            Param("since", "only events recorded at or after this ISO-8601 time", schema=params.TIME_SCHEMA),
            Param("cursor", "the next_cursor of the previous page", schema=params.pattern_schema(_CURSOR)),
            Param("limit", "page size, 1-500 (default 50)", schema=params.limit_schema()),
        ),
        tag="admin",
    ),
]
