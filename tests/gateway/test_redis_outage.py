"""Redis outages, on a private Redis these tests stop and start at will: webhooks get a fast
503 (so the provider retries) while it is away, and nothing acknowledged is lost."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import SETTINGS, WORKERS
from gateway.keys import Keys
from gateway.store.backlog import Backlogs
from gateway.store.embedded import EmbeddedRedis
from gateway.store.inbox import EVENTS_STREAM
from tests.conftest import ADMIN, Client, ClientFactory
from tests.support import (
    CUSTOMER,
    add_item,
    add_trigger,
    call_form,
    configure,
    eventually,
    item,
    missed_call,
    ready,
    stage_of,
    timeline_types,
    twilio_post,
    watch_missed_calls,
)

STATUS_PATH = "/webhooks/twilio/voice/status"


async def test_webhook_is_503_while_redis_is_down_and_processed_once_it_is_back(
    private_redis: EmbeddedRedis, private_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.redis")
    client = private_client
    await watch_missed_calls(client)
    form = missed_call()

    await private_redis.stop()
    started = time.monotonic()
    resp = await twilio_post(client, STATUS_PATH, form)
    elapsed = time.monotonic() - started
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"]["code"] == "unavailable"
    assert resp.headers.get("Retry-After") == "1"
    assert elapsed < 2.0, elapsed  # well inside Twilio's 15 s: it retries, not times out
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "unavailable"
    assert (await client.get("/healthz")).status == 200

    async def consumers_noticed() -> bool:
        return client.app[WORKERS].live_consumers("events") == 0

    await eventually(consumers_noticed)  # the workers are in the outage too, and wait it out
    await private_redis.start()  # same socket and data directory
    await eventually(lambda: ready(client))  # a consumer is back, past its backoff
    resp = await twilio_post(client, STATUS_PATH, form)  # the provider's retry
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved, timeout=15)  # the same workers, recovered without a restart
    kinds = timeline_types(await item(client))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1
    # One line when Redis went away and one when it came back, whatever the number of
    # consumers, retries and refused requests in between.
    outage = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.redis"]
    assert [level for level, _ in outage] == ["WARNING", "INFO"], outage
    assert outage[0][1].startswith("redis unavailable") and outage[1][1].startswith("redis is back after")


async def test_acknowledged_webhook_survives_a_redis_restart(
    private_redis: EmbeddedRedis, private_settings: Settings, aiohttp_client: ClientFactory
) -> None:
    # The API alone: nothing processes the event before Redis goes down.
    api = await aiohttp_client(create_app(private_settings, workers=False))
    await configure(api)
    await add_item(api)
    await add_trigger(api, event="call.missed")
    resp = await twilio_post(api, STATUS_PATH, missed_call())
    assert resp.status == 200, await resp.text()

    # SIGTERM: Redis writes and fsyncs its append-only file before it exits.
    await private_redis.stop()
    await private_redis.start()
    keys = Keys(private_settings.key_prefix)
    probe = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        assert (await Backlogs(probe, keys).of(EVENTS_STREAM)).length == 1  # still there, unprocessed
    finally:
        await probe.aclose()

    await aiohttp_client(create_app(private_settings))  # the workers come up

    async def moved() -> bool:
        return await stage_of(api) == "CALL_BACK"

    await eventually(moved, timeout=15)
    kinds = timeline_types(await item(api))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1
    # A retry of the delivery Redis kept is still recognised as a duplicate.
    assert (await twilio_post(api, STATUS_PATH, missed_call())).status == 200
    metrics = await (await api.get("/metrics")).text()
    assert 'callgate_events_total{kind="call.missed",outcome="duplicate"} 1.0' in metrics


async def test_hung_redis_is_503_and_recovers(
    private_redis: EmbeddedRedis, private_settings: Settings, aiohttp_client: ClientFactory
) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP: a stalled server)."""
    client = await aiohttp_client(create_app(private_settings))
    await watch_missed_calls(client)
    probe = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        pid = int((await probe.info("server"))["process_id"])
    finally:
        await probe.aclose()

    os.kill(pid, signal.SIGSTOP)
    try:
        resp = await twilio_post(client, STATUS_PATH, missed_call())
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "unavailable"
        assert (await client.get("/readyz")).status == 503
    finally:
        os.kill(pid, signal.SIGCONT)

    resp = await twilio_post(client, STATUS_PATH, missed_call())
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved, timeout=15)
    kinds = timeline_types(await item(client))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1


