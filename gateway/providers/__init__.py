"""Telephony providers behind one Protocol: the job runner places calls through it and
never knows which provider it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboundCall:
    """One dial of a robocall job, as every provider needs it.

    ``key`` names this dial (job id and dial number): providers with idempotency use it, and
    ``find`` looks for a call placed under it. ``since`` is when the dial was first tried,
    to narrow the provider's call list when reconciling.
    """

    job_id: str
    dial: int
    key: str
    to: str
    line: str
    audio_url: str
    status_url: str
    since: float
    machine_detection: bool = False


class PlacementError(Exception):
    """The provider did not place the call. ``transient`` ones (timeouts, 5xx, 429) are
    retried with backoff; the rest (4xx, an invalid number) end the job ``failed``."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


class CallProvider(Protocol):
    async def place(self, call: OutboundCall) -> str:
        """Place the call; its provider reference (Twilio CallSid, ...). Raises PlacementError."""
        ...

    async def find(self, call: OutboundCall) -> str | None:
        """The reference of a call already placed for ``call.key``, if the provider has one:
        a dial whose outcome a crash left unknown is reconciled, never redialled blindly."""
        ...

    async def close(self) -> None: ...
