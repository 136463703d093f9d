"""The complete admin API: one record by id, triggers edited in place and ordered, items
listed and deleted, and changes refused (409) when they would leave references dangling."""

from __future__ import annotations

import re
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys
from tests.conftest import ADMIN, API, Client
from tests.support import (
    ACCOUNT_SID,
    CUSTOMER,
    LINE,
    STAGES,
    add_item,
    add_trigger,
    call_form,
    configure,
    eventually,
    stage_of,
    twilio_post,
)

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _json(client: Client, method: str, path: str, *, status: int, **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", ADMIN)
    resp = await client.request(method, path, headers=headers, **kwargs)
    assert resp.status == status, await resp.text()
    return await resp.json() if resp.status != 204 else None


async def test_get_one_provider_line_pipeline_and_trigger(client: Client) -> None:
    await configure(client)
    trigger_id = await add_trigger(client, event="call.missed", line=LINE)

    provider = await _json(client, "GET", "/v1/providers/tw", status=200)
    assert provider["kind"] == "twilio" and provider["credentials"] == {"account_sid": "***", "auth_token": "***"}
    line = await _json(client, "GET", f"/v1/lines/{LINE}", status=200)
    assert line["number"] == LINE and line["provider"] == "tw"
    pipeline = await _json(client, "GET", "/v1/pipelines/sales", status=200)
    assert pipeline == {"id": "sales", "stages": STAGES}
    trigger = await _json(client, "GET", f"/v1/triggers/{trigger_id}", status=200)
    assert trigger["id"] == trigger_id and trigger["event"] == "call.missed" and trigger["position"] == 1
    assert ISO.fullmatch(trigger["created_at"]) and ISO.fullmatch(trigger["updated_at"])

    for path in ["/v1/providers/nope", "/v1/lines/%2B34910009999", "/v1/pipelines/nope", "/v1/triggers/trg_nope"]:
        error = (await _json(client, "GET", path, status=404))["error"]
        assert error["code"] == "not_found" and "not found" in error["message"]


async def test_put_trigger_edits_in_place_and_keeps_its_place(client: Client) -> None:
    await configure(client)
    first = await add_trigger(client, name="first", event="call.missed")
    second = await add_trigger(client, name="second", event="call.incoming")
    before = await _json(client, "GET", f"/v1/triggers/{first}", status=200)

    body = {
        "name": "renamed",
        "event": "sms.incoming",
        "keywords": ["hola"],
        "pipeline": "sales",
        "target_stage": "WON",
    }
    edited = await _json(client, "PUT", f"/v1/triggers/{first}", status=200, json=body)
    assert edited["id"] == first and edited["name"] == "renamed" and edited["keywords"] == ["hola"]
    assert edited["position"] == 1 and edited["created_at"] == before["created_at"]
    listed = (await _json(client, "GET", "/v1/triggers", status=200))["triggers"]
    assert [(t["id"], t["position"]) for t in listed] == [(first, 1), (second, 2)]

    moved = await _json(client, "PUT", f"/v1/triggers/{first}", status=200, json={**body, "position": 2})
    assert moved["position"] == 2
    listed = (await _json(client, "GET", "/v1/triggers", status=200))["triggers"]
    assert [t["id"] for t in listed] == [second, first]

    third = await _json(client, "POST", "/v1/triggers", status=201, json={**body, "name": "third", "position": 1})
    listed = (await _json(client, "GET", "/v1/triggers", status=200))["triggers"]
    assert [t["id"] for t in listed] == [third["id"], second, first]

    missing = await _json(client, "PUT", "/v1/triggers/trg_nope", status=404, json=body)
    assert missing["error"]["code"] == "not_found"
    bad = await _json(client, "PUT", f"/v1/triggers/{first}", status=422, json={**body, "target_stage": "LOST"})
    assert bad["error"] == {
        "code": "unknown_reference",
        "field": "target_stage",
        "message": "target_stage: 'LOST' is not a stage of sales",
    }


async def test_the_engine_applies_triggers_in_their_edited_order(client: Client) -> None:
    """Triggers of one event chain in order: the last one decides where the item ends."""
    await configure(client)
    await add_item(client)
    to_call_back = await add_trigger(client, event="call.incoming", target_stage="CALL_BACK", allow_back=True)
    await add_trigger(client, event="call.incoming", target_stage="WON", allow_back=True)
    body = {"name": "t", "event": "call.incoming", "pipeline": "sales", "target_stage": "CALL_BACK"}
    await _json(
        client, "PUT", f"/v1/triggers/{to_call_back}", status=200, json={**body, "allow_back": True, "position": 2}
    )
    assert (await twilio_post(client, "/webhooks/twilio/voice", call_form())).status == 200

    async def settled() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(settled)


async def test_items_list_filters_and_pages(client: Client) -> None:
    await configure(client)
    for index in range(5):
        await add_item(client, f"D{index}", stage="NEW" if index % 2 else "WON", phone=f"+3460011122{index}")

    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await _json(client, "GET", "/v1/items", status=200, params=query, headers=API)
        pages.append([i["id"] for i in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["D0", "D1"], ["D2", "D3"], ["D4"]]  # update order, oldest first

    won = await _json(client, "GET", "/v1/items", status=200, params={"pipeline": "sales", "stage": "WON"}, headers=API)
    assert [i["id"] for i in won["items"]] == ["D0", "D2", "D4"]
    in_new = await _json(client, "GET", "/v1/items", status=200, params={"stage": "NEW"}, headers=API)
    assert [i["id"] for i in in_new["items"]] == ["D1", "D3"]
    other = await _json(client, "GET", "/v1/items", status=200, params={"pipeline": "other"}, headers=API)
    assert other["items"] == []

    # Re-sending D1 moves it to the end of the update order: a sync picks it up again.
    latest = (await _json(client, "GET", "/v1/items/D4", status=200, headers=API))["updated_at"]
    await add_item(client, "D1", stage="CALL_BACK", phone="+34600111221")
    since = await _json(client, "GET", "/v1/items", status=200, params={"updated_since": latest}, headers=API)
    assert [i["id"] for i in since["items"]][-1] == "D1"
    assert "D0" not in [i["id"] for i in since["items"]]


async def test_delete_item_takes_its_phone_index_and_timeline(client: Client, redis: Redis, prefix: str) -> None:
    await configure(client)
    await add_item(client, "D1")
    await add_item(client, "D2")
    assert await _json(client, "DELETE", "/v1/items/D1", status=204, headers=API) is None
    await _json(client, "GET", "/v1/items/D1", status=404, headers=API)
    by_phone = await _json(client, "GET", "/v1/items", status=200, params={"phone": CUSTOMER}, headers=API)
    assert [i["id"] for i in by_phone["items"]] == ["D2"]
    listed = await _json(client, "GET", "/v1/items", status=200, headers=API)
    assert [i["id"] for i in listed["items"]] == ["D2"]
    # Nothing keyed by D1 is left, and the shared keys no longer name it.
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    assert not [key for key in keys if key.endswith(":D1")]
    assert await redis.smembers(Keys(prefix).phone(CUSTOMER)) == {"D2"}
    assert (await _json(client, "DELETE", "/v1/items/D1", status=404, headers=API))["error"]["code"] == "not_found"
    await _json(client, "DELETE", "/v1/items/D2", status=204, headers=API)
    assert await redis.exists(Keys(prefix).phone(CUSTOMER)) == 0


async def test_pipeline_cannot_drop_a_stage_in_use(client: Client) -> None:
    await configure(client, lead=True)  # the line creates leads in NEW
    trigger_id = await add_trigger(client, event="call.missed", target_stage="CALL_BACK")
    await add_item(client, "D1", stage="CONTACTED")

    for dropped, named in [
        ("CALL_BACK", f"trigger {trigger_id} targets CALL_BACK"),
        ("NEW", f"line {LINE} creates leads in NEW"),
        ("CONTACTED", "items in CONTACTED (e.g. D1)"),
    ]:
        stages = [s for s in STAGES if s != dropped]
        error = (await _json(client, "PUT", "/v1/pipelines/sales", status=409, json={"stages": stages}))["error"]
        assert error["code"] == "in_use" and named in error["message"], error
    assert (await _json(client, "GET", "/v1/pipelines/sales", status=200))["stages"] == STAGES

    # A stage nothing uses may go; reordering keeps every stage and is always fine.
    await _json(client, "PUT", "/v1/pipelines/sales", status=200, json={"stages": ["NEW", "CALL_BACK", "CONTACTED"]})
    await _json(client, "PUT", "/v1/pipelines/sales", status=200, json={"stages": ["CONTACTED", "NEW", "CALL_BACK"]})
    error = (await _json(client, "DELETE", "/v1/pipelines/sales", status=409))["error"]
    assert error["code"] == "in_use" and "D1" in error["message"]


async def test_pipeline_delete_when_unused(client: Client) -> None:
    await _json(client, "PUT", "/v1/pipelines/spare", status=200, json={"stages": ["A", "B"]})
    await _json(client, "DELETE", "/v1/pipelines/spare", status=204)
    await _json(client, "GET", "/v1/pipelines/spare", status=404)
    await _json(client, "DELETE", "/v1/pipelines/spare", status=404)


async def test_line_a_trigger_watches_cannot_be_deleted(client: Client) -> None:
    await configure(client)
    trigger_id = await add_trigger(client, event="call.missed", line=LINE)
    error = (await _json(client, "DELETE", f"/v1/lines/{LINE}", status=409))["error"]
    assert error["code"] == "in_use" and trigger_id in error["message"]
    await _json(client, "DELETE", f"/v1/triggers/{trigger_id}", status=204)
    await _json(client, "DELETE", f"/v1/lines/{LINE}", status=204)


async def test_twilio_account_sid_shape_is_checked(client: Client) -> None:
    for sid in ["AC123", "XX" + "0" * 32, "AC" + "g" * 32, ACCOUNT_SID + "0"]:
        body = {"kind": "twilio", "credentials": {"account_sid": sid, "auth_token": "secret-token"}}
        error = (await _json(client, "PUT", "/v1/providers/tw", status=422, json=body))["error"]
        assert error == {
            "code": "invalid",
            "field": "credentials",
            "message": "credentials.account_sid: a Twilio Account SID is AC followed by 32 hex digits",
        }
    body = {"kind": "twilio", "credentials": {"account_sid": ACCOUNT_SID, "auth_token": "secret-token"}}
    await _json(client, "PUT", "/v1/providers/tw", status=200, json=body)


async def test_messages_and_codes_are_plain(client: Client) -> None:
    duplicate = await _json(client, "PUT", "/v1/pipelines/p", status=422, json={"stages": ["A", "A"]})
    assert duplicate["error"] == {"code": "invalid", "field": "stages", "message": "stages: stages must be unique"}
    missing = await _json(client, "PUT", "/v1/pipelines/p", status=422, json={})
    assert missing["error"]["code"] == "missing" and missing["error"]["field"] == "stages"
    unknown = await _json(client, "PUT", "/v1/pipelines/p", status=422, json={"stages": ["A"], "color": "red"})
    assert unknown["error"]["code"] == "unknown_field" and unknown["error"]["field"] == "color"


async def test_404_and_405_say_which_path_and_method(client: Client) -> None:
    nowhere = (await _json(client, "GET", "/v1/nowhere", status=404))["error"]
    assert nowhere["code"] == "not_found" and "/v1/nowhere" in nowhere["message"]
    resp = await client.post("/v1/pipelines/sales", json={}, headers=ADMIN)
    assert resp.status == 405
    error = (await resp.json())["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"].startswith("POST is not allowed on /v1/pipelines/sales; allowed: ")
    assert "PUT" in error["message"] and "PUT" in resp.headers["Allow"]
