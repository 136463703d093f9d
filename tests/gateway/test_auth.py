"""Bearer tokens and their two scopes; the error envelope; the request id."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, API, API_TOKEN, Client
from tests.support import raw_request

ADMIN_CALLS = [
    ("GET", "/v1/providers"),
    ("PUT", "/v1/providers/sandbox"),
    ("DELETE", "/v1/providers/sandbox"),
    ("GET", "/v1/lines"),
    ("PUT", "/v1/lines/%2B34600111222"),
    ("DELETE", "/v1/lines/%2B34600111222"),
    ("GET", "/v1/pipelines"),
    ("PUT", "/v1/pipelines/sales"),
]
CRM_CALLS = [
    ("GET", "/v1/items/D1"),
    ("PUT", "/v1/items/D1"),
    ("GET", "/v1/items?phone=%2B34600111222"),
]


def assert_envelope(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "field"}


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS + CRM_CALLS)
async def test_no_token_is_401(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path, json={})
    assert resp.status == 401
    assert_envelope(await resp.json(), "unauthorized")


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {API_TOKEN[:-1]}",
        "Bearer ",
        "Bearer",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        "Bearer wrong",
    ],
)
async def test_bad_token_is_401(client: Client, header: str) -> None:
    resp = await client.get("/v1/items/D1", headers={"Authorization": header})
    assert resp.status == 401
    assert_envelope(await resp.json(), "unauthorized")


async def test_scheme_is_case_insensitive(client: Client) -> None:
    resp = await client.get("/v1/items/D1", headers={"Authorization": f"bearer {API_TOKEN}"})
    assert resp.status == 404  # authorised: the item just does not exist


async def test_a_token_that_is_not_utf8_is_401_not_500(client: Client) -> None:
    answer = await raw_request(
        client,
        b"GET /v1/lines HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\xfd\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b'"unauthorized"' in answer


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_api_token_on_admin_endpoint_is_403(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path, json={"stages": ["NEW"]}, headers=API)
    assert resp.status == 403
    assert_envelope(await resp.json(), "wrong_scope")


async def test_api_token_cannot_change_anything(client: Client) -> None:
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW"]}, headers=API)
    assert resp.status == 403
    resp = await client.get("/v1/pipelines", headers=ADMIN)
    assert (await resp.json())["pipelines"] == []


async def test_admin_token_works_on_crm_endpoints(client: Client) -> None:
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW"]}, headers=ADMIN)
    assert resp.status == 200
    resp = await client.put("/v1/items/D1", json={"pipeline": "sales", "stage": "NEW"}, headers=ADMIN)
    assert resp.status == 201
    resp = await client.get("/v1/items/D1", headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["stage"] == "NEW"
    resp = await client.get("/v1/items?phone=%2B34600111222", headers=ADMIN)
    assert resp.status == 200


async def test_api_token_works_on_crm_endpoints(client: Client) -> None:
    await client.put("/v1/pipelines/sales", json={"stages": ["NEW"]}, headers=ADMIN)
    resp = await client.put("/v1/items/D1", json={"pipeline": "sales", "stage": "NEW"}, headers=API)
    assert resp.status == 201


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_operations_need_no_token(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200


async def test_error_envelope_with_field(client: Client) -> None:
    resp = await client.put("/v1/pipelines/sales", json={"stages": "NEW"}, headers=ADMIN)
    assert resp.status == 422
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert_envelope(body, body["error"]["code"])
    assert body["error"]["field"] == "stages"


async def test_error_envelope_without_field(client: Client) -> None:
    resp = await client.get("/v1/lines")
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert_envelope(body, "unauthorized")
    assert "field" not in body["error"]


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/healthz", {}), ("/v1/lines", {}), ("/v1/lines", API), ("/no/such/path", {}), ("/v1/items/D1", API)],
)
async def test_request_id_is_echoed(client: Client, path: str, headers: dict[str, str]) -> None:
    resp = await client.get(path, headers={**headers, "X-Request-Id": "req-42.abc"})
    assert resp.headers["X-Request-Id"] == "req-42.abc"


async def test_request_id_is_made_when_missing_or_unusable(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    made = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(made) == 2 and all(len(rid) >= 16 for rid in made)

    too_long = await client.get("/healthz", headers={"X-Request-Id": "x" * 500})
    assert too_long.headers["X-Request-Id"] not in {"", "x" * 500}
    assert len(too_long.headers["X-Request-Id"]) <= 64

    # Bytes that are not text: the id the gateway logs and echoes must still be a usable token.
    for sent in (b"\xff\xfe", b"a\xffb"):
        answer = await raw_request(
            client, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Request-Id: " + sent + b"\r\n\r\n"
        )
        head = answer.split(b"\r\n\r\n")[0].decode("latin-1")
        (request_id,) = [
            line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("x-request-id:")
        ]
        assert re.fullmatch(r"[\x21-\x7e]{16,64}", request_id), request_id
