"""Events to the CRM: subscriptions, signed deliveries retried with backoff, per-endpoint
isolation, order per item, dead letters and replays, and delivery across a restart.

Receivers listen on 127.0.0.1:0; the retry schedule is scaled down through the settings, so
no test sleeps for a delay: each waits for what the receiver saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import OUTBOX_STREAM, Keys
from gateway.metrics import Metrics
from gateway.outbox import Deliverer
from gateway.store import Store
from gateway.store.connection import connect
from gateway.store.records import Snapshots
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import eventually, metric

SECRET = "whsec-for-tests-0123456789"
RETRY = 0.05  # the first retry; doubled per failure


def independent_hmac_sha256(key: bytes, message: bytes) -> str:
    """HMAC as RFC 2104 defines it, built on the bare hash: an implementation that shares
    nothing with the gateway's."""
    block = 64
    key = key if len(key) <= block else hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


def verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(","))
    return parts["v1"] == independent_hmac_sha256(secret.encode(), parts["t"].encode() + b"." + body)


@dataclass
class Seen:
    at: float
    body: bytes
    signature: str
    ok: bool = False

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """A CRM endpoint: answers 503 to its first ``fail`` requests (all when ``down``), or
    holds every request open when ``hang``."""

    fail: int = 0
    down: bool = False
    hang: bool = False
    seen: list[Seen] = field(default_factory=list)
    hanging: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        seen = Seen(time.monotonic(), await request.read(), request.headers.get("Callgate-Signature", ""))
        self.seen.append(seen)
        if self.hang:
            self.hanging += 1
            await self.release.wait()
        if self.down or len(self.seen) <= self.fail:
            return web.Response(status=503)
        seen.ok = True
        return web.Response(text="ok")

    def delivered(self) -> list[Seen]:
        """The requests answered 2xx."""
        return [seen for seen in self.seen if seen.ok]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Receiver], Any]]:
    servers: list[TestServer] = []
    receivers: list[Receiver] = []

    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        # A gateway still delivering keeps its connections busy: do not wait for them at the end.
        await server.start_server(shutdown_timeout=0.5)
        servers.append(server)
        receivers.append(receiver)
        return str(server.make_url("/hook"))

    yield start
    for receiver in receivers:
        receiver.release.set()
    for server in servers:
        await server.close()


@pytest.fixture
def outbox_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        media_allow_private=True,
        outbox_retry_seconds=RETRY,
        outbox_retry_max_seconds=0.4,
        outbox_timeout_seconds=60.0,
    )


@pytest.fixture
async def gw(serve: Any, aiohttp_client: ClientFactory, outbox_settings: Settings) -> Client:
    """The gateway, set up after the receivers' fixture so that it stops before them."""
    client = await aiohttp_client(create_app(outbox_settings))
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW", "CALL_BACK", "WON"]}, headers=ADMIN)
    assert resp.status == 200
    return client


