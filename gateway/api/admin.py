"""Admin API: providers, lines and pipelines (admin token).

Records refer to each other (a line to its provider, a trigger to its line and stage, an
item to its stage): a change that would leave such a reference pointing at nothing is a 409
naming what still uses it.
"""

from __future__ import annotations

from aiohttp import web

from config.declared import credentials_digest
from config.lines import Line, Pipeline, Provider
from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import STORE, TOKENS
from gateway.errors import InUse, NotFound, UnknownReference
from gateway.store import Store


def _provider_view(request: web.Request, name: str, provider: Provider) -> dict[str, object]:
    """The record without secret values, and a digest of them keyed by the admin token, with
    which ``callgate apply`` tells whether a file's credentials are the stored ones."""
    digest = credentials_digest(provider.credentials, request.app[TOKENS].admin)
    return {"name": name, **provider.public_view(), "credentials_digest": digest}


async def put_provider(request: web.Request, body: Provider) -> web.Response:
    name = params.name(request, "name")
    await request.app[STORE].providers.put(name, body)
    return web.json_response(_provider_view(request, name, body))


async def get_provider(request: web.Request) -> web.Response:
    name = params.name(request, "name")
    provider = await request.app[STORE].providers.get(name)
    if provider is None:
        raise NotFound(f"provider {name}")
    return web.json_response(_provider_view(request, name, provider))


async def list_providers(request: web.Request) -> web.Response:
    providers = await request.app[STORE].providers.all()
    return web.json_response({"providers": [_provider_view(request, n, p) for n, p in providers.items()]})


async def delete_provider(request: web.Request) -> web.Response:
    name = params.name(request, "name")
    store = request.app[STORE]
    users = sorted(number for number, line in (await store.lines.all()).items() if line.provider == name)
    if users:
        raise InUse(f"provider {name} is used by line(s) {', '.join(users)}")
    if not await store.providers.delete(name):
        raise NotFound(f"provider {name}")
    return web.Response(status=204)


async def put_line(request: web.Request, body: Line) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    store = request.app[STORE]
    if await store.providers.get(body.provider) is None:
        raise UnknownReference("provider", f"provider: no provider named {body.provider!r}; PUT /v1/providers first")
    if body.lead is not None:
        pipeline = await store.pipelines.get(body.lead.pipeline)
        if pipeline is None:
            raise UnknownReference("lead.pipeline", f"lead.pipeline: no pipeline {body.lead.pipeline!r}")
        if body.lead.stage not in pipeline.stages:
            raise UnknownReference(
                "lead.stage", f"lead.stage: {body.lead.stage!r} is not a stage of {body.lead.pipeline}"
            )
    await store.lines.put(number, body)
    return web.json_response({"number": number, **body.model_dump(mode="json")})


async def get_line(request: web.Request) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    line = await request.app[STORE].lines.get(number)
    if line is None:
        raise NotFound(f"line {number}")
    return web.json_response({"number": number, **line.model_dump(mode="json")})


async def list_lines(request: web.Request) -> web.Response:
    lines = await request.app[STORE].lines.all()
    return web.json_response({"lines": [{"number": n, **line.model_dump(mode="json")} for n, line in lines.items()]})


async def delete_line(request: web.Request) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    store = request.app[STORE]
    watchers = sorted(t.id for t in (await store.triggers.all()).values() if t.line == number)
    if watchers:
        raise InUse(f"line {number} is watched by trigger(s) {', '.join(watchers)}; delete or edit them first")
    senders = [
        name for name, rules in (await store.stage_rules.all()).items() if any(r.line == number for r in rules.root)
    ]
    if senders:
        raise InUse(f"line {number} is used by the stage rules of {', '.join(senders)}; edit them first")
    if not await store.lines.delete(number):
        raise NotFound(f"line {number}")
    return web.Response(status=204)


