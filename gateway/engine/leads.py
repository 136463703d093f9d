"""The items an event is about: found by the customer's number, or a lead created for it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from config.cards import Card, FieldValue, Party, Phone
from config.lines import Line
from config.vocabulary import LEAD_KINDS
from gateway.store import Store
from gateway.store.items import Item
from webhooks.events import Event

log = logging.getLogger(__name__)


def lead_id(customer: str) -> str:
    """Deterministic, so an event processed twice finds the lead its first run created."""
    return "lead-" + hashlib.sha256(customer.encode()).hexdigest()[:16]


class Leads:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def items_for(self, events: Sequence[Event]) -> list[list[Item]]:
        """The items each event is about; the numbers of all of them looked up at once."""
        found = await self._store.items.by_phones(event.customer for event in events)
        return [found[event.customer] or await self._lead_for(event) for event in events]

    async def _lead_for(self, event: Event) -> list[Item]:
        # A withheld caller (Twilio's ANONYMOUS number, a sip: or client: identity) can be
        # neither called back nor put on a card: no lead.
        if event.kind not in LEAD_KINDS or event.withheld:
            return []
        line = await self._store.lines.get(event.line) if event.line else None
        if line is None or line.lead is None:
            return []
        return [await self._create(line, event)]

    async def _create(self, line: Line, event: Event) -> Item:
        assert line.lead is not None
        name = event.extra.get("name", "")
        contact = Party(name=name, phones=[Phone(value=event.customer)])
        fields: dict[str, FieldValue] = {"phone": event.customer, "source": event.kind.value, "line": event.line}
        if name:
            fields["name"] = name  # templates ({{name}}) take fields, not contacts
        card = Card(pipeline=line.lead.pipeline, stage=line.lead.stage, fields=fields, contacts=[contact])
        item = await self._store.items.create_if_absent(lead_id(event.customer), card, {"source": event.kind.value})
        log.info("lead item=%s customer=%s line=%s", item.id, event.customer, event.line)
        return item
