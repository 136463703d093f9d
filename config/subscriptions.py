"""Subscriptions: which events a CRM endpoint receives, and how each event is written and
signed. Pure: the gateway's outbox does the I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator

from config.lines import Strict, WebUrl
from config.vocabulary import EventKind

SIGNATURE_HEADER = "Callgate-Signature"

# Every type an item's timeline holds, so everything the timeline shows can reach the CRM.
EventType = StrEnum(  # type: ignore[misc]  # the functional form, to include EventKind's members
    "EventType",
    {
        name.upper().replace(".", "_"): name
        for name in [
            "item.created",
            "item.stage_changed",
            "job.updated",
            "stage_rule.ran",
            "consent.changed",
            "invite.clicked",
            *EventKind,
        ]
    },
)

Secret = Annotated[str, Field(min_length=16, max_length=256)]


class SubscriptionBody(Strict):
    """The body of ``POST /v1/subscriptions``."""

    url: WebUrl
    secret: Secret
    events: Annotated[list[EventType], Field(min_length=1, max_length=100)]

    @field_validator("events")
    @classmethod
    def _once_each(cls, events: list[EventType]) -> list[EventType]:
        return sorted(set(events))


class Subscription(SubscriptionBody):
    id: str
    created_at: str

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    def view(self) -> dict[str, Any]:
        """As the admin API shows it: never the secret."""
        return self.model_dump(exclude={"secret"})


def event_body(event_id: str, event_type: str, created_at: str, data: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed for one event: built once, so every retry sends the same."""
    event = {"id": event_id, "type": event_type, "created_at": created_at, "data": dict(data)}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Callgate-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
