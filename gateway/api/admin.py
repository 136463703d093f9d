"""Admin API: providers, lines and pipelines (admin token)."""

from __future__ import annotations

from aiohttp import web

from config.lines import Line, Pipeline, Provider
from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import STORE
from gateway.errors import ApiError, Invalid, NotFound


async def put_provider(request: web.Request, body: Provider) -> web.Response:
    name = params.name(request, "name")
    await request.app[STORE].providers.put(name, body)
    return web.json_response({"name": name, **body.public_view()})


async def list_providers(request: web.Request) -> web.Response:
    providers = await request.app[STORE].providers.all()
    return web.json_response({"providers": [{"name": n, **p.public_view()} for n, p in providers.items()]})


async def delete_provider(request: web.Request) -> web.Response:
    name = params.name(request, "name")
    store = request.app[STORE]
    users = sorted(number for number, line in (await store.lines.all()).items() if line.provider == name)
    if users:
        raise ApiError(409, "in_use", f"provider {name} is used by line(s) {', '.join(users)}")
    if not await store.providers.delete(name):
        raise NotFound(f"provider {name}")
    return web.Response(status=204)


async def put_line(request: web.Request, body: Line) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    store = request.app[STORE]
    if await store.providers.get(body.provider) is None:
        raise Invalid("provider", f"provider: no provider named {body.provider!r}; PUT /v1/providers first")
    if body.lead is not None:
        pipeline = await store.pipelines.get(body.lead.pipeline)
        if pipeline is None:
            raise Invalid("lead.pipeline", f"lead.pipeline: no pipeline {body.lead.pipeline!r}")
        if body.lead.stage not in pipeline.stages:
            raise Invalid("lead.stage", f"lead.stage: {body.lead.stage!r} is not a stage of {body.lead.pipeline}")
    await store.lines.put(number, body)
    return web.json_response({"number": number, **body.model_dump(mode="json")})


async def list_lines(request: web.Request) -> web.Response:
    lines = await request.app[STORE].lines.all()
    return web.json_response({"lines": [{"number": n, **line.model_dump(mode="json")} for n, line in lines.items()]})


async def delete_line(request: web.Request) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    if not await request.app[STORE].lines.delete(number):
        raise NotFound(f"line {number}")
    return web.Response(status=204)


async def put_pipeline(request: web.Request, body: Pipeline) -> web.Response:
    pipeline_id = params.name(request, "id")
    await request.app[STORE].pipelines.put(pipeline_id, body)
    return web.json_response({"id": pipeline_id, **body.model_dump(mode="json")})


async def list_pipelines(request: web.Request) -> web.Response:
    pipelines = await request.app[STORE].pipelines.all()
    return web.json_response({"pipelines": [{"id": i, **p.model_dump(mode="json")} for i, p in pipelines.items()]})


_ADMIN = Scope.ADMIN
ENDPOINTS_ADMIN = [
    Endpoint(
        "PUT",
        "/v1/providers/{name}",
        put_provider,
        "Create or replace a provider",
        _ADMIN,
        Provider,
        tag="admin",
    ),
    Endpoint("GET", "/v1/providers", list_providers, "Providers (secret values masked)", _ADMIN, tag="admin"),
    Endpoint(
        "DELETE",
        "/v1/providers/{name}",
        delete_provider,
        "Delete a provider no line uses",
        _ADMIN,
        status=204,
        tag="admin",
    ),
    Endpoint(
        "PUT",
        "/v1/lines/{number}",
        put_line,
        "Create or replace a line (E.164, URL-encoded +)",
        _ADMIN,
        Line,
        tag="admin",
    ),
    Endpoint("GET", "/v1/lines", list_lines, "Lines", _ADMIN, tag="admin"),
    Endpoint("DELETE", "/v1/lines/{number}", delete_line, "Delete a line", _ADMIN, status=204, tag="admin"),
    Endpoint(
        "PUT",
        "/v1/pipelines/{id}",
        put_pipeline,
        "Create or replace a pipeline (stage order = progress)",
        _ADMIN,
        Pipeline,
        tag="admin",
    ),
    Endpoint("GET", "/v1/pipelines", list_pipelines, "Pipelines", _ADMIN, tag="admin"),
]
