"""The events feed: what reached the gateway, accepted or refused, newest first.

A capped Redis stream: its ids order entries by time and make the cursor, and ``MAXLEN``
(exact, so the setting means what it says) bounds its memory whatever the traffic. An
accepted event is traced by the inbox in the same Lua step that stores it; refusals and other
happenings are recorded here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis
from gateway.store.items import now_iso
from gateway.store.nodes import pipelined

# Read this many entries per round trip while filtering, so a rare filter value costs a few
# scans of the (capped) feed instead of one round trip per entry.
_CHUNK = 500

REFUSED = "webhook.refused"

# The entry of an accepted provider event (or website callback request), which the inbox
# builds in Lua from the event's JSON: ``kind`` and ``at``, these of the event's fields that
# are not empty, in this order, then ``withheld`` when its customer is not a phone number.
EVENT_FEED_FIELDS = ("provider", "line", "customer", "ref", "status", "text", "direction")


@dataclass(frozen=True)
class FeedQuery:
    """Filters of ``GET /v1/events``; ``before`` is the cursor: the last entry of the page
    before (its id, ``.`` and its partition), or an entry id (exclusive)."""

    line: str | None = None
    customer: str | None = None
    kind: str | None = None
    since: float | None = None
    before: str | None = None
    limit: int = 50

    def matches(self, entry: Mapping[str, str]) -> bool:
        return (
            (self.line is None or entry.get("line") == self.line)
            and (self.customer is None or entry.get("customer") == self.customer)
            and (self.kind is None or entry.get("kind") == self.kind)
        )


def entry_fields(
    kind: str, provider: str, line: str, customer: str, at: float | None, details: Mapping[str, str]
) -> dict[str, str]:
    fields = {"kind": kind, "at": now_iso(at), "provider": provider, "line": line, "customer": customer, **details}
    return {k: v for k, v in fields.items() if v}


def _order(entry_id: str, partition: int) -> tuple[int, int, int]:
    """Where an entry sits in the merged feed: by id, then by partition (partitions' streams
    make their ids apart, so two of them may hold the same id)."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq), partition


def _cursor(entry_id: str, partition: int) -> str:
    return f"{entry_id}.{partition}"


class _Partition:
    """One partition's feed read newest first, a chunk at a time, from ``high`` down."""

    def __init__(self, key: str, partition: int, high: str) -> None:
        self.key = key
        self.partition = partition
        self.high = high
        self.buffer: list[tuple[str, dict[str, str]]] = []
        self.exhausted = False

    def take(self, chunk: list[tuple[str, dict[str, str]]], asked: int) -> None:
        self.buffer = list(chunk)
        self.exhausted = len(chunk) < asked
        if chunk:
            self.high = f"({chunk[-1][0]}"

    def head(self) -> tuple[int, int, int]:
        return _order(self.buffer[0][0], self.partition)


class Feed:
    def __init__(self, redis: Redis, keys: Keys, max_entries: int) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: DecodedRedis = redis
        self._keys = keys
        # Each partition keeps its share, so the feed as a whole keeps about ``max_entries``.
        self._max = -(-max_entries // keys.partitions)

    async def record(
        self,
        kind: str,
        *,
        provider: str = "",
        line: str = "",
        customer: str = "",
        at: float | None = None,
        details: Mapping[str, str] | None = None,
    ) -> None:
        """Add one entry; the oldest beyond the cap are dropped. Empty values are left out.

        ``kind`` is an event kind (``sms.incoming``) or what happened (``webhook.refused``);
        ``details`` are further string fields shown as they are (``reason``, ``ref``, ...).
        Accepted events are recorded by the inbox, in the step that stores them.
        """
        details = details or {}
        fields = entry_fields(kind, provider, line, customer, at, details)
        # Entries of one partition keep their order; across partitions, two added in the same
        # millisecond tie. So a customer's entries go with their events, one call's (its
        # ``ref``) together, a line's refusals together; only the rest spread over all.
        owner = customer or details.get("ref", "") or line
        partition = self._keys.partition_of(owner) if owner else random.randrange(self._keys.partitions)
        await self._redis.xadd(self._keys.feed(partition), fields, maxlen=self._max, approximate=False)

    async def record_refusal(self, reason: str, message: str, *, provider: str, line: str, path: str) -> None:
        details = {"reason": reason, "message": message, "path": path}
        await self.record(REFUSED, provider=provider, line=line, details=details)

    async def query(self, query: FeedQuery) -> tuple[list[dict[str, str]], str | None]:
        """Entries matching ``query``, newest first, and the cursor of the next page (None
        when this page is the last). The partitions' feeds are merged by entry id."""
        # A time before 1970 is before every entry id (which cannot be negative).
        low = "-" if query.since is None else f"{max(int(query.since * 1000), 0)}-0"
        before, _, after_partition = (query.before or "").partition(".")
        if query.before is not None and before.strip("0-") == "":
            return [], None  # nothing is older than the first possible entry id
        # The cursor is the last entry shown and its partition: the next page starts below
        # it, which for a partition before it in the merged order includes its id.
        cut = int(after_partition) if after_partition else 0
        wanted = [self._keys.partition_of(query.customer)] if query.customer else range(self._keys.partitions)
        readers = [
            _Partition(self._keys.feed(p), p, "+" if not before else (before if p < cut else f"({before}"))
            for p in wanted
        ]
        await self._fill(readers, low, query.limit + 1)
        found: list[tuple[str, int, dict[str, str]]] = []
        while True:
            live = [reader for reader in readers if reader.buffer]
            if not live:
                return [{"id": entry_id, **fields} for entry_id, _, fields in found], None
            reader = max(live, key=_Partition.head)
            entry_id, fields = reader.buffer.pop(0)
            if query.matches(fields):
                found.append((entry_id, reader.partition, fields))
                if len(found) > query.limit:
                    # One more than asked for: there is a next page, and it starts here.
                    last_id, last_partition, _ = found[query.limit - 1]
                    page = [{"id": entry_id, **fields} for entry_id, _, fields in found[: query.limit]]
                    return page, _cursor(last_id, last_partition)
            if not reader.buffer and not reader.exhausted:
                await self._fill([reader], low, _CHUNK)

    async def _fill(self, readers: list[_Partition], low: str, count: int) -> None:
        """The next chunk of each reader, in one round trip."""
        async with pipelined(self._redis) as pipe:
            for reader in readers:
                pipe.xrevrange(reader.key, max=reader.high, min=low, count=count)
            chunks = await pipe.execute()
        for reader, chunk in zip(readers, chunks, strict=True):
            reader.take(chunk, count)
