"""Taking events in: store once (the inbox traces each in the feed) and count; and refusing
webhooks visibly."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from aiohttp import web

from config.vocabulary import EventKind
from gateway.appkeys import METRICS, STORE
from gateway.errors import ApiError
from gateway.store.connection import UNAVAILABLE
from gateway.store.inbox import Arrival
from webhooks.events import Event

log = logging.getLogger(__name__)

# The events that start a conversation: where a withheld caller is counted, once.
_FIRST_CONTACT = frozenset({EventKind.CALL_INCOMING, EventKind.SMS_INCOMING})


class Refused(ApiError):
    """A webhook turned away, with what an operator needs to see why: the provider it
    claimed, the line it was for, and ``details`` (e.g. the URL a signature was checked
    against). Logged, counted and recorded in the feed once, by :func:`refuse`."""

    def __init__(
        self, status: int, code: str, message: str, *, provider: str, line: str = "", field: str | None = None
    ) -> None:
        super().__init__(status, code, message, field)
        self.provider = provider
        self.line = line


async def accept(request: web.Request, event: Event, token: str | None = None, fingerprint: str = "") -> bool:
    """Store ``event`` durably unless already seen; True when it is new.

    409 when ``fingerprint`` (see ``Inbox.accept``) differs from the one its identity holds.
    """
    arrival = await request.app[STORE].inbox.accept(event, token, fingerprint)
    if arrival is Arrival.CONFLICT:
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different body")
    return _counted(request, event, arrival is Arrival.NEW)


async def accept_all(
    request: web.Request, events: Sequence[Event], token: str | None = None, reported: int = -1
) -> list[bool]:
    """``accept`` for the events of one delivery, stored in their order in one round trip;
    ``token`` names the delivery of ``events[reported]`` (see ``Inbox.accept_all``)."""
    arrivals = await request.app[STORE].inbox.accept_all(events, token, reported)
    return [_counted(request, event, arrival is Arrival.NEW) for event, arrival in zip(events, arrivals, strict=True)]


def _counted(request: web.Request, event: Event, new: bool) -> bool:
    """``new``, once the event's arrival is counted (and logged when new)."""
    metrics = request.app[METRICS]
    metrics.series(metrics.events, event.kind.value, "accepted" if new else "duplicate").inc()
    if new:
        log.debug(
            "accepted %s provider=%s line=%s customer=%s ref=%s",
            event.kind.value,
            event.provider,
            event.line,
            event.customer,
            event.ref,
        )
        if event.kind in _FIRST_CONTACT and (caller := event.withheld):
            # Accepted as any other (the call still rings the agents), but it can make no
            # lead: say so where an operator looks.
            log.info(
                "withheld caller=%s %s provider=%s line=%s ref=%s",
                caller,
                event.kind.value,
                event.provider,
                event.line,
                event.ref,
            )
            request.app[METRICS].withheld.labels(event.kind.value, caller).inc()
    return new


async def refuse(request: web.Request, refusal: Refused, provider_kind: str) -> None:
    """One WARNING, one count and one feed entry for a refused webhook."""
    line = f" line={refusal.line}" if refusal.line else ""
    log.warning(
        "webhook refused: %s provider=%s%s path=%s reason=%s",
        refusal.message,
        refusal.provider,
        line,
        request.path,
        refusal.code,
    )
    request.app[METRICS].refusals.labels(provider_kind, refusal.code).inc()
    # Without Redis the refusal still stands; the log line above is its trace.
    with contextlib.suppress(*UNAVAILABLE):
        await request.app[STORE].feed.record_refusal(
            refusal.code, refusal.message, provider=refusal.provider, line=refusal.line, path=request.path
        )
