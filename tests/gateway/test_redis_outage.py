"""Redis outages, on a private Redis these tests stop and start at will: webhooks get a fast
503 (so the provider retries) while it is away, and nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import Keys
from gateway.store.embedded import EmbeddedRedis
from gateway.store.inbox import EVENTS_STREAM
from tests.conftest import Client, ClientFactory
from tests.support import (
    add_item,
    add_trigger,
    configure,
    eventually,
    item,
    missed_call,
    stage_of,
    timeline_types,
    twilio_post,
    watch_missed_calls,
)

STATUS_PATH = "/webhooks/twilio/voice/status"


async def test_webhook_is_503_while_redis_is_down_and_processed_once_it_is_back(
    private_redis: EmbeddedRedis, private_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
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
        return any("redis unavailable" in r.getMessage() for r in caplog.records if r.name == "gateway.streams")

    await eventually(consumers_noticed)  # the workers are in the outage too, and wait it out
    await private_redis.start()  # same socket and data directory
    assert (await client.get("/readyz")).status == 200
    resp = await twilio_post(client, STATUS_PATH, form)  # the provider's retry
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved, timeout=15)  # the same workers, recovered without a restart
    kinds = timeline_types(await item(client))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1


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
        assert await probe.xlen(keys.stream(EVENTS_STREAM)) == 1  # still there, unprocessed
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


# Helpers
