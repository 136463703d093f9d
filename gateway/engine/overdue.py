"""``response.overdue``: a timer armed when a customer starts waiting, void once we answer."""

from __future__ import annotations

from collections.abc import Sequence

from config.triggers import Trigger
from config.vocabulary import AWAITING_ANSWER, EventKind, TriggerEvent
from gateway.store import Store
from webhooks.events import Event


def overdue_event(trigger: Trigger, cause: Event) -> Event:
    assert trigger.seconds is not None
    return Event(
        kind=EventKind.RESPONSE_OVERDUE,
        provider=cause.provider,
        line=cause.line,
        customer=cause.customer,
        ref=f"{trigger.id}:{cause.identity}",
        dedup=f"overdue:{trigger.id}:{cause.identity}",
        at=cause.at + trigger.seconds,
        extra={"trigger_id": trigger.id, "since": repr(cause.at), "cause": cause.kind.value},
    )


class OverdueTimers:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def arm(self, events: Sequence[Event], triggers: list[Trigger]) -> None:
        """Arm the timer of every overdue trigger that an event leaves its customer waiting on."""
        overdue = [trigger for trigger in triggers if trigger.event is TriggerEvent.RESPONSE_OVERDUE]
        await self._store.timers.arm_all(
            [
                overdue_event(trigger, event)
                for event in events
                if event.kind in AWAITING_ANSWER
                for trigger in overdue
                if trigger.line in (None, event.line)
            ]
        )

    async def due_trigger(self, timer: Event) -> Trigger | None:
        """The trigger a due timer fires, unless we answered the customer meanwhile."""
        if await self._store.calls.responded_since(timer.customer, float(timer.extra["since"])):
            return None
        return await self._store.triggers.get(timer.extra["trigger_id"])
