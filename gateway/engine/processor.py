"""Stream entries through the engine, a batch at a time: progress, answers, leads, timeline,
timers, moves.

A batch runs in rounds that hold at most one event per customer, in stream order, so a
customer's events keep their order; each phase of a round is one pipelined round trip for
all its events (call progress, the items of every number, timeline entries, timers). Moves
stay one transaction each: few events move an item. A round that fails is run again event
by event, so one bad event fails alone; every effect is idempotent, so nothing happens twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from config.triggers import in_order, trigger_matches
from config.vocabulary import CALL_PROGRESS, EventKind, TriggerEvent, is_answer
from gateway.engine.leads import Leads
from gateway.engine.moves import Moves
from gateway.engine.overdue import OverdueTimers
from gateway.engine.timeline import Timeline
from gateway.store import Store
from gateway.store.connection import UNAVAILABLE
from gateway.store.items import Item
from gateway.streams import Entry
from webhooks.events import Event

JobCallHandler = Callable[[str, Event], Awaitable[None]]
# What else an inbound SMS does once it is on its items' timelines (consent keywords).
MessageHandler = Callable[[Event, list[Item]], Awaitable[None]]
TRIGGER_KINDS = frozenset(kind.value for kind in TriggerEvent)


async def _no_jobs(job_id: str, event: Event) -> None:
    return None


async def _no_messages(event: Event, items: list[Item]) -> None:
    return None


def rounds(events: list[tuple[str, Event]]) -> list[list[tuple[str, Event]]]:
    """Split a batch so each round holds a customer's next event at most: round n has the
    n-th event of every customer, and each round keeps the stream order."""
    split: list[list[tuple[str, Event]]] = []
    seen: dict[str, int] = {}
    for entry_id, event in events:
        n = seen.get(event.customer, 0)
        seen[event.customer] = n + 1
        if n == len(split):
            split.append([])
        split[n].append((entry_id, event))
    return split


class EventProcessor:
    def __init__(
        self, store: Store, on_job_call: JobCallHandler = _no_jobs, on_message: MessageHandler = _no_messages
    ) -> None:
        self._store = store
        self._on_job_call = on_job_call
        self._on_message = on_message
        self._leads = Leads(store)
        self._timeline = Timeline(store)
        self._timers = OverdueTimers(store)
        self._moves = Moves(store)

    async def __call__(self, entries: list[Entry]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        events: list[tuple[str, Event]] = []
        for entry in entries:
            try:
                events.append((entry.key, Event.from_json(entry.fields["event"])))
            except Exception as exc:
                failed[entry.key] = exc
        for batch in rounds(events):
            try:
                await self.handle([event for _, event in batch])
            except UNAVAILABLE:
                raise  # nothing is acknowledged: the whole batch is retried once Redis is back
            except Exception:
                for entry_id, event in batch:
                    try:
                        await self.handle([event])
                    except UNAVAILABLE:
                        raise
                    except Exception as exc:
                        failed[entry_id] = exc
        return failed

    async def handle(self, events: list[Event]) -> None:
        """Process ``events``, at most one per customer, with each phase in one round trip."""
        store = self._store
        on_calls = [event for event in events if event.kind in CALL_PROGRESS]
        progress = dict(zip(map(id, on_calls), await store.calls.progress(on_calls), strict=True))
        current: list[tuple[Event, bool]] = []
        for event in events:
            fresh, placed_by_us = progress.get(id(event), (True, False))
            if event.extra.get("job"):
                # A robocall's progress: it moves its job and is no call.outgoing.
                await self._on_job_call(event.extra["job"], event)
            elif not placed_by_us:
                current.append((event, fresh))
        await store.calls.mark_responded(
            {event.customer: event.at for event, _ in current if is_answer(event.kind, event.status)}
        )
        for timer in [event for event, _ in current if event.kind is EventKind.RESPONSE_OVERDUE]:
            await self._overdue(timer)
        current = [(event, fresh) for event, fresh in current if event.kind is not EventKind.RESPONSE_OVERDUE]
        found = await self._leads.items_for([event for event, _ in current])
        # A progress report behind what the call already reached (call.answered after
        # call.completed) adds nothing. Every kind a trigger can watch happens once per call
        # or message and is recorded whenever it arrives: a move never lacks its cause.
        await self._timeline.record(
            [
                (event, items)
                for (event, fresh), items in zip(current, found, strict=True)
                if fresh or event.kind.value in TRIGGER_KINDS
            ]
        )
        for (event, _), items in zip(current, found, strict=True):
            if event.kind is EventKind.SMS_INCOMING:
                await self._on_message(event, items)
        triggers = in_order((await store.triggers.all()).values())
        await self._timers.arm([event for event, _ in current], triggers)
        for (event, _), items in zip(current, found, strict=True):
            for trigger in triggers:
                if trigger_matches(trigger, event.kind.value, event.line, event.text):
                    await self._moves.fire(trigger, event, items)

    async def _overdue(self, timer: Event) -> None:
        trigger = await self._timers.due_trigger(timer)
        if trigger is None:
            return
        items = await self._store.items.by_phone(timer.customer)
        await self._timeline.record([(timer, items)])
        await self._moves.fire(trigger, timer, items)
