"""The events feed: what reached the gateway, accepted or refused, newest first.

A capped Redis stream: its ids order entries by time and make the cursor, and ``MAXLEN``
(exact, so the setting means what it says) bounds its memory whatever the traffic. An
accepted event is traced by the inbox in the same Lua step that stores it; refusals and other
happenings are recorded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.connection import DecodedRedis
from gateway.store.items import now_iso
from webhooks.events import Event

# Read this many entries per round trip while filtering, so a rare filter value costs a few
# scans of the (capped) feed instead of one round trip per entry.
_CHUNK = 500

REFUSED = "webhook.refused"


@dataclass(frozen=True)
class FeedQuery:
    """Filters of ``GET /v1/events``; ``before`` is the cursor (an entry id, exclusive)."""

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


def event_fields(event: Event) -> dict[str, str]:
    """The feed entry of an accepted provider event (or website callback request)."""
    details = {
        "ref": event.ref,
        "status": event.status,
        "text": event.text,
        "direction": event.direction,
        "withheld": event.withheld or "",
    }
    return entry_fields(event.kind.value, event.provider, event.line, event.customer, event.at, details)


class Feed:
    def __init__(self, redis: Redis, keys: Keys, max_entries: int) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes.
        self._redis: DecodedRedis = redis
        self._key = keys.feed
        self._max = max_entries

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
        fields = entry_fields(kind, provider, line, customer, at, details or {})
        await self._redis.xadd(self._key, fields, maxlen=self._max, approximate=False)

    async def record_refusal(self, reason: str, message: str, *, provider: str, line: str, path: str) -> None:
        details = {"reason": reason, "message": message, "path": path}
        await self.record(REFUSED, provider=provider, line=line, details=details)

    async def query(self, query: FeedQuery) -> tuple[list[dict[str, str]], str | None]:
        """Entries matching ``query``, newest first, and the cursor of the next page (None
        when this page is the last)."""
        # A time before 1970 is before every entry id (which cannot be negative).
        low = "-" if query.since is None else f"{max(int(query.since * 1000), 0)}-0"
        if query.before is not None and query.before.strip("0-") == "":
            return [], None  # nothing is older than the first possible entry id
        high = f"({query.before}" if query.before else "+"
        found: list[dict[str, str]] = []
        while True:
            chunk = await self._redis.xrevrange(self._key, max=high, min=low, count=_CHUNK)
            for entry_id, fields in chunk:
                if query.matches(fields):
                    found.append({"id": entry_id, **fields})
                    if len(found) > query.limit:
                        # One more than asked for: there is a next page, and it starts here.
                        return found[: query.limit], found[query.limit - 1]["id"]
            if len(chunk) < _CHUNK:
                return found, None
            high = f"({chunk[-1][0]}"
