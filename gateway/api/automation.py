"""Automation API: triggers (admin), website callback requests (api) and dead letters (admin)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

from aiohttp import web

from config.lines import Label, Strict
from config.phones import E164
from config.triggers import Trigger, TriggerBody, TriggerSpec, in_order, placed
from config.vocabulary import EventKind
from gateway.api import params
from gateway.api.routing import Endpoint, Param, Scope
from gateway.appkeys import STORE
from gateway.errors import ApiError, Invalid, NotFound, UnknownReference
from gateway.ingest import accept
from gateway.keys import EVENTS_STREAM, JOBS_STREAM, OUTBOX_STREAM
from gateway.store import Store
from gateway.store.dead_letters import AmbiguousDeadLetter, DeadLetter
from gateway.store.items import now_iso
from webhooks.events import Event


class CallbackRequest(Strict):
    """A website visitor asking to be called back."""

    phone: E164
    name: Label = ""
    line: E164 | None = None


async def _check_references(store: Store, body: TriggerSpec) -> None:
    pipeline = await store.pipelines.get(body.pipeline)
    if pipeline is None:
        raise UnknownReference("pipeline", f"pipeline: no pipeline {body.pipeline!r}")
    if body.target_stage not in pipeline.stages:
        raise UnknownReference("target_stage", f"target_stage: {body.target_stage!r} is not a stage of {body.pipeline}")
    if body.line is not None and await store.lines.get(body.line) is None:
        raise UnknownReference("line", f"line: {body.line} is not a line of this gateway")


async def _ordered(store: Store) -> list[Trigger]:
    return in_order((await store.triggers.all()).values())


async def _place(store: Store, trigger: Trigger, position: int | None) -> web.Response:
    """Store ``trigger`` at its place in the order and answer with it as it now stands."""
    written = placed(await _ordered(store), trigger, position)
    await store.triggers.put_many({t.id: t for t in written})
    ordered = await _ordered(store)
    index = next(i for i, t in enumerate(ordered) if t.id == trigger.id)
    return web.json_response(ordered[index].view(index + 1))


async def create_trigger(request: web.Request, body: TriggerBody) -> web.Response:
    store = request.app[STORE]
    await _check_references(store, body)
    trigger = Trigger.model_validate({**body.spec(), "id": "trg_" + secrets.token_hex(6), "created_at": now_iso()})
    response = await _place(store, trigger, body.position)
    response.set_status(201)
    return response


async def put_trigger(request: web.Request, body: TriggerBody) -> web.Response:
    """Edit a trigger in place: same id, same place in the order unless ``position`` says."""
    trigger_id = params.name(request, "id")
    store = request.app[STORE]
    old = await store.triggers.get(trigger_id)
    if old is None:
        raise NotFound(f"trigger {trigger_id}")
    await _check_references(store, body)
    trigger = Trigger.model_validate({**old.model_dump(), **body.spec(), "updated_at": now_iso()})
    return await _place(store, trigger, body.position)


async def get_trigger(request: web.Request) -> web.Response:
    trigger_id = params.name(request, "id")
    ordered = await _ordered(request.app[STORE])
    for index, trigger in enumerate(ordered):
        if trigger.id == trigger_id:
            return web.json_response(trigger.view(index + 1))
    raise NotFound(f"trigger {trigger_id}")


async def list_triggers(request: web.Request) -> web.Response:
    ordered = await _ordered(request.app[STORE])
    return web.json_response({"triggers": [t.view(i) for i, t in enumerate(ordered, start=1)]})


async def delete_trigger(request: web.Request) -> web.Response:
    trigger_id = params.name(request, "id")
    if not await request.app[STORE].triggers.delete(trigger_id):
        raise NotFound(f"trigger {trigger_id}")
    return web.Response(status=204)


async def request_callback(request: web.Request, body: CallbackRequest) -> web.Response:
    store = request.app[STORE]
    if body.line is not None and await store.lines.get(body.line) is None:
        raise UnknownReference("line", f"line: {body.line} is not a line of this gateway")
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
    # The same key with another body is another request: 409, not a silent "duplicate".
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    new = await accept(request, event, fingerprint=fingerprint)
    return web.json_response({"id": key, "status": "accepted" if new else "duplicate"}, status=202)


def _dead_stream(request: web.Request) -> str:
    stream = request.query.get("stream", EVENTS_STREAM)
    if stream not in (EVENTS_STREAM, JOBS_STREAM, OUTBOX_STREAM):
        raise Invalid("stream", f"stream: one of {EVENTS_STREAM}, {JOBS_STREAM}, {OUTBOX_STREAM}")
    return stream


async def list_dead_letters(request: web.Request) -> web.Response:
    stream = _dead_stream(request)
    return web.json_response({"stream": stream, "entries": await request.app[STORE].dead_letters.newest(stream)})


async def retry_dead_letter(request: web.Request) -> web.Response:
    # Events only: a job that failed every try is finished (status failed); place a new one.
    name = params.dead_id(request)
    entry_id = await request.app[STORE].dead_letters.retry(await _dead_letter(request, EVENTS_STREAM, name))
    if entry_id is None:
        raise NotFound(f"dead letter {name}")  # gone since it was found
    return web.json_response(
        {"dead_id": name, "stream": EVENTS_STREAM, "id": entry_id, "status": "requeued"}, status=202
    )


async def discard_dead_letter(request: web.Request) -> web.Response:
    name = params.dead_id(request)
    if not await request.app[STORE].dead_letters.discard(await _dead_letter(request, _dead_stream(request), name)):
        raise NotFound(f"dead letter {name}")  # gone since it was found
    return web.Response(status=204)


async def _dead_letter(request: web.Request, stream: str, name: str) -> DeadLetter:
    """The dead letter of ``stream`` that ``name`` names: 404 when there is none, 409 when it
    is an entry id several partitions hold."""
    try:
        letter = await request.app[STORE].dead_letters.find(stream, name)
    except AmbiguousDeadLetter as exc:
        raise ApiError(409, "ambiguous", f"{exc}: name one by its dead_id", "id") from None
    if letter is None:
        raise NotFound(f"dead letter {name}")
    return letter


_ADMIN, _API = Scope.ADMIN, Scope.API
_STREAM = Param(
    "stream",
    "events (default), jobs or outbox (the fan-out of events to subscriptions)",
    schema={"type": "string", "enum": [EVENTS_STREAM, JOBS_STREAM, OUTBOX_STREAM]},
)
_DEAD_ID = {
    **params.DEAD_ID_SCHEMA,
    "description": "a dead_id from GET /v1/dead-letters (<entry id>.<partition>), or the entry id alone "
    "when one partition holds it",
}
ENDPOINTS_AUTOMATION = [
    Endpoint(
        "POST",
        "/v1/triggers",
        create_trigger,
        "Create a trigger (last in the order, or at position)",
        _ADMIN,
        TriggerBody,
        status=201,
        tag="automation",
    ),
    Endpoint(
        "GET",
        "/v1/triggers/{id}",
        get_trigger,
        "One trigger",
        _ADMIN,
        tag="automation",
        path_params={"id": params.NAME_SCHEMA},
    ),
    Endpoint(
        "PUT",
        "/v1/triggers/{id}",
        put_trigger,
        "Edit a trigger in place (keeps its id and place in the order unless position is given)",
        _ADMIN,
        TriggerBody,
        tag="automation",
        path_params={"id": params.NAME_SCHEMA},
    ),
    Endpoint(
        "GET",
        "/v1/triggers",
        list_triggers,
        "Triggers in the order they apply in (position 1 first)",
        _ADMIN,
        tag="automation",
    ),
    Endpoint(
        "DELETE",
        "/v1/triggers/{id}",
        delete_trigger,
        "Delete a trigger",
        _ADMIN,
        status=204,
        tag="automation",
        path_params={"id": params.NAME_SCHEMA},
    ),
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
        "Stream entries that failed every delivery, with their last error, newest first; each one's "
        "dead_id is <entry id>.<partition> (_id: its entry id, which other partitions may share)",
        _ADMIN,
        query=(_STREAM,),
        tag="automation",
    ),
    Endpoint(
        "POST",
        "/v1/dead-letters/{id}/retry",
        retry_dead_letter,
        "Process an event's dead letter again: back on the events stream as a new entry "
        "(409 when a plain entry id names dead letters of several partitions)",
        _ADMIN,
        status=202,
        tag="automation",
        path_params={"id": _DEAD_ID},
    ),
    Endpoint(
        "DELETE",
        "/v1/dead-letters/{id}",
        discard_dead_letter,
        "Discard a dead letter (409 when a plain entry id names dead letters of several partitions)",
        _ADMIN,
        status=204,
        query=(_STREAM,),
        tag="automation",
        path_params={"id": _DEAD_ID},
    ),
]
