"""The job runner: takes a queued robocall or SMS from the jobs stream to a placed call or
a sent message, and moves it along as the provider reports how it went.

Exactly one call per dial (and one message per SMS job): the job moves queued -> sending in a compare-and-set before the
provider is asked, and a job found in ``sending`` (its runner died mid-placement) or queued
again after a timeout is reconciled with the provider (``find``) before any new dial.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from config.hours import NeverOpen, next_open
from config.jobs import FINAL, IN_CALL, REACHED, JobKind, JobStatus, backoff
from config.lines import Line
from config.recipients import NoRecipient, PhoneChoice, select_phone
from config.settings import Settings
from config.usage import Usage, call_usage
from config.vocabulary import EventKind
from gateway.consent import Consents
from gateway.providers import (
    CallChecker,
    CallProvider,
    OutboundCall,
    OutboundSms,
    PlacementError,
    SmsProvider,
)
from gateway.providers.registry import Providers
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.consent import ConsentRecord
from gateway.store.items import now_iso, timeline_entry
from gateway.store.jobs import USAGE_FIELD, Job, Moved
from gateway.streams import Entry
from voice.robocall import Say
from voice.tts import SynthesisFailed, VoiceError
from webhooks.events import Event

log = logging.getLogger(__name__)

BACKOFF_CAP_SECONDS = 300.0
# A message status's ErrorCode saying the recipient opted out (Twilio's 21610).
OPTED_OUT_CODE = "21610"
# A rate-limit slot this near is waited for in the consumer; a later one in the due set.
MAX_SLOT_WAIT_SECONDS = 2.0
# The say engine whose text the provider speaks: nothing is rendered.
PROVIDER_ENGINE = "provider"
# A job field: "1" while a reconciled try the provider said it never placed waits for its
# rate-limit slot, so that each deferral does not ask the provider again.
UNPLACED = "unplaced"

# A job not placed yet, or being placed: what a failure before any call may end.
_PLACING = (JobStatus.QUEUED, JobStatus.SENDING)

_ENDED: dict[str, JobStatus] = {
    "completed": JobStatus.COMPLETED,
    "no-answer": JobStatus.NO_ANSWER,
    "busy": JobStatus.BUSY,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.FAILED,
}


# A message's statuses (Twilio's words; the sandbox uses them too). queued/sending/accepted
# add nothing to the job's own sending.
_MESSAGE: dict[str, JobStatus] = {
    "sent": JobStatus.SENT,
    "delivered": JobStatus.DELIVERED,
    "undelivered": JobStatus.FAILED,
    "failed": JobStatus.FAILED,
}


def call_status(event: Event) -> JobStatus | None:
    """What a provider's report of a job's call or message means for the job (None: nothing)."""
    if event.kind is EventKind.SMS_STATUS:
        return _MESSAGE.get(event.status)
    if event.kind is EventKind.CALL_OUTGOING:
        return JobStatus.RINGING if event.status == "ringing" else None
    if event.kind is EventKind.CALL_ANSWERED:
        return JobStatus.ANSWERED
    if event.kind is EventKind.CALL_COMPLETED:
        return _ENDED.get(event.status, JobStatus.COMPLETED)
    if event.kind is EventKind.CALL_MISSED:
        return _ENDED.get(event.status, JobStatus.NO_ANSWER)
    return None


def _provider_limit(job: Job) -> str:
    return f"{'sms' if job['kind'] == JobKind.SMS else 'calls'}:{job['provider']}"


def _reason(status: JobStatus, event: Event) -> str:
    if status not in FINAL or status in (JobStatus.COMPLETED, JobStatus.DELIVERED):
        return ""
    if event.kind is EventKind.SMS_STATUS:
        code = event.extra.get("ErrorCode")
        return f"the provider reported the message {event.status}" + (f" (ErrorCode {code})" if code else "")
    code = event.extra.get("SipResponseCode") or event.extra.get("code")
    return f"the call ended {event.status or status.value}" + (f" (SIP {code})" if code else "")


class JobRunner:
    def __init__(
        self,
        store: Store,
        providers: Providers,
        settings: Settings,
        speech: Speech,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._providers = providers
        self._settings = settings
        self._speech = speech
        self._clock = clock
        self._jitter = jitter
        self._consents = Consents(store, settings)

    async def __call__(self, entry: Entry) -> None:
        await self.run(entry.fields["job"])

    async def gave_up(self, fields: Mapping[str, str], why: str) -> None:
        """The jobs stream gave up on a job's entry: every run of it failed (a defect, not a
        provider's refusal, which ends the job itself). The job fails with the error, so the
        CRM sees it end, instead of staying queued with nothing left to run it."""
        job = await self._store.jobs.get(fields.get("job", ""))
        if job is None or job.status not in _PLACING:
            return
        # A try may have reached the provider: said, since a later report cannot undo a failure.
        sent = " (a try may have reached the provider)" if job["placing_at"] else ""
        reason = f"gave up after {self._settings.max_deliveries} failed runs{sent}: {why}"
        await self._change(job, JobStatus.FAILED, expect=_PLACING, reason=reason)

    async def run(self, job_id: str) -> None:
        job = await self._store.jobs.get(job_id)
        if job is not None and job.status in IN_CALL:
            if job["check_at"]:
                await self._check_call(job)
            else:
                # Placed, and the process died before the call's check was set (see _dispatch).
                await self._check_later(job)
            return
        if job is None or job.status in FINAL:
            return  # a duplicate entry: the job is past placement
        provider = await self._providers.get(job["provider"])
        if provider is None:
            reason = f"provider {job['provider']} is no longer configured"
            await self._change(job, JobStatus.FAILED, expect=_PLACING, reason=reason)
            return
        # Its hours and caps are the line's: a job whose line is gone is not sent without them.
        if await self._line(job) is None:
            reason = f"line {job['line']} is no longer configured"
            await self._change(job, JobStatus.FAILED, expect=_PLACING, reason=reason)
            return
        # A try made before (a crash, a timeout) may have reached the provider.
        reconcile = bool(job["placing_at"])
        if job.status is JobStatus.QUEUED:
            ready = await self._ready(job)
            if ready is None:
                return
            job = ready
        since = float(job["placing_at"])
        if job["kind"] == JobKind.SMS:
            await self._send(job, provider, since, reconcile)
            return
        call = self._call(job)
        # A provider whose reports may never come is asked how the call ended if none said so.
        check = provider.check_after if isinstance(provider, CallChecker) else None
        await self._dispatch(job, lambda: provider.find(call), lambda: provider.place(call), reconcile, check)

    def _call(self, job: Job) -> OutboundCall:
        """The job's current dial as the provider is asked to place it."""
        spoken = job["say_engine"] == PROVIDER_ENGINE
        return OutboundCall(
            job_id=job.id,
            dial=job.dial,
            key=f"{job.id}-{job.dial}",
            to=job["to"],
            line=job["line"],
            audio_url="" if spoken else f"{self._settings.base_url}/media/{job['media']}.mp3",
            status_url=f"{self._settings.base_url}/webhooks/twilio/voice/status?job={job.id}&dial={job.dial}",
            since=float(job["placing_at"]),
            machine_detection=bool(job.request.get("machine_detection")),
            say=Say.model_validate(job.request["say"]).spoken(job["text"]) if spoken else None,
        )

    async def _ready(self, job: Job) -> Job | None:
        """Everything before the provider is asked: the number, the audio, quiet hours and a
        rate-limit slot; then the job moves to ``sending``. None when it ended or waits."""
        try:
            to = job["to"] or await self._recipient(job)
        except NoRecipient as exc:
            await self._change(job, JobStatus.SKIPPED, expect=(JobStatus.QUEUED,), reason=str(exc))
            return None
        refusal = await self._consents.refusal(to)
        if refusal is not None:
            await self._change(job, JobStatus.SKIPPED, expect=(JobStatus.QUEUED,), reason=refusal, to=to)
            return None
        if job["kind"] == JobKind.ROBOCALL and not job["media"] and job["say_engine"] != PROVIDER_ENGINE:
            rendered = await self._render(job)
            if rendered is None:
                return None
            job = rendered
        if not await self._in_hours(job, to):
            return None
        # Counted once it may go now, so a job waiting out quiet hours counts on the day it goes.
        over = await self._over_cap(job, to)
        if over is not None:
            await self._change(job, JobStatus.SKIPPED, expect=(JobStatus.QUEUED,), reason=over, to=to)
            return None
        # A job tried before takes its slot only if the provider has no call for it (_dispatch).
        if not job["placing_at"] and not await self._slot(job):
            return None
        since = job["placing_at"] or repr(self._clock())
        began = await self._change(
            job, JobStatus.SENDING, expect=(JobStatus.QUEUED,), to=to, placing_at=since, reason=""
        )
        return Job({**job.fields, "to": to, "placing_at": since, "status": JobStatus.SENDING.value}) if began else None

    async def _in_hours(self, job: Job, to: str) -> bool:
        """Whether the line's hours let us reach ``to`` now; if not, the job waits (due set)
        for the next window. Test calls are the admin's and automatic replies answer the
        customer's own message: both go at once."""
        line = await self._line(job)
        if job["test"] == "1" or job["reply"] or line is None or line.hours is None:
            return True
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            opening = next_open(line.hours, to, now)
        except NeverOpen as exc:
            await self._change(job, JobStatus.SKIPPED, expect=(JobStatus.QUEUED,), reason=str(exc))
            return False
        if opening <= now:
            return True
        reason = f"quiet hours: waiting until {opening.isoformat()}"
        await self._store.jobs.defer(job.id, opening.timestamp(), reason=reason)
        log.info("job=%s deferred to %s (quiet hours)", job.id, opening.isoformat())
        return False

    async def _slot(self, job: Job, fields: Mapping[str, str] | None = None) -> bool:
        """A slot of the provider's ``calls_per_second`` (``sms_per_second`` for SMS, and the
        line's own ``sms_per_second`` too), shared by every process: waited for when it is
        near, else the job waits in the due set without holding a consumer (with ``fields``
        set on it)."""
        slot = await self._store.limits.reserve(await self._rates(job), MAX_SLOT_WAIT_SECONDS)
        if not slot.granted:
            # Back while that slot is still ahead (it is not held for the job): were it back
            # only at the slot, the limit would idle for the due set's poll.
            due = self._clock() + slot.wait - MAX_SLOT_WAIT_SECONDS / 2
            await self._store.jobs.defer(job.id, due, reason=job["reason"], **(fields or {}))
            return False
        await asyncio.sleep(slot.wait)
        return True

    async def _rates(self, job: Job) -> dict[str, float]:
        """The limits a job's send counts against: name -> slots a second."""
        record = await self._store.providers.get(job["provider"])
        if job["kind"] != JobKind.SMS:
            return {_provider_limit(job): record.calls_per_second if record is not None else 1.0}
        rates = {_provider_limit(job): record.sms_per_second if record is not None else 1.0}
        line = await self._store.lines.get(job["line"])
        if line is not None and line.sms_per_second is not None:
            rates[f"sms-line:{job['line']}"] = line.sms_per_second
        return rates

    async def _send(self, job: Job, provider: CallProvider, since: float, reconcile: bool) -> None:
        if not isinstance(provider, SmsProvider):
            reason = f"provider {job['provider']} cannot send SMS"
            await self._change(job, JobStatus.FAILED, expect=(JobStatus.SENDING,), reason=reason)
            return
        sms = OutboundSms(
            job_id=job.id,
            key=f"{job.id}-sms",
            to=job["to"],
            line=job["line"],
            text=job["text"],
            status_url=f"{self._settings.base_url}/webhooks/twilio/sms/status?job={job.id}",
            since=since,
        )
        await self._dispatch(job, lambda: provider.find_sms(sms), lambda: provider.send_sms(sms), reconcile)

    async def _line(self, job: Job) -> Line | None:
        """The job's line, read afresh when this process's snapshot lacks it (a line just
        made through another process)."""
        lines = self._store.lines
        return await lines.get(job["line"]) or (await lines.fresh()).get(job["line"])

    async def _over_cap(self, job: Job, to: str) -> str | None:
        """Why ``to`` may get no more jobs of this kind today: its line's per-customer cap.
        Every job counts, on its line's day, whether its own line has a cap or not (caps
        count across lines); answers to the customer's own message neither count nor are
        capped."""
        if job["reply"]:
            return None
        line = await self._line(job)
        cap: int | None = getattr(line.caps, job["kind"]) if line is not None and line.caps is not None else None
        zone = ZoneInfo(line.hours.tz) if line is not None and line.hours is not None else UTC
        day = datetime.fromtimestamp(self._clock(), zone).date().isoformat()
        if await self._store.caps.take(to, job["kind"], day, job.id, cap):
            return None
        return f"{to} already got {cap} {job['kind']} job(s) on {day} (the line's caps.{job['kind']})"

    async def _render(self, job: Job) -> Job | None:
        """Speak the job's text into an MP3 (cached: a campaign renders each text once);
        the job with its media, or None when it cannot be said (the job then failed)."""
        say = Say.model_validate(job.request["say"])
        try:
            utterance = replace(say.utterance(job["text"]), engine=job["say_engine"] or say.engine)
            rendered = await self._speech.render(utterance)
        except (VoiceError, SynthesisFailed) as exc:
            await self._change(job, JobStatus.FAILED, expect=(JobStatus.QUEUED,), reason=f"say: {exc}")
            return None
        fields = {
            "media": rendered.key,
            "engine": rendered.engine,
            "voice": rendered.voice,
            "note": rendered.note or "",
        }
        await self._store.jobs.set_fields(job.id, fields)
        return Job({**job.fields, **fields})

    async def _recipient(self, job: Job) -> str:
        item = await self._store.items.get(job["item_id"])
        if item is None:
            raise NoRecipient(f"item {job['item_id']} no longer exists")
        choice: PhoneChoice = job.request.get("phone_type", "AUTO")
        return select_phone(item.card, choice)

    async def _dispatch(
        self,
        job: Job,
        find: Callable[[], Awaitable[str | None]],
        place: Callable[[], Awaitable[str]],
        reconcile: bool,
        check: float | None = None,
    ) -> None:
        """Place the call or send the message, unless ``find`` (asked when an earlier try's
        outcome is unknown) says the provider already has it; the job is then ``sent`` (and,
        with ``check``, looked up that many seconds later unless its call has ended). A reconciled
        job takes a rate-limit slot only when it is dialled after all, and asks ``find``
        once however often the limit defers it."""
        unplaced = reconcile and job[UNPLACED] == "1"
        try:
            ref = await find() if reconcile and not unplaced else None
            if ref is None:
                if reconcile and not await self._slot(job, {UNPLACED: "1"}):
                    return
                if unplaced:
                    # Forgotten before the dial: should this try die mid-placement, the next asks.
                    await self._store.jobs.set_fields(job.id, {UNPLACED: ""})
                ref = await place()
        except PlacementError as exc:
            await self._placement_failed(job, exc)
            return
        await self._store.jobs.mark_call(job["provider"], ref, job.id)
        due = None if check is None else self._clock() + check
        check_at = "" if due is None else repr(due)
        sent = await self._change(
            job, JobStatus.SENT, expect=(JobStatus.SENDING,), due=due, provider_ref=ref, check_at=check_at
        )
        if not sent and due is not None:
            # The provider's first report came before this move and took the job into its
            # call (ringing, answered) without a check: a call that then stops reporting would
            # stay in it for ever.
            await self._store.jobs.check_call(job.id, job.dial, due)
        log.info("job=%s kind=%s dial=%d placed ref=%s", job.id, job["kind"], job.dial, ref)

    async def _check_later(self, job: Job) -> None:
        """The check of a call a job is in without one, when its provider checks calls."""
        provider = await self._providers.get(job["provider"])
        if isinstance(provider, CallChecker):
            await self._store.jobs.check_call(job.id, job.dial, self._clock() + provider.check_after)

    async def _check_call(self, job: Job) -> None:
        """A call still ``sent``, ``ringing`` or ``answered`` when its check is due: its
        provider's report of its end never came (of anything at all, while ``sent``), so its
        records are asked how it ended, and the job moves as that report would have moved it
        (a compare-and-set from the status it was checked in, so once however many processes
        check). With no end found, it is looked up again later, and failed once the
        provider's bound has passed, whether its records showed no end or could not be read
        at all (a call never stays in progress for ever)."""
        expect = (job.status,)
        provider = await self._providers.get(job["provider"])
        if provider is None:
            reason = (
                f"provider {job['provider']} is no longer configured, so call {job['provider_ref']} cannot be looked up"
            )
            await self._change(job, JobStatus.FAILED, expect=expect, reason=reason)
            return
        now = self._clock()
        if not isinstance(provider, CallChecker) or now < float(job["check_at"]):
            return  # a repeat of the entry that placed the call: its check is due later
        unread = ""
        try:
            end = await provider.call_end(self._call(job), job["provider_ref"])
        except PlacementError as exc:
            log.warning("job=%s could not look up call %s: %s", job.id, job["provider_ref"], exc.reason)
            end, unread = None, exc.reason
        if end is not None and end.unplaced:
            await self._change(job, JobStatus.FAILED, expect=expect, reason=end.unplaced)
        elif end is not None:
            extra = {"dial": str(job.dial)}
            if end.status == "completed":
                extra["duration"] = str(end.duration)
            if end.code:
                extra["code"] = end.code
            event = Event(
                kind=EventKind.CALL_COMPLETED,
                provider=job["provider"],
                line=job["line"],
                customer=job["to"],
                ref=job["provider_ref"],
                dedup=f"check:{job.id}:{job.dial}",
                at=now,
                status=end.status,
                extra=extra,
            )
            log.info("job=%s call %s ended %s by the provider's records", job.id, job["provider_ref"], end.status)
            await self.on_call_event(job.id, event)
        elif now >= float(job["placing_at"]) + provider.give_up_after:
            records = f"could not be read ({unread})" if unread else "show no end of it"
            after = "" if job.status is JobStatus.SENT else f" after it was {job.status.value}"
            reason = (
                f"no report of call {job['provider_ref']} came{after}, and the provider's records {records} "
                f"{provider.give_up_after:.0f} s after the dial began"
            )
            await self._change(job, JobStatus.FAILED, expect=expect, reason=reason)
        else:
            due = now + provider.check_after
            await self._store.jobs.check_call(job.id, job.dial, due, since=job["check_at"])

    async def _placement_failed(self, job: Job, exc: PlacementError) -> None:
        tries = job.tries + 1
        expect = (JobStatus.SENDING,)
        if exc.opted_out:
            record = ConsentRecord(job["to"], True, "provider", exc.reason, self._clock())
            await self._consents.record(record, f"consent:{job.id}:{job.dial}:refused")
            reason = await self._consents.refusal(job["to"]) or exc.reason
            await self._change(job, JobStatus.SKIPPED, expect=expect, reason=reason, tries=tries)
        elif not exc.transient:
            await self._change(job, JobStatus.FAILED, expect=expect, reason=exc.reason, tries=tries)
        elif tries >= self._settings.job_max_tries:
            reason = f"gave up after {tries} tries: {exc.reason}"
            await self._change(job, JobStatus.FAILED, expect=expect, reason=reason, tries=tries, dead=reason)
        else:
            delay = exc.retry_after or backoff(
                tries, self._settings.job_retry_seconds, BACKOFF_CAP_SECONDS, self._jitter()
            )
            if exc.throttled:
                # Over the provider's own rate: every process holds off, not this job alone.
                await self._store.limits.pause(_provider_limit(job), delay)
            reason = f"try {tries} failed ({exc.reason}); retrying in {delay:.1f} s"
            due = self._clock() + delay
            await self._change(job, JobStatus.QUEUED, expect=expect, reason=reason, tries=tries, due=due)
        log.warning("job=%s placement failed transient=%s: %s", job.id, exc.transient, exc.reason)

    async def on_call_event(self, job_id: str, event: Event) -> None:
        """A provider's report on a job's call: move the job forward, never backwards."""
        status = call_status(event)
        job = await self._store.jobs.get(job_id)
        if status is None or job is None or job["provider"] != event.provider:
            return
        if event.extra.get("dial", str(job.dial)) != str(job.dial) or job["provider_ref"] not in ("", event.ref):
            return  # a report on an earlier dial's call
        if event.extra.get("ErrorCode") == OPTED_OUT_CODE:
            detail = f"the provider refused message {event.ref} (ErrorCode {OPTED_OUT_CODE}: opted out)"
            record = ConsentRecord(job["to"], True, "provider", detail, event.at)
            await self._consents.record(record, f"consent:{event.identity}")
        if status in REACHED and job["test"] != "1" and not job["reply"]:
            # Our message or call reached the customer: it answers them, and voids the
            # response.overdue timers armed before it. An automatic reply answers no one.
            await self._store.calls.mark_responded({job["to"]: event.at})
        expect = (JobStatus.SENDING, JobStatus.SENT, *IN_CALL)
        redial = self._redials(job, status, event)
        await self._change(
            job,
            status,
            expect=expect,
            forward=True,
            last=not redial,
            provider_ref=event.ref,
            reason=_reason(status, event),
            # Twilio's CallDuration, or the duration callgate's VoxEngine scenario reports.
            duration=event.extra.get("CallDuration", event.extra.get("duration", job["duration"])),
        )
        if redial:
            await self._redial(job, status)

    @staticmethod
    def _redials(job: Job, status: JobStatus, event: Event) -> bool:
        """Whether the dial's end calls for another: after no answer or busy while
        ``attempts`` last, never after the customer declined the call (SIP 603). Decided
        from the event alone, so processing it again after a crash decides the same."""
        attempts = int(job.request.get("attempts", 1))
        declined = "603" in (event.extra.get("SipResponseCode"), event.extra.get("code"))
        return status in (JobStatus.NO_ANSWER, JobStatus.BUSY) and job.dial < attempts and not declined

    async def _redial(self, job: Job, status: JobStatus) -> None:
        attempts = int(job.request.get("attempts", 1))
        interval = int(job.request.get("retry_interval_seconds", 600))
        reason = f"attempt {job.dial} of {attempts} ended {status.value}; next in {interval} s"
        await self._change(
            job,
            JobStatus.QUEUED,
            expect=(status,),
            due=self._clock() + interval,
            reason=reason,
            dial=job.dial + 1,
            tries=0,
            provider_ref="",
            placing_at="",
            duration="",
            check_at="",
        )

    async def _change(
        self,
        job: Job,
        status: JobStatus,
        *,
        expect: tuple[JobStatus, ...],
        forward: bool = False,
        due: float | None = None,
        dead: str = "",
        last: bool = True,
        **fields: str | int,
    ) -> bool:
        """Move ``job`` to ``status`` if it is where ``expect`` says; True when this call
        moved it. Each move is a ``job.updated`` entry on the item's timeline, written once
        however often a crash makes us repeat the move.

        A final status ends a dial (and the job, when ``last``: no redial follows): its
        usage is added to the job's in the same move and to the hour's totals once."""
        usage: tuple[Usage, str] | None = None
        if status in FINAL:
            usage = await self._usage(job, last, fields)
            total = job.usage + usage[0]
            ended = job["ended_at"] if job.status is status else repr(self._clock())
            fields = {**fields, **{USAGE_FIELD + k: v for k, v in total.counters().items()}, "ended_at": ended}
            fields["currency"] = usage[1] or job["currency"]
        moved = await self._store.jobs.update(
            job.id,
            status,
            expect=expect,
            on_dial=job.dial,
            forward=forward,
            due=due,
            dead=dead,
            updated_at=now_iso(),
            **fields,
        )
        if moved is not Moved.NO:
            data = {
                "job_id": job.id,
                "kind": job["kind"],
                "status": status.value,
                "reason": fields.get("reason") or None,
                "attempt": job.dial,
                "test": job["test"] == "1",
            }
            if job["note"] and status is JobStatus.SENDING:
                data["note"] = job["note"]  # e.g. which engine spoke when gTTS failed
            tries = fields.get("tries", job.tries)
            identity = f"job:{job.id}:{job.dial}:{tries}:{status.value}"
            await self._store.items.record(job["item_id"], identity, timeline_entry("job.updated", data))
            if usage is not None:
                at, owner = float(fields["ended_at"]), (job["provider"], job["line"])
                await self._store.usage.add(at, f"{job.id}:{job.dial}:{status.value}", *owner, *usage)
        return moved is Moved.YES

    async def _usage(self, job: Job, last: bool, fields: dict[str, str | int]) -> tuple[Usage, str]:
        """What the dial now ending used (and, when ``last``, what the job as a whole did),
        priced by the provider's prices; with their currency ("" without prices)."""
        placed = bool(fields.get("provider_ref", job["provider_ref"]))
        robocall = job["kind"] == JobKind.ROBOCALL
        used = call_usage(int(fields.get("duration") or job["duration"] or 0)) if robocall and placed else Usage()
        if last:
            # The text counts once per job, and only when a call was placed to say it.
            spoke = robocall and bool(job["text"]) and job.usage.calls + used.calls > 0
            chars = len(job["text"]) if spoke else 0
            segments = int(job["segments"] or 0) if placed and not robocall else 0
            provider_chars = chars if job["say_engine"] == PROVIDER_ENGINE else 0
            used += Usage(jobs=1, tts_chars=chars, provider_chars=provider_chars, sms_segments=segments)
        record = await self._store.providers.get(job["provider"])
        prices = record.prices if record is not None else None
        return used.priced(prices), prices.currency if prices is not None else ""
