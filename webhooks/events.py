"""The one provider-neutral event model every webhook is parsed into.

The gateway dedupes on ``dedup``, stores the event in a stream, and the trigger engine
reads nothing provider-specific: adding a provider means writing a parser to this model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from config.phones import InvalidPhone, to_e164
from config.vocabulary import EventKind

# What Twilio puts in From when a caller withholds the number (a number that does not exist).
_WITHHELD_NUMBERS = {"+266696687": "anonymous", "+86282452253": "unavailable"}
_IDENTITY_SCHEMES = ("client", "sip")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value: Any, *, sort_keys: bool = False) -> str:
    """``value`` as compact JSON, by orjson: the standard library's json cost seven times as
    much on the webhook path. A lone surrogate (a JSON body may carry "\\ud800", which is
    no character) becomes U+FFFD: orjson refuses it, and Redis's Lua cannot read its escape."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None).decode()
    except orjson.JSONEncodeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        return _SURROGATE.sub("\ufffd", text)


def withheld(identity: str) -> str | None:
    """Why ``identity`` is not a customer's phone number, or None when it is one.

    ``anonymous``/``unavailable`` for the numbers Twilio sends for withheld callers,
    ``client``/``sip`` for softphone and SIP identities, ``unknown`` for anything else that
    is not a valid international number. Such a caller can be neither called back nor made
    into a lead.
    """
    if identity in _WITHHELD_NUMBERS:
        return _WITHHELD_NUMBERS[identity]
    scheme = identity.partition(":")[0].lower()
    if scheme in _IDENTITY_SCHEMES:
        return scheme
    try:
        return None if to_e164(identity) == identity else "unknown"
    except InvalidPhone:
        return "unknown"


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
    def withheld(self) -> str | None:
        """Why the customer side is not a phone number (see :func:`withheld`), or None."""
        return withheld(self.customer)

    @property
    def identity(self) -> str:
        """What makes two events the same for their effects: a call's missed fires once even
        when both the Dial action and the call's own status callback report it. Each status
        of a message is news of its own (``sent``, then ``undelivered``)."""
        identity = f"{self.kind.value}:{self.provider}:{self.ref}"
        return f"{identity}:{self.status}" if self.kind is EventKind.SMS_STATUS else identity

    def to_json(self) -> str:
        # vars(), not asdict(): no deep copy on the webhook hot path (extra is flat str->str).
        return json_text(vars(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = orjson.loads(raw)
        data["kind"] = EventKind(data["kind"])
        return cls(**data)
