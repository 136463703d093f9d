"""SMS conversations: the message that opens one gets the line's welcome reply, or its
after-hours reply outside the line's hours (judged in the line's time zone at the time the
message arrived, here a frozen 23:00 in Madrid); closing sends the closing reply; the whole
conversation is on the item's timeline in order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.test_utils import TestServer

from config.settings import Settings
from gateway.app import create_app
from gateway.engine.leads import lead_id
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_outbox import Receiver, subscribe
from tests.gateway.test_robocalls import final, put_card, setup
from tests.support import CUSTOMER, LINE, eventually, item

MADRID = ZoneInfo("Europe/Madrid")
WEEK = {day: ["09:00", "18:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
STRANGER = "+34600999888"
REPLIES = {"welcome": "Hola, te atendemos enseguida", "after_hours": "Cerrado: abrimos a las 9", "closing": "Gracias"}


async def configure_line(client: Client, **line: Any) -> None:
    await setup(client)
    body = {"provider": "sb", "hours": {"tz": "Europe/Madrid", **WEEK}, "replies": REPLIES, **line}
    resp = await client.put(f"/v1/lines/{LINE}", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()


async def text_in(client: Client, body: str, at: datetime) -> None:
    """The customer's message through the sandbox's inbound endpoint, arriving at ``at``."""
    sms = {"from": CUSTOMER, "to": LINE, "text": body, "at": at.isoformat()}
    resp = await client.post("/v1/sandbox/sms", json=sms, headers=ADMIN)
    assert resp.status == 202, await resp.text()


async def replies(client: Client, count: int) -> list[dict[str, Any]]:
    """The item's SMS jobs once there are ``count``, oldest first, each delivered."""

    async def made() -> bool:
        jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
        return len(jobs) >= count

    await eventually(made)
    jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    return [await final(client, job["id"], "delivered") for job in reversed(jobs)]


async def test_a_message_at_23_00_in_madrid_gets_the_after_hours_reply(client: Client) -> None:
    await configure_line(client)
    await text_in(client, "¿Tenéis stock?", datetime(2026, 11, 23, 23, 0, tzinfo=MADRID))
    [reply] = await replies(client, 1)
    assert reply["text"] == REPLIES["after_hours"] and reply["to"] == CUSTOMER and reply["line"] == LINE
    assert reply["reply"] == "after_hours"

    # The conversation is open: more messages get no second reply.
    await text_in(client, "¿Hola?", datetime(2026, 11, 23, 23, 5, tzinfo=MADRID))

    async def both_in() -> bool:
        timeline = (await item(client, "D1"))["timeline"]
        return [e["type"] for e in timeline].count("sms.incoming") == 2

    await eventually(both_in)
    assert len(await replies(client, 1)) == 1

    # An agent closes it: the closing reply; the next message opens a new conversation,
    # in working hours this time.
    resp = await client.post(f"/v1/conversations/{CUSTOMER}/close", headers=API)
    assert resp.status == 200
    closed = await resp.json()
    assert closed["line"] == LINE and closed["closing_job"]
    assert (await client.post(f"/v1/conversations/{CUSTOMER}/close", headers=API)).status == 404
    await text_in(client, "Buenos días", datetime(2026, 11, 24, 10, 0, tzinfo=MADRID))
    texts = [job["text"] for job in await replies(client, 3)]
    assert texts == [REPLIES["after_hours"], REPLIES["closing"], REPLIES["welcome"]]

    # Both directions on the timeline, in order.
    timeline = (await item(client, "D1"))["timeline"]
    said = [
        ("in", e["data"]["text"]) if e["type"] == "sms.incoming" else ("out", e["data"]["text"])
        for e in timeline
        if e["type"] == "sms.incoming" or (e["type"] == "job.updated" and e["data"]["status"] == "queued")
    ]
    assert said == [
        ("in", "¿Tenéis stock?"),
        ("out", REPLIES["after_hours"]),
        ("in", "¿Hola?"),
        ("out", REPLIES["closing"]),
        ("in", "Buenos días"),
        ("out", REPLIES["welcome"]),
    ]


async def test_consent_keywords_get_no_reply_and_a_line_without_hours_welcomes(client: Client) -> None:
    await configure_line(client, hours=None)
    sms = {"from": CUSTOMER, "to": "+34910000002", "text": "hola"}
    resp = await client.post("/v1/sandbox/sms", json=sms, headers=ADMIN)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "to"
    await text_in(client, "STOP", datetime(2026, 11, 24, 10, 0, tzinfo=MADRID))

    async def opted_out() -> bool:
        return (await client.get(f"/v1/optouts/{CUSTOMER}", headers=ADMIN)).status == 200

    await eventually(opted_out)
    await text_in(client, "START", datetime(2026, 11, 24, 10, 1, tzinfo=MADRID))
    await text_in(client, "hola", datetime(2026, 11, 24, 10, 2, tzinfo=MADRID))
    [reply] = await replies(client, 1)
    assert reply["text"] == REPLIES["welcome"]


async def test_replies_are_templates_filled_from_the_item(client: Client) -> None:
    await configure_line(client, hours=None, replies={"welcome": "Hola {{name}}", "closing": "Adiós {{nope}}"})
    await text_in(client, "Hola", datetime(2026, 11, 23, 12, 0, tzinfo=MADRID))
    [reply] = await replies(client, 1)
    assert reply["text"] == "Hola Ana"
    # A reply naming a field the item lacks is not sent (no braces reach the customer).
    resp = await client.post(f"/v1/conversations/{CUSTOMER}/close", headers=API)
    assert resp.status == 200 and (await resp.json())["closing_job"] is None


async def test_a_known_customers_message_carries_the_items_responsible_user(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """On the timeline and in the event the CRM gets; a lead (nobody responsible) has none."""
    crm = Receiver()
    app = web.Application()
    app.router.add_post("/hook", crm.handle)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server(shutdown_timeout=0.5)
    try:
        client = await aiohttp_client(create_app(make_settings(media_allow_private=True)))
        await configure_line(client, hours=None, replies=None, lead={"pipeline": "sales", "stage": "NEW"})
        await put_card(client, "D1", [{"type": "MOBILE", "value": CUSTOMER}], responsible="maria")
        await subscribe(client, str(receiver.make_url("/hook")), ["sms.incoming"])
        await text_in(client, "¿Tenéis stock?", datetime.now(MADRID))
        await client.post("/v1/sandbox/sms", json={"from": STRANGER, "to": LINE, "text": "hola"}, headers=ADMIN)

        async def both_delivered() -> bool:
            return len(crm.delivered()) == 2

        await eventually(both_delivered)
        events = {seen.event["data"]["customer"]: seen.event["data"] for seen in crm.delivered()}
        assert events[CUSTOMER]["item_id"] == "D1" and events[CUSTOMER]["responsible"] == "maria"
        assert events[STRANGER]["item_id"] == lead_id(STRANGER) and "responsible" not in events[STRANGER]
        [entry] = [e for e in (await item(client, "D1"))["timeline"] if e["type"] == "sms.incoming"]
        assert entry["data"]["responsible"] == "maria" and entry["data"]["text"] == "¿Tenéis stock?"
    finally:
        await receiver.close()
