"""The workers: event and job consumers and the timer poller, run by serve and by worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from config.settings import Settings
from gateway.engine.processor import EventProcessor
from gateway.jobs import JobRunner
from gateway.metrics import Metrics
from gateway.providers.registry import Providers
from gateway.store import Store
from gateway.store.calls import RESPONDED_TTL
from gateway.store.connection import UNAVAILABLE
from gateway.store.inbox import EVENTS_STREAM
from gateway.store.jobs import JOBS_STREAM
from gateway.streams import Processor, StreamConfig, StreamConsumer, consumer_name, raise_if_cancelled

log = logging.getLogger(__name__)

TIMER_POLL_SECONDS = 0.5


async def poll_timers(store: Store) -> None:
    while True:
        raise_if_cancelled()
        try:
            now = time.time()
            await store.timers.fire_due(now)
            await store.jobs.fire_due(now)
            await store.calls.forget_answers_before(now - RESPONDED_TTL)
        except UNAVAILABLE as exc:
            log.warning("timer poll: redis unavailable: %s", exc)
        except Exception:
            # Timers must keep firing after any one failure.
            log.exception("timer poll failed; going on")
        await asyncio.sleep(TIMER_POLL_SECONDS)


def consumers(
    store: Store, settings: Settings, metrics: Metrics, stream: str, processor: Processor
) -> list[StreamConsumer]:
    config = StreamConfig(
        name=stream,
        claim_idle_ms=settings.claim_idle_seconds * 1000,
        max_deliveries=settings.max_deliveries,
    )
    outcomes = metrics.stream_entries

    def count(outcome: str) -> None:
        outcomes.labels(stream, outcome).inc()

    return [
        StreamConsumer(store.redis, store.keys, config, consumer_name(i), processor, count)
        for i in range(settings.consumers)
    ]


@contextlib.asynccontextmanager
async def running_workers(store: Store, settings: Settings, metrics: Metrics) -> AsyncIterator[None]:
    """Consumers and the timer poller as tasks; cancelled and awaited on exit.

    ``store`` must use a client whose timeouts allow blocking reads.
    """
    providers = Providers(store)
    runner = JobRunner(store, providers, settings)
    groups = [
        consumers(store, settings, metrics, EVENTS_STREAM, EventProcessor(store, runner.on_call_event)),
        consumers(store, settings, metrics, JOBS_STREAM, runner),
    ]
    for group in groups:
        await group[0].ensure_group()
    tasks = [
        asyncio.create_task(c.run(), name=f"consumer-{c.stream}-{i}") for group in groups for i, c in enumerate(group)
    ]
    tasks.append(asyncio.create_task(poll_timers(store), name="timers"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await providers.close()
