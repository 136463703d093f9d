"""The JSON events callgate's own VoxEngine scenarios post -> ``Event``s.

The scenarios (``voice/voxengine/inbound.js``, ``robocall.js``) are the only senders, so the schema is strict:
anything else is a bug or an attacker, and both get a 400 with the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

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


class _InboundSms(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    source_number: _Party
    destination_number: _Party
    sms_body: Annotated[str, StringConstraints(max_length=5000)] = ""


class _AccountCallback(BaseModel):
    # Voximplant's own JSON, not our scenario's: lax types (an id may come as a string),
    # unknown keys ignored (each callback type adds its own).
    model_config = ConfigDict(extra="ignore", frozen=True)

    callback_id: Annotated[int, Field(ge=0)]
    account_id: Annotated[int, Field(ge=0)]
    hash: Annotated[str, StringConstraints(max_length=64)] = ""
    type: Annotated[str, StringConstraints(max_length=100)]
    sms_inbound: dict[str, Any] | None = None


class _AccountCallbacks(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    callbacks: Annotated[list[_AccountCallback], Field(max_length=1000)]


@dataclass(frozen=True)
class AccountCallback:
    """One callback of Voximplant's account HTTP callbacks, as far as callgate reads it."""

    callback_id: int
    account_id: int
    hash: str
    type: str
    # The incoming SMS, for type sms_inbound: (from, to, text), the numbers in E.164.
    sms: tuple[str, str, str] | None


def _international(number: str) -> str:
    """E.164 of a number as the management API writes it (international, without "+")."""
    return normalize(f"+{number}" if number.isdigit() else number)


def parse_account_callbacks(body: bytes) -> list[AccountCallback]:
    """Voximplant's account callbacks POST (``{"callbacks": [AccountCallback, ...]}``).

    An ``sms_inbound`` callback carries its message as ``sms_inbound.sms_inbound`` (the
    AccountCallback and InboundSmsCallback types of Voximplant's API clients); a flat
    ``sms_inbound`` object is read too.
    """
    try:
        payload = _AccountCallbacks.model_validate_json(body)
    except ValidationError as exc:
        raise _malformed(exc) from None
    parsed = []
    for index, callback in enumerate(payload.callbacks):
        sms = None
        if callback.type == "sms_inbound":
            item = callback.sms_inbound or {}
            nested = item.get("sms_inbound")
            try:
                message = _InboundSms.model_validate(nested if isinstance(nested, dict) else item)
            except ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                field = f"callbacks.{index}.sms_inbound.{'.'.join(map(str, first['loc']))}"
                raise MalformedWebhook(field, f"{field}: {first['msg']}") from None
            sms = (_international(message.source_number), _international(message.destination_number), message.sms_body)
        parsed.append(AccountCallback(callback.callback_id, callback.account_id, callback.hash, callback.type, sms))
    return parsed
