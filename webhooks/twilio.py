"""Twilio form webhooks -> provider-neutral ``Event``s, and the TwiML callgate answers with.

Classification follows providers.md sections 1-2: an inbound call is missed when its
``<Dial>`` (or, failing that, the call itself) ends no-answer/busy/failed/canceled.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from config.phones import normalize
from config.vocabulary import EventKind
from webhooks.errors import MalformedWebhook
from webhooks.events import Event, withheld

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

# What an outgoing call's callback adds to its call.outgoing; queued/initiated/ringing add
# nothing (call.outgoing itself says the call was placed).
_OUTBOUND_KINDS: dict[str, EventKind | None] = {
    **dict.fromkeys(("queued", "initiated", "ringing"), None),
    "in-progress": EventKind.CALL_ANSWERED,
    **dict.fromkeys(("completed", *_NOT_REACHED), EventKind.CALL_COMPLETED),
}

_STATUS_EXTRA = ("CallDuration", "ParentCallSid", "AnsweredBy", "SipResponseCode")

# An MMS carries up to 10 media, each as MediaUrl{N} (where Twilio serves it) and
# MediaContentType{N}, N from 0; kept as sent so the timeline links to them.
_MEDIA_FIELDS = tuple(f"{name}{n}" for n in range(10) for name in ("MediaUrl", "MediaContentType"))

# Identities an agent's softphone or SIP phone calls from.
_AGENT_SCHEMES = ("client:", "sip:")

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


@dataclass(frozen=True)
class CallLine:
    """The line a call callback is for, as the gateway found it: its number and its agents.

    An outbound leg is a person's outgoing call only if it leaves our line for a customer;
    a leg to one of the line's agents (an inbound call being forwarded) is not.
    """

    number: str
    agents: frozenset[str] = frozenset()


def _is_outgoing(from_: str, to: str, line: CallLine) -> bool:
    """From our line (or an agent's ``client:``/``sip:`` identity) to a customer's number.

    Covers a click-to-call or REST call (``outbound-api``) and the ``<Dial>`` child leg a
    softphone reaches the customer through (``outbound-dial`` with ``ParentCallSid``). A leg
    to a line, to an agent, or to a ``client:``/``sip:`` identity reaches no customer.
    """
    if to == line.number or to in line.agents or withheld(to) is not None:
        return False
    return from_ == line.number or from_.startswith(_AGENT_SCHEMES)


def parse_voice_status(form: Mapping[str, str], provider: str, now: float, line: CallLine) -> list[Event]:
    """A call StatusCallback or a ``<Dial action>`` request -> the events it reports.

    An outgoing call reports ``call.outgoing`` on whichever callback arrives first (Twilio's
    default StatusCallback sends only ``completed``); its dedup is per call, so every later
    callback adds only its progress (``call.answered``, ``call.completed``). Unknown
    directions and statuses give no event: Twilio adds values without notice, and a webhook
    we do not understand must not fail (Twilio would retry it).
    """
    call_sid = _required(form, "CallSid")
    to, from_ = normalize(_required(form, "To")), normalize(_required(form, "From"))
    direction = form.get("Direction", "")
    sequence = _sequence(form)

    def event(kind: EventKind, status: str, dedup: str, extra: dict[str, str], customer: str) -> Event:
        return Event(
            kind=kind,
            provider=provider,
            line=line.number,
            customer=customer,
            ref=call_sid,
            dedup=dedup,
            at=now,
            status=status,
            direction=direction,
            sequence=sequence,
            extra=extra,
        )

    dial_status = form.get("DialCallStatus", "")
    if dial_status:
        kind = _DIAL_KINDS.get(dial_status)
        extra = _extra(form, ("DialCallSid", "DialCallDuration"))
        dedup = f"twilio:call:{call_sid}:dial:{dial_status}"
        return [] if kind is None else [event(kind, dial_status, dedup, extra, from_)]

    status = form.get("CallStatus", "")
    extra = _extra(form, _STATUS_EXTRA)
    dedup = f"twilio:call:{call_sid}:{status}:{sequence}"
    if direction == "inbound":
        kind = _INBOUND_KINDS.get(status)
        return [] if kind is None else [event(kind, status, dedup, extra, from_)]
    if not direction.startswith("outbound") or status not in _OUTBOUND_KINDS or not _is_outgoing(from_, to, line):
        return []
    events = [event(EventKind.CALL_OUTGOING, status, f"twilio:call:{call_sid}:outgoing", extra, to)]
    progress = _OUTBOUND_KINDS[status]
    if progress is not None:
        events.append(event(progress, status, dedup, extra, to))
    return events


@dataclass(frozen=True)
class AmdResult:
    """An answering-machine detection outcome: ``answered_by`` is ``human``,
    ``machine_start``, ``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``,
    ``fax`` or ``unknown`` (kept as sent: Twilio may add values)."""

    call_sid: str
    answered_by: str
    detection_ms: int | None


_ANSWERED_BY = re.compile(r"[a-z_]{1,32}")


def is_amd(form: Mapping[str, str]) -> bool:
    """An ``AsyncAmdStatusCallback`` request: AnsweredBy and no parties (no To, no From)."""
    return bool(form.get("AnsweredBy")) and not form.get("To") and not form.get("From")


def parse_amd(form: Mapping[str, str]) -> AmdResult:
    """``CallSid``, ``AccountSid``, ``AnsweredBy``, ``MachineDetectionDuration`` (ms)."""
    answered_by = _required(form, "AnsweredBy")
    if not _ANSWERED_BY.fullmatch(answered_by):
        raise MalformedWebhook("AnsweredBy", "AnsweredBy is not a Twilio detection outcome")
    duration = form.get("MachineDetectionDuration", "")
    return AmdResult(
        call_sid=_required(form, "CallSid"),
        answered_by=answered_by,
        detection_ms=int(duration) if _SEQUENCE.fullmatch(duration) else None,
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
        extra=_extra(form, ("NumSegments", "NumMedia", *_MEDIA_FIELDS)),
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
