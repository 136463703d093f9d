"""Stage rules (admin token): what a stage sends each time an item enters it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from config.lines import Pipeline
from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import STORE
from gateway.errors import Invalid, NotFound, UnknownReference
from gateway.stage_rules import SmsRule, StageRules, rules_name
from gateway.store import Store
from sms.request import fixed_length_error


def _view(name: str, rules: StageRules) -> dict[str, Any]:
    pipeline, _, stage = name.partition("/")
    return {"pipeline": pipeline, "stage": stage, "rules": rules.model_dump(mode="json")}


async def _stage(request: web.Request) -> tuple[str, Pipeline]:
    """The path's ``pipeline/stage``: 404 unless the pipeline has that stage."""
    pipeline_id, stage = params.name(request, "pipeline"), params.name(request, "stage")
    pipeline = await request.app[STORE].pipelines.get(pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id}")
    if stage not in pipeline.stages:
        raise NotFound(f"stage {stage} of pipeline {pipeline_id}")
    return rules_name(pipeline_id, stage), pipeline


async def _check_lines(store: Store, rules: StageRules) -> None:
    """Each line a rule names exists and carries what the rule sends."""
    for index, rule in enumerate(rules.root):
        if rule.line is None:
            continue
        line = await store.lines.get(rule.line)
        sms = isinstance(rule, SmsRule)
        if line is None or not (line.sms if sms else line.voice):
            what = "an SMS line (sms: true)" if sms else "a voice line (voice: true)"
            raise UnknownReference(f"{index}.line", f"{index}.line: {rule.line} is not {what} of this gateway")


async def put_stage_rules(request: web.Request, body: StageRules) -> web.Response:
    name, _ = await _stage(request)
    store = request.app[STORE]
    for index, rule in enumerate(body.root):
        why = fixed_length_error(rule.text) if isinstance(rule, SmsRule) else None
        if why:
            # Refused now, not at each item's rendering: every item entering the stage would fail.
            raise Invalid(f"{index}.text", f"{index}.text: {why}")
    await _check_lines(store, body)
    await store.stage_rules.put(name, body)
    return web.json_response(_view(name, body))


async def get_stage_rules(request: web.Request) -> web.Response:
    name, _ = await _stage(request)
    rules = await request.app[STORE].stage_rules.get(name)
    if rules is None:
        raise NotFound(f"stage rules of {name}")
    return web.json_response(_view(name, rules))


async def delete_stage_rules(request: web.Request) -> web.Response:
    name, _ = await _stage(request)
    if not await request.app[STORE].stage_rules.delete(name):
        raise NotFound(f"stage rules of {name}")
    return web.Response(status=204)


async def list_stage_rules(request: web.Request) -> web.Response:
    stored = await request.app[STORE].stage_rules.all()
    return web.json_response({"stage_rules": [_view(name, rules) for name, rules in stored.items()]})


_ADMIN = Scope.ADMIN
_PATH = {"pipeline": params.NAME_SCHEMA, "stage": params.NAME_SCHEMA}
ENDPOINTS_STAGE_RULES = [
    Endpoint(
        "PUT",
        "/v1/stage-rules/{pipeline}/{stage}",
        put_stage_rules,
        "Set the robocalls and SMS sent each time an item enters the stage (a trigger or the CRM moved it)",
        _ADMIN,
        StageRules,
        tag="admin",
        path_params=_PATH,
    ),
    Endpoint("GET", "/v1/stage-rules", list_stage_rules, "Every stage's rules", _ADMIN, tag="admin"),
    Endpoint(
        "GET",
        "/v1/stage-rules/{pipeline}/{stage}",
        get_stage_rules,
        "One stage's rules",
        _ADMIN,
        tag="admin",
        path_params=_PATH,
    ),
    Endpoint(
        "DELETE",
        "/v1/stage-rules/{pipeline}/{stage}",
        delete_stage_rules,
        "Remove a stage's rules",
        _ADMIN,
        status=204,
        tag="admin",
        path_params=_PATH,
    ),
]
