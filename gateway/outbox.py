"""Events to the CRM: the fan-out of the outbox stream into deliveries, and the deliverer
that POSTs them, signed, to each subscription's endpoint.

Each subscription has its own delivery loop with its own attempts in flight and its own
timeouts, so a dead or hung endpoint costs only its own queue. A failed event is tried again
on an exponential schedule with jitter (seconds at first, then about once per
``outbox_retry_max_seconds``) until ``outbox_window_seconds`` after it was first queued,
then dead-lettered. Every attempt sends the same bytes (the body was built once, at the
fan-out); only the signature's ``t`` is the time of the attempt, so a receiver may refuse
signatures older than a few minutes without refusing late retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from config.jobs import backoff
from config.settings import Settings
from config.subscriptions import SIGNATURE_HEADER, Subscription, event_body, signature
from gateway.media import AddressPolicy, MediaError, any_address, is_public, resolve
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.connection import UNAVAILABLE
from gateway.store.outbox import Delivery
from gateway.store.outbox import event_id as outbox_event_id
from gateway.streams import Entry, one_by_one, raise_if_cancelled

log = logging.getLogger(__name__)

# How often each process looks for subscriptions added or deleted, and (with no wake-up from
# this process's fan-out) for events another process queued.
SYNC_SECONDS = 1.0
POLL_SECONDS = 0.5
# A taken event is leased this long past its timeout: a worker that died mid-attempt loses it.
LEASE_MARGIN_SECONDS = 30.0
# What is read of an endpoint's answer (to keep the connection for the next event).
_ANSWER_BYTES = 64 * 1024


def address_policy(settings: Settings) -> AddressPolicy:
    """CRM endpoints are guarded like media links: public addresses only, unless
    ``CALLGATE_MEDIA_ALLOW_PRIVATE``."""
    return any_address if settings.media_allow_private else is_public


async def check_url(url: str, allowed: AddressPolicy) -> None:
    """MediaError unless ``url``'s host resolves to allowed addresses only."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise MediaError(f"{url} has no host")
    if parts.port == 0:
        raise MediaError(f"{url} names port 0, which nothing listens on")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await resolve(parts.hostname, port, allowed)


class GuardedResolver(AbstractResolver):
    """Resolves through the SSRF guard: the connection goes to the addresses checked."""

    def __init__(self, allowed: AddressPolicy) -> None:
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return await resolve(host, port, self._allowed)

    async def close(self) -> None:
        return None


