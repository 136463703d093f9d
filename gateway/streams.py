"""The durable stream core: events, jobs and CRM deliveries all ride on it.

A producer XADDs an entry; consumers of one group read it (``XREADGROUP``), run the
processor and XACK+XDEL it only after the processor returned, so an entry survives any
crash in between. Entries a dead or stuck consumer left pending are claimed by another
(``XPENDING`` with an idle filter, then ``XCLAIM``, which counts the delivery); an entry
delivered ``max_deliveries`` times goes to the dead-letter stream with its last error.
Processors must therefore be idempotent: an entry may be processed more than once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.keys import Keys
from gateway.store.connection import UNAVAILABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    id: str
    fields: Mapping[str, str]


Processor = Callable[[Entry], Awaitable[None]]
Outcome = Callable[[str], None]


def raise_if_cancelled() -> None:
    """Honour a cancel that was requested but lost, in loops that run until cancelled.

    Python 3.11's ``asyncio.wait_for`` (redis-py sends under it when a socket timeout is set)
    returns normally when its inner call completes in the loop turn the cancel lands in
    (fixed in 3.12): the task goes on, but still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def consumer_name(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{index}"


@dataclass(frozen=True)
class StreamConfig:
    name: str
    claim_idle_ms: int
    max_deliveries: int
    batch: int = 64
    block_ms: int = 1000


class StreamConsumer:
    """One consumer of a group; run several (in one process or many) to share the work."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: StreamConfig,
        name: str,
        process: Processor,
        on_outcome: Outcome = lambda outcome: None,
    ) -> None:
        # Typed loosely: redis-py types replies as unions over both decode modes, and every
        # client here decodes responses to str.
        self._redis: Any = redis
        self._config = config
        self._name = name
        self._process = process
        self._on_outcome = on_outcome
        self._stream = keys.stream(config.name)
        self._dead = keys.dead(config.name)
        self._errors = keys.errors(config.name)
        self._group = config.name

    @property
    def stream(self) -> str:
        return self._config.name

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Process until cancelled; Redis outages are waited out, never fatal."""
        await self.ensure_group()
        claim_every = max(self._config.claim_idle_ms / 2000, 0.1)
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelled()
            try:
                if loop.time() >= next_claim:
                    next_claim = loop.time() + claim_every
                    await self.process(await self.claim_stale())
                await self.process(await self.read_new())
            except UNAVAILABLE as exc:
                log.warning("stream=%s consumer=%s redis unavailable: %s", self._config.name, self._name, exc)
                await asyncio.sleep(0.5)
            except ResponseError as exc:
                # The stream was deleted (e.g. FLUSHALL or a Redis without persistence restarted):
                # the next read gets NOGROUP, and Redis 7 ends a read blocked at that moment
                # with UNBLOCKED.
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                    await self.ensure_group()
                else:
                    await self._survive()
            except Exception:
                await self._survive()

    async def _survive(self) -> None:
        # A consumer outlives any one failure: a dead task would leave its group a consumer
        # short with no sign but this log line.
        log.exception("stream=%s consumer=%s unexpected error; going on", self._config.name, self._name)
        await asyncio.sleep(1)

    async def read_new(self) -> list[Entry]:
        reply = await self._redis.xreadgroup(
            self._group,
            self._name,
            {self._stream: ">"},
            count=self._config.batch,
            block=self._config.block_ms,
        )
        return [Entry(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries if fields]

    async def claim_stale(self) -> list[Entry]:
        """Take over entries idle longer than ``claim_idle_ms``; dead-letter the hopeless."""
        pending = await self._redis.xpending_range(
            self._stream, self._group, min="-", max="+", count=self._config.batch, idle=self._config.claim_idle_ms
        )
        if not pending:
            return []
        hopeless = [p["message_id"] for p in pending if p["times_delivered"] >= self._config.max_deliveries]
        retry = [p["message_id"] for p in pending if p["times_delivered"] < self._config.max_deliveries]
        for entry_id in hopeless:
            await self._dead_letter(entry_id)
        if not retry:
            return []
        claimed = await self._redis.xclaim(
            self._stream, self._group, self._name, min_idle_time=self._config.claim_idle_ms, message_ids=retry
        )
        entries = [Entry(entry_id, fields) for entry_id, fields in claimed if fields]
        # An entry trimmed away while pending comes back empty: nothing left to do but ack it.
        gone = [entry_id for entry_id, fields in claimed if not fields]
        if gone:
            await self._redis.xack(self._stream, self._group, *gone)
        return entries

    async def _dead_letter(self, entry_id: str) -> None:
        # Every consumer of the group may find the same hopeless entry at once; the XCLAIM's
        # idle filter lets only one of them take it, so it is dead-lettered once.
        claimed = await self._redis.xclaim(
            self._stream, self._group, self._name, min_idle_time=self._config.claim_idle_ms, message_ids=[entry_id]
        )
        if not claimed:
            return
        fields = dict(claimed[0][1] or {})
        error = await self._redis.hget(self._errors, entry_id) or "delivered too often without success"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._dead, {**fields, "_id": entry_id, "_error": error[:2000]})
            pipe.xack(self._stream, self._group, entry_id)
            pipe.xdel(self._stream, entry_id)
            pipe.hdel(self._errors, entry_id)
            await pipe.execute()
        log.error("stream=%s entry=%s dead-lettered: %s", self._config.name, entry_id, error)
        self._on_outcome("dead")

    async def process(self, entries: list[Entry]) -> None:
        done: list[str] = []
        for entry in entries:
            try:
                await self._process(entry)
            except UNAVAILABLE:
                raise  # not the entry's fault: leave it pending and let run() wait Redis out
            except Exception as exc:
                log.exception("stream=%s entry=%s failed", self._config.name, entry.id)
                await self._redis.hset(self._errors, entry.id, f"{type(exc).__name__}: {exc}")
                self._on_outcome("failed")
            else:
                done.append(entry.id)
                self._on_outcome("done")
        if done:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, self._group, *done)
                pipe.xdel(self._stream, *done)
                pipe.hdel(self._errors, *done)
                await pipe.execute()
