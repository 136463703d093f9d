"""Shared fixtures: a real Redis (the machine's, or an embedded one started here), settings
with a key prefix unique to each test, and a client of the app built by the factory.

Every prefix starts with this run's stem; at the end of the run any key left under it fails
the run, so a fixture that leaks into the shared Redis is found the day it is written.
"""

from __future__ import annotations

import asyncio
import os
import sys
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


# Set by tests/test_hygiene.py to watch a child run; random otherwise.
SESSION_STEM = "cgt-" + os.environ.get("CALLGATE_TEST_SESSION", uuid.uuid4().hex[:8]) + "-"
_USED_URLS: set[str] = set()


async def leftover_keys(url: str, stem: str = SESSION_STEM) -> list[str]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=stem + "*", count=1000)]
    finally:
        await client.aclose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for url in _USED_URLS:
        left = asyncio.run(leftover_keys(url))
        if left:
            print(f"\ntest run left {len(left)} key(s) in {url}: {sorted(left)[:10]}", file=sys.stderr)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    _USED_URLS.add(redis_url)
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        await client.unlink(key)
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return SESSION_STEM + uuid.uuid4().hex[:12] + ":"


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
def aiohttp_client(redis: Redis, aiohttp_client: ClientFactory) -> ClientFactory:
    """pytest-aiohttp's factory, set up after ``redis`` so that it is torn down before it:
    the apps it made (whose consumers re-create their streams) stop before ``redis``
    deletes this test's keys, instead of writing keys after that."""
    return aiohttp_client


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
