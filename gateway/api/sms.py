"""``POST /v1/sms`` (api token): an SMS to an item's customer, queued as a job."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from config.jobs import JobKind
from config.lines import Line
from config.templates import UnknownField, render
from gateway.api.queueing import Queued, Queueing, idempotency_key
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import STORE
from gateway.errors import Invalid, UnknownReference
from gateway.providers.registry import TEXTING, unable
from gateway.store import Store
from sms.invite import Invite
from sms.request import SmsRequest, rendered_length_error
from sms.segments import count_segments


async def _line(store: Store, body: SmsRequest | Invite) -> tuple[str, Line]:
    """The line the SMS goes from: the one named (it must allow SMS), else the first SMS
    line (by number) of the provider named, else of any provider that can send SMS."""
    if body.line is not None:
        line = await store.lines.get(body.line)
        if line is None or not line.sms:
            raise UnknownReference("line", f"line: {body.line} is not an SMS line of this gateway (sms: true)")
        return body.line, line
    providers = await store.providers.all()
    for number, line in (await store.lines.all()).items():
        account = providers.get(line.provider)
        texts = account is not None and unable(account, TEXTING) is None
        if line.sms and texts and body.provider in (None, line.provider):
            return number, line
    of = f" of provider {body.provider}" if body.provider else ""
    raise UnknownReference("line", f"line: none given and no line{of} allows SMS")


async def queue_sms(
    store: Store,
    body: SmsRequest | Invite,
    template: str,
    *,
    key: str | None,
    values: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    delay_seconds: int = 0,
) -> Queued:
    """Check and queue an SMS job whose text is ``template`` filled from the item's fields
    and ``values``, once per idempotency ``key``."""
    queueing = Queueing(store, body, key)
    replayed = await queueing.replayed()
    if replayed is not None:
        return replayed
    item = await queueing.item(body.item_id)
    number, line = await _line(store, body)
    name = body.provider or line.provider
    provider = await store.providers.get(name)
    refusal = "it is not configured" if provider is None else unable(provider, TEXTING)
    if refusal is not None:
        raise Invalid("provider", f"provider: {name} cannot send SMS ({refusal})")
    try:
        text = render(template, {**item.card.fields, **(values or {})})
    except UnknownField as exc:
        raise Invalid("text", f"text: {exc}", code="unknown_field") from None
    error = rendered_length_error(text)
    if error is not None:
        raise Invalid("text", error)
    segments = count_segments(text)
    fields = {
        "line": number,
        "provider": name,
        "text": text,
        "segments": str(segments.segments),
        "encoding": segments.encoding.value,
        **(extra or {}),
    }
    return await queueing.queue(JobKind.SMS, body.item_id, fields, delay_seconds=delay_seconds)


async def create_sms(request: web.Request, body: SmsRequest) -> web.Response:
    key = idempotency_key(request)
    queued = await queue_sms(request.app[STORE], body, body.text, key=key, delay_seconds=body.delay_seconds)
    return queued.response()


ENDPOINTS_SMS = [
    Endpoint(
        "POST",
        "/v1/sms",
        create_sms,
        "Queue an SMS to the item's customer (Idempotency-Key: the same key returns the same job)",
        Scope.API,
        SmsRequest,
        status=202,
        tag="jobs",
    ),
]
