"""Faults that used to be 500s or misread: Redis out of memory, clients that hang up
mid-body, unknown charsets, header bytes that are not UTF-8, requests aiohttp cannot parse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from aiohttp import web
from redis.asyncio import Redis

from config.settings import Settings
from gateway.api.hooks import STATUS_PATH
from gateway.app import create_app
from gateway.store.embedded import EmbeddedRedis
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import (
    CUSTOMER,
    configure,
    eventually,
    missed_call,
    raw_request,
    sign,
    stage_of,
    twilio_post,
    watch_missed_calls,
)


async def test_redis_out_of_memory_is_a_503_logged_once_per_spell(
    private_redis: EmbeddedRedis, private_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await watch_missed_calls(private_client)
    admin = Redis.from_url(private_redis.url)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")  # every write is refused from now on
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                resp = await twilio_post(private_client, STATUS_PATH, missed_call())
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"].isdigit()
                assert (await resp.json())["error"]["code"] == "unavailable"
                resp = await private_client.put("/v1/pipelines/other", json={"stages": ["NEW"]}, headers=ADMIN)
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"].isdigit()
        spells = [r for r in caplog.records if "out of memory" in r.getMessage()]
        assert len(spells) == 1, [r.getMessage() for r in spells]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]

        await admin.config_set("maxmemory", "0")  # memory is back: the provider's retry lands
    finally:
        await admin.aclose()
    resp = await twilio_post(private_client, STATUS_PATH, missed_call())
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(private_client) == "CALL_BACK"

    await eventually(moved)


@pytest.fixture
async def production_server(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """The app served the way ``callgate serve`` does: a handler goes on when its client leaves."""
    runner = web.AppRunner(create_app(settings, workers=False), handler_cancellation=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "127.0.0.1", runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_a_client_leaving_mid_body_is_not_redis_unavailable(
    production_server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = production_server
    _, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT /v1/items/D1 HTTP/1.1\r\nHost: t\r\nAuthorization: {API['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
    )
    await writer.drain()
    with caplog.at_level(logging.INFO):
        writer.close()
        await writer.wait_closed()

        async def noticed() -> bool:
            return any("disconnected" in r.getMessage() for r in caplog.records)

        await eventually(noticed)
    assert not [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_unknown_charset_is_400_on_every_endpoint(aiohttp_client: ClientFactory, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings, workers=False))
    await configure(client)
    for path in ["/webhooks/twilio/voice", STATUS_PATH, "/webhooks/twilio/sms", "/webhooks/twilio/sms/status"]:
        for content_type in ["application/x-www-form-urlencoded", "application/json"]:
            resp = await client.post(
                path,
                data=b"From=%2B34600111222&To=%2B34910000001",
                headers={"Content-Type": f"{content_type}; charset=bogus", "X-Twilio-Signature": "x"},
            )
            assert resp.status == 400, (path, content_type, await resp.text())
            assert (await resp.json())["error"]["code"] == "malformed_webhook"
    resp = await client.put(
        "/v1/pipelines/sales",
        data=b'{"stages": ["NEW"]}',
        headers={**ADMIN, "Content-Type": "application/json; charset=bogus"},
    )
    assert resp.status < 500


@pytest.mark.parametrize(
    ("path", "header", "body"),
    [
        ("/v1/callback-requests", "Idempotency-Key", f'{{"phone": "{CUSTOMER}"}}'),
        (STATUS_PATH, "I-Twilio-Idempotency-Token", "CallSid=CA1"),
    ],
)
async def test_header_bytes_that_are_not_utf8_are_400(
    aiohttp_client: ClientFactory, settings: Settings, path: str, header: str, body: str
) -> None:
    client = await aiohttp_client(create_app(settings, workers=False))
    await configure(client)
    form = missed_call()
    if path == STATUS_PATH:
        body = urlencode(form)
        extra = f"X-Twilio-Signature: {sign(path, form)}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    else:
        extra = f"Authorization: {API['Authorization']}\r\nContent-Type: application/json\r\n"
    answer = await raw_request(
        client,
        f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}Content-Length: {len(body)}\r\n".encode()
        + header.encode()
        + b": k\xff\xfe\r\n\r\n"
        + body.encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b'"invalid_header"' in answer


async def test_a_malformed_request_is_one_warning_line(
    production_server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = production_server
    with caplog.at_level(logging.INFO):
        for garbage in [b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", b"GET /\x00 HTTP/9.9\r\n\r\n"]:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(garbage)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
                await writer.wait_closed()
            assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    logged = [r for r in caplog.records if r.name.startswith(("gateway", "aiohttp"))]
    assert logged, "the malformed requests are logged"
    for record in logged:
        assert record.levelno == logging.WARNING, record.getMessage()
        assert record.exc_info is None and "\n" not in record.getMessage()
