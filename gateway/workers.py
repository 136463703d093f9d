"""The workers: event, job and outbox consumers, the timer poller, the stage rules' runner and
the CRM deliverer, run by serve and by worker.

A supervisor watches their tasks: a consumer restarts itself after any failure, and should
its task end anyway, the supervisor says why and starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

from config.settings import Settings
from gateway.consent import Consents
from gateway.conversations import Conversations
from gateway.engine.entries import StageEntryRunner
from gateway.engine.processor import EventProcessor, MessageHandler
from gateway.jobs import JobRunner
from gateway.keys import EVENTS_STREAM, JOBS_STREAM, OUTBOX_STREAM
from gateway.metrics import Metrics
from gateway.outbox import Deliverer, FanOut
from gateway.providers.registry import Providers
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.calls import RESPONDED_TTL
from gateway.store.connection import UNAVAILABLE, RedisHealth
from gateway.store.items import Item
from gateway.streams import (
    BatchProcessor,
    Claims,
    GaveUp,
    IdleWatch,
    StreamConfig,
    StreamConsumer,
    consumer_name,
    one_by_one,
    raise_if_cancelled,
)
from voice.render import renderer_for
from webhooks.events import Event

log = logging.getLogger(__name__)

TIMER_POLL_SECONDS = 0.5


async def poll_timers(store: Store, health: RedisHealth) -> None:
    while True:
        raise_if_cancelled()
        try:
            now = time.time()
            await store.timers.fire_due(now)
            await store.jobs.fire_due(now)
            for item_id in await store.items.expire_leads(now):
                log.info("lead expired item=%s (nobody changed it)", item_id)
            await store.calls.forget_answers_before(now - RESPONDED_TTL)
            health.back()
        except UNAVAILABLE as exc:
            health.lost(exc)
        except Exception:
            # Timers must keep firing after any one failure.
            log.exception("timer poll failed; going on")
        await asyncio.sleep(TIMER_POLL_SECONDS)


# One events consumer per process: it reads every partition at once, takes whole reads and
# pipelines each phase, so it is CPU-bound and a second one in the same process adds no
# throughput, only a race between two events of one customer (a call's ringing and
# answered) read by different consumers.
EVENT_CONSUMERS = 1
# One fan-out consumer per process, for the same reason: an item's events queue in order.
OUTBOX_CONSUMERS = 1


def consumers(
    store: Store,
    settings: Settings,
    metrics: Metrics,
    stream: str,
    processor: BatchProcessor,
    count: int,
    batch: int = StreamConfig.batch,
    on_dead: GaveUp | None = None,
) -> list[StreamConsumer]:
    """``count`` consumers of ``stream`` (every partition of it), each reading up to
    ``batch`` entries at a time; ``on_dead`` hears of each entry they give up on."""
    config = StreamConfig(
        name=stream,
        claim_idle_ms=settings.claim_idle_seconds * 1000,
        max_deliveries=settings.max_deliveries,
        dead_max=settings.dead_letters_max,
        partitions=store.keys.partitions_of(stream),
        batch=batch,
        # A customer's events, all in one partition, are processed in order by one process; so
        # are an item's outbox entries, which queue its deliveries to the CRM in that order.
        exclusive=stream in (EVENTS_STREAM, OUTBOX_STREAM),
    )

    def outcome(name: str) -> None:
        # Once per entry: the series is looked up once, as on the request path.
        metrics.series(metrics.stream_entries, stream, name).inc()

    claims = [Claims(store.redis, store.keys, config, outcome, p, on_dead) for p in config.partitions]
    watch = IdleWatch()
    return [
        StreamConsumer(
            store.redis, store.keys, config, consumer_name(i), processor, outcome, claims, metrics.health, watch
        )
        for i in range(count)
    ]


Job = Callable[[], Coroutine[Any, Any, None]]


class Workers:
    """The tasks of one process's workers, kept running by a supervisor."""

    def __init__(self, consumers: list[StreamConsumer], others: dict[str, Job]) -> None:
        self.consumers = consumers
        self._jobs: dict[str, Job] = {self._name(i, c): c.run for i, c in enumerate(consumers)}
        self._jobs.update(others)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def _name(index: int, consumer: StreamConsumer) -> str:
        return f"consumer-{consumer.stream}-{index}"

    @property
    def streams(self) -> list[str]:
        return sorted({consumer.stream for consumer in self.consumers})

    def live_consumers(self, stream: str) -> int:
        """Consumers of ``stream`` whose task runs and that are consuming (not backing off)."""
        live = 0
        for i, consumer in enumerate(self.consumers):
            task = self.tasks.get(self._name(i, consumer))
            live += consumer.stream == stream and consumer.live and task is not None and not task.done()
        return live

    def _start(self, name: str) -> None:
        self.tasks[name] = asyncio.create_task(self._jobs[name](), name=name)

    def start(self) -> None:
        for name in self._jobs:
            self._start(name)

    async def supervise(self) -> None:
        while True:
            finished, _ = await asyncio.wait(self.tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                name = task.get_name()
                reason = "it was cancelled" if task.cancelled() else repr(task.exception())
                log.error("worker task %s ended (%s); starting it again", name, reason)
                self._start(name)


def on_message(store: Store, settings: Settings) -> MessageHandler:
    """What an inbound SMS does beyond the engine: a consent keyword changes the ledger (and
    gets no automatic reply); any other message opens or continues a conversation."""
    consents, conversations = Consents(store, settings), Conversations(store, settings)

    async def handle(event: Event, items: list[Item]) -> None:
        if await consents.on_message(event, items) is None:
            await conversations.on_message(event, items)

    return handle


async def stop_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again those still running after a
    second: on Python 3.11 a cancel that lands as a ``wait_for`` or a client timeout completes
    can be lost, and one lost cancel must not hang a shutdown."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


@contextlib.asynccontextmanager
async def running_workers(store: Store, settings: Settings, metrics: Metrics) -> AsyncIterator[Workers]:
    """Consumers and the timer poller under a supervisor; cancelled and awaited on exit.

    ``store`` must use a client whose timeouts allow blocking reads. Nothing here waits on
    Redis: a Redis out of memory or read-only at start delays the consumers, not the start.
    """
    providers = Providers(store, settings.base_url)
    speech = Speech(renderer_for(settings), settings.tts_workers)
    runner = JobRunner(store, providers, settings, speech)
    deliverer = Deliverer(store, settings, metrics)
    entries = StageEntryRunner(store, settings, speech.renderer, metrics)
    workers = Workers(
        [
            *consumers(
                store,
                settings,
                metrics,
                EVENTS_STREAM,
                EventProcessor(store, runner.on_call_event, on_message(store, settings)),
                EVENT_CONSUMERS,
            ),
            # One job at a time per consumer: a job waiting for its rate-limit slot must not
            # hold a batch of others behind it while idle consumers could take them (those
            # slots would go unused: measured 26 of 30 messages/s with batches of 64).
            *consumers(
                store,
                settings,
                metrics,
                JOBS_STREAM,
                one_by_one(runner),
                settings.consumers,
                batch=1,
                on_dead=runner.gave_up,
            ),
            *consumers(store, settings, metrics, OUTBOX_STREAM, FanOut(store, deliverer.wake), OUTBOX_CONSUMERS),
        ],
        {"timers": lambda: poll_timers(store, metrics.health), "outbox": deliverer.run, "stage-rules": entries.run},
    )
    workers.start()
    supervisor = asyncio.create_task(workers.supervise(), name="supervisor")
    try:
        yield workers
    finally:
        await stop_all([supervisor])
        await stop_all(workers.tasks.values())
        await providers.close()
        # Off the loop: the pool's shutdown waits for a synthesis in progress.
        await asyncio.to_thread(speech.close)
