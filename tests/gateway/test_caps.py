"""Per-customer caps: over the line's daily cap a job ends skipped with the reason; an
answer to the customer's own message is not capped."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN, API, Client
from tests.gateway.test_robocalls import final, setup
from tests.gateway.test_sms import send
from tests.support import CUSTOMER, LINE, eventually


async def test_the_third_sms_of_the_day_is_skipped_but_a_reply_is_not(client: Client) -> None:
    await setup(client)
    line = {"provider": "sb", "caps": {"sms": 2}, "replies": {"welcome": "Hola"}}
    assert (await client.put(f"/v1/lines/{LINE}", json=line, headers=ADMIN)).status == 200

    for _ in range(2):
        await final(client, (await send(client, {"text": "oferta"}))[1]["id"], "delivered")
    skipped = await final(client, (await send(client, {"text": "oferta"}))[1]["id"], "skipped")
    assert skipped["reason"].startswith(f"{CUSTOMER} already got 2 sms job(s) on ")
    assert skipped["reason"].endswith("(the line's caps.sms)")

    resp = await client.post("/v1/sandbox/sms", json={"from": CUSTOMER, "to": LINE, "text": "hola"}, headers=ADMIN)
    assert resp.status == 202
    replies: list[dict[str, Any]] = []

    async def replied() -> bool:
        jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
        replies[:] = [job for job in jobs if job.get("reply") == "welcome"]
        return bool(replies)

    await eventually(replied)
    await final(client, replies[0]["id"], "delivered")


async def test_jobs_from_a_line_without_caps_count_against_another_lines_cap(client: Client) -> None:
    """README: caps are counted across every line and rule."""
    await setup(client)
    other = "+34910000002"
    capped = {"provider": "sb", "caps": {"sms": 1}}
    assert (await client.put(f"/v1/lines/{other}", json=capped, headers=ADMIN)).status == 200

    await final(client, (await send(client, {"text": "oferta"}))[1]["id"], "delivered")  # LINE: no caps
    skipped = await final(client, (await send(client, {"text": "oferta", "line": other}))[1]["id"], "skipped")
    assert skipped["reason"].startswith(f"{CUSTOMER} already got 1 sms job(s) on ")
