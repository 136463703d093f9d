"""Telephony providers behind Protocols: the job runner places calls and sends SMS through
them and never knows which provider it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from voice.spoken import Spoken


@dataclass(frozen=True)
class OutboundCall:
    """One dial of a robocall job, as every provider needs it.

    ``key`` names this dial (job id and dial number): providers with idempotency use it, and
    ``find`` looks for a call placed under it. ``since`` is when the dial was first tried,
    to narrow the provider's call list when reconciling. The call plays ``audio_url``, or,
    with the ``provider`` engine, the provider speaks ``say`` (``audio_url`` is then empty).
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
    say: Spoken | None = None


@dataclass(frozen=True)
class OutboundSms:
    """One SMS job as every provider needs it; ``key`` and ``since`` as for a call."""

    job_id: str
    key: str
    to: str
    line: str
    text: str
    status_url: str
    since: float


class PlacementError(Exception):
    """The provider did not place the call. ``transient`` ones (timeouts, 5xx, 429) are
    retried with backoff; the rest (4xx, an invalid number) end the job ``failed``.
    ``throttled``: the provider said we are over its rate (HTTP 429)."""

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        opted_out: bool = False,
        throttled: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after
        self.throttled = throttled
        # The provider refused because the customer opted out (Twilio 21610): the job is
        # skipped and the number opted out in the ledger.
        self.opted_out = opted_out


@dataclass(frozen=True)
class CallEnd:
    """How a placed call ended, by the provider's own records: ``status`` in a status
    callback's words (completed, no-answer, busy, failed), the call's ``duration`` in
    seconds, and the SIP ``code`` it failed with. ``unplaced`` says why the session ended
    without dialling at all (the call then failed for that reason)."""

    status: str
    duration: int = 0
    code: str = ""
    unplaced: str = ""


class CallProvider(Protocol):
    async def place(self, call: OutboundCall) -> str:
        """Place the call; its provider reference (Twilio CallSid, ...). Raises PlacementError."""
        ...

    async def find(self, call: OutboundCall) -> str | None:
        """The reference of a call already placed for ``call.key``, if the provider has one:
        a dial whose outcome a crash left unknown is reconciled, never redialled blindly."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SmsProvider(Protocol):
    """A provider that can also text (not every kind can yet)."""

    async def send_sms(self, sms: OutboundSms) -> str:
        """Send the message; its provider reference (Twilio MessageSid, ...). Raises PlacementError."""
        ...

    async def find_sms(self, sms: OutboundSms) -> str | None:
        """The reference of a message already sent for ``sms.key``, if the provider has one."""
        ...


@runtime_checkable
class CallChecker(Protocol):
    """A provider whose calls' progress may never reach the gateway (Voximplant: the shipped
    scenario posts it, and a scenario that crashed or cannot reach us is silent). A call still
    ``sent``, ``ringing`` or ``answered`` ``check_after`` seconds after it was placed is looked
    up in the provider's records (and again every ``check_after``), and failed when they show
    no end of it ``give_up_after`` seconds after its dial began."""

    check_after: float
    give_up_after: float

    async def call_end(self, call: OutboundCall, ref: str) -> CallEnd | None:
        """How call ``ref`` (placed for ``call``) ended; None while the provider's records
        show no end of it (not there yet, or still under way). Raises PlacementError."""
        ...