async def test_out_of_memory_at_start_delays_the_consumers_not_the_events(
    private_redis: EmbeddedRedis,
    private_settings: Settings,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Creating the consumer group fails while Redis is out of memory: the consumers say
    why, /readyz is 503 and the metrics show no live consumer until memory is back."""
    await watch_missed_calls(await aiohttp_client(create_app(private_settings, workers=False)))
    async with redis_on(private_redis) as probe:
        await probe.config_set("maxmemory-policy", "noeviction")
        await probe.config_set("maxmemory", "1")  # every write is refused: OOM
        client = await aiohttp_client(create_app(private_settings))

        async def said_why() -> bool:
            # The events consumer's own word: the job consumers may say it first.
            messages = [r.getMessage() for r in caplog.records if r.name == "gateway.streams"]
            return any("stream=events" in m and "OutOfMemoryError" in m for m in messages)

        await eventually(said_why)
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert "consumer" in (await resp.json())["error"]["message"]
        assert 'callgate_stream_consumers_live{stream="events"} 0.0' in await (await client.get("/metrics")).text()
        await probe.config_set("maxmemory", "0")

    await eventually(lambda: ready(client))
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)

    async def all_live() -> bool:
        metrics = await (await client.get("/metrics")).text()
        return 'callgate_stream_consumers_live{stream="events"} 1.0' in metrics

    await eventually(all_live)


async def test_a_read_only_spell_is_an_outage_until_it_ends(
    private_redis: EmbeddedRedis, private_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover demotes the Redis to a replica, which refuses every write: webhooks and the
    API answer 503 (not a 500 with a traceback each), the consumers wait, and the process
    says so once."""
    caplog.set_level(logging.INFO, logger="gateway")
    client = private_client
    await watch_missed_calls(client)
    async with redis_on(private_redis) as probe:
        # A master that never answers: the data stays, every write is refused.
        await probe.replicaof("127.0.0.1", free_port())
        for _ in range(3):
            resp = await twilio_post(client, STATUS_PATH, missed_call())
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "unavailable"
            assert resp.headers["Retry-After"] == "1"
            resp = await client.put("/v1/pipelines/other", json={"stages": ["NEW"]}, headers=ADMIN)
            assert resp.status == 503, await resp.text()

        # Not ready, and not told Redis is back: it answers PING, but as a replica.
        resp = await client.get("/readyz")
        assert resp.status == 503 and "replica" in (await resp.json())["error"]["message"]
        await probe.replicaof("NO", "ONE")

    await eventually(lambda: ready(client))
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    outage = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.redis"]
    assert [level for level, _ in outage] == ["WARNING", "INFO"], outage
    assert "read only replica" in outage[0][1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_the_supervisor_restarts_a_worker_task_that_ended(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    workers = client.app[WORKERS]
    first = workers.tasks["consumer-events-0"]
    first.cancel()

    async def restarted() -> bool:
        task = workers.tasks["consumer-events-0"]
        return task is not first and not task.done()

    await eventually(restarted)
    assert any("consumer-events-0 ended" in r.getMessage() for r in caplog.records if r.name == "gateway.workers")
    assert workers.live_consumers("events") == 1
    assert workers.live_consumers("jobs") == client.app[SETTINGS].consumers


async def test_metrics_show_the_stream_backlog(aiohttp_client: ClientFactory, settings: Settings, redis: Redis) -> None:
    api = await aiohttp_client(create_app(settings, workers=False))
    await configure(api)
    for n in range(3):
        form = call_form("CA" + str(n) * 32, CallStatus="in-progress", DialCallStatus="no-answer")
        assert (await twilio_post(api, STATUS_PATH, form)).status == 200
    keys = Keys(settings.key_prefix)
    # The three calls are one customer's: all in one partition.
    stream = keys.stream(EVENTS_STREAM, keys.partition_of(CUSTOMER))
    await redis.xgroup_create(stream, EVENTS_STREAM, id="0")
    await redis.xreadgroup(EVENTS_STREAM, "gone", {stream: ">"}, count=2)  # two taken, never acked
    metrics = await (await api.get("/metrics")).text()
    assert 'callgate_stream_length{stream="events"} 3.0' in metrics
    assert 'callgate_stream_pending{stream="events"} 2.0' in metrics
    age = re.search(r'callgate_stream_oldest_pending_age_seconds\{stream="events"\} (\S+)', metrics)
    assert age is not None and float(age.group(1)) >= 0.0
    assert "callgate_stream_consumers_live{" not in metrics  # this process runs no consumers


# Helpers


@contextlib.asynccontextmanager
async def redis_on(server: EmbeddedRedis) -> AsyncIterator[Redis]:
    probe = Redis.from_url(server.url, decode_responses=True)
    try:
        yield probe
    finally:
        await probe.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
