"""Usage and cost over a span of time, by provider and line (api token)."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from config.usage import money
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Schema, Scope
from gateway.appkeys import STORE
from gateway.store.usage import HOUR, RETENTION_SECONDS, Totals

DAY = 24 * 3600
_UNIX = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
MOMENT_SCHEMA: Schema = {
    "anyOf": [params.TIME_SCHEMA, {"type": "string", "pattern": f"^{_UNIX.pattern}$"}],
}


def _moment(request: web.Request, key: str) -> float | None:
    """An ISO-8601 time or unix seconds in the query."""
    value = request.query.get(key)
    if value is not None and _UNIX.fullmatch(value):
        return float(value)
    return params.iso_time(request, key)


def _view(owner: dict[str, str], totals: Totals) -> dict[str, Any]:
    counters = totals.usage.counters()
    del counters["cost_nanos"], counters["provider_chars"]
    cost = {currency: money(nanos) for currency, nanos in sorted(totals.cost.items())}
    return {**owner, **counters, "cost": cost}


async def get_usage(request: web.Request) -> web.Response:
    now = time.time()
    until = _moment(request, "until")
    until = now if until is None else until
    since = _moment(request, "since")
    since = until - DAY if since is None else since
    # Whole UTC hours (usage is counted per hour), within what is kept: older hours are empty.
    first = max(math.floor(since / HOUR), math.floor((now - RETENTION_SECONDS) / HOUR) - 1)
    last = min(math.ceil(until / HOUR), math.ceil(now / HOUR) + 1)
    # since after until, or a span wholly in the future: no hours, and no year past 9999.
    first = min(first, last)
    found = await request.app[STORE].usage.totals(range(first, last))
    providers: dict[str, Totals] = {}
    for (provider, _), totals in found.items():
        into = providers.setdefault(provider, Totals())
        into.usage += totals.usage
        for currency, nanos in totals.cost.items():
            into.cost[currency] = into.cost.get(currency, 0) + nanos
    shown = (max(first, 0) * HOUR, max(last, 0) * HOUR)
    body = {
        "since": datetime.fromtimestamp(shown[0], UTC).isoformat(),
        "until": datetime.fromtimestamp(shown[1], UTC).isoformat(),
        "providers": [_view({"provider": name}, totals) for name, totals in sorted(providers.items())],
        "lines": [_view({"provider": p, "line": line}, totals) for (p, line), totals in found.items()],
    }
    return web.json_response(body)


ENDPOINTS_USAGE = [
    Endpoint(
        "GET",
        "/v1/usage",
        get_usage,
        "Jobs, calls, minutes, TTS characters, SMS segments and cost by provider and line, over whole UTC hours",
        Scope.API,
        query=(
            Param("since", "start: ISO-8601 or unix seconds (default 24 h before until)", schema=MOMENT_SCHEMA),
            Param("until", "end: ISO-8601 or unix seconds (default now)", schema=MOMENT_SCHEMA),
        ),
        tag="jobs",
    ),
]
