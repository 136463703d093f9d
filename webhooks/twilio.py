"""Twilio form webhooks -> provider-neutral ``Event``s, and the TwiML callgate answers with.

Classification follows providers.md sections 1-2: an inbound call is missed when its
``<Dial>`` (or, failing that, the call itself) ends no-answer/busy/failed/canceled.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from config.phones import normalize
from config.vocabulary import EventKind
from webhooks.errors import MalformedWebhook
from webhooks.events import Event

_NOT_REACHED = ("no-answer", "busy", "failed", "canceled")

_DIAL_KINDS: dict[str, EventKind] = {
    **dict.fromkeys(_NOT_REACHED, EventKind.CALL_MISSED),
    "completed": EventKind.CALL_ANSWERED,
    "answered": EventKind.CALL_ANSWERED,
}

# queued/initiated/ringing of an inbound call add nothing to the incoming-call request.
_INBOUND_KINDS: dict[str, EventKind] = {
    **dict.fromkeys(_NOT_REACHED, EventKind.CALL_MISSED),
    "in-progress": EventKind.CALL_ANSWERED,
    "completed": EventKind.CALL_COMPLETED,
}

_OUTBOUND_KINDS: dict[str, EventKind] = {
    **dict.fromkeys(("queued", "initiated", "ringing"), EventKind.CALL_OUTGOING),
    "in-progress": EventKind.CALL_ANSWERED,
    **dict.fromkeys(("completed", *_NOT_REACHED), EventKind.CALL_COMPLETED),
}

_SEQUENCE = re.compile(r"[0-9]{1,9}")


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise MalformedWebhook(name, f"{name} is missing")
    return value


def _sequence(form: Mapping[str, str]) -> int:
    raw = form.get("SequenceNumber") or "0"
    if not _SEQUENCE.fullmatch(raw):
        raise MalformedWebhook("SequenceNumber", "SequenceNumber is not a small non-negative integer")
    return int(raw)


def _extra(form: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {name: form[name] for name in names if form.get(name)}


def parse_voice(form: Mapping[str, str], provider: str, now: float) -> Event:
    """The incoming-call TwiML request (the number's VoiceUrl)."""
    call_sid = _required(form, "CallSid")
    return Event(
        kind=EventKind.CALL_INCOMING,
        provider=provider,
        line=normalize(_required(form, "To")),
        customer=normalize(_required(form, "From")),
        ref=call_sid,
        dedup=f"twilio:call:{call_sid}:incoming",
        at=now,
        status=form.get("CallStatus", ""),
        direction=form.get("Direction", ""),
        extra=_extra(form, ("CallerName", "ForwardedFrom")),
    )


def parse_voice_status(form: Mapping[str, str], provider: str, now: float) -> Event | None:
    """A call StatusCallback or a ``<Dial action>`` request; ``None`` when it changes nothing.

    Unknown directions and statuses give ``None`` too: Twilio adds values without notice,
    and a webhook we do not understand must not fail (Twilio would retry it).
    """
    call_sid = _required(form, "CallSid")
    to, from_ = _required(form, "To"), _required(form, "From")
    direction = form.get("Direction", "")
    sequence = _sequence(form)
    outbound = direction.startswith("outbound")
    line, customer = (from_, to) if outbound else (to, from_)

    dial_status = form.get("DialCallStatus", "")
    if dial_status:
        kind = _DIAL_KINDS.get(dial_status)
        status = dial_status
        dedup = f"twilio:call:{call_sid}:dial:{dial_status}"
        extra = _extra(form, ("DialCallSid", "DialCallDuration"))
    else:
        status = form.get("CallStatus", "")
        if direction == "inbound":
            kind = _INBOUND_KINDS.get(status)
        elif direction == "outbound-dial" and form.get("ParentCallSid"):
            # The <Dial> child leg: the parent's Dial action reports how it went.
            kind = None
        elif outbound:
            kind = _OUTBOUND_KINDS.get(status)
        else:
            kind = None
        dedup = f"twilio:call:{call_sid}:{status}:{sequence}"
        extra = _extra(form, ("CallDuration", "ParentCallSid", "AnsweredBy", "SipResponseCode"))

    if kind is None:
        return None
    return Event(
        kind=kind,
        provider=provider,
        line=normalize(line),
        customer=normalize(customer),
        ref=call_sid,
        dedup=dedup,
        at=now,
        status=status,
        direction=direction,
        sequence=sequence,
        extra=extra,
    )


def parse_sms(form: Mapping[str, str], provider: str, now: float) -> Event:
    """An inbound SMS/MMS (the number's SmsUrl); long messages arrive reassembled."""
    message_sid = _required(form, "MessageSid")
    return Event(
        kind=EventKind.SMS_INCOMING,
        provider=provider,
        line=normalize(_required(form, "To")),
        customer=normalize(_required(form, "From")),
        ref=message_sid,
        dedup=f"twilio:sms:{message_sid}:incoming",
        at=now,
        text=form.get("Body", ""),
        extra=_extra(form, ("NumSegments", "NumMedia")),
    )


def parse_sms_status(form: Mapping[str, str], provider: str, now: float) -> Event:
    """The status callback of a message callgate sent: ``From`` is our line."""
    message_sid = _required(form, "MessageSid")
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not status:
        raise MalformedWebhook("MessageStatus", "MessageStatus is missing")
    return Event(
        kind=EventKind.SMS_STATUS,
        provider=provider,
        line=normalize(_required(form, "From")),
        customer=normalize(_required(form, "To")),
        ref=message_sid,
        dedup=f"twilio:sms:{message_sid}:{status}",
        at=now,
        status=status,
        extra=_extra(form, ("ErrorCode",)),
    )


def dial_twiml(forward_to: Sequence[str], action_url: str, timeout: int = 20) -> str:
    """Ring every agent at once; the Dial action reports whether anyone answered.

    With no agents the call is hung up rather than left ringing into nothing.
    """
    response = VoiceResponse()
    if not forward_to:
        response.hangup()
        return str(response)
    dial = response.dial(action=action_url, method="POST", timeout=timeout)
    for number in forward_to:
        dial.number(number)
    return str(response)


@functools.cache
def empty_twiml() -> str:
    """Acknowledge a webhook without doing anything (SMS with no auto-reply, status callbacks)."""
    return str(MessagingResponse())


def message_twiml(text: str) -> str:
    """Reply to an inbound SMS with ``text``."""
    response = MessagingResponse()
    response.message(text)
    return str(response)
