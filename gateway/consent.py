"""One consent ledger for SMS and robocalls: who changes it (a STOP/START text, an admin, a
provider's opted-out refusal), the audit trail on the items of the number, and the reason a
job to an opted-out number is skipped."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from config.settings import Settings
from gateway.store import Store
from gateway.store.consent import ConsentRecord
from gateway.store.items import Item, now_iso, timeline_entry
from sms.consent import START_WORDS, STOP_WORDS, Consent, fold, keyword
from webhooks.events import Event

log = logging.getLogger(__name__)

CONSENT_CHANGED = "consent.changed"


class Consents:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._stop = settings.stop_words or STOP_WORDS
        self._start = settings.start_words or START_WORDS

    async def record(self, record: ConsentRecord, identity: str, items: Sequence[Item] | None = None) -> ConsentRecord:
        """Apply ``record`` and put it on the timeline of the number's items (``identity``
        writes each entry once); the number's record as it now stands."""
        await self._store.consent.change(record)
        current = await self._store.consent.get(record.number)
        assert current is not None
        # Also when the change was made before a crash and is being repeated: its entries
        # may be what the crash prevented.
        if (current.at, current.opted_out) == (record.at, record.opted_out):
            if items is None:
                items = await self._store.items.by_phone(record.number)
            entry = timeline_entry(CONSENT_CHANGED, record.view(), record.at)
            await self._store.items.record_many([(item.id, identity, entry) for item in items])
            log.info("consent number=%s opted_out=%s source=%s", record.number, record.opted_out, record.source)
        return current

    async def on_message(self, event: Event, items: list[Item]) -> Consent | None:
        """An inbound SMS that is a STOP or START keyword alone changes the number's
        consent; what it said, or None when it is no keyword."""
        consent = keyword(event.text, self._stop, self._start)
        if consent is None or event.withheld:
            return None
        record = ConsentRecord(event.customer, consent is Consent.OPT_OUT, "sms", fold(event.text), event.at)
        await self.record(record, f"consent:{event.identity}", items)
        return consent

    async def refusal(self, number: str) -> str | None:
        """Why nothing may be sent to ``number`` (it opted out), or None."""
        record = await self._store.consent.get(number)
        if record is None or not record.opted_out:
            return None
        how = {"sms": f"texted {record.detail}", "admin": "an admin opted it out", "provider": record.detail}
        return f"{number} opted out ({how.get(record.source, record.source)} at {now_iso(record.at)})"
