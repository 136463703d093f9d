"""The one provider-neutral event model every webhook is parsed into.

The gateway dedupes on ``dedup``, stores the event in a stream, and the trigger engine
reads nothing provider-specific: adding a provider means writing a parser to this model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from config.vocabulary import EventKind


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

    @property
    def identity(self) -> str:
        """What makes two events the same for their effects: a call's missed fires once even
        when both the Dial action and the call's own status callback report it."""
        return f"{self.kind.value}:{self.provider}:{self.ref}"

    def to_json(self) -> str:
        # vars(), not asdict(): no deep copy on the webhook hot path (extra is flat str->str).
        return json.dumps(vars(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = json.loads(raw)
        data["kind"] = EventKind(data["kind"])
        return cls(**data)
