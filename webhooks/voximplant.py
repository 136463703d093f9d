"""The JSON events callgate's own VoxEngine scenarios post -> ``Event``s.

The scenarios (``voice/voxengine/inbound.js``, ``robocall.js``) are the only senders, so the schema is strict:
anything else is a bug or an attacker, and both get a 400 with the field at fault.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from config.phones import normalize
from config.vocabulary import EventKind
from webhooks.errors import MalformedWebhook
from webhooks.events import Event

# ":" separates the parts of the dedup key, so a call id must not contain one.
_CallId = Annotated[str, StringConstraints(pattern=r"^[!-9;-~]{1,128}$")]
_Party = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _ScenarioEvent(BaseModel):
    # Strict: "1" is not a number and true is not an int. Unknown keys are ignored so a
    # newer scenario can add fields without breaking an older gateway.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    event: Literal["call.incoming", "call.outgoing", "call.answered", "call.missed", "call.completed", "sms.incoming"]
    call_id: _CallId
    line: _Party
    customer: _Party
    at: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
    seq: Annotated[int, Field(ge=0, le=2**31 - 1)]
    status: Annotated[str, StringConstraints(max_length=32)] = ""
    text: Annotated[str, StringConstraints(max_length=5000)] = ""
    duration: Annotated[int, Field(ge=0, le=10**7)] | None = None
    code: Annotated[int, Field(ge=0, le=999)] | None = None


class _SessionStart(BaseModel):
    """A robocall session asking for its dial's script (``robocall.js`` on AppEvents.Started)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    event: Literal["robocall.start"]
    call_id: _CallId


# What a robocall's scenario reports: the progress of the call it placed.
ROBOCALL_PROGRESS = frozenset({EventKind.CALL_OUTGOING, EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED})


def _malformed(exc: ValidationError) -> MalformedWebhook:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = first["loc"]
    field = str(loc[0]) if loc else None
    if first["type"] == "json_invalid":
        return MalformedWebhook(None, "body is not valid JSON")
    if field is None:
        return MalformedWebhook(None, "body must be a JSON object")
    return MalformedWebhook(field, f"{field}: {first['msg']}")


def parse_voximplant(body: bytes, provider: str) -> Event:
    """Validate a scenario POST body (already signature-checked) into an ``Event``."""
    try:
        payload = _ScenarioEvent.model_validate_json(body)
    except ValidationError as exc:
        raise _malformed(exc) from None
    optional = (("duration", payload.duration), ("code", payload.code))
    return Event(
        kind=EventKind(payload.event),
        provider=provider,
        line=normalize(payload.line),
        customer=normalize(payload.customer),
        ref=payload.call_id,
        dedup=f"voximplant:{payload.call_id}:{payload.event}:{payload.seq}",
        at=payload.at,
        status=payload.status,
        text=payload.text,
        sequence=payload.seq,
        extra={name: str(value) for name, value in optional if value is not None},
    )


def parse_robocall(body: bytes, provider: str) -> str | Event:
    """A robocall scenario's POST (already signature-checked): the session id of its
    ``robocall.start``, or the progress ``Event`` it reports."""
    try:
        return _SessionStart.model_validate_json(body).call_id
    except ValidationError as exc:
        if not any(error["loc"] == ("event",) for error in exc.errors()):
            raise _malformed(exc) from None  # a robocall.start, malformed otherwise
    event = parse_voximplant(body, provider)
    if event.kind not in ROBOCALL_PROGRESS:
        allowed = ", ".join(sorted(kind.value for kind in ROBOCALL_PROGRESS))
        raise MalformedWebhook("event", f"event: a robocall reports robocall.start, {allowed}")
    return event
