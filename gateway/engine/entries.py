"""Stage entries: when an item enters a stage (a trigger moved it, or the CRM changed its
stage), the stage's rules queue their robocalls and SMS, once per entry.

The entry was recorded in the step that moved the item (``gateway.store.entries``); this
worker takes it, queues each rule's job under the idempotency key (entry id, rule index)
through the same path as the CRM's own requests, writes each rule's outcome on the item's
timeline once, and only then drops the entry. A crash anywhere in between runs the entry
again later and nothing twice; a later entry into the stage has a new id and runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from config.settings import Settings
from gateway.api.robocalls import queue_robocall
from gateway.api.sms import queue_sms
from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.stage_rules import RobocallRule, SmsRule, rules_name
from gateway.store import Store
from gateway.store.connection import UNAVAILABLE
from gateway.store.entries import StageEntry
from gateway.store.items import timeline_entry
from gateway.streams import raise_if_cancelled
from voice.render import Renderer

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# Entries taken per partition and poll.
BATCH = 50


def rule_key(entry: StageEntry, index: int) -> str:
    """The idempotency key of the job the rule at ``index`` queues for ``entry``."""
    return f"stage-rule:{entry.entry_id}:{index}"


class StageEntryRunner:
    def __init__(self, store: Store, settings: Settings, renderer: Renderer, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._renderer = renderer
        self._metrics = metrics
        # A worker that died holding entries loses them after this long, as with stream entries.
        self._lease = float(settings.claim_idle_seconds)

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                busy = await self.run_due(time.time())
                self._metrics.health.back()
            except UNAVAILABLE as exc:
                self._metrics.health.lost(exc)
                busy = False
            except Exception:
                # An entry that failed stays leased and is tried again when its lease ends.
                log.exception("stage rules failed; going on")
                busy = False
            if not busy:
                await asyncio.sleep(POLL_SECONDS)

    async def run_due(self, now: float) -> bool:
        """Run the rules of the due entries; True when there may be more."""
        entries = await self._store.stage_entries.take(now, now + self._lease, BATCH)
        for entry in entries:
            await self.apply(entry)
        return len(entries) >= BATCH

    async def apply(self, entry: StageEntry) -> None:
        """Queue the entry's rules and put their outcomes on the timeline, then drop it."""
        stored = await self._store.stage_rules.get(rules_name(entry.pipeline, entry.stage))
        if stored is not None and await self._store.items.get(entry.item_id) is not None:
            outcomes = []
            for index, rule in enumerate(stored.root):
                outcome = await self._run(entry, index, rule)
                self._metrics.stage_rules.labels(rule.kind, outcome["status"]).inc()
                added = timeline_entry("stage_rule.ran", outcome)
                outcomes.append((entry.item_id, rule_key(entry, index), added))
            # One step for all of them; a crash before it runs the rules again, and their
            # jobs' idempotency keys give back the jobs already queued.
            await self._store.items.record_many(outcomes)
        await self._store.stage_entries.done(entry)

    async def _run(self, entry: StageEntry, index: int, rule: SmsRule | RobocallRule) -> dict[str, Any]:
        outcome: dict[str, Any] = {
            "entry_id": entry.entry_id,
            "pipeline": entry.pipeline,
            "stage": entry.stage,
            "rule": index,
            "kind": rule.kind,
        }
        key = rule_key(entry, index)
        try:
            if isinstance(rule, SmsRule):
                sms = rule.request(entry.item_id)
                queued = await queue_sms(self._store, sms, sms.text, key=key, delay_seconds=sms.delay_seconds)
            else:
                call = rule.request(entry.item_id)
                queued = await queue_robocall(self._store, self._settings, self._renderer, call, key=key)
        except ApiError as exc:
            # What the CRM's own request would have been refused for (a template field the
            # item lacks, a line gone): the rule is skipped, the others still run.
            log.info("stage rule skipped item=%s entry=%s rule=%d: %s", entry.item_id, entry.entry_id, index, exc)
            return {**outcome, "status": "skipped", "job_id": None, "reason": exc.message}
        return {**outcome, "status": "queued", "job_id": queued.job_id, "reason": None}
