"""CRM items: the card, its listings and the timeline, changed together atomically, and the
phone index kept around that step.

An item's keys, and its entries in the listings (all items, a stage's items, leads), are
in the item's partition, so each change of an item is one step in one Redis Cluster slot;
the listings are read across the partitions. The phone index is in the number's partition
and written around the card's step: numbers are added before it and dropped after it (then
the card is read back, and what it holds by then is added again, in case a concurrent change
gave a dropped number back), so a lookup may find a card that no longer holds the number,
which it skips, but never misses one.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from config.cards import Card
from config.triggers import may_move
from gateway.keys import OUTBOX_STREAM, Keys
from gateway.store.connection import Transactions
from gateway.store.entries import StageEntries, StageEntry, new_entry_id
from gateway.store.nodes import mget, pipelined
from gateway.store.outbox import publish_lua
from gateway.store.scripts import Call, Looped
from webhooks.events import json_text


def now_iso(at: float | None = None) -> str:
    """``at`` (unix seconds, default now) as UTC ISO 8601 to the millisecond, as
    ``datetime.isoformat`` gives it (the microseconds rounded, then cut), at a third of its
    cost: a webhook's event takes several stamps."""
    fraction, whole = math.modf(time.time() if at is None else at)
    if fraction < 0:
        return datetime.fromtimestamp(whole + fraction, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    micros = round(fraction * 1e6)
    return f"{_second_iso(int(whole) + (micros >= 1_000_000))}.{micros % 1_000_000 // 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second_iso(seconds: int) -> str:
    # Not strftime's %Y, which writes the year 1 as "1": ISO 8601 has four digits, and the
    # timeline compares its stamps as text (append_lua).
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@dataclass(frozen=True)
class Item:
    id: str
    card: Card
    created_at: str
    updated_at: str

    @property
    def stage(self) -> str:
        return self.card.stage

    def updated_ms(self) -> int:
        return _ms(self.updated_at)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "card": self.card.model_dump(mode="json"),
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Item:
        data = json.loads(raw)
        return cls(data["id"], Card.model_validate(data["card"]), data["created_at"], data["updated_at"])

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.card.model_dump(mode="json"),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@functools.lru_cache(maxsize=4096)
def parse_item(raw: str) -> Item:
    """``Item.from_json``, remembered: the consumers read the same unchanged cards again and
    again, and validating a card (its phone numbers above all) costs more than fetching it.
    Callers never change an Item or its card in place (moves build new ones)."""
    return Item.from_json(raw)


def timeline_entry(kind: str, data: Mapping[str, Any], at: float | None = None) -> str:
    return json_text({"at": now_iso(at), "type": kind, "data": dict(data)})


# Effect markers: what an event already did to an item, kept on the item (a sorted set by
# when they were made) for as long as the item keeps the entries they guard, however late
# the event comes back (a crash, a claim, a signed webhook replayed after its dedupe key
# expired). ``marker_of_entry``/``marker_of_move`` name them; ``_mark`` and ``_RECORD_ONCE``
# write them: the one place to change when the identity of an effect changes.
# Twice the timeline: a move that finds nothing to do leaves a marker but no entry.
MARKERS_PER_ENTRY = 2


def marker_of_entry(identity: str) -> str:
    return f"timeline:{identity}"


def marker_of_move(move: Move) -> str:
    return f"move:{move.identity}:{move.trigger_id}"


# How far ahead of the writer's clock the last entry's time may be and still be taken by an
# entry stamped before it: other processes' clocks differ a little. A stamp further ahead (a
# scenario's clock, a sandbox demo) does not drag the times of the entries after it.
CLAMP_AHEAD_SECONDS = 1.0


def clamp_until(now: float | None = None) -> str:
    """The ``until`` argument of ``append_lua`` for a write at ``now`` (default now)."""
    return now_iso((time.time() if now is None else now) + CLAMP_AHEAD_SECONDS)


def timeline_keys(keys: Keys, item_id: str) -> list[str]:
    """The keys ``append_lua`` takes for ``item_id``, in its order: the timeline, its count,
    its partition's subscription gate and outbox stream (one slot: the item's partition)."""
    partition = keys.partition_of(item_id)
    return [
        keys.timeline(item_id),
        keys.timeline_count(item_id),
        keys.subscribed(partition),
        keys.stream(OUTBOX_STREAM, partition),
    ]


def append_lua(
    timeline: str, count: str, subscribed: str, stream: str, item_id: str, entry: str, keep: str, until: str
) -> str:
    """Lua that appends a timeline entry (``timeline_entry``'s JSON), keeps the newest
    ``keep``, counts it and adds it to the outbox; the arguments are Lua expressions
    (``KEYS[5]``, ``A[3]``). Every writer of a timeline appends with it.

    The entries stay in time order: an entry stamped before the last one (an event received
    while the one before it was being processed, a move stamped by a process whose clock is a
    little behind) takes the last one's time, unless that is after ``until``
    (``clamp_until``). Order is what a CRM reads the timeline and its events by. Stamps are
    compared as text: ``now_iso`` gives them all one width.
    """
    match = '\'^{"at":"([^"]*)"\''
    return (
        f"do local entry = {entry}\n"
        f"local last = redis.call('LINDEX', {timeline}, -1)\n"
        "if last then\n"
        f"  local was, at = string.match(last, {match}), string.match(entry, {match})\n"
        f"  if was and at and at < was and was <= {until} then\n"
        "    entry = '{\"at\":\"' .. was .. '\"' .. string.sub(entry, #at + 9)\n"
        "  end\n"
        "end\n"
        f"redis.call('RPUSH', {timeline}, entry)\n"
        f"redis.call('LTRIM', {timeline}, -tonumber({keep}), -1)\n"
        f"redis.call('INCR', {count})\n" + publish_lua(subscribed, stream, item_id, "entry") + "end\n"
    )


# A timeline entry that an event adds at most once, however often the event is processed,
# and its outbox record with it (the CRM hears of it exactly when the item shows it). The
# marker goes first: a write failing after it loses the entry, and never adds it twice.
_RECORD_ONCE = (
    """
if redis.call('ZSCORE', K[1], A[1]) then return 0 end
redis.call('ZADD', K[1], A[2], A[1])
redis.call('ZREMRANGEBYRANK', K[1], 0, -tonumber(A[5]) - 1)
"""
    + append_lua("K[2]", "K[3]", "K[4]", "K[5]", "A[6]", "A[3]", "A[4]", "A[7]")
    + """
return 1
"""
)

# An entry appended inside a transaction (EVAL, not EVALSHA: a script Redis lacks, after a
# restart or a flush, would fail inside the transaction while the rest of it applies).
_APPEND = append_lua("KEYS[1]", "KEYS[2]", "KEYS[3]", "KEYS[4]", "ARGV[1]", "ARGV[2]", "ARGV[3]", "ARGV[4]")


# The phone numbers a change of a card drops and adds.
_Numbers = tuple[frozenset[str], frozenset[str]]


def _numbers_changed(old: Item | None, new: Item | None) -> _Numbers:
    before = frozenset(old.card.numbers()) if old else frozenset()
    after = frozenset(new.card.numbers()) if new else frozenset()
    return before - after, after - before


@dataclass(frozen=True)
class ItemQuery:
    """Filters of ``GET /v1/items``; ``after`` is the cursor: (updated ms, id), exclusive."""

    pipeline: str | None = None
    stage: str | None = None
    since_ms: int | None = None
    after: tuple[int, str] | None = None
    limit: int = 50

    def matches(self, item: Item) -> bool:
        return (self.pipeline is None or item.card.pipeline == self.pipeline) and (
            self.stage is None or item.stage == self.stage
        )


# Cards read per round trip while filtering a page.
_CHUNK = 200


# A page of the timeline, newest last, of the entries before absolute position ARGV[1]
# ('' for the newest), and the position of its first entry when older ones are kept (else
# 0). Positions count every entry ever appended (KEYS[2]), so a cursor
# stays valid while entries are appended and the oldest trimmed away.
_TIMELINE_PAGE = """
local length = redis.call('LLEN', KEYS[1])
local total = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), length)
local dropped = total - length
local before = total
if ARGV[1] ~= '' then before = math.min(tonumber(ARGV[1]), total) end
local stop = before - dropped - 1
if stop < 0 then return {0, {}} end
local start = math.max(stop - tonumber(ARGV[2]) + 1, 0)
local older = 0
if start > 0 then older = dropped + start end
return {older, redis.call('LRANGE', KEYS[1], start, stop)}
"""


@dataclass(frozen=True)
class Move:
    """A trigger's request to move an item; ``identity`` names the event that caused it."""

    item_id: str
    stages: list[str]
    target: str
    allow_back: bool
    trigger_id: str
    act_as: str | None
    identity: str
    cause: str


class Items:
    def __init__(
        self,
        redis: Redis,
        transactions: Transactions,
        keys: Keys,
        entries: StageEntries,
        timeline_max: int,
        lead_ttl: int = 0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._entries = entries
        self._timeline_max = timeline_max
        self._markers_max = timeline_max * MARKERS_PER_ENTRY
        self._lead_ttl = lead_ttl
        self._transactions = transactions
        self._record_once = Looped(redis, _RECORD_ONCE)
        self._members = Looped(redis, "return redis.call('SMEMBERS', K[1])")
        self._timeline_page = redis.register_script(_TIMELINE_PAGE)

    def _mark(self, pipe: Pipeline, item_id: str, marker: str) -> None:
        """Queue an effect marker; the set keeps the newest ``MARKERS_PER_ENTRY * timeline_max``."""
        key = self._keys.effects(item_id)
        pipe.zadd(key, {marker: time.time()})
        pipe.zremrangebyrank(key, 0, -self._markers_max - 1)

    def append(self, pipe: Pipeline, item_id: str, entry: str) -> None:
        """Queue a timeline entry and its outbox record (``append_lua``) in the transaction
        on ``pipe``."""
        keys = timeline_keys(self._keys, item_id)
        pipe.eval(_APPEND, len(keys), *keys, item_id, entry, self._timeline_max, clamp_until())

    def _enter(self, pipe: Pipeline, item: Item, change: dict[str, Any]) -> None:
        """Queue ``item``'s entry into its stage: the ``item.stage_changed`` entry (``change``
        plus a new entry id) and, in the same step, the record that the stage's rules are
        still to run for this entry."""
        entry = StageEntry(item.id, new_entry_id(), item.card.pipeline, item.stage)
        self.append(pipe, item.id, timeline_entry("item.stage_changed", {**change, "entry_id": entry.entry_id}))
        self._entries.enter(pipe, entry)

    def _save(self, pipe: Pipeline, item: Item, old: Item | None) -> None:
        """Queue the card and its place in the listings (all in the item's partition)."""
        partition = self._keys.partition_of(item.id)
        pipe.set(self._keys.item(item.id), item.to_json())
        updated = {item.id: item.updated_ms()}
        pipe.zadd(self._keys.items(partition), updated)
        if old is not None and (old.card.pipeline, old.stage) != (item.card.pipeline, item.stage):
            pipe.zrem(self._keys.stage_items(partition, old.card.pipeline, old.stage), item.id)
        pipe.zadd(self._keys.stage_items(partition, item.card.pipeline, item.stage), updated)
        # A card anyone changed after a line created it is the CRM's now: it no longer expires.
        pipe.zrem(self._keys.leads(partition), item.id)

    async def _index(self, item_id: str, numbers: Iterable[str]) -> None:
        """Add ``item_id`` to the phone index of each of ``numbers`` (each its own key);
        before the card's step, so a lookup never misses the card once it is written."""
        await self._reindex(item_id, (frozenset(), frozenset(numbers)))

    async def _reindex(self, item_id: str, change: _Numbers) -> None:
        """After the card's step: drop the numbers it no longer holds from the index and add
        those it gained again (a concurrent change may have dropped them meanwhile); then,
        if any was dropped, index again those of them the card holds by now (a concurrent
        change may have given one back, and added it before this drop)."""
        dropped, added = change
        if not dropped and not added:
            return
        async with pipelined(self._redis) as pipe:
            for number in sorted(dropped):
                pipe.srem(self._keys.phone(number), item_id)
            for number in sorted(added):
                pipe.sadd(self._keys.phone(number), item_id)
            await pipe.execute()
        if dropped:
            raw = await self._redis.get(self._keys.item(item_id))
            await self._index(item_id, Item.from_json(raw).card.numbers() & dropped if raw else ())

    async def put(self, item_id: str, card: Card) -> tuple[Item, bool]:
        """Create or replace the card; returns it and whether it is new."""
        key = self._keys.item(item_id)

        async def body(pipe: Pipeline) -> tuple[Item, bool, _Numbers]:
            raw = await pipe.get(key)
            old = Item.from_json(raw) if raw else None
            stamp = now_iso()
            item = Item(item_id, card, old.created_at if old else stamp, stamp)
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            self._save(pipe, item, old)
            if old is None:
                self.append(pipe, item_id, timeline_entry("item.created", {"stage": card.stage}))
            elif old.stage != card.stage or old.card.pipeline != card.pipeline:
                self._enter(pipe, item, {"from": old.stage, "to": card.stage, "trigger_id": None, "act_as": "crm"})
            return item, old is None, _numbers_changed(old, item)

        await self._index(item_id, card.numbers())
        item, new, change = await self._transactions.run([key], body)
        await self._reindex(item_id, change)
        return item, new

    async def create_if_absent(self, item_id: str, card: Card, data: Mapping[str, Any]) -> Item:
        """A lead: created once under a deterministic id, so re-processing finds it. With a
        lead TTL it is deleted that long after, unless someone changed it meanwhile."""
        key = self._keys.item(item_id)

        async def body(pipe: Pipeline) -> tuple[Item, _Numbers]:
            raw = await pipe.get(key)
            if raw:
                pipe.multi()  # type: ignore[no-untyped-call]  # an empty EXEC keeps the loop uniform
                existing = Item.from_json(raw)
                # Numbers indexed above that the existing card no longer holds leave the index.
                return existing, (frozenset(card.numbers()) - frozenset(existing.card.numbers()), frozenset())
            stamp = now_iso()
            item = Item(item_id, card, stamp, stamp)
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            self._save(pipe, item, None)
            self.append(pipe, item_id, timeline_entry("item.created", {"stage": card.stage, **data}))
            if self._lead_ttl:
                pipe.zadd(self._keys.leads(self._keys.partition_of(item_id)), {item_id: time.time() + self._lead_ttl})
            return item, _numbers_changed(None, item)

        await self._index(item_id, card.numbers())
        item, change = await self._transactions.run([key], body)
        await self._reindex(item_id, change)
        return item

    async def record(self, item_id: str, identity: str, entry: str) -> bool:
        """Append ``entry`` unless the event named ``identity`` already did; True when added."""
        return (await self.record_many([(item_id, identity, entry)]))[0]

    async def record_many(self, records: Sequence[tuple[str, str, str]]) -> list[bool]:
        """``record`` for each (item id, identity, entry), in one command (one per partition
        on Redis Cluster)."""
        if not records:
            return []
        now = time.time()
        until = clamp_until(now)
        calls: list[Call] = [
            (
                [self._keys.effects(item_id), *timeline_keys(self._keys, item_id)],
                [marker_of_entry(identity), now, entry, self._timeline_max, self._markers_max, item_id, until],
            )
            for item_id, identity, entry in records
        ]
        return [bool(added) for added in await self._record_once(calls)]

    async def move(self, move: Move) -> tuple[Item, bool] | None:
        """Apply a trigger's move once per (event, trigger, item).

        Returns the item as it stands afterwards and whether this call moved it (None when
        the item is gone). The effect marker is written in the same transaction as the
        stage, so a crash leaves either both or neither, and re-processing or replaying the
        event moves nothing twice.
        """
        key = self._keys.item(move.item_id)
        effects = self._keys.effects(move.item_id)
        marker = marker_of_move(move)

        async def body(pipe: Pipeline) -> tuple[Item, bool] | None:
            raw = await pipe.get(key)
            done = await pipe.zscore(effects, marker) is not None
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if not raw:
                return None
            item = Item.from_json(raw)
            if done:
                return item, False
            self._mark(pipe, item.id, marker)
            if not may_move(move.stages, item.stage, move.target, move.allow_back):
                return item, False
            act_as = move.act_as or item.card.responsible or None  # null when nobody: no empty name
            moved = Item(item.id, item.card.model_copy(update={"stage": move.target}), item.created_at, now_iso())
            self._save(pipe, moved, item)
            change = {
                "from": item.stage,
                "to": move.target,
                "trigger_id": move.trigger_id,
                "act_as": act_as,
                "cause": move.cause,
            }
            self._enter(pipe, moved, change)
            return moved, True

        return await self._transactions.run([key, effects], body)

    def _remove(self, pipe: Pipeline, item: Item) -> _Numbers:
        """Queue the removal of ``item`` and of everything keyed by it; the phone index
        entries to drop after it."""
        partition = self._keys.partition_of(item.id)
        pipe.delete(
            self._keys.item(item.id),
            self._keys.timeline(item.id),
            self._keys.timeline_count(item.id),
            self._keys.effects(item.id),
        )
        pipe.zrem(self._keys.items(partition), item.id)
        pipe.zrem(self._keys.stage_items(partition, item.card.pipeline, item.stage), item.id)
        pipe.zrem(self._keys.leads(partition), item.id)
        return _numbers_changed(item, None)

    async def delete(self, item_id: str) -> bool:
        """Remove the card with everything keyed by it: its phone index entries, its place
        in the listings, its timeline and its effect markers. False when there was no such item."""
        key = self._keys.item(item_id)

        async def body(pipe: Pipeline) -> _Numbers | None:
            raw = await pipe.get(key)
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            return self._remove(pipe, Item.from_json(raw)) if raw else None

        change = await self._transactions.run([key], body)
        if change is None:
            return False
        await self._reindex(item_id, change)
        return True

    async def expire_leads(self, now: float, batch: int = 100) -> list[str]:
        """Delete the leads nobody changed within the lead TTL; returns their ids."""
        async with pipelined(self._redis) as pipe:
            for partition in range(self._keys.partitions):
                pipe.zrangebyscore(self._keys.leads(partition), "-inf", now, start=0, num=batch)
            due: list[list[str]] = await pipe.execute()
        return [str(item_id) for ids in due for item_id in ids if await self._expire_lead(str(item_id), now)]

    async def _expire_lead(self, item_id: str, now: float) -> bool:
        key = self._keys.item(item_id)
        leads = self._keys.leads(self._keys.partition_of(item_id))

        async def body(pipe: Pipeline) -> _Numbers | None:
            raw = await pipe.get(key)
            due = await pipe.zscore(leads, item_id)
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if due is None or due > now:  # someone changed it meanwhile
                return None
            if not raw:
                pipe.zrem(leads, item_id)
                return None
            return self._remove(pipe, Item.from_json(raw))

        change = await self._transactions.run([key, leads], body)
        if change is None:
            return False
        await self._reindex(item_id, change)
        return True

    def _listings(self, query: ItemQuery) -> list[str]:
        """The partitions' sorted sets ``query`` reads: a stage's, or all items'."""
        if query.pipeline is not None and query.stage is not None:
            pipeline, stage = query.pipeline, query.stage
            return [self._keys.stage_items(p, pipeline, stage) for p in range(self._keys.partitions)]
        return [self._keys.items(p) for p in range(self._keys.partitions)]

    async def _merged(self, sources: list[str], low: int | str) -> AsyncIterator[list[tuple[str, int]]]:
        """(member, score) of the sorted sets ``sources`` from score ``low`` on, merged in
        their order ((score, member), as one sorted set holds them), up to ``_CHUNK`` at a time."""
        # Each source's next rows, reversed: the smallest is popped from the end.
        rows: list[list[tuple[int, str]]] = [[] for _ in sources]
        read = [0] * len(sources)
        more = [True] * len(sources)
        while True:
            empty = [i for i, left in enumerate(rows) if not left and more[i]]
            if empty:
                async with pipelined(self._redis) as pipe:
                    for i in empty:
                        pipe.zrangebyscore(sources[i], low, "+inf", start=read[i], num=_CHUNK, withscores=True)
                    replies: list[list[tuple[str, float]]] = await pipe.execute()
                for i, reply in zip(empty, replies, strict=True):
                    rows[i] = [(int(score), str(member)) for member, score in reversed(reply)]
                    read[i] += len(reply)
                    more[i] = len(reply) == _CHUNK
            chunk: list[tuple[str, int]] = []
            while len(chunk) < _CHUNK:
                left = [i for i, pending in enumerate(rows) if pending]
                if not left:
                    break
                first = min(left, key=lambda i: rows[i][-1])
                score, member = rows[first].pop()
                chunk.append((member, score))
                if not rows[first] and more[first]:
                    break  # its next rows may hold the next smallest
            if not chunk:
                return
            yield chunk

    async def page(self, query: ItemQuery) -> tuple[list[Item], str | None]:
        """Items matching ``query`` in update order (oldest first), and the cursor of the
        next page (None when this page is the last)."""
        low = query.after[0] if query.after else query.since_ms if query.since_ms is not None else "-inf"
        found: list[tuple[Item, str]] = []
        async for chunk in self._merged(self._listings(query), low):
            # The cursor is the listing's position, not the card's updated_at: a card updated
            # while the client pages moves to the end of the listing and is met again there.
            places = [(m, ms) for m, ms in chunk if query.after is None or (ms, m) > query.after]
            for (member, ms), item in zip(places, await self._cards([m for m, _ in places]), strict=True):
                if item is not None and query.matches(item):
                    found.append((item, f"{ms}:{member}"))
                    if len(found) > query.limit:
                        return [item for item, _ in found[: query.limit]], found[query.limit - 1][1]
        return [item for item, _ in found], None

    async def _cards(self, ids: Sequence[str]) -> list[Item | None]:
        """The cards of ``ids`` in one MGET (on Redis Cluster one per slot, pipelined to each
        node); None for a card that is gone."""
        if not ids:
            return []
        raws = await mget(self._redis, [self._keys.item(item_id) for item_id in ids])
        return [parse_item(raw) if raw else None for raw in raws]

    async def in_stages(self, pipeline: str, stages: Iterable[str], most: int = 5) -> dict[str, list[str]]:
        """Up to ``most`` item ids in each of ``stages`` that holds any."""
        wanted = list(stages)
        partitions = range(self._keys.partitions)
        async with pipelined(self._redis) as pipe:
            for stage in wanted:
                for p in partitions:
                    pipe.zrange(self._keys.stage_items(p, pipeline, stage), 0, most - 1, withscores=True)
            replies: list[list[tuple[str, float]]] = await pipe.execute()
        found: dict[str, list[str]] = {}
        for n, stage in enumerate(wanted):
            rows = sorted(
                (score, str(member))
                for reply in replies[n * len(partitions) : (n + 1) * len(partitions)]
                for member, score in reply
            )
            if rows:
                found[stage] = [member for _, member in rows[:most]]
        return found

    async def get(self, item_id: str) -> Item | None:
        raw = await self._redis.get(self._keys.item(item_id))
        return Item.from_json(raw) if raw else None

    async def by_phone(self, e164: str) -> list[Item]:
        return (await self.by_phones([e164]))[e164]

    async def by_phones(self, numbers: Iterable[str]) -> dict[str, list[Item]]:
        """The items holding each number, in two commands however many numbers (two per
        partition on Redis Cluster)."""
        wanted = sorted(set(numbers))
        if not wanted:
            return {}
        replies = await self._members([([self._keys.phone(number)], ()) for number in wanted])
        members: list[list[str]] = [sorted(map(str, ids)) for ids in replies]
        ids = sorted({item_id for found in members for item_id in found})
        cards = {item.id: item for item in await self._cards(ids) if item is not None}
        # The index may still name a card that dropped the number (see the module's doc).
        return {
            number: [cards[i] for i in found if i in cards and number in cards[i].card.numbers()]
            for number, found in zip(wanted, members, strict=True)
        }

    async def timeline(self, item_id: str, limit: int, before: int | None = None) -> tuple[list[Any], int | None]:
        """Up to ``limit`` timeline entries before position ``before`` (the newest when None),
        oldest first, and the position to ask for the ones before them (None at the start)."""
        keys = [self._keys.timeline(item_id), self._keys.timeline_count(item_id)]
        args = ["" if before is None else before, limit]
        first, raws = await self._timeline_page(keys=keys, args=args)
        return [json.loads(raw) for raw in raws], int(first) or None
