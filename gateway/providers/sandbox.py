"""The sandbox provider: places no real call, but feeds the call's progress through the
same event pipeline a real provider's callbacks take, so the product demos anywhere.

The number decides the outcome: ending in 0, no answer; in 1, busy; otherwise the call
rings, is answered and completes after ``CALL_SECONDS`` (its CallDuration, so usage and
cost show on a fresh machine). A ``provider``-engine call needs no audio: the sandbox
"speaks" the text. An SMS is sent, then delivered, or fails when the number
ends in 9.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from config.vocabulary import EventKind
from gateway.providers import OutboundCall, OutboundSms
from gateway.store import Store
from webhooks.events import Event

# One report: its kind, status and extra fields.
Step = tuple[EventKind, str, dict[str, str]]


# How long an answered sandbox call lasts (seconds).
CALL_SECONDS = 42


def outcome(number: str) -> list[Step]:
    """The progress a sandbox call to ``number`` reports, in order."""
    ringing: Step = (EventKind.CALL_OUTGOING, "ringing", {})
    if number.endswith("0"):
        return [ringing, (EventKind.CALL_COMPLETED, "no-answer", {"CallDuration": "0"})]
    if number.endswith("1"):
        return [ringing, (EventKind.CALL_COMPLETED, "busy", {"CallDuration": "0"})]
    completed = (EventKind.CALL_COMPLETED, "completed", {"CallDuration": str(CALL_SECONDS)})
    return [ringing, (EventKind.CALL_ANSWERED, "in-progress", {}), completed]


def sms_outcome(number: str) -> list[tuple[str, dict[str, str]]]:
    """The statuses a sandbox SMS to ``number`` reports, in order, with their fields."""
    if number.endswith("9"):
        return [("sent", {}), ("failed", {"ErrorCode": UNREACHABLE})]
    return [("sent", {}), ("delivered", {})]


# Reports a recorded call or message (by its reference) through the event pipeline.
Report = Callable[[str], Awaitable[None]]

# Twilio's "Unreachable destination handset", so a demo shows what a real failure shows.
UNREACHABLE = "30003"


class Sandbox:
    def __init__(self, name: str, store: Store) -> None:
        self._name = name
        self._store = store

    async def place(self, call: OutboundCall) -> str:
        return await self._record(call.key, "SB", lambda ref: self._report(call, ref))

    async def find(self, call: OutboundCall) -> str | None:
        return await self._found(call.key, lambda ref: self._report(call, ref))

    async def send_sms(self, sms: OutboundSms) -> str:
        return await self._record(sms.key, "SM", lambda ref: self._report_sms(sms, ref))

    async def find_sms(self, sms: OutboundSms) -> str | None:
        return await self._found(sms.key, lambda ref: self._report_sms(sms, ref))

    async def _record(self, key: str, prefix: str, report: Report) -> str:
        ref = prefix + hashlib.sha256(key.encode()).hexdigest()[:32]
        # The call or message "exists" once recorded under its key; a second attempt for the
        # same key finds it and reports the same one.
        ref = await self._store.jobs.record_call(key, ref)
        await report(ref)
        return ref

    async def _found(self, key: str, report: Report) -> str | None:
        ref = await self._store.jobs.recorded_call(key)
        if ref is not None:
            # A crash may have come between recording and reporting; reports are
            # deduplicated, so sending them again is harmless.
            await report(ref)
        return ref

    async def close(self) -> None:
        return None

    async def _report_sms(self, sms: OutboundSms, ref: str) -> None:
        steps = [(EventKind.SMS_STATUS, status, extra) for status, extra in sms_outcome(sms.to)]
        await self._accept(steps, ref, sms.line, sms.to, {"job": sms.job_id, "dial": "1"})

    async def _report(self, call: OutboundCall, ref: str) -> None:
        await self._accept(outcome(call.to), ref, call.line, call.to, {"job": call.job_id, "dial": str(call.dial)})

    async def _accept(self, steps: list[Step], ref: str, line: str, to: str, tags: dict[str, str]) -> None:
        """Feed the steps into the event pipeline as a provider's callbacks would arrive."""
        for sequence, (kind, status, extra) in enumerate(steps):
            event = Event(
                kind=kind,
                provider=self._name,
                line=line,
                customer=to,
                ref=ref,
                dedup=f"sandbox:{ref}:{status}",
                at=time.time(),
                status=status,
                direction="outbound-api",
                sequence=sequence,
                extra={**extra, **tags},
            )
            await self._store.inbox.accept(event)
