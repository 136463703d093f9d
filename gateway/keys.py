"""The Redis key schema: every key callgate writes, in one place.

All keys share the settings' prefix. Tests use a unique prefix per run and delete only that.

On Redis Cluster a multi-key step (Lua, MULTI) must keep its keys in one slot. Keys that such
a step touches together carry the hash tag of their *partition* (``tag_of(entity)``): an
entity (an item, a customer's number) always maps to the same partition, and the partitions'
tags are chosen so their slots spread evenly over the 16384 slots, hence over the shards of
any cluster whose masters own contiguous slot ranges, as ``redis-cli --cluster create`` and
``CLUSTER ADDSLOTSRANGE`` assign them.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

DEFAULT_PARTITIONS = 16

EVENTS_STREAM = "events"
# Jobs to run, in their item's partition: queued in the step that makes or reschedules them.
JOBS_STREAM = "jobs"
# Timeline entries for the CRM's subscriptions, in their item's partition: added in the
# step that writes the entry.
OUTBOX_STREAM = "outbox"
# Streams split into one stream per partition, each under its partition's tag with a
# consumer group of its own: a customer's events (an item's jobs and outbox entries) stay in
# one partition, in order, while the partitions spread over the shards. Other streams are
# one key.
PARTITIONED_STREAMS = frozenset({EVENTS_STREAM, JOBS_STREAM, OUTBOX_STREAM})


def partition_of(entity: str, partitions: int) -> int:
    """The partition an entity's keys live in: stable across processes and restarts
    (crc32, not Python's salted ``hash``)."""
    return zlib.crc32(entity.encode("utf-8", "surrogateescape")) % partitions


@functools.cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """One hash tag per partition, each in its own equal share of the slots.

    A tag ``{p.k}`` is the first ``k`` whose slot falls in partition ``p``'s share, so the
    tags are the same in every process and any ``partitions`` up to the slot count works.
    """
    tags = []
    for partition in range(partitions):
        low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        candidate = 0
        while not low <= key_slot(f"{partition}.{candidate}".encode()) < high:
            candidate += 1
        tags.append(f"{{{partition}.{candidate}}}")
    return tuple(tags)


@dataclass(frozen=True)
class Keys:
    prefix: str
    partitions: int = DEFAULT_PARTITIONS

    def tag(self, partition: int) -> str:
        """The hash tag (with its braces) of one partition's keys."""
        return partition_tags(self.partitions)[partition]

    def tag_of(self, entity: str) -> str:
        """The hash tag of the partition ``entity`` (an item id, a customer's number) is in."""
        return self.tag(self.partition_of(entity))

    def partition_of(self, entity: str) -> int:
        return partition_of(entity, self.partitions)

    def partitions_of(self, stream: str) -> tuple[int | None, ...]:
        """The partitions ``stream`` is split into; ``(None,)`` for a stream that is one key."""
        return tuple(range(self.partitions)) if stream in PARTITIONED_STREAMS else (None,)

    def _at(self, partition: int | None) -> str:
        """The prefix of the keys of ``partition`` (None: the keys outside any partition)."""
        return self.prefix if partition is None else f"{self.prefix}{self.tag(partition)}:"

    def _of(self, entity: str) -> str:
        """The prefix of the keys in ``entity``'s partition."""
        return self._at(self.partition_of(entity))

    # Admin records, one hash each (field = name/number/id, value = JSON): small, read whole.
    @property
    def providers(self) -> str:
        return f"{self.prefix}providers"

    @property
    def lines(self) -> str:
        return f"{self.prefix}lines"

    @property
    def pipelines(self) -> str:
        return f"{self.prefix}pipelines"

    @property
    def triggers(self) -> str:
        return f"{self.prefix}triggers"

    @property
    def stage_rules(self) -> str:
        """Hash: ``pipeline/stage`` -> the stage's rules (JSON list)."""
        return f"{self.prefix}stage-rules"

    # An item's keys (card, timeline, effect markers, jobs) are in the item's partition
    # (``tag_of(item_id)``): the steps that change an item together stay in one slot.
    def item(self, item_id: str) -> str:
        """The card as JSON, with its current stage. No TTL: the CRM owns its lifetime."""
        return f"{self._of(item_id)}item:{item_id}"

    def phone(self, e164: str) -> str:
        """Set of item ids holding this number: ``GET /v1/items?phone=`` in one SMEMBERS.

        In the number's partition, not the item's, so one key answers a lookup; it is
        written around the card's step (numbers added before it, dropped after), so it may
        name a card that no longer holds the number (readers check the card) but never
        misses one.
        """
        return f"{self._of(e164)}phone:{e164}"

    def items(self, partition: int) -> str:
        """Sorted set: the ids of the items of one partition, scored by ``updated_at`` (unix
        ms), for ``GET /v1/items`` in update order (the partitions merged). Written in the
        card's transaction."""
        return f"{self._at(partition)}items"

    def stage_items(self, partition: int, pipeline: str, stage: str) -> str:
        """Sorted set: the ids of one partition's items in one stage, scored like ``items``:
        listing a stage, and refusing to drop a stage items sit in, without reading every
        card."""
        return f"{self._at(partition)}stage:{pipeline}:{stage}"

    def timeline(self, item_id: str) -> str:
        """List of JSON entries, oldest first, trimmed to ``timeline_max`` (append-only)."""
        return f"{self._of(item_id)}timeline:{item_id}"

    def timeline_count(self, item_id: str) -> str:
        """How many entries the item's timeline ever had: positions that stay put while the
        oldest are trimmed, for paging (``GET /v1/items/{id}?before=``)."""
        return f"{self._of(item_id)}timeline-count:{item_id}"

    def leads(self, partition: int) -> str:
        """Sorted set: lead item id -> when it expires (unix s), for the leads of one
        partition a line created with ``lead_ttl_seconds`` set; an item leaves it when
        anyone changes it."""
        return f"{self._at(partition)}leads"

    def stage_entries(self, partition: int) -> str:
        """Sorted set: the stage entries of one partition's items whose stage rules have yet
        to run (member = the entry as JSON, score = unix time it may be taken; a future time
        while a worker holds it). In the items' partition: written in the entering step."""
        return f"{self._at(partition)}stage-entries"

    def stage_entry_attempts(self, partition: int) -> str:
        """Hash: a member of ``stage_entries(partition)`` -> how many times a worker started it
        (bounded by ``max_deliveries``); written as a worker starts it, dropped with the entry."""
        return f"{self._at(partition)}stage-entry-attempts"

    def stream(self, name: str, partition: int | None = None) -> str:
        """A durable stream (events, jobs, ...) read by a consumer group of the same name; a
        partitioned stream has one such key per partition (``partitions_of``)."""
        return f"{self._at(partition)}stream:{name}"

    def dead(self, name: str, partition: int | None = None) -> str:
        """Entries of ``stream(name, partition)`` that failed ``max_deliveries`` times, with
        their error."""
        return f"{self._at(partition)}stream:{name}:dead"

    def untold(self, name: str, partition: int | None = None) -> str:
        """Sorted set: ids in ``dead(name, partition)`` of entries the stream's owner has not
        yet heard were given up on (score = Redis time in ms they were); a process that died
        before telling leaves them to be told by another."""
        return f"{self._at(partition)}stream:{name}:untold"

    def errors(self, name: str, partition: int | None = None) -> str:
        """Hash: entry id of ``stream(name, partition)`` -> its last processing error, kept
        while the entry is pending so the dead letter can say why it failed."""
        return f"{self._at(partition)}stream:{name}:errors"

    def consumers(self, name: str, partition: int | None = None) -> str:
        """Hash: consumer of ``stream(name, partition)``'s group -> Redis time (ms) its
        process last said it is alive; a consumer silent for long that owns nothing is
        removed from the group."""
        return f"{self._at(partition)}stream:{name}:consumers"

    def lease(self, name: str, partition: int | None) -> str:
        """The consumer reading ``stream(name, partition)`` now, when each partition is read
        by one at a time; expires unless renewed."""
        return f"{self._at(partition)}stream:{name}:lease"

    def dedup(self, partition: int, identity: str) -> str:
        """Set when a provider delivery is stored; its retries find it and add nothing. In
        the partition of the event's customer, beside the stream it is stored into.

        TTL ``dedup_ttl_seconds``: longer than any provider retries a webhook.
        """
        return f"{self._at(partition)}dedup:{identity}"

    def effects(self, item_id: str) -> str:
        """Sorted set of the effect markers of one item (score = when made), written in the
        same transaction as the effect. No TTL: re-processing an event, or a provider
        replaying it after its dedup key expired, finds it done while the item keeps the
        entries it guards (trimmed with the timeline)."""
        return f"{self._of(item_id)}effects:{item_id}"

    def call(self, provider: str, ref: str) -> str:
        """Hash of one provider call: ``rank`` and ``status`` only ever move forward, so an
        out-of-order callback cannot move the call backwards; ``job`` marks a call callgate
        placed itself (it updates its job and fires no ``call.outgoing``); ``answered_by``
        and ``machine_detection_ms`` are what answering-machine detection found. TTL 2 days."""
        return f"{self.prefix}call:{provider}:{ref}"

    def timers(self, partition: int) -> str:
        """Sorted set of due times (score = unix s) for ``response.overdue`` checks, one per
        partition: a due timer moves into its customer's events partition in one step."""
        return f"{self._at(partition)}timers"

    @property
    def responded(self) -> str:
        """Sorted set: customer -> unix time we last called or answered them (any line);
        an overdue timer armed before it is void. Pruned past the longest overdue delay."""
        return f"{self.prefix}responded"

    def feed(self, partition: int) -> str:
        """Stream of what reached the gateway (accepted events, refused webhooks) for
        ``GET /v1/events``, one per partition (an accepted event is traced in the step that
        stores it); each capped at its share of ``feed_max`` entries, the oldest dropped."""
        return f"{self._at(partition)}feed"

    def idempotency(self, scope: str, key: str) -> str:
        """The id a client's ``Idempotency-Key`` produced, so a retry gets the same one; in
        the key's own partition (it is looked up before the request's item is known)."""
        return f"{self._of(key)}idem:{scope}:{key}"

    @property
    def subscriptions(self) -> str:
        """Hash: subscription id -> JSON (url, secret, events)."""
        return f"{self.prefix}subscriptions"

    def subscribed(self, partition: int) -> str:
        """Set: the subscriptions' ids, one copy per partition, so a partition's steps check
        them in their own slot. While it exists, every timeline entry of the partition is
        also added to its outbox stream, in the entry's own step."""
        return f"{self._at(partition)}subscribed"

    # A subscription's deliveries are in their item's partition: one step (queueing, taking,
    # settling an event) touches one partition's keys.
    def outbox_due(self, sub: str, partition: int) -> str:
        """Sorted set: item id -> unix time the item's oldest undelivered event to ``sub``
        may be tried (a future time while one is in flight: its lease); one per partition."""
        return f"{self._at(partition)}outbox:{sub}:due"

    def outbox_queue(self, sub: str, item_id: str) -> str:
        """Sorted set: the item's undelivered event ids to ``sub``, in the order they happened."""
        return f"{self._of(item_id)}outbox:{sub}:queue:{item_id}"

    def outbox_event(self, sub: str, partition: int, event_id: str) -> str:
        """Hash: one event's delivery to ``sub`` (the exact body, attempts, last error), in
        its item's partition; kept 2 days once delivered, so a repeated fan-out never sends
        it again."""
        return f"{self._at(partition)}outbox:{sub}:event:{event_id}"

    def outbox_dead(self, sub: str, partition: int) -> str:
        """Sorted set: event ids ``sub`` never accepted within the retry window, by when
        they were given up, one per partition; replayable."""
        return f"{self._at(partition)}outbox:{sub}:dead"

    def job(self, job_id: str) -> str:
        """Hash of one robocall or SMS job: its status, where it stands in placing the call,
        and the request it runs. No TTL: it is the CRM's record of what was done. Job ids
        are minted in their item's partition, so this is in the item's slot."""
        return f"{self._of(job_id)}job:{job_id}"

    def item_jobs(self, item_id: str) -> str:
        """Sorted set: job ids of an item scored by creation time, for ``GET /v1/jobs?item_id=``."""
        return f"{self._of(item_id)}item-jobs:{item_id}"

    def jobs_due(self, partition: int) -> str:
        """Sorted set: job id -> unix time it may run (delay_seconds, retry backoff), one
        per partition; due ones move into the partition's jobs stream in one step."""
        return f"{self._at(partition)}jobs-due"

    def media_url(self, digest: str) -> str:
        """The media key a ``play.url`` (by its SHA-256) was fetched into; TTL one day, so
        a campaign fetches its link once and a changed file is picked up the next day."""
        return f"{self.prefix}media-url:{digest}"

    def consent(self, e164: str) -> str:
        """Hash: a number's consent (opted out or not), when and by what it last changed. No
        TTL: an opt-out holds until the customer or an admin opts the number back in."""
        return f"{self.prefix}consent:{e164}"

    def conversation(self, e164: str) -> str:
        """Hash: a customer's open SMS conversation (its line, the message that opened it);
        expires when the conversation goes idle, and is deleted when an agent closes it."""
        return f"{self.prefix}conversation:{e164}"

    def invite(self, token: str) -> str:
        """Hash: a messenger invite by its link's token (item, line, channel, target, the
        phone type its SMS went to); TTL ``INVITE_TTL``, the life of the link."""
        return f"{self.prefix}invite:{token}"

    def cap(self, e164: str, kind: str, day: str) -> str:
        """Set of the job ids of ``kind`` a customer got on ``day``, for per-customer caps;
        TTL two days."""
        return f"{self.prefix}cap:{e164}:{kind}:{day}"

    def placed_call(self, key: str) -> str:
        """The one call (or message) of a dial's key, first recorded wins: the sandbox's record
        of what it placed, a Voximplant robocall's session. A retry or a reconciliation finds
        it instead of placing a second one. TTL 2 days."""
        return f"{self.prefix}placed-call:{key}"

    def call_script(self, key: str) -> str:
        """What a Voximplant robocall's scenario is to do for a dial's key (the number, the
        caller id, the audio or text), JSON it fetches when its session starts. TTL 2 days."""
        return f"{self.prefix}call-script:{key}"

    def usage(self, hour: int) -> str:
        """Hash: every provider's and line's usage counters in one UTC hour (unix seconds //
        3600), ``provider|line|counter`` -> integer; kept 400 days (gateway.store.usage)."""
        return f"{self.prefix}usage:{self.tag_of(str(hour))}:{hour}"

    def usage_seen(self, hour: int) -> str:
        """Set: what already added to that hour's usage (a job's dial), so a repeat adds
        nothing; in the hour's slot; TTL 3 days."""
        return f"{self.prefix}usage-seen:{self.tag_of(str(hour))}:{hour}"

    def limit(self, name: str) -> str:
        """A rate limit's next free slot (unix seconds, Redis' clock); expires once it has
        passed, so an idle limit costs nothing. Every limit shares one hash tag: a send takes
        its provider's and its line's slots in one step. They are a few tiny keys."""
        return f"{self.prefix}limit:{self.tag_of('limits')}{name}"
