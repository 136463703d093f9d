"""Operations: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.openapi import build_openapi
from gateway.api.routing import Endpoint
from gateway.appkeys import ENDPOINTS, METRICS, STORE, WORKERS
from gateway.keys import EVENTS_STREAM, JOBS_STREAM
from gateway.store.connection import UNAVAILABLE


def _version() -> str:
    try:
        return version("callgate")
    except PackageNotFoundError:
        return "0.0.0"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


STREAMS = (EVENTS_STREAM, JOBS_STREAM)


def _unavailable(message: str) -> web.Response:
    return web.json_response({"error": {"code": "unavailable", "message": message}}, status=503)


async def readyz(request: web.Request) -> web.Response:
    health = request.app[METRICS].health
    try:
        await request.app[STORE].ping()
    except UNAVAILABLE as exc:
        health.lost(exc)
        return _unavailable(f"redis is not available: {exc}")
    health.back()
    # Events stored but never processed are worse than a 503: take this process out of rotation.
    workers = request.app.get(WORKERS)
    idle = [stream for stream in workers.streams if workers.live_consumers(stream) == 0] if workers else []
    if idle:
        return _unavailable(f"no consumer of the {idle[0]} stream is running (see the log for why)")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    gauges = request.app[METRICS]
    workers = request.app.get(WORKERS)
    if workers is not None:
        for stream in workers.streams:
            gauges.consumers_live.labels(stream).set(workers.live_consumers(stream))
    store = request.app[STORE]
    try:
        for stream in STREAMS:
            backlog = await store.backlogs.of(stream)
            gauges.stream_length.labels(stream).set(backlog.length)
            gauges.stream_pending.labels(stream).set(backlog.pending)
            gauges.stream_oldest_pending.labels(stream).set(backlog.oldest_pending_seconds)
        gauges.stage_entries_waiting.set(await store.stage_entries.waiting())
    except UNAVAILABLE:
        pass  # the scrape still answers; the backlog gauges keep their last values
    body = generate_latest(gauges.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    endpoints: list[Endpoint] = request.app[ENDPOINTS]
    return web.json_response(build_openapi(endpoints, _version()))


ENDPOINTS_OPS = [
    Endpoint("GET", "/healthz", healthz, "The process is up", tag="ops"),
    Endpoint("GET", "/readyz", readyz, "Redis answers and an event consumer runs (503 when not)", tag="ops"),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", tag="ops"),
    Endpoint("GET", "/openapi.json", openapi, "This API as OpenAPI 3", tag="ops"),
]
