"""Shared fixtures: a real Redis (the machine's, or an embedded one started here), settings
with a key prefix unique to each test, and a client of the app built by the factory."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.store.embedded import EmbeddedRedis

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
API_TOKEN = "api-token-for-tests-0123456789ab"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = {"Authorization": f"Bearer {API_TOKEN}"}

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


async def _answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """CALLGATE_TEST_REDIS_URL (default the local server), or an embedded Redis when none answers."""
    url = os.environ.get("CALLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if asyncio.run(_answers(url)):
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(embedded.start())
    try:
        yield embedded.url
    finally:
        loop.run_until_complete(embedded.stop())
        loop.close()


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    """A client for assertions; deletes only this test's keys afterwards."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        await client.unlink(key)
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return "{cgt-" + uuid.uuid4().hex[:12] + "}:"


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path, redis: Redis) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        public_url="https://gw.example.com",
        admin_token=ADMIN_TOKEN,
        api_token=API_TOKEN,
        key_prefix=prefix,
        claim_idle_seconds=1,
    )


@pytest.fixture
async def client(aiohttp_client: ClientFactory, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def make_settings(settings: Settings) -> Callable[..., Settings]:
    def make(**changes: object) -> Settings:
        return replace(settings, **changes)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis of this test alone (append-only, on a unix socket), stopped at the end."""
    server = EmbeddedRedis(tmp_path / "private")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def private_settings(private_redis: EmbeddedRedis, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(redis_url=private_redis.url)


@pytest.fixture
async def private_client(aiohttp_client: ClientFactory, private_settings: Settings) -> Client:
    """The app on ``private_redis``."""
    return await aiohttp_client(create_app(private_settings))