async def subscribe(client: Client, url: str, events: list[str] | None = None) -> str:
    body = {"url": url, "secret": SECRET, "events": events or ["item.stage_changed"]}
    resp = await client.post("/v1/subscriptions", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def put_item(client: Client, item_id: str, stage: str) -> None:
    card = {"pipeline": "sales", "stage": stage, "contacts": [{"name": "Ana", "phones": []}]}
    resp = await client.put(f"/v1/items/{item_id}", json=card, headers=API)
    assert resp.status in (200, 201), await resp.text()


async def until(check: Callable[[], bool]) -> None:
    async def holds() -> bool:
        return check()

    await eventually(holds, timeout=20.0)


async def test_a_stage_change_reaches_the_crm_signed(gw: Client, serve: Any) -> None:
    crm = Receiver()
    await subscribe(gw, await serve(crm))
    await put_item(gw, "D1", "NEW")
    await put_item(gw, "D1", "CALL_BACK")
    await until(lambda: len(crm.seen) == 1)
    seen = crm.seen[0]
    event = seen.event
    assert set(event) == {"id", "type", "created_at", "data"}
    assert event["id"].startswith("evt_") and event["type"] == "item.stage_changed"
    data = event["data"]
    assert data.pop("entry_id").startswith("ent_")  # names the entry its stage rules run for
    assert data == {"item_id": "D1", "from": "NEW", "to": "CALL_BACK", "trigger_id": None, "act_as": "crm"}
    assert verify(SECRET, seen.signature, seen.body)
    assert not verify("another-secret-0123456789", seen.signature, seen.body)
    timestamp = int(dict(p.split("=", 1) for p in seen.signature.split(","))["t"])
    assert abs(timestamp - time.time()) < 60


async def test_a_failing_endpoint_gets_the_same_bytes_again_later_and_later(gw: Client, serve: Any) -> None:
    crm = Receiver(fail=4)
    sub = await subscribe(gw, await serve(crm))
    await put_item(gw, "D1", "NEW")
    await put_item(gw, "D1", "CALL_BACK")
    await until(lambda: len(crm.seen) == 5)
    assert len({seen.body for seen in crm.seen}) == 1  # same id, same bytes
    assert all(verify(SECRET, seen.signature, seen.body) for seen in crm.seen)
    gaps = [later.at - earlier.at for earlier, later in zip(crm.seen, crm.seen[1:], strict=False)]
    # Each wait is at least half its scheduled delay (the jitter's floor), and that doubles.
    for attempt, gap in enumerate(gaps, start=1):
        assert gap >= RETRY * 2 ** (attempt - 1) / 2
    assert await metric(gw, "callgate_outbox_deliveries_total", subscription=sub, outcome="failed") == 4

    async def counted() -> bool:
        return await metric(gw, "callgate_outbox_deliveries_total", subscription=sub, outcome="delivered") == 1

    await eventually(counted)


async def test_an_items_events_arrive_in_order_after_an_outage(gw: Client, serve: Any) -> None:
    crm = Receiver(fail=3)
    await subscribe(gw, await serve(crm), ["item.created", "item.stage_changed"])
    for stage in ["NEW", "CALL_BACK", "WON", "NEW"]:
        await put_item(gw, "D1", stage)
    await until(lambda: len(crm.delivered()) == 4)
    delivered = [seen.event for seen in crm.delivered()]
    assert [e["type"] for e in delivered] == ["item.created", *["item.stage_changed"] * 3]
    assert [e["data"].get("to") for e in delivered] == [None, "CALL_BACK", "WON", "NEW"]
    # Nothing of the item went out before its first event was taken.
    assert {seen.event["id"] for seen in crm.seen[:4]} == {delivered[0]["id"]}


async def test_a_hung_endpoint_does_not_hold_up_another(gw: Client, serve: Any) -> None:
    hung, healthy = Receiver(hang=True), Receiver()
    await subscribe(gw, await serve(hung))
    await subscribe(gw, await serve(healthy))
    await put_item(gw, "D1", "NEW")
    for index in range(5):
        await put_item(gw, f"D{index + 2}", "NEW")
        await put_item(gw, f"D{index + 2}", "WON")
    await put_item(gw, "D1", "WON")
    await until(lambda: len(healthy.seen) == 6)
    # The hung endpoint holds as many requests as it may (its concurrency), none answered.
    assert hung.hanging >= 1 and not hung.release.is_set()
    assert {seen.event["data"]["item_id"] for seen in healthy.seen} == {f"D{i}" for i in range(1, 7)}


@pytest.mark.parametrize("replay", [None, {}], ids=["empty body", "empty object"])
async def test_an_event_given_up_is_listed_and_replayed(
    serve: Any, aiohttp_client: ClientFactory, outbox_settings: Settings, replay: dict[str, Any] | None
) -> None:
    from dataclasses import replace

    gw = await aiohttp_client(create_app(replace(outbox_settings, outbox_window_seconds=0.3)))
    await gw.put("/v1/pipelines/sales", json={"stages": ["NEW", "WON"]}, headers=ADMIN)
    crm = Receiver(down=True)
    sub = await subscribe(gw, await serve(crm))
    await put_item(gw, "D1", "NEW")
    await put_item(gw, "D1", "WON")

    async def dead() -> list[dict[str, Any]]:
        resp = await gw.get(f"/v1/subscriptions/{sub}/dead-letters", headers=ADMIN)
        assert resp.status == 200, await resp.text()
        letters: list[dict[str, Any]] = (await resp.json())["dead_letters"]
        return letters

    async def given_up() -> bool:
        return len(await dead()) == 1

    await eventually(given_up)
    letter = (await dead())[0]
    assert letter["type"] == "item.stage_changed" and letter["item_id"] == "D1"
    assert letter["attempts"] >= 1 and "HTTP 503" in letter["error"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", letter["dead_at"]), letter  # ISO-8601, UTC
    assert (await (await gw.get(f"/v1/subscriptions/{sub}", headers=ADMIN)).json())["dead"] == 1
    failed_id = crm.seen[0].event["id"]
    assert letter["event_id"] == failed_id

    crm.down = False
    resp = await gw.post(f"/v1/subscriptions/{sub}/replay", json=replay, headers=ADMIN)  # all of them
    assert resp.status == 202 and (await resp.json()) == {"replayed": 1}
    attempts = len(crm.seen)
    await until(lambda: len(crm.seen) == attempts + 1)
    assert crm.seen[-1].body == crm.seen[0].body
    assert await dead() == []


async def test_events_written_without_workers_are_delivered_after_a_restart(
    serve: Any, aiohttp_client: ClientFactory, outbox_settings: Settings
) -> None:
    crm = Receiver(down=True)
    url = await serve(crm)
    # A gateway whose workers never run: the events wait in Redis with the items' changes.
    api_only = await aiohttp_client(create_app(outbox_settings, workers=False))
    await api_only.put("/v1/pipelines/sales", json={"stages": ["NEW", "WON"]}, headers=ADMIN)
    await subscribe(api_only, url)
    await put_item(api_only, "D1", "NEW")
    await put_item(api_only, "D1", "WON")
    await api_only.close()
    # The first gateway with workers fails to deliver, and stops.
    first = await aiohttp_client(create_app(outbox_settings))
    await until(lambda: len(crm.seen) >= 1)
    await first.close()
    # The next one delivers the same event.
    crm.down = False
    second = await aiohttp_client(create_app(outbox_settings))
    await until(lambda: len(crm.delivered()) == 1)
    assert crm.delivered()[0].body == crm.seen[0].body
    assert crm.delivered()[0].event["data"]["to"] == "WON"
    await second.close()


async def test_without_subscriptions_nothing_is_queued(gw: Client, redis: Redis, prefix: str) -> None:
    await put_item(gw, "D1", "NEW")
    await put_item(gw, "D1", "WON")
    keys = Keys(prefix)
    for partition in range(keys.partitions):
        stream = keys.stream(OUTBOX_STREAM, partition)
        added = (await redis.xinfo_stream(stream))["last-generated-id"] if await redis.exists(stream) else "0-0"
        assert added == "0-0"


async def test_subscriptions_are_listed_without_secrets_and_deleted_with_their_queue(
    gw: Client, serve: Any, redis: Redis, prefix: str
) -> None:
    crm = Receiver(down=True)
    sub = await subscribe(gw, await serve(crm), ["job.updated", "item.stage_changed"])
    listed = (await (await gw.get("/v1/subscriptions", headers=ADMIN)).json())["subscriptions"]
    assert [s["id"] for s in listed] == [sub]
    assert "secret" not in listed[0] and listed[0]["events"] == ["item.stage_changed", "job.updated"]
    await put_item(gw, "D1", "NEW")
    await put_item(gw, "D1", "WON")
    await until(lambda: len(crm.seen) >= 1)
    assert (await (await gw.get(f"/v1/subscriptions/{sub}", headers=ADMIN)).json())["items_waiting"] == 1
    assert (await gw.delete(f"/v1/subscriptions/{sub}", headers=ADMIN)).status == 204
    assert (await gw.get(f"/v1/subscriptions/{sub}", headers=ADMIN)).status == 404
    assert [key async for key in redis.scan_iter(match=f"{prefix}*outbox:{sub}:*")] == []


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"url": "http://127.0.0.1:9/hook", "events": ["job.updated"]}, "url", "url_refused"),
        ({"url": "http://169.254.169.254/latest", "events": ["job.updated"]}, "url", "url_refused"),
        # Port 0 reaches nothing: its events would be retried for ever.
        ({"url": "https://93.184.216.34:0/hook", "events": ["job.updated"]}, "url", "url_refused"),
        ({"url": "ftp://crm.example.com/x", "events": ["job.updated"]}, "url", "invalid"),
        ({"url": "https://crm.example.com/x", "events": ["job.updpated"]}, "events.0", "invalid"),
        ({"url": "https://crm.example.com/x", "events": []}, "events", "invalid"),
    ],
)
async def test_unusable_subscriptions_are_422(client: Client, body: dict[str, Any], field: str, code: str) -> None:
    resp = await client.post("/v1/subscriptions", json={"secret": SECRET, **body}, headers=ADMIN)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["field"] == field and error["code"] == code


async def test_subscriptions_need_the_admin_token(client: Client) -> None:
    body = {"url": "https://crm.example.com/x", "secret": SECRET, "events": ["job.updated"]}
    assert (await client.post("/v1/subscriptions", json=body, headers=API)).status == 403


async def test_an_outage_is_told_once_for_the_process_however_often_a_delivery_loop_meets_it(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscription's delivery loop retries through an outage; the WARNING is the process's
    one for the outage (gateway.redis), not one per retry and subscription."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    deliverer = Deliverer(Store.open(connect(nowhere), settings, Snapshots()), settings, Metrics())
    deliverer._wakes["sub_1"] = asyncio.Event()  # as run() does for a subscription it serves
    tries = 0
    deliver = deliverer._deliver

    async def counted(sub_id: str, session: aiohttp.ClientSession) -> None:
        nonlocal tries
        tries += 1
        await deliver(sub_id, session)

    deliverer._deliver = counted  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as session:
        loop = asyncio.create_task(deliverer._serve("sub_1", session))
        try:
            await until(lambda: tries >= 3)
        finally:
            loop.cancel()
    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert [name for name, _ in warnings] == ["gateway.redis"], warnings
    assert warnings[0][1].startswith("redis unavailable")
