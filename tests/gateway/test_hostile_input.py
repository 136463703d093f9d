"""No bad input anywhere gets a 500: every registered endpoint, with hostile bodies and paths."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.appkeys import ENDPOINTS
from tests.conftest import ADMIN, Client
from tests.support import configure

BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"{not json",
    b"\xff\xfe\x00",
    b'{"stages": "NEW"}',
    b'{"kind": {"nested": [1, 2, {"deep": null}]}, "credentials": 7}',
    b'{"pipeline": "' + b"x" * 5000 + b'", "stage": 1e309}',
    b'{"phone": "+999999999999999999999", "line": "+", "name": []}',
    b"[" * 5000 + b"]" * 5000,
    b'{"event": "call.missed", "seconds": -1, "keywords": [null], "line": 12}',
]

PATH_VALUES = ["%2B", "..%2F..", "%00", "+1", "a" * 300, "%F0%9F%98%80", "-"]


def _paths(template: str) -> list[str]:
    if "{" not in template:
        return [template]
    return [re.sub(r"{\w+}", value, template) for value in PATH_VALUES]


async def test_every_endpoint_refuses_hostile_input_without_500(client: Client) -> None:
    await configure(client)
    endpoints = client.app[ENDPOINTS]
    assert len(endpoints) > 15
    checked = 0
    for endpoint in endpoints:
        for path in _paths(endpoint.path):
            for body in BODIES if endpoint.method in {"POST", "PUT"} else [b""]:
                for content_type in ["application/json", "application/x-www-form-urlencoded"]:
                    resp = await client.request(
                        endpoint.method, path, data=body, headers={**ADMIN, "Content-Type": content_type}
                    )
                    assert resp.status < 500, (endpoint.method, path, body[:40], await resp.text())
                    if resp.status >= 400:
                        error = (await resp.json())["error"]
                        assert error["code"] and error["message"]
                    checked += 1
    assert checked > 300


async def test_a_body_that_does_not_decompress_is_a_400_in_the_envelope(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await configure(client)
    vox = {"kind": "voximplant", "credentials": {"webhook_secret": "s"}}
    assert (await client.put("/v1/providers/vox", json=vox, headers=ADMIN)).status == 200
    for method, path, code in [
        ("POST", "/v1/callback-requests", "malformed_json"),
        ("PUT", "/v1/items/deal-1", "malformed_json"),
        ("POST", "/webhooks/twilio/sms", "malformed_webhook"),
        ("POST", "/webhooks/voximplant/vox", "malformed_webhook"),
    ]:
        for encoding in ["gzip", "deflate"]:
            for content_type in ["application/json", "application/x-www-form-urlencoded"]:
                headers = {**ADMIN, "Content-Type": content_type, "Content-Encoding": encoding}
                resp = await client.request(method, path, data=b"not compressed at all", headers=headers)
                assert resp.status == 400, (path, encoding, await resp.text())
                assert (await resp.json())["error"]["code"] == code
    # The client's fault: no traceback in the log.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
