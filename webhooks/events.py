"""The one provider-neutral event model every webhook is parsed into.

The gateway dedupes on ``dedup``, stores the event in a stream, and the trigger engine
reads nothing provider-specific: adding a provider means writing a parser to this model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


# How far a call has progressed; a callback that ranks below what a call already reached
# arrived out of order and must not move the call (or its job) backwards.
CALL_PROGRESS: dict[EventKind, int] = {
    EventKind.CALL_INCOMING: 1,
    EventKind.CALL_OUTGOING: 1,
    EventKind.CALL_ANSWERED: 2,
    EventKind.CALL_MISSED: 3,
    EventKind.CALL_COMPLETED: 3,
}


@dataclass(frozen=True)
class Event:
    """One thing that happened at a provider (or on the website form).

    ``dedup`` is the provider's identity of this delivery (for Twilio: CallSid plus status
    and sequence, MessageSid plus status, or the idempotency token); two deliveries with the
    same ``dedup`` are the same event. ``ref`` is the provider's id of the call or message,
    shared by all events of that call. ``at`` is unix seconds.
    """

    kind: EventKind
    provider: str
    line: str
    customer: str
    ref: str
    dedup: str
    at: float
    status: str = ""
    text: str = ""
    direction: str = ""
    sequence: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        # vars(), not asdict(): no deep copy on the webhook hot path (extra is flat str->str).
        return json.dumps(vars(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = json.loads(raw)
        data["kind"] = EventKind(data["kind"])
        return cls(**data)
