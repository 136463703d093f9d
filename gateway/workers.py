"""The workers: event consumers and the overdue-timer poller, run by serve and by worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from config.settings import Settings
from gateway.engine.processor import EventProcessor
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.calls import RESPONDED_TTL
from gateway.store.connection import UNAVAILABLE
from gateway.store.inbox import EVENTS_STREAM
from gateway.streams import StreamConfig, StreamConsumer, consumer_name, raise_if_cancelled

log = logging.getLogger(__name__)

TIMER_POLL_SECONDS = 0.5


async def poll_timers(store: Store) -> None:
    while True:
        raise_if_cancelled()
        try:
            now = time.time()
            await store.timers.fire_due(now)
            await store.calls.forget_answers_before(now - RESPONDED_TTL)
        except UNAVAILABLE as exc:
            log.warning("timer poll: redis unavailable: %s", exc)
        except Exception:
            # Timers must keep firing after any one failure.
            log.exception("timer poll failed; going on")
        await asyncio.sleep(TIMER_POLL_SECONDS)


def event_consumers(store: Store, settings: Settings, metrics: Metrics) -> list[StreamConsumer]:
    config = StreamConfig(
        name=EVENTS_STREAM,
        claim_idle_ms=settings.claim_idle_seconds * 1000,
        max_deliveries=settings.max_deliveries,
    )
    processor = EventProcessor(store)
    outcomes = metrics.stream_entries

    def count(outcome: str) -> None:
        outcomes.labels(EVENTS_STREAM, outcome).inc()

    return [
        StreamConsumer(store.redis, store.keys, config, consumer_name(i), processor, count)
        for i in range(settings.consumers)
    ]


@contextlib.asynccontextmanager
async def running_workers(store: Store, settings: Settings, metrics: Metrics) -> AsyncIterator[None]:
    """Consumers and the timer poller as tasks; cancelled and awaited on exit.

    ``store`` must use a client whose timeouts allow blocking reads.
    """
    consumers = event_consumers(store, settings, metrics)
    await consumers[0].ensure_group()
    tasks = [asyncio.create_task(c.run(), name=f"consumer-{i}") for i, c in enumerate(consumers)]
    tasks.append(asyncio.create_task(poll_timers(store), name="timers"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
