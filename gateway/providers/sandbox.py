"""The sandbox provider: places no real call, but feeds the call's progress through the
same event pipeline a real provider's callbacks take, so the product demos anywhere.

The number decides the outcome: ending in 0, no answer; in 1, busy; otherwise the call
rings, is answered and completes.
"""

from __future__ import annotations

import hashlib
import time

from config.vocabulary import EventKind
from gateway.providers import OutboundCall
from gateway.store import Store
from webhooks.events import Event


def outcome(number: str) -> list[tuple[EventKind, str]]:
    """The progress a sandbox call to ``number`` reports, in order."""
    ringing = (EventKind.CALL_OUTGOING, "ringing")
    if number.endswith("0"):
        return [ringing, (EventKind.CALL_COMPLETED, "no-answer")]
    if number.endswith("1"):
        return [ringing, (EventKind.CALL_COMPLETED, "busy")]
    return [ringing, (EventKind.CALL_ANSWERED, "in-progress"), (EventKind.CALL_COMPLETED, "completed")]


class Sandbox:
    def __init__(self, name: str, store: Store) -> None:
        self._name = name
        self._store = store

    async def place(self, call: OutboundCall) -> str:
        ref = "SB" + hashlib.sha256(call.key.encode()).hexdigest()[:32]
        # The call "exists" once recorded under its key; a second place() for the same dial
        # finds it and reports the same call.
        ref = await self._store.jobs.record_sandbox_call(call.key, ref)
        await self._report(call, ref)
        return ref

    async def find(self, call: OutboundCall) -> str | None:
        ref = await self._store.jobs.sandbox_call(call.key)
        if ref is not None:
            # A crash may have come between recording the call and reporting it; reports
            # are deduplicated, so sending them again is harmless.
            await self._report(call, ref)
        return ref

    async def close(self) -> None:
        return None

    async def _report(self, call: OutboundCall, ref: str) -> None:
        for sequence, (kind, status) in enumerate(outcome(call.to)):
            event = Event(
                kind=kind,
                provider=self._name,
                line=call.line,
                customer=call.to,
                ref=ref,
                dedup=f"sandbox:{ref}:{status}",
                at=time.time(),
                status=status,
                direction="outbound-api",
                sequence=sequence,
                extra={"job": call.job_id, "dial": str(call.dial)},
            )
            await self._store.inbox.accept(event)
