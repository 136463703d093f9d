"""Operations: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.openapi import build_openapi
from gateway.api.routing import Endpoint
from gateway.appkeys import ENDPOINTS, METRICS, STORE
from gateway.store.connection import UNAVAILABLE


def _version() -> str:
    try:
        return version("callgate")
    except PackageNotFoundError:
        return "0.0.0"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except UNAVAILABLE:
        return web.json_response({"error": {"code": "unavailable", "message": "redis is not answering"}}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    endpoints: list[Endpoint] = request.app[ENDPOINTS]
    return web.json_response(build_openapi(endpoints, _version()))


ENDPOINTS_OPS = [
    Endpoint("GET", "/healthz", healthz, "The process is up", tag="ops"),
    Endpoint("GET", "/readyz", readyz, "Redis answers (503 when it does not)", tag="ops"),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", tag="ops"),
    Endpoint("GET", "/openapi.json", openapi, "This API as OpenAPI 3", tag="ops"),
]