class FanOut:
    """The outbox stream's batch processor: one delivery per subscription that wants each
    event, as the subscriptions stand when the batch is read (a subscription just made in
    another process included).

    The event's id is its stream entry's, so a fan-out repeated after a crash queues
    nothing twice.
    """

    def __init__(self, store: Store, wake: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._wake = wake
        self._clock = clock

    async def __call__(self, entries: list[Entry]) -> dict[str, Exception]:
        subscriptions = list((await self._store.subscriptions.fresh()).values())
        return await one_by_one(functools.partial(self._fan_out, subscriptions))(entries)

    async def _fan_out(self, subscriptions: list[Subscription], entry: Entry) -> None:
        timeline = json.loads(entry.fields["entry"])
        event_type = str(timeline["type"])
        wanting = [sub for sub in subscriptions if sub.wants(event_type)]
        if not wanting:
            return
        item_id = entry.fields["item"]
        event_id = outbox_event_id(entry.id, self._store.keys.partition_of(item_id))
        body = event_body(event_id, event_type, timeline["at"], {"item_id": item_id, **timeline["data"]})
        now = self._clock()
        for sub in wanting:
            if await self._store.outbox.enqueue(sub.id, event_id, event_type, item_id, body, now):
                self._wake(sub.id)


class Deliverer:
    """One delivery loop per subscription, started and stopped as subscriptions come and go."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._jitter = jitter
        self._policy = address_policy(settings)
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}

    def wake(self, sub_id: str) -> None:
        """An event was queued for ``sub_id``: its loop looks now instead of at its next poll."""
        event = self._wakes.get(sub_id)
        if event is not None:
            event.set()

    async def run(self) -> None:
        """Keep a loop running per subscription until cancelled."""
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), use_dns_cache=False, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while True:
                    raise_if_cancelled()
                    with contextlib.suppress(*UNAVAILABLE):
                        self._sync(await self._store.subscriptions.all(), session)
                    await asyncio.sleep(SYNC_SECONDS)
            finally:
                for task in self._loops.values():
                    task.cancel()
                await asyncio.gather(*self._loops.values(), return_exceptions=True)

    def _sync(self, subscriptions: dict[str, Subscription], session: aiohttp.ClientSession) -> None:
        for sub_id in set(self._loops) - set(subscriptions):
            self._loops.pop(sub_id).cancel()
            self._wakes.pop(sub_id, None)
        for sub_id in subscriptions:
            task = self._loops.get(sub_id)
            if task is None or task.done():
                self._wakes[sub_id] = asyncio.Event()
                self._loops[sub_id] = asyncio.create_task(self._serve(sub_id, session), name=f"outbox-{sub_id}")

    async def _serve(self, sub_id: str, session: aiohttp.ClientSession) -> None:
        """Deliver ``sub_id``'s due events until cancelled, surviving any failure."""
        failures = 0
        while True:
            raise_if_cancelled()
            try:
                await self._deliver(sub_id, session)
            except Exception as exc:
                failures += 1
                if isinstance(exc, UNAVAILABLE):
                    self._metrics.health.lost(exc)  # one WARNING per outage, for the whole process
                else:
                    log.exception("outbox subscription=%s stopped by an unexpected error; restarting", sub_id)
                await asyncio.sleep(min(2.0, 0.1 * 2**failures) * random.uniform(0.8, 1.2))

    async def _deliver(self, sub_id: str, session: aiohttp.ClientSession) -> None:
        outbox = self._store.outbox
        wake = self._wakes[sub_id]
        lease = self._settings.outbox_timeout_seconds + LEASE_MARGIN_SECONDS
        inflight: set[asyncio.Task[None]] = set()
        try:
            while True:
                wake.clear()
                now = self._clock()
                free = self._settings.outbox_concurrency - len(inflight)
                for item_id in await outbox.due_items(sub_id, now, free):
                    delivery = await outbox.take(sub_id, item_id, now, now + lease)
                    if delivery is not None:
                        inflight.add(asyncio.create_task(self._attempt(delivery, session)))
                waiting = POLL_SECONDS
                if len(inflight) < self._settings.outbox_concurrency:
                    due = await outbox.next_due(sub_id)
                    if due is not None:
                        waiting = min(POLL_SECONDS, max(due - self._clock(), 0.0))
                woken = asyncio.create_task(wake.wait())
                done, _ = await asyncio.wait([*inflight, woken], timeout=waiting, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                for task in done - {woken}:
                    inflight.discard(task)
                    task.result()  # an attempt's Redis failure restarts the loop
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _attempt(self, delivery: Delivery, session: aiohttp.ClientSession) -> None:
        sub = await self._store.subscriptions.get(delivery.sub)
        if sub is None:
            return  # deleted meanwhile: its records go with it
        try:
            error = await self._post(sub, delivery, session)
        except asyncio.CancelledError:
            # Stopping: the event is due again at once for the next worker, not at the lease's end.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.outbox.release(delivery, self._clock()))
            raise
        now = self._clock()
        outcomes = self._metrics.outbox_deliveries
        if error is None:
            await self._store.outbox.delivered(delivery, now)
            outcomes.labels(sub.id, "delivered").inc()
            self._metrics.outbox_lag.labels(sub.id).observe(max(now - delivery.first, 0.0))
            return
        attempts = delivery.attempts + 1
        if now - delivery.first >= self._settings.outbox_window_seconds:
            reason = f"gave up after {attempts} attempts over {now - delivery.first:.0f} s: {error}"
            await self._store.outbox.give_up(delivery, now, reason)
            outcomes.labels(sub.id, "dead").inc()
            log.error("outbox subscription=%s event=%s dead-lettered: %s", sub.id, delivery.event_id, reason)
            return
        settings = self._settings
        delay = backoff(attempts, settings.outbox_retry_seconds, settings.outbox_retry_max_seconds, self._jitter())
        await self._store.outbox.retry_at(delivery, now, now + delay, error)
        outcomes.labels(sub.id, "failed").inc()
        log.warning(
            "outbox subscription=%s event=%s attempt %d failed (%s); next in %.1f s",
            sub.id,
            delivery.event_id,
            attempts,
            error,
            delay,
        )

    async def _post(self, sub: Subscription, delivery: Delivery, session: aiohttp.ClientSession) -> str | None:
        """POST the event once; None when the endpoint took it (2xx), else why not."""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(sub.secret, int(self._clock()), delivery.body),
        }
        timeout = aiohttp.ClientTimeout(total=self._settings.outbox_timeout_seconds)
        try:
            await _check_literal(sub.url, self._policy)
            async with session.post(
                sub.url, data=delivery.body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                await response.content.read(_ANSWER_BYTES)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except MediaError as exc:
            return str(exc)
        except TimeoutError:
            return f"no answer within {self._settings.outbox_timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"


async def _check_literal(url: str, allowed: AddressPolicy) -> None:
    """The guard for a host written as an address, which the connector never resolves."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    await check_url(url, allowed)
