"""Automation API: triggers (admin), website callback requests (api) and dead letters (admin)."""

from __future__ import annotations

import secrets
import time
import uuid

from aiohttp import web

from config.lines import Label, Strict
from config.phones import E164
from config.triggers import Trigger, TriggerSpec
from config.vocabulary import EventKind
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import STORE
from gateway.errors import Invalid, NotFound
from gateway.ingest import accept
from gateway.store.inbox import EVENTS_STREAM
from webhooks.events import Event


class CallbackRequest(Strict):
    """A website visitor asking to be called back."""

    phone: E164
    name: Label = ""
    line: E164 | None = None


async def create_trigger(request: web.Request, body: TriggerSpec) -> web.Response:
    store = request.app[STORE]
    pipeline = await store.pipelines.get(body.pipeline)
    if pipeline is None:
        raise Invalid("pipeline", f"pipeline: no pipeline {body.pipeline!r}")
    if body.target_stage not in pipeline.stages:
        raise Invalid("target_stage", f"target_stage: {body.target_stage!r} is not a stage of {body.pipeline}")
    if body.line is not None and await store.lines.get(body.line) is None:
        raise Invalid("line", f"line: {body.line} is not a line of this gateway")
    trigger = Trigger(**body.model_dump(), id="trg_" + secrets.token_hex(6), created_at=time.time())
    await store.triggers.put(trigger.id, trigger)
    return web.json_response(trigger.model_dump(mode="json"), status=201)


async def list_triggers(request: web.Request) -> web.Response:
    triggers = sorted((await request.app[STORE].triggers.all()).values(), key=lambda t: (t.created_at, t.id))
    return web.json_response({"triggers": [t.model_dump(mode="json") for t in triggers]})


async def delete_trigger(request: web.Request) -> web.Response:
    trigger_id = params.name(request, "id")
    if not await request.app[STORE].triggers.delete(trigger_id):
        raise NotFound(f"trigger {trigger_id}")
    return web.Response(status=204)


async def request_callback(request: web.Request, body: CallbackRequest) -> web.Response:
    store = request.app[STORE]
    if body.line is not None and await store.lines.get(body.line) is None:
        raise Invalid("line", f"line: {body.line} is not a line of this gateway")
    # A form resubmitted with the same Idempotency-Key is the same request.
    key = params.header_token(request, "Idempotency-Key") or uuid.uuid4().hex
    event = Event(
        kind=EventKind.CALLBACK_REQUESTED,
        provider="web",
        line=body.line or "",
        customer=body.phone,
        ref=key,
        dedup=f"web:callback:{key}",
        at=time.time(),
        extra={"name": body.name} if body.name else {},
    )
    new = await accept(request, event)
    return web.json_response({"id": key, "status": "accepted" if new else "duplicate"}, status=202)


async def list_dead_letters(request: web.Request) -> web.Response:
    store = request.app[STORE]
    stream = request.query.get("stream", EVENTS_STREAM)
    if stream != EVENTS_STREAM:
        raise Invalid("stream", f"stream: one of {EVENTS_STREAM}")
    return web.json_response({"stream": stream, "entries": await store.dead_letters.newest(stream)})


_ADMIN, _API = Scope.ADMIN, Scope.API
ENDPOINTS_AUTOMATION = [
    Endpoint(
        "POST", "/v1/triggers", create_trigger, "Create a trigger", _ADMIN, TriggerSpec, status=201, tag="automation"
    ),
    Endpoint(
        "GET",
        "/v1/triggers",
        list_triggers,
        "Triggers, oldest first (the order they apply in)",
        _ADMIN,
        tag="automation",
    ),
    Endpoint("DELETE", "/v1/triggers/{id}", delete_trigger, "Delete a trigger", _ADMIN, status=204, tag="automation"),
    Endpoint(
        "POST",
        "/v1/callback-requests",
        request_callback,
        "A website callback form: fires callback.requested triggers (or creates a lead)",
        _API,
        CallbackRequest,
        status=202,
        tag="automation",
    ),
    Endpoint(
        "GET",
        "/v1/dead-letters",
        list_dead_letters,
        "Stream entries that failed every delivery, with their last error",
        _ADMIN,
        query=(Param("stream", "the stream (default events)"),),
        tag="automation",
    ),
]
