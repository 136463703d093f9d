"""The error envelope for every failure, and the operations endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel, RootModel

from config.settings import Settings
from gateway.app import StartupError, create_app
from gateway.appkeys import ENDPOINTS
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import eventually, ready


def envelope(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# HTTP errors from aiohttp itself


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/items/a/b", "/media/x.mp3.bak"])
async def test_404_is_json(client: Client, path: str) -> None:
    resp = await client.get(path, headers=API)
    assert resp.status == 404
    assert resp.content_type == "application/json"
    envelope(await resp.json(), "not_found")


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/providers"), ("PATCH", "/v1/items/D1"), ("POST", "/healthz")]
)
async def test_405_is_json(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path, headers=ADMIN)
    assert resp.status == 405
    assert resp.content_type == "application/json"
    envelope(await resp.json(), "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


async def test_413_when_the_body_is_too_large(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    small = {"stages": ["NEW"]}
    assert (await client.put("/v1/pipelines/sales", json=small, headers=ADMIN)).status == 200

    large = {"stages": ["S" + str(i) for i in range(400)]}  # about 2.4 KB
    resp = await client.put("/v1/pipelines/big", json=large, headers=ADMIN)
    assert resp.status == 413
    assert resp.content_type == "application/json"
    envelope(await resp.json(), "body_too_large")
    resp = await client.get("/v1/pipelines", headers=ADMIN)
    assert [p["id"] for p in (await resp.json())["pipelines"]] == ["sales"]

    card = {"pipeline": "sales", "stage": "NEW", "fields": {"note": "x" * 1500}}
    resp = await client.put("/v1/items/D1", json=card, headers=API)
    assert resp.status == 413
    envelope(await resp.json(), "body_too_large")


async def _head_and_json(reader: asyncio.StreamReader) -> tuple[str, str, Any]:
    """One response off a raw connection: its status line, headers and JSON body."""
    status_line, _, headers = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().partition("\r\n")
    length = int(re.search(r"(?im)^content-length: *(\d+)", headers)[1])  # type: ignore[index]
    return status_line, headers, json.loads(await asyncio.wait_for(reader.readexactly(length), 10))


def _put_head(host: str, length: int, *extra: str, request: str = "PUT /v1/pipelines/big") -> bytes:
    lines = [f"{request} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", *extra]
    return ("\r\n".join([*lines, f"Content-Length: {length}"]) + "\r\n\r\n").encode()


@pytest.mark.parametrize("request_line", ["PUT /v1/pipelines/big", "POST /webhooks/twilio/sms"])
async def test_413_at_once_for_a_body_declared_too_large(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], request_line: str
) -> None:
    """A client declaring a body over the limit has its answer before sending any of it, a
    provider's webhook as well as an API call."""
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = _put_head(host, 99999999999, f"Authorization: {ADMIN['Authorization']}", request=request_line)
        writer.write(head + b"{}")
        status_line, headers, body = await _head_and_json(reader)
    finally:
        writer.close()
    assert status_line == "HTTP/1.1 413 Request Entity Too Large"
    assert re.search(r"(?im)^connection: close", headers), headers
    envelope(body, "body_too_large")
    assert "99999999999 bytes" in body["error"]["message"]
    feed = await client.get("/v1/events", params={"kind": "webhook.refused"}, headers=ADMIN)
    refused = [(e["reason"], e["path"]) for e in (await feed.json())["events"]]
    webhook = request_line.startswith("POST /webhooks")
    assert refused == ([("body_too_large", request_line.split()[1])] if webhook else [])  # a provider's only


@pytest.mark.parametrize(
    ("request_line", "authorization", "status_line", "code"),
    [
        ("PUT /v1/pipelines/big", ADMIN["Authorization"], "HTTP/1.1 413 Request Entity Too Large", "body_too_large"),
        ("PUT /v1/pipelines/big", "Bearer wrong", "HTTP/1.1 401 Unauthorized", "unauthorized"),
        ("POST /webhooks/voximplant/vox", "", "HTTP/1.1 413 Request Entity Too Large", "body_too_large"),
    ],
)
async def test_a_client_expecting_100_continue_is_not_asked_for_a_body_declared_too_large(
    aiohttp_client: ClientFactory,
    make_settings: Callable[..., Settings],
    request_line: str,
    authorization: str,
    status_line: str,
    code: str,
) -> None:
    """The final answer comes instead of ``100 Continue``, and the connection closes: the
    body it holds back is never read."""
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = _put_head(host, 4096, f"Authorization: {authorization}", "Expect: 100-continue", request=request_line)
        writer.write(head)
        first, headers, body = await _head_and_json(reader)
    finally:
        writer.close()
    assert first == status_line
    assert re.search(r"(?im)^connection: close", headers), headers
    envelope(body, code)


