"""One stream entry through the engine: progress, answers, leads, timeline, timers, moves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from config.triggers import in_order, trigger_matches
from config.vocabulary import CALL_PROGRESS, EventKind, TriggerEvent, is_answer
from gateway.engine.leads import Leads
from gateway.engine.moves import Moves
from gateway.engine.overdue import OverdueTimers
from gateway.engine.timeline import Timeline
from gateway.store import Store
from gateway.streams import Entry
from webhooks.events import Event

JobCallHandler = Callable[[str, Event], Awaitable[None]]
TRIGGER_KINDS = frozenset(kind.value for kind in TriggerEvent)


async def _no_jobs(job_id: str, event: Event) -> None:
    return None


class EventProcessor:
    def __init__(self, store: Store, on_job_call: JobCallHandler = _no_jobs) -> None:
        self._store = store
        self._on_job_call = on_job_call
        self._leads = Leads(store)
        self._timeline = Timeline(store)
        self._timers = OverdueTimers(store)
        self._moves = Moves(store)

    async def __call__(self, entry: Entry) -> None:
        await self.handle(Event.from_json(entry.fields["event"]))

    async def handle(self, event: Event) -> None:
        store = self._store
        fresh, placed_by_us = await store.calls.progress(event) if event.kind in CALL_PROGRESS else (True, False)
        if event.extra.get("job"):
            # A robocall's progress: it moves its job and is no call.outgoing.
            await self._on_job_call(event.extra["job"], event)
            return
        if placed_by_us:
            return
        if is_answer(event.kind, event.status):
            await store.calls.mark_responded(event.customer, event.at)
        if event.kind is EventKind.RESPONSE_OVERDUE:
            await self._overdue(event)
            return
        items = await self._leads.items_for(event)
        # A progress report behind what the call already reached (call.answered after
        # call.completed) adds nothing. Every kind a trigger can watch happens once per call
        # or message and is recorded whenever it arrives: a move never lacks its cause.
        if fresh or event.kind.value in TRIGGER_KINDS:
            await self._timeline.record(event, items)
        triggers = in_order((await store.triggers.all()).values())
        await self._timers.arm(event, triggers)
        for trigger in triggers:
            if trigger_matches(trigger, event.kind.value, event.line, event.text):
                await self._moves.fire(trigger, event, items)

    async def _overdue(self, timer: Event) -> None:
        trigger = await self._timers.due_trigger(timer)
        if trigger is None:
            return
        items = await self._store.items.by_phone(timer.customer)
        await self._timeline.record(timer, items)
        await self._moves.fire(trigger, timer, items)
