"""Stage entries: when an item enters a stage (a trigger moved it, or the CRM changed its
stage), the stage's rules queue their robocalls and SMS, once per entry.

The entry was recorded in the step that moved the item (``gateway.store.entries``); this
worker takes it, queues each rule's job under the idempotency key (entry id, rule index)
through the same path as the CRM's own requests, writes each rule's outcome on the item's
timeline once, and only then drops the entry. A crash anywhere in between runs the entry
again later and nothing twice; a later entry into the stage has a new id and runs again.
An entry is started at most ``max_deliveries`` times (an entry taken but never started is
no attempt): on its last attempt a rule that fails is recorded ``failed`` with the error
while the others still run, and an entry whose last attempt fails anyway (or never
finished) is given up with what can still be recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from config.settings import Settings
from gateway.api.queueing import IdempotencyConflict
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
# The longest error a ``failed`` outcome quotes.
_REASON_MAX = 500

Rule = SmsRule | RobocallRule


def rule_key(entry: StageEntry, index: int) -> str:
    """The idempotency key of the job the rule at ``index`` queues for ``entry``."""
    return f"stage-rule:{entry.entry_id}:{index}"


class StageEntryRunner:
    def __init__(self, store: Store, settings: Settings, renderer: Renderer, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._renderer = renderer
        self._metrics = metrics
        # As with stream entries: a worker that died holding entries loses them after this
        # long, and an entry is taken this many times at most.
        self._lease = float(settings.claim_idle_seconds)
        self._attempts = settings.max_deliveries

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                busy = await self.run_due(time.time())
            except UNAVAILABLE as exc:
                self._metrics.health.lost(exc)
                busy = False
            except Exception:
                log.exception("stage entries failed; going on")
                busy = False
            if not busy:
                await asyncio.sleep(POLL_SECONDS)

    async def run_due(self, now: float) -> bool:
        """Run the rules of the due entries; True when a partition may have more."""
        taken = await self._store.stage_entries.take(now, now + self._lease, BATCH)
        if any(taken):
            # Their leases were written. A take that found nothing only read, which a Redis
            # demoted to a replica still answers: it says nothing of an outage's end.
            self._metrics.health.back()
        for entries in taken:
            for entry in entries:
                await self._attempt(entry)
        # Only a partition that filled its batch may have more: the others gave all they had.
        return any(len(entries) >= BATCH for entries in taken)

    async def _attempt(self, entry: StageEntry) -> None:
        """One attempt at the entry; one that fails stays leased and is taken again when its
        lease ends, up to its last attempt."""
        attempt = await self._store.stage_entries.start(entry)
        if attempt == 0:
            return  # another worker took it after this one's lease ended, and finished it
        if attempt > self._attempts:
            # Its last attempt never finished: the worker died in it, maybe because of it.
            await self._give_up(entry, "the worker running them stopped")
            return
        last = attempt == self._attempts
        try:
            await self.apply(entry, last=last)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            if last:
                await self._give_up(entry, _error(exc), exc)
                return
            log.exception(
                "stage rules of entry %s (item %s) failed on attempt %d of %d; tried again later",
                *(entry.entry_id, entry.item_id, attempt, self._attempts),
            )

    async def apply(self, entry: StageEntry, *, last: bool = False) -> None:
        """Queue the entry's rules and put their outcomes on the timeline, then drop it. On
        the ``last`` attempt a rule that fails is recorded ``failed`` and the others still run."""

        async def outcome(index: int, rule: Rule) -> dict[str, Any]:
            try:
                return await self._run(entry, index, rule)
            except UNAVAILABLE:
                raise
            except Exception as exc:
                if not last:
                    raise
                return self._failed(entry, index, rule, _error(exc), exc)

        await self._settle(entry, outcome)

    async def _give_up(self, entry: StageEntry, error: str, exc: Exception | None = None) -> None:
        """Drop an entry whose last attempt failed or never finished, without running its
        rules again: each is recorded with the job an earlier attempt made, or ``failed``."""

        async def outcome(index: int, rule: Rule) -> dict[str, Any]:
            job_id = await self._store.jobs.made(rule_key(entry, index))
            if job_id is None:
                return self._failed(entry, index, rule, error, exc)
            return _queued(_outcome(entry, index, rule), job_id)

        try:
            await self._settle(entry, outcome)
        except UNAVAILABLE:
            raise
        except Exception:
            # The rules or the item cannot be read: dropped all the same, or it would be
            # taken again for ever.
            self._metrics.stage_entries_given_up.inc()
            log.exception(
                "stage rules of entry %s (item %s) given up after %d attempts (%s); their outcomes are not recorded",
                *(entry.entry_id, entry.item_id, self._attempts, error),
            )
            await self._store.stage_entries.done(entry)

    async def _settle(self, entry: StageEntry, outcome: Callable[[int, Rule], Awaitable[dict[str, Any]]]) -> None:
        """Each rule's ``outcome`` (by its index) on the timeline in one step, then drop the
        entry; nothing to record when its rules or its item are gone. A crash before that
        step runs the rules again, and their jobs' idempotency keys give back the jobs made."""
        failed = False
        stored = await self._store.stage_rules.get(rules_name(entry.pipeline, entry.stage))
        if stored is not None and await self._store.items.get(entry.item_id) is not None:
            outcomes = [await outcome(index, rule) for index, rule in enumerate(stored.root)]
            await self._record(entry, outcomes)
            failed = any(o["status"] == "failed" for o in outcomes)
        await self._store.stage_entries.done(entry)
        if failed:
            self._metrics.stage_entries_given_up.inc()

    def _failed(self, entry: StageEntry, index: int, rule: Rule, error: str, exc: Exception | None) -> dict[str, Any]:
        """The outcome of a rule given up, with its WARNING."""
        log.warning(
            "stage rule %d of entry %s (item %s, %s/%s) given up after %d attempts: %s",
            *(index, entry.entry_id, entry.item_id, entry.pipeline, entry.stage, self._attempts, error),
            exc_info=exc,
        )
        reason = f"could not run in {self._attempts} attempts: {error}"
        return {**_outcome(entry, index, rule), "status": "failed", "job_id": None, "reason": reason}

    async def _record(self, entry: StageEntry, outcomes: list[dict[str, Any]]) -> None:
        """Each rule's outcome on the timeline, once per (entry, rule), in one step."""
        for outcome in outcomes:
            self._metrics.stage_rules.labels(outcome["kind"], outcome["status"]).inc()
        await self._store.items.record_many(
            [(entry.item_id, rule_key(entry, o["rule"]), timeline_entry("stage_rule.ran", o)) for o in outcomes]
        )

    async def _run(self, entry: StageEntry, index: int, rule: Rule) -> dict[str, Any]:
        outcome = _outcome(entry, index, rule)
        key = rule_key(entry, index)
        try:
            if isinstance(rule, SmsRule):
                sms = rule.request(entry.item_id)
                queued = await queue_sms(self._store, sms, sms.text, key=key, delay_seconds=sms.delay_seconds)
            else:
                call = rule.request(entry.item_id)
                queued = await queue_robocall(self._store, self._settings, self._renderer, call, key=key)
        except ApiError as exc:
            if isinstance(exc, IdempotencyConflict) and exc.job_id is not None:
                # The key is this entry's rule's alone: an earlier attempt made its job, then
                # the rule was edited before that attempt recorded it (it crashed). That job
                # is the outcome; the edit applies to later entries.
                return _queued(outcome, exc.job_id)
            # What the CRM's own request would have been refused for (a template field the
            # item lacks, a line gone): the rule is skipped, the others still run.
            log.info("stage rule skipped item=%s entry=%s rule=%d: %s", entry.item_id, entry.entry_id, index, exc)
            return {**outcome, "status": "skipped", "job_id": None, "reason": exc.message}
        return _queued(outcome, queued.job_id)


def _outcome(entry: StageEntry, index: int, rule: Rule) -> dict[str, Any]:
    """What every outcome of the rule at ``index`` for ``entry`` says."""
    return {
        "entry_id": entry.entry_id,
        "pipeline": entry.pipeline,
        "stage": entry.stage,
        "rule": index,
        "kind": rule.kind,
    }


def _queued(outcome: dict[str, Any], job_id: str) -> dict[str, Any]:
    return {**outcome, "status": "queued", "job_id": job_id, "reason": None}


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:_REASON_MAX]