async def _stage_users(store: Store, pipeline_id: str, stages: set[str]) -> list[str]:
    """What refers to ``stages`` of the pipeline: triggers, lines' leads and items in them."""
    users = [
        f"trigger {t.id} targets {t.target_stage}"
        for t in (await store.triggers.all()).values()
        if t.pipeline == pipeline_id and t.target_stage in stages
    ]
    users += [
        f"line {number} creates leads in {line.lead.stage}"
        for number, line in (await store.lines.all()).items()
        if line.lead is not None and line.lead.pipeline == pipeline_id and line.lead.stage in stages
    ]
    users += [
        f"stage rules of {name}"
        for name in (await store.stage_rules.all())
        if name.partition("/")[0] == pipeline_id and name.partition("/")[2] in stages
    ]
    for stage, ids in (await store.items.in_stages(pipeline_id, sorted(stages))).items():
        users.append(f"items in {stage} (e.g. {', '.join(ids)})")
    return users


async def put_pipeline(request: web.Request, body: Pipeline) -> web.Response:
    pipeline_id = params.name(request, "id")
    store = request.app[STORE]
    old = await store.pipelines.get(pipeline_id)
    dropped = set(old.stages) - set(body.stages) if old else set()
    users = await _stage_users(store, pipeline_id, dropped) if dropped else []
    if users:
        raise InUse(f"stage(s) {', '.join(sorted(dropped))} of {pipeline_id} are still used: {'; '.join(users)}")
    await store.pipelines.put(pipeline_id, body)
    return web.json_response({"id": pipeline_id, **body.model_dump(mode="json")})


async def get_pipeline(request: web.Request) -> web.Response:
    pipeline_id = params.name(request, "id")
    pipeline = await request.app[STORE].pipelines.get(pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id}")
    return web.json_response({"id": pipeline_id, **pipeline.model_dump(mode="json")})


async def delete_pipeline(request: web.Request) -> web.Response:
    pipeline_id = params.name(request, "id")
    store = request.app[STORE]
    pipeline = await store.pipelines.get(pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id}")
    users = await _stage_users(store, pipeline_id, set(pipeline.stages))
    if users:
        raise InUse(f"pipeline {pipeline_id} is still used: {'; '.join(users)}")
    await store.pipelines.delete(pipeline_id)
    return web.Response(status=204)


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
        path_params={"name": params.NAME_SCHEMA},
    ),
    Endpoint("GET", "/v1/providers", list_providers, "Providers (secret values masked)", _ADMIN, tag="admin"),
    Endpoint(
        "GET",
        "/v1/providers/{name}",
        get_provider,
        "One provider (secret values masked)",
        _ADMIN,
        tag="admin",
        path_params={"name": params.NAME_SCHEMA},
    ),
    Endpoint(
        "DELETE",
        "/v1/providers/{name}",
        delete_provider,
        "Delete a provider no line uses",
        _ADMIN,
        status=204,
        tag="admin",
        path_params={"name": params.NAME_SCHEMA},
    ),
    Endpoint(
        "PUT",
        "/v1/lines/{number}",
        put_line,
        "Create or replace a line (E.164, URL-encoded +)",
        _ADMIN,
        Line,
        tag="admin",
        path_params={"number": params.PHONE},
    ),
    Endpoint("GET", "/v1/lines", list_lines, "Lines", _ADMIN, tag="admin"),
    Endpoint(
        "GET", "/v1/lines/{number}", get_line, "One line", _ADMIN, tag="admin", path_params={"number": params.PHONE}
    ),
    Endpoint(
        "DELETE",
        "/v1/lines/{number}",
        delete_line,
        "Delete a line no trigger watches",
        _ADMIN,
        status=204,
        tag="admin",
        path_params={"number": params.PHONE},
    ),
    Endpoint(
        "PUT",
        "/v1/pipelines/{id}",
        put_pipeline,
        "Create or replace a pipeline (stage order = progress); dropping a stage still in use is a 409",
        _ADMIN,
        Pipeline,
        tag="admin",
        path_params={"id": params.NAME_SCHEMA},
    ),
    Endpoint("GET", "/v1/pipelines", list_pipelines, "Pipelines", _ADMIN, tag="admin"),
    Endpoint(
        "GET",
        "/v1/pipelines/{id}",
        get_pipeline,
        "One pipeline",
        _ADMIN,
        tag="admin",
        path_params={"id": params.NAME_SCHEMA},
    ),
    Endpoint(
        "DELETE",
        "/v1/pipelines/{id}",
        delete_pipeline,
        "Delete a pipeline no trigger, line or item uses",
        _ADMIN,
        status=204,
        tag="admin",
        path_params={"id": params.NAME_SCHEMA},
    ),
]
