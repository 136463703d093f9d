"""Messenger invites: the SMS carries a tracked gateway link that redirects to the bot or
the WhatsApp number; the click is on the timeline and fires link.clicked triggers."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN, API, Client
from tests.gateway.test_robocalls import final, setup
from tests.support import CUSTOMER, eventually, item, stage_of

PUBLIC = "https://gw.example.com"


async def invite(client: Client, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/invites", json={"item_id": "D1", **body}, headers=API)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def test_an_invite_click_redirects_to_the_bot_and_moves_the_item(client: Client) -> None:
    await setup(client)
    trigger = {"name": "clicked", "event": "link.clicked", "pipeline": "sales", "target_stage": "WON"}
    assert (await client.post("/v1/triggers", json=trigger, headers=ADMIN)).status == 201

    status, accepted = await invite(client, channel="telegram", bot="shop_bot", text="Hola {{name}}: {{link}}")
    assert status == 202
    sent = await final(client, accepted["id"], "delivered")
    assert sent["text"].startswith(f"Hola Ana: {PUBLIC}/i/") and sent["to"] == CUSTOMER
    token = sent["text"].rsplit("/", 1)[1]
    assert len(token) == 22

    resp = await client.get(f"/i/{token}", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"https://t.me/shop_bot?start={token}"

    async def won() -> bool:
        return await stage_of(client) == "WON"

    await eventually(won)
    types = [e["type"] for e in (await item(client, "D1"))["timeline"]]
    assert "invite.clicked" in types and "link.clicked" in types
    assert types.index("link.clicked") < types.index("item.stage_changed")


async def test_a_whatsapp_invite_appends_its_link(client: Client) -> None:
    await setup(client)
    status, accepted = await invite(client, channel="whatsapp", number="+34910000009", text="Escríbenos")
    assert status == 202
    sent = await final(client, accepted["id"], "delivered")
    assert sent["text"].startswith(f"Escríbenos {PUBLIC}/i/")
    resp = await client.get(sent["text"].removeprefix("Escríbenos " + PUBLIC), allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "https://wa.me/34910000009"


async def test_invites_are_checked(client: Client) -> None:
    await setup(client)
    status, error = await invite(client, channel="telegram", number="+34910000009")
    assert status == 422 and error["error"]["field"] == "bot"
    status, error = await invite(client, channel="whatsapp", number="+34910000009", text="x" * 200)
    assert status == 422 and error["error"]["field"] == "text"
    assert (await client.get("/i/" + "A" * 22, allow_redirects=False)).status == 404