async def test_a_client_expecting_100_continue_is_asked_for_a_body_within_the_limit(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    host, port = client.server.host, client.server.port
    body = b'{"stages": ["NEW"]}'
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_put_head(host, len(body), f"Authorization: {ADMIN['Authorization']}", "Expect: 100-continue"))
        go_on = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(body)
        status_line, _, created = await _head_and_json(reader)
    finally:
        writer.close()
    assert go_on == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status_line == "HTTP/1.1 200 OK"
    assert created["stages"] == ["NEW"]


async def test_unauthenticated_large_body_is_401(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1024)))
    resp = await client.put("/v1/pipelines/big", data=b"x" * 4096)
    assert resp.status == 401
    envelope(await resp.json(), "unauthorized")


async def test_unexpected_exception_is_a_json_500(
    aiohttp_client: ClientFactory, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals: /srv/callgate/db.py line 42")

    app = create_app(settings)
    app.router.add_get("/test/explode", explode)
    client = await aiohttp_client(app)

    with caplog.at_level(logging.ERROR):
        resp = await client.get("/test/explode")
    assert resp.status == 500
    assert resp.content_type == "application/json"
    text = await resp.text()
    assert "Traceback" not in text and "secret internals" not in text and "RuntimeError" not in text
    error = envelope(await resp.json(), "internal")
    request_id = resp.headers["X-Request-Id"]
    assert request_id and request_id in error["message"]

    # The operator finds the traceback in the log under the same request id.
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "secret internals" in str(logged[0].exc_info[1])

    # The client's own request id is used when it sends one.
    resp = await client.get("/test/explode", headers={"X-Request-Id": "crm-123"})
    assert resp.headers["X-Request-Id"] == "crm-123"
    assert "crm-123" in (await resp.json())["error"]["message"]


# Operations


async def test_healthz_and_readyz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["status"] == "ready"


async def test_metrics(client: Client) -> None:
    await client.get("/v1/items/D1", headers=API)
    await client.get("/v1/items/D2", headers=API)
    await client.get("/no/such/thing")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "callgate_http_requests_total" in text
    assert 'callgate_http_requests_total{method="GET",route="/v1/items/{id}",status="404"} 2.0' in text
    assert 'route="/v1/items/D1"' not in text  # one series per route, not per id
    assert "callgate_http_request_duration_seconds_bucket" in text


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


async def test_openapi_lists_every_route(client: Client) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]

    served = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        assert resource is not None
        served.add((route.method.lower(), resource.canonical))
    documented = {(method, path) for path, operations in paths.items() for method in operations}
    assert served - documented == set(), "routes missing from /openapi.json"
    assert documented - served == set(), "/openapi.json lists routes the server does not have"

    for contract in [
        ("put", "/v1/providers/{name}"),
        ("get", "/v1/providers"),
        ("put", "/v1/lines/{number}"),
        ("get", "/v1/lines"),
        ("delete", "/v1/lines/{number}"),
        ("put", "/v1/pipelines/{id}"),
        ("put", "/v1/items/{id}"),
        ("get", "/v1/items/{id}"),
        ("get", "/v1/items"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ]:
        assert contract in documented


async def test_openapi_request_bodies_come_from_the_models(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    endpoints = client.app[ENDPOINTS]
    assert endpoints
    for endpoint in endpoints:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        if endpoint.body is None:
            assert "requestBody" not in operation, endpoint.path
            continue
        schema = resolve(operation["requestBody"]["content"]["application/json"]["schema"], document)
        model = isinstance(endpoint.body, type) and issubclass(endpoint.body, BaseModel)
        if model and not issubclass(endpoint.body, RootModel):
            fields = {info.alias or name for name, info in endpoint.body.model_fields.items()}
            for shape in schema.get("oneOf", [schema]):  # a union: each branch has every field
                assert set(shape["properties"]) == fields, endpoint.path
        else:
            assert schema, endpoint.path

    for method, path in [
        ("put", "/v1/providers/{name}"),
        ("put", "/v1/lines/{number}"),
        ("put", "/v1/pipelines/{id}"),
        ("put", "/v1/items/{id}"),
    ]:
        assert "requestBody" in document["paths"][path][method], path

    items = resolve(
        document["paths"]["/v1/items/{id}"]["put"]["requestBody"]["content"]["application/json"]["schema"], document
    )
    assert {"pipeline", "stage", "contacts", "company", "fields", "responsible"} <= set(items["properties"])
    assert "PhoneType" in document["components"]["schemas"]  # nested models are published too
    lookup = document["paths"]["/v1/items"]["get"]
    assert {"name": "phone", "in": "query"}.items() <= lookup["parameters"][0].items()


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


async def test_openapi_is_self_consistent(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    refs = refs_in(document)
    assert refs
    dangling = sorted({ref for ref in refs if ref.removeprefix("#/components/schemas/") not in schemas})
    assert dangling == []

    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))

    for path, operations in document["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, path


async def test_openapi_marks_secured_operations(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert "security" in document["paths"]["/v1/items/{id}"]["get"]
    assert "security" in document["paths"]["/v1/providers"]["get"]
    assert "security" not in document["paths"]["/healthz"]["get"]


# Redis going away


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProxy:
    """A TCP proxy in front of the test Redis that can refuse or black-hole connections."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.port = free_port()
        self.mode = "forward"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def refuse(self) -> None:
        """Stop listening and cut every connection: new connects are refused."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._cut()

    def hang(self) -> None:
        """Accept connections but never answer, and silence the open ones."""
        self.mode = "hang"

    def forward(self) -> None:
        self.mode = "forward"
        self._cut()  # clients reconnect and get fresh, forwarded connections

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        self._cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode == "hang":
            return
        try:
            if self.target.scheme == "unix":  # the embedded Redis of conftest
                up_reader, up_writer = await asyncio.open_unix_connection(self.target.path)
            else:
                up_reader, up_writer = await asyncio.open_connection(self.target.hostname, self.target.port or 6379)
        except OSError:
            writer.close()
            return
        if self._closed:  # closed while connecting upstream: nothing would close this one
            up_writer.close()
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await source.read(65536):
                if self.mode == "hang":
                    continue  # swallow: the peer waits for an answer that never comes
                sink.write(chunk)
                await sink.drain()
        sink.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[RedisProxy]:
    proxy = RedisProxy(redis_url)
    await proxy.listen()
    yield proxy
    await proxy.close()


async def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    resp = await call
    return time.monotonic() - started, resp


async def assert_unavailable_within_2s(client: Client) -> None:
    seconds, resp = await timed(client.get("/readyz"))
    assert resp.status == 503
    envelope(await resp.json(), "unavailable")
    assert seconds < 2.0

    for call in (
        client.get("/v1/items/D1", headers=API),
        client.put("/v1/pipelines/sales", json={"stages": ["NEW"]}, headers=ADMIN),
        client.get("/v1/items?phone=%2B34600111222", headers=API),
    ):
        seconds, resp = await timed(call)
        assert resp.status == 503
        envelope(await resp.json(), "unavailable")
        assert seconds < 2.0

    resp = await client.get("/healthz")  # the process itself is fine
    assert resp.status == 200


@pytest.fixture
def proxied(proxy: RedisProxy, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0")


async def test_redis_refusing_connections_is_503(
    aiohttp_client: ClientFactory, proxy: RedisProxy, proxied: Settings
) -> None:
    client = await aiohttp_client(create_app(proxied))
    assert (await client.get("/readyz")).status == 200
    await proxy.refuse()
    await assert_unavailable_within_2s(client)

    await proxy.listen()  # Redis is back: the gateway recovers without a restart
    await eventually(lambda: ready(client))  # once a consumer is past its backoff
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW"]}, headers=ADMIN)
    assert resp.status == 200


async def test_redis_not_answering_is_503(aiohttp_client: ClientFactory, proxy: RedisProxy, proxied: Settings) -> None:
    client = await aiohttp_client(create_app(proxied))
    assert (await client.get("/readyz")).status == 200
    proxy.hang()
    await assert_unavailable_within_2s(client)

    proxy.forward()
    await eventually(lambda: ready(client))


async def test_the_app_refuses_to_start_without_redis(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    server = TestServer(create_app(settings))
    try:
        with pytest.raises(StartupError, match="CALLGATE_REDIS_URL"):
            await server.start_server()
    finally:
        await server.close()


async def test_openapi_types_every_parameter_and_status(client: Client) -> None:
    """What schemathesis relies on (tests/test_openapi_contract.py), asserted directly."""
    document = await (await client.get("/openapi.json")).json()
    put_item = document["paths"]["/v1/items/{id}"]["put"]
    assert {"200", "201"} <= set(put_item["responses"])  # a PUT that creates answers 201
    for path in ["/v1/providers/{name}", "/v1/pipelines/{id}", "/v1/items/{id}", "/v1/triggers/{id}"]:
        for operation in document["paths"][path].values():
            (param,) = [p for p in operation["parameters"] if p["in"] == "path"]
            assert param["schema"]["pattern"].startswith("^"), (path, param)
    line = document["paths"]["/v1/lines/{number}"]["get"]["parameters"][0]
    assert line["schema"]["format"] == "e164"
    limit = next(p for p in document["paths"]["/v1/items"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    provider = document["components"]["schemas"]["Provider"]
    twilio = next(b for b in provider["oneOf"] if b["properties"]["kind"] == {"const": "twilio"})
    assert twilio["properties"]["credentials"]["required"] == ["account_sid", "auth_token"]
