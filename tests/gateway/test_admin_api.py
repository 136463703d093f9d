"""Admin API: providers, lines and pipelines, and every way their input can be wrong."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, Client

LINE = "/v1/lines/%2B34910000001"
SECRET = "twilio-auth-token-do-not-echo-7f3a9c"
SID = "AC" + "0123456789abcdef" * 2
TWILIO = {"kind": "twilio", "credentials": {"account_sid": SID, "auth_token": SECRET}, "calls_per_second": 2}


async def put(client: Client, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.put(path, json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def expect_422(client: Client, path: str, body: Any, field: str) -> dict[str, Any]:
    status, answer = await put(client, path, body)
    assert status == 422, answer
    assert answer["error"]["field"] == field, answer
    assert answer["error"]["message"]
    error: dict[str, Any] = answer["error"]
    return error


@pytest.fixture
async def sandbox(client: Client) -> None:
    status, _ = await put(client, "/v1/providers/sandbox", {"kind": "sandbox"})
    assert status == 200
    status, _ = await put(client, "/v1/pipelines/sales", {"stages": ["NEW", "CALL_BACK", "WON"]})
    assert status == 200


# Providers


async def test_provider_put_get_delete(client: Client) -> None:
    status, body = await put(client, "/v1/providers/tw", TWILIO)
    assert status == 200
    assert body["name"] == "tw" and body["kind"] == "twilio" and body["calls_per_second"] == 2

    resp = await client.get("/v1/providers", headers=ADMIN)
    listed = (await resp.json())["providers"]
    assert [p["name"] for p in listed] == ["tw"]
    assert set(listed[0]["credentials"]) == {"account_sid", "auth_token"}

    resp = await client.delete("/v1/providers/tw", headers=ADMIN)
    assert resp.status == 204
    resp = await client.get("/v1/providers", headers=ADMIN)
    assert (await resp.json())["providers"] == []
    resp = await client.delete("/v1/providers/tw", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_provider_credentials_are_never_echoed(client: Client) -> None:
    resp = await client.put("/v1/providers/tw", json=TWILIO, headers=ADMIN)
    assert resp.status == 200
    assert SECRET not in await resp.text()
    assert SID not in await resp.text()

    resp = await client.get("/v1/providers", headers=ADMIN)
    text = await resp.text()
    assert resp.status == 200 and '"tw"' in text
    assert SECRET not in text
    assert SID not in text


async def test_provider_replace(client: Client) -> None:
    await put(client, "/v1/providers/tw", TWILIO)
    status, body = await put(client, "/v1/providers/tw", {**TWILIO, "sms_per_second": 5})
    assert status == 200 and body["sms_per_second"] == 5
    resp = await client.get("/v1/providers", headers=ADMIN)
    assert [p["sms_per_second"] for p in (await resp.json())["providers"]] == [5]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "twilio", "credentials": {"account_sid": "AC1"}}, "credentials"),
        ({"kind": "twilio", "credentials": {"account_sid": "AC1", "auth_token": ""}}, "credentials"),
        ({"kind": "twilio"}, "credentials"),
        ({"kind": "voximplant", "credentials": {"account_id": "1"}}, "credentials"),
        ({"kind": "nexmo"}, "kind"),
        ({"credentials": {}}, "kind"),
        ({"kind": "sandbox", "credentials": {"token": 5}}, "credentials.token"),
        ({"kind": "sandbox", "credentials": ["a"]}, "credentials"),
        ({"kind": "sandbox", "calls_per_second": 0}, "calls_per_second"),
        ({"kind": "sandbox", "sms_per_second": -1}, "sms_per_second"),
        ({"kind": "sandbox", "sms_per_second": "fast"}, "sms_per_second"),
        ({"kind": "sandbox", "region": "eu"}, "region"),
    ],
)
async def test_provider_validation(client: Client, body: Any, field: str) -> None:
    await expect_422(client, "/v1/providers/p1", body, field)
    resp = await client.get("/v1/providers", headers=ADMIN)
    assert (await resp.json())["providers"] == []


async def test_missing_credential_is_named(client: Client) -> None:
    error = await expect_422(
        client, "/v1/providers/tw", {"kind": "twilio", "credentials": {"account_sid": "A"}}, "credentials"
    )
    assert "auth_token" in error["message"]


@pytest.mark.parametrize("name", ["a%20b", "a$b", "x" * 65])
async def test_provider_bad_name(client: Client, name: str) -> None:
    await expect_422(client, f"/v1/providers/{name}", {"kind": "sandbox"}, "name")


async def test_provider_in_use_by_a_line_is_409(client: Client, sandbox: None) -> None:
    status, _ = await put(client, LINE, {"provider": "sandbox"})
    assert status == 200
    resp = await client.delete("/v1/providers/sandbox", headers=ADMIN)
    assert resp.status == 409
    body = await resp.json()
    assert body["error"]["code"] == "in_use"
    assert "+34910000001" in body["error"]["message"]

    assert (await client.delete(LINE, headers=ADMIN)).status == 204
    assert (await client.delete("/v1/providers/sandbox", headers=ADMIN)).status == 204


# Lines


async def test_line_put_get_delete(client: Client, sandbox: None) -> None:
    line = {
        "provider": "sandbox",
        "label": "Madrid office",
        "forward_to": ["+34 600 111 222", "+34-600-333-444"],
        "lead": {"pipeline": "sales", "stage": "NEW"},
        "hours": {"tz": "Europe/Madrid", "mon": ["09:00", "18:00"], "sat": ["10:00", "14:00"]},
        "replies": {"welcome": "Hi!", "after_hours": "We are closed."},
    }
    status, body = await put(client, "/v1/lines/%2B34%20910%2000%2000%2001", line)
    assert status == 200
    assert body["number"] == "+34910000001"
    assert body["forward_to"] == ["+34600111222", "+34600333444"]

    resp = await client.get("/v1/lines", headers=ADMIN)
    (listed,) = (await resp.json())["lines"]
    assert listed["number"] == "+34910000001"
    assert listed["lead"] == {"pipeline": "sales", "stage": "NEW"}
    assert listed["hours"]["mon"] == ["09:00", "18:00"] and listed["hours"]["tue"] is None
    assert listed["voice"] is True and listed["sms"] is True

    resp = await client.delete(LINE, headers=ADMIN)
    assert resp.status == 204
    resp = await client.delete(LINE, headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/v1/lines", headers=ADMIN)
    assert (await resp.json())["lines"] == []


async def test_line_number_encoded_or_literal_plus(client: Client, sandbox: None) -> None:
    status, body = await put(client, "/v1/lines/%2B34910000001", {"provider": "sandbox", "label": "one"})
    assert (status, body["number"]) == (200, "+34910000001")
    status, body = await put(client, "/v1/lines/+34910000001", {"provider": "sandbox", "label": "two"})
    assert (status, body["number"]) == (200, "+34910000001")

    resp = await client.get("/v1/lines", headers=ADMIN)
    lines = (await resp.json())["lines"]
    assert [(line["number"], line["label"]) for line in lines] == [("+34910000001", "two")]

    assert (await client.delete("/v1/lines/+34910000001", headers=ADMIN)).status == 204
    assert (await client.delete("/v1/lines/%2B34910000001", headers=ADMIN)).status == 404


@pytest.mark.parametrize("number", ["34910000001", "%2B34", "hello", "%2B999123456", "0034910000001"])
async def test_line_invalid_number(client: Client, sandbox: None, number: str) -> None:
    await expect_422(client, f"/v1/lines/{number}", {"provider": "sandbox"}, "number")
    resp = await client.delete(f"/v1/lines/{number}", headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "number"


async def test_line_unknown_provider(client: Client, sandbox: None) -> None:
    error = await expect_422(client, LINE, {"provider": "nobody"}, "provider")
    assert "nobody" in error["message"]
    resp = await client.get("/v1/lines", headers=ADMIN)
    assert (await resp.json())["lines"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "sandbox", "forward_to": ["600111222"]}, "forward_to.0"),
        ({"provider": "sandbox", "forward_to": ["+34600111222", "nope"]}, "forward_to.1"),
        ({"provider": "sandbox", "forward_to": "+34600111222"}, "forward_to"),
        ({"provider": "sandbox", "lead": {"pipeline": "nope", "stage": "NEW"}}, "lead.pipeline"),
        ({"provider": "sandbox", "lead": {"pipeline": "sales", "stage": "LOST"}}, "lead.stage"),
        ({"provider": "sandbox", "lead": {"pipeline": "sales"}}, "lead.stage"),
        ({"provider": "sandbox", "hours": {"tz": "Mars/Olympus"}}, "hours.tz"),
        ({"provider": "sandbox", "hours": {"tz": "../../etc/passwd"}}, "hours.tz"),
        ({"provider": "sandbox", "hours": {"tz": "Europe"}}, "hours.tz"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "mon": ["25:00", "26:00"]}}, "hours.mon.0"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "tue": ["09:00", "25:00"]}}, "hours.tue.1"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "wed": ["18:00", "09:00"]}}, "hours.wed"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "thu": ["09:00", "09:00"]}}, "hours.thu"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "fri": ["9:00", "18:00"]}}, "hours.fri.0"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "sat": ["09:00"]}}, "hours.sat"),
        ({"provider": "sandbox", "hours": {"tz": "UTC", "holiday": ["09:00", "18:00"]}}, "hours.holiday"),
        ({"provider": "sandbox", "hours": {"mon": ["09:00", "18:00"]}}, "hours.tz"),
        ({"provider": "sandbox", "replies": {"welcome": ""}}, "replies.welcome"),
        ({"provider": "sandbox", "replies": {"welcome": "x" * 201}}, "replies.welcome"),
        ({"provider": "sandbox", "voice": "sometimes"}, "voice"),
        ({"provider": "sandbox", "label": "x" * 201}, "label"),
        ({"label": "no provider"}, "provider"),
        ({"provider": "sandbox", "fwd": []}, "fwd"),
    ],
)
async def test_line_validation(client: Client, sandbox: None, body: Any, field: str) -> None:
    await expect_422(client, LINE, body, field)
    resp = await client.get("/v1/lines", headers=ADMIN)
    assert (await resp.json())["lines"] == []


# Pipelines


async def test_pipeline_put_and_list(client: Client) -> None:
    status, body = await put(client, "/v1/pipelines/sales", {"stages": ["NEW", "CALL_BACK", "WON"]})
    assert status == 200 and body == {"id": "sales", "stages": ["NEW", "CALL_BACK", "WON"]}
    await put(client, "/v1/pipelines/support", {"stages": ["OPEN", "CLOSED"]})
    await put(client, "/v1/pipelines/sales", {"stages": ["NEW", "WON"]})
    resp = await client.get("/v1/pipelines", headers=ADMIN)
    assert (await resp.json())["pipelines"] == [
        {"id": "sales", "stages": ["NEW", "WON"]},
        {"id": "support", "stages": ["OPEN", "CLOSED"]},
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stages": []}, "stages"),
        ({"stages": ["NEW", "WON", "NEW"]}, "stages"),
        ({"stages": "NEW"}, "stages"),
        ({"stages": ["NEW", ""]}, "stages.1"),
        ({"stages": ["NEW", "CALL BACK"]}, "stages.1"),
        ({"stages": ["NEW", 3]}, "stages.1"),
        ({}, "stages"),
        ({"stages": ["NEW"], "color": "red"}, "color"),
    ],
)
async def test_pipeline_validation(client: Client, body: Any, field: str) -> None:
    await expect_422(client, "/v1/pipelines/sales", body, field)
    resp = await client.get("/v1/pipelines", headers=ADMIN)
    assert (await resp.json())["pipelines"] == []


async def test_pipeline_bad_id(client: Client) -> None:
    await expect_422(client, "/v1/pipelines/sales%20team", {"stages": ["NEW"]}, "id")


# What every body endpoint does with bodies that are not what it expects.

BODY_ENDPOINTS = [
    ("/v1/providers/p1", {"kind": "sandbox"}),
    (LINE, {"provider": "sandbox"}),
    ("/v1/pipelines/sales", {"stages": ["NEW"]}),
]


@pytest.mark.parametrize(("path", "valid"), BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    ['{"kind": ', "{'single': 'quotes'}", "not json", '{"a": 1}}', "\xff\xfe"],
    ids=["truncated", "single-quotes", "text", "trailing", "binary"],
)
async def test_malformed_json_is_400(client: Client, sandbox: None, path: str, valid: Any, raw: str) -> None:
    resp = await client.put(path, data=raw.encode("latin-1"), headers={**ADMIN, "Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "malformed_json"
    assert "field" not in body["error"]


@pytest.mark.parametrize(("path", "valid"), BODY_ENDPOINTS)
async def test_unknown_field_is_422(client: Client, sandbox: None, path: str, valid: Any) -> None:
    error = await expect_422(client, path, {**valid, "surprise": True}, "surprise")
    assert error["code"] == "unknown_field"
    status, _ = await put(client, path, valid)
    assert status == 200


@pytest.mark.parametrize(("path", "valid"), BODY_ENDPOINTS)
@pytest.mark.parametrize("raw", [b"null", b"[]", b'"text"', b"42"])
async def test_body_that_is_not_an_object_is_422(
    client: Client, sandbox: None, path: str, valid: Any, raw: bytes
) -> None:
    resp = await client.put(path, data=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"]


@pytest.mark.parametrize(("path", "valid"), BODY_ENDPOINTS)
async def test_an_empty_body_is_not_json(client: Client, sandbox: None, path: str, valid: Any) -> None:
    resp = await client.put(path, data=b"", headers={**ADMIN, "Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "malformed_json")
