"""The event as an entry on the timeline of each item it is about, once."""

from __future__ import annotations

from collections.abc import Sequence

from config.vocabulary import EventKind
from gateway.store import Store
from gateway.store.items import Item, timeline_entry
from webhooks.events import Event


def entry_of(event: Event, responsible: str | None) -> str:
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
    if responsible:
        data["responsible"] = responsible
    return timeline_entry(event.kind.value, data, event.at)


def _addressee(event: Event, item: Item) -> str | None:
    """A known customer's message is for the item's responsible user: the CRM routes it."""
    return (item.card.responsible or None) if event.kind is EventKind.SMS_INCOMING else None


class Timeline:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, events: Sequence[tuple[Event, list[Item]]]) -> None:
        """Each event on the timeline of each of its items, all in one round trip."""
        records: list[tuple[str, str, str]] = []
        for event, items in events:
            # Built once per event and per responsible user its items have.
            entries: dict[str | None, str] = {}
            for item in items:
                who = _addressee(event, item)
                if who not in entries:
                    entries[who] = entry_of(event, who)
                records.append((item.id, event.identity, entries[who]))
        await self._store.items.record_many(records)
