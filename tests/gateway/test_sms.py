"""SMS end to end through the sandbox: POST /v1/sms renders the template, checks its length
and the line, counts segments, and the job is sent and delivered (or fails) with every
status on the item's timeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import STORE
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_robocalls import final, job, job_statuses, post, put_card, robocall, setup
from tests.media import media_server
from tests.support import eventually, item, processed, stage_of

LINE = "+34910000001"
OTHER_LINE = "+34910000002"
CUSTOMER = "+34600111222"
FAILING = "+34600111229"


async def send(client: Client, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {**API, **({"Idempotency-Key": key} if key else {})}
    resp = await client.post("/v1/sms", json={"item_id": "D1", **body}, headers=headers)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def test_an_sms_through_the_sandbox_is_delivered_with_its_segments(client: Client) -> None:
    await setup(client)
    status, accepted = await send(client, {"text": "Olá {{name}} 😀"})
    assert status == 202 and accepted["status"] == "queued"

    done = await final(client, accepted["id"], "delivered")
    assert done["kind"] == "sms" and done["text"] == "Olá Ana 😀" and done["to"] == CUSTOMER
    assert (done["segments"], done["encoding"]) == (1, "UCS-2")
    assert done["line"] == LINE and done["provider"] == "sb" and done["provider_ref"].startswith("SM")
    assert done["reason"] is None
    timeline = (await item(client, "D1"))["timeline"]
    assert job_statuses(timeline, accepted["id"]) == ["queued", "sending", "sent", "delivered"]


async def test_a_sandbox_number_ending_in_9_fails_with_the_error_code(client: Client) -> None:
    await setup(client, FAILING)
    _, accepted = await send(client, {"text": "Your order {{order}} is ready", "line": LINE})
    done = await final(client, accepted["id"], "failed")
    assert done["reason"] == "the provider reported the message failed (ErrorCode 30003)"
    assert (done["segments"], done["encoding"]) == (1, "GSM-7")


async def test_the_rendered_text_is_at_most_200_characters(client: Client) -> None:
    await setup(client)
    # "Ana" is 3 characters: the template is 198 + {{name}}, the rendered text 201.
    status, error = await send(client, {"text": "x" * 198 + "{{name}}"})
    assert status == 422 and error["error"]["field"] == "text"
    assert "201 characters" in error["error"]["message"] and "at most 200" in error["error"]["message"]
    status, accepted = await send(client, {"text": "x" * 197 + "{{name}}"})
    assert status == 202
    assert (await job(client, accepted["id"]))["segments"] == 2
    status, error = await send(client, {"text": "{{missing}}"})
    assert status == 422 and error["error"]["code"] == "unknown_field"


async def test_the_line_must_allow_sms_and_the_provider_defaults_to_the_lines(client: Client) -> None:
    await setup(client)
    resp = await client.put(f"/v1/lines/{OTHER_LINE}", json={"provider": "sb", "sms": False}, headers=ADMIN)
    assert resp.status == 200
    status, error = await send(client, {"text": "hi", "line": OTHER_LINE})
    assert status == 422 and error["error"]["field"] == "line" and "not an SMS line" in error["error"]["message"]
    status, error = await send(client, {"text": "hi", "provider": "nope"})
    assert status == 422 and error["error"]["field"] == "line"

    # No line given: the first line that allows SMS (OTHER_LINE does not).
    _, accepted = await send(client, {"text": "hi", "provider": "sb"})
    done = await final(client, accepted["id"], "delivered")
    assert done["line"] == LINE and done["provider"] == "sb"


async def test_no_line_given_skips_lines_whose_provider_cannot_text(client: Client) -> None:
    await setup(client)
    vox = {"kind": "voximplant", "credentials": {"webhook_secret": "s"}}
    assert (await client.put("/v1/providers/vox", json=vox, headers=ADMIN)).status == 200
    # A lower number than LINE, sms true by default, on a provider kind that sends no SMS here.
    resp = await client.put("/v1/lines/+34910000000", json={"provider": "vox"}, headers=ADMIN)
    assert resp.status == 200
    status, accepted = await send(client, {"text": "hi"})
    assert status == 202
    assert (await final(client, accepted["id"], "delivered"))["line"] == LINE


async def test_a_phone_type_the_contact_lacks_ends_skipped(client: Client) -> None:
    await setup(client)
    _, accepted = await send(client, {"text": "hi", "phone_type": "HOME"})
    done = await final(client, accepted["id"], "skipped")
    assert done["reason"] == "the first contact has no HOME phone number"


async def test_the_same_idempotency_key_is_one_sms(client: Client) -> None:
    await setup(client)
    results = await asyncio.gather(*(send(client, {"text": "hi"}, key="sms-1") for _ in range(5)))
    assert {status for status, _ in results} == {202} and len({data["id"] for _, data in results}) == 1
    status, error = await send(client, {"text": "hello"}, key="sms-1")
    assert status == 409 and error["error"]["code"] == "idempotency_conflict"
    jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    assert len(jobs) == 1 and jobs[0]["kind"] == "sms"


async def test_a_job_that_reached_the_customer_voids_response_overdue(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """Three customers text and wait on us: the first gets an SMS job, the second a robocall
    they answer, the third only the line's automatic welcome, which answers no one: only
    the third one's timer fires."""
    client = await aiohttp_client(create_app(make_settings(media_allow_private=True)))
    await setup(client)
    line = {"provider": "sb", "replies": {"welcome": "Hola, te atendemos enseguida"}}
    assert (await client.put(f"/v1/lines/{LINE}", json=line, headers=ADMIN)).status == 200
    customers = {"D1": CUSTOMER, "D2": "+34600111333", "D3": "+34600111444"}
    for item_id, number in customers.items():
        await put_card(client, item_id, [{"type": "MOBILE", "value": number}])
    trigger = {"name": "t", "event": "response.overdue", "seconds": 600, "pipeline": "sales", "target_stage": "WON"}
    assert (await client.post("/v1/triggers", json=trigger, headers=ADMIN)).status == 201
    for number in customers.values():
        inbound = {"from": number, "to": LINE, "text": "¿Hola?"}
        assert (await client.post("/v1/sandbox/sms", json=inbound, headers=ADMIN)).status == 202

    _, sms = await send(client, {"text": "Te llamamos enseguida"})
    server = await media_server()
    try:
        _, call = await post(client, robocall(str(server.make_url("/ok.mp3")), item_id="D2"))
    finally:
        await server.close()
    await final(client, sms["id"], "delivered")
    await final(client, call["id"], "completed")
    for item_id in customers:
        [reply] = [j for j in await jobs_of(client, item_id) if j.get("reply") == "welcome"]
        await final(client, reply["id"], "delivered")
    await processed(client)

    # The timers polled with a clock past their deadline, instead of waiting for it.
    assert await client.app[STORE].timers.fire_due(time.time() + 601) == 3
    await processed(client)
    assert [await stage_of(client, item_id) for item_id in customers] == ["NEW", "NEW", "WON"]


async def jobs_of(client: Client, item_id: str) -> list[dict[str, Any]]:
    """The item's jobs once it has a welcome reply among them."""

    async def listed() -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = (await (await client.get(f"/v1/jobs?item_id={item_id}", headers=API)).json())[
            "jobs"
        ]
        return jobs

    async def replied() -> bool:
        return any(j.get("reply") == "welcome" for j in await listed())

    await eventually(replied)
    return await listed()
