"""The event vocabulary: every kind of event, and what each kind means to the engine.

One place for it, so a parser, a trigger rule and the engine can never disagree on which
kinds count as our answer, which leave a customer waiting, or how far a call has got.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    CALL_INCOMING = "call.incoming"
    CALL_OUTGOING = "call.outgoing"
    CALL_MISSED = "call.missed"
    CALL_ANSWERED = "call.answered"
    CALL_COMPLETED = "call.completed"
    SMS_INCOMING = "sms.incoming"
    SMS_STATUS = "sms.status"
    CALLBACK_REQUESTED = "callback.requested"
    RESPONSE_OVERDUE = "response.overdue"
    LINK_CLICKED = "link.clicked"  # a customer followed a messenger invite's link


class TriggerEvent(StrEnum):
    """The kinds a trigger may name (the rest are recorded on the timeline only)."""

    CALL_INCOMING = EventKind.CALL_INCOMING.value
    CALL_OUTGOING = EventKind.CALL_OUTGOING.value
    CALL_MISSED = EventKind.CALL_MISSED.value
    SMS_INCOMING = EventKind.SMS_INCOMING.value
    CALLBACK_REQUESTED = EventKind.CALLBACK_REQUESTED.value
    RESPONSE_OVERDUE = EventKind.RESPONSE_OVERDUE.value
    LINK_CLICKED = EventKind.LINK_CLICKED.value


# How far a call has progressed; a callback that ranks below what a call already reached
# arrived out of order and must not move the call (or its job) backwards.
CALL_PROGRESS: dict[EventKind, int] = {
    EventKind.CALL_INCOMING: 1,
    EventKind.CALL_OUTGOING: 1,
    EventKind.CALL_ANSWERED: 2,
    EventKind.CALL_MISSED: 3,
    EventKind.CALL_COMPLETED: 3,
}

# After these a customer is waiting on us: a response.overdue trigger arms its timer.
AWAITING_ANSWER = frozenset({EventKind.CALL_MISSED, EventKind.SMS_INCOMING})

# From a customer we do not know yet, these create a lead on a line configured for it.
LEAD_KINDS = frozenset(
    {EventKind.CALL_INCOMING, EventKind.CALL_MISSED, EventKind.SMS_INCOMING, EventKind.CALLBACK_REQUESTED}
)

_ANSWERS = frozenset({EventKind.CALL_OUTGOING, EventKind.CALL_ANSWERED})
_SMS_REACHED = frozenset({"sent", "delivered"})


def is_answer(kind: EventKind, status: str = "") -> bool:
    """Our call or SMS reached the customer: it voids the overdue timers armed before it."""
    if kind is EventKind.SMS_STATUS:
        return status in _SMS_REACHED
    return kind in _ANSWERS
