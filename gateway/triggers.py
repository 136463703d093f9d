"""The trigger engine: one stored event in, timeline entries and stage moves out.

Every effect is idempotent (keyed by the event's identity), so an event processed twice
after a crash or a claim changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import logging

from config.cards import Card, Party, Phone
from config.lines import Line
from config.triggers import ANSWERS, AWAITING_ANSWER, Trigger, TriggerEvent, may_move, trigger_matches
from gateway.store import Store
from gateway.store.items import Item, Move, timeline_entry
from gateway.streams import Entry
from webhooks.events import CALL_PROGRESS, Event, EventKind

log = logging.getLogger(__name__)

# Events from a customer we do not know yet that create a lead on a line configured for it.
_LEAD_KINDS = frozenset(
    {EventKind.CALL_INCOMING, EventKind.CALL_MISSED, EventKind.SMS_INCOMING, EventKind.CALLBACK_REQUESTED}
)


def identity(event: Event) -> str:
    """What makes two events the same for their effects: a call's missed fires once even
    when both the Dial action and the call's own status callback report it."""
    return f"{event.kind.value}:{event.provider}:{event.ref}"


def is_answer(event: Event) -> bool:
    """Our call or SMS reached the customer: it voids the overdue timers armed before it."""
    if event.kind is EventKind.SMS_STATUS:
        return event.status in {"sent", "delivered"}
    return event.kind.value in ANSWERS


def lead_id(customer: str) -> str:
    return "lead-" + hashlib.sha256(customer.encode()).hexdigest()[:16]


def overdue_event(trigger: Trigger, cause: Event) -> Event:
    assert trigger.seconds is not None
    return Event(
        kind=EventKind.RESPONSE_OVERDUE,
        provider=cause.provider,
        line=cause.line,
        customer=cause.customer,
        ref=f"{trigger.id}:{identity(cause)}",
        dedup=f"overdue:{trigger.id}:{identity(cause)}",
        at=cause.at + trigger.seconds,
        extra={"trigger_id": trigger.id, "since": repr(cause.at), "cause": cause.kind.value},
    )


class EventProcessor:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, entry: Entry) -> None:
        await self.handle(Event.from_json(entry.fields["event"]))

    async def handle(self, event: Event) -> None:
        store = self._store
        fresh, placed_by_us = await store.events.progress(event) if event.kind in CALL_PROGRESS else (True, False)
        if placed_by_us:
            return
        if is_answer(event):
            await store.events.mark_responded(event.customer, event.at)
        if event.kind is EventKind.RESPONSE_OVERDUE:
            await self._overdue(event)
            return
        items = await self._items_for(event)
        if fresh:
            await self._record(event, items)
        triggers = sorted((await store.triggers.all()).values(), key=lambda t: (t.created_at, t.id))
        for trigger in triggers:
            if trigger.event is TriggerEvent.RESPONSE_OVERDUE:
                if event.kind.value in AWAITING_ANSWER and trigger.line in (None, event.line):
                    await store.events.arm(overdue_event(trigger, event))
            elif trigger_matches(trigger, event.kind.value, event.line, event.text):
                await self._fire(trigger, event, items)

    async def _items_for(self, event: Event) -> list[Item]:
        items = await self._store.items.by_phone(event.customer)
        if items or event.kind not in _LEAD_KINDS or not event.customer.startswith("+"):
            return items
        line = await self._store.lines.get(event.line) if event.line else None
        if line is None or line.lead is None:
            return items
        return [await self._create_lead(line, event)]

    async def _create_lead(self, line: Line, event: Event) -> Item:
        assert line.lead is not None
        contact = Party(name=event.extra.get("name", ""), phones=[Phone(value=event.customer)])
        card = Card(
            pipeline=line.lead.pipeline,
            stage=line.lead.stage,
            fields={"phone": event.customer, "source": event.kind.value, "line": event.line},
            contacts=[contact],
        )
        item = await self._store.items.create_if_absent(lead_id(event.customer), card, {"source": event.kind.value})
        log.info("lead item=%s customer=%s line=%s", item.id, event.customer, event.line)
        return item

    async def _record(self, event: Event, items: list[Item]) -> None:
        data: dict[str, object] = {
            "line": event.line,
            "customer": event.customer,
            "provider": event.provider,
            "ref": event.ref,
        }
        if event.status:
            data["status"] = event.status
        if event.text:
            data["text"] = event.text
        data.update(event.extra)
        entry = timeline_entry(event.kind.value, data, event.at)
        for item in items:
            await self._store.items.record(item.id, identity(event), entry)

    async def _fire(self, trigger: Trigger, event: Event, items: list[Item]) -> None:
        pipeline = await self._store.pipelines.get(trigger.pipeline)
        if pipeline is None:
            return
        for index, item in enumerate(items):
            # Checked first on the card as last seen, to skip the transaction when it cannot
            # move (the usual case for repeat events); the transaction checks again.
            if item.card.pipeline != trigger.pipeline or not may_move(
                pipeline.stages, item.stage, trigger.target_stage, trigger.allow_back
            ):
                continue
            move = Move(
                item_id=item.id,
                stages=pipeline.stages,
                target=trigger.target_stage,
                allow_back=trigger.allow_back,
                trigger_id=trigger.id,
                act_as=trigger.act_as,
                identity=identity(event),
                cause=event.kind.value,
            )
            outcome = await self._store.items.move(move)
            if outcome is None:
                continue
            # The next trigger of this event sees the stage this one left the item in.
            items[index], moved = outcome
            if moved:
                log.info(
                    "moved item=%s from=%s to=%s trigger=%s", item.id, item.stage, trigger.target_stage, trigger.id
                )

    async def _overdue(self, event: Event) -> None:
        """A timer came due: fire its trigger unless we answered the customer meanwhile."""
        if await self._store.events.responded_since(event.customer, float(event.extra["since"])):
            return
        trigger = await self._store.triggers.get(event.extra["trigger_id"])
        if trigger is None:
            return
        items = await self._store.items.by_phone(event.customer)
        await self._record(event, items)
        await self._fire(trigger, event, items)
