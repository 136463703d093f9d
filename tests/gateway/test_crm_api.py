"""CRM API: cards, their validation, the phone index and the timeline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from config.cards import Card
from config.settings import Settings
from gateway.app import create_app
from gateway.keys import Keys
from gateway.store.connection import Transactions
from gateway.store.entries import StageEntries
from gateway.store.items import ItemQuery, Items
from tests.conftest import ADMIN, API, Client, ClientFactory

ANA = "+34600111222"
BOB = "+34600333444"
ACME = "+34910000001"


def card(stage: str = "NEW", *numbers: str, company: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pipeline": "sales",
        "stage": stage,
        "fields": {"name": "Ana", "order": "A-17"},
        "contacts": [{"name": "Ana", "phones": [{"type": "MOBILE", "value": n} for n in numbers]}],
        **extra,
    }
    if company is not None:
        body["company"] = {"name": "Acme", "phones": [{"type": "WORK", "value": n} for n in company]}
    return body


@pytest.fixture
async def sales(client: Client) -> None:
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW", "CALL_BACK", "WON"]}, headers=ADMIN)
    assert resp.status == 200


async def put_item(client: Client, item_id: str, body: Any) -> tuple[int, Any]:
    resp = await client.put(f"/v1/items/{item_id}", json=body, headers=API)
    return resp.status, await resp.json()


async def ids_for(client: Client, query: str) -> list[str]:
    resp = await client.get(f"/v1/items?phone={query}", headers=API)
    assert resp.status == 200, await resp.text()
    return sorted(item["id"] for item in (await resp.json())["items"])


# Cards


async def test_put_item_201_then_200(client: Client, sales: None) -> None:
    status, created = await put_item(client, "D1", card("NEW", "+34 600 111 222", company=[ACME]))
    assert status == 201
    assert created["id"] == "D1" and created["stage"] == "NEW"
    assert created["contacts"][0]["phones"] == [{"type": "MOBILE", "value": ANA}]  # stored as E.164
    assert created["company"]["phones"] == [{"type": "WORK", "value": ACME}]

    status, replaced = await put_item(client, "D1", card("CALL_BACK", ANA, responsible="maria"))
    assert status == 200
    assert replaced["stage"] == "CALL_BACK" and replaced["responsible"] == "maria"
    assert replaced["created_at"] == created["created_at"]
    assert replaced["updated_at"] >= created["updated_at"]


async def test_get_item(client: Client, sales: None) -> None:
    await put_item(client, "deal:42", card("NEW", ANA, company=[ACME]))
    resp = await client.get("/v1/items/deal:42", headers=API)
    assert resp.status == 200
    item = await resp.json()
    assert item["id"] == "deal:42"
    assert item["stage"] == "NEW" and item["pipeline"] == "sales"
    assert item["fields"] == {"name": "Ana", "order": "A-17"}
    assert item["contacts"] == [{"name": "Ana", "phones": [{"type": "MOBILE", "value": ANA}]}]
    assert item["company"] == {"name": "Acme", "phones": [{"type": "WORK", "value": ACME}]}
    assert [entry["type"] for entry in item["timeline"]] == ["item.created"]


async def test_all_phone_types_are_accepted(client: Client, sales: None) -> None:
    types = ["WORK", "MOBILE", "HOME", "FAX", "PAGER", "MAILING", "OTHER"]
    phones = [{"type": t, "value": f"+3460011120{i}"} for i, t in enumerate(types)]
    status, body = await put_item(client, "D1", {"pipeline": "sales", "stage": "NEW", "contacts": [{"phones": phones}]})
    assert status == 201
    assert [p["type"] for p in body["contacts"][0]["phones"]] == types


async def test_get_unknown_item_is_404(client: Client) -> None:
    resp = await client.get("/v1/items/nobody", headers=API)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (card(pipeline="support"), "pipeline"),
        (card("LOST"), "stage"),
        (card("NEW", "600111222"), "contacts.0.phones.0.value"),
        (card("NEW", ANA, "+34 600"), "contacts.0.phones.1.value"),
        (card("NEW", ANA, company=["12345"]), "company.phones.0.value"),
        ({**card("NEW"), "contacts": [{"phones": [{"type": "CELL", "value": ANA}]}]}, "contacts.0.phones.0.type"),
        ({**card("NEW"), "contacts": [{"phones": [{"type": "MOBILE"}]}]}, "contacts.0.phones.0.value"),
        ({**card("NEW"), "contacts": [{"phones": [{"value": ANA, "ext": "12"}]}]}, "contacts.0.phones.0.ext"),
        ({**card("NEW"), "contacts": [{"phones": ANA}]}, "contacts.0.phones"),
        ({**card("NEW"), "contacts": {"name": "Ana"}}, "contacts"),
        ({**card("NEW"), "fields": {"order": ["A", "B"]}}, "fields.order"),
        ({**card("NEW"), "fields": {"order": {"id": 1}}}, "fields.order"),
        ({**card("NEW"), "fields": {"note": "x" * 2001}}, "fields.note"),
        ({**card("NEW"), "fields": "name=Ana"}, "fields"),
        ({**card("NEW"), "responsible": 7}, "responsible"),
        ({**card("NEW"), "company": {"name": "Acme", "vat": "B1"}}, "company.vat"),
        ({**card("NEW"), "stage": "NEW STAGE"}, "stage"),
        ({"stage": "NEW"}, "pipeline"),
        ({"pipeline": "sales"}, "stage"),
        ({**card("NEW"), "status": "hot"}, "status"),
    ],
)
async def test_item_validation(client: Client, sales: None, body: Any, field: str) -> None:
    status, answer = await put_item(client, "D1", body)
    assert status == 422, answer
    assert answer["error"]["field"] == field
    resp = await client.get("/v1/items/D1", headers=API)
    assert resp.status == 404  # nothing was stored


@pytest.mark.parametrize(
    "raw",
    [
        b'{"pipeline": "sales", "stage": "NEW", "fields": {"n": NaN}}',
        b'{"pipeline": "sales", "stage": "NEW", "fields": {"n": 1e999}}',
    ],
)
async def test_non_finite_numbers_are_refused(client: Client, sales: None, raw: bytes) -> None:
    resp = await client.put("/v1/items/D1", data=raw, headers={**API, "Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "fields.n"


async def test_field_values_keep_their_types(client: Client, sales: None) -> None:
    fields = {"name": "Ana", "count": 3, "amount": 12.5, "vip": True, "note": None}
    status, body = await put_item(client, "D1", {"pipeline": "sales", "stage": "NEW", "fields": fields})
    assert status == 201 and body["fields"] == fields


@pytest.mark.parametrize("item_id", ["a%20b", "a$b", "caf%C3%A9", "x" * 129, "a%2Fb", "a%00b"])
async def test_item_id_with_bad_characters(client: Client, sales: None, item_id: str) -> None:
    status, answer = await put_item(client, item_id, card("NEW"))
    assert status == 422, answer
    assert answer["error"]["field"] == "id"
    resp = await client.get(f"/v1/items/{item_id}", headers=API)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "id"


async def test_item_id_characters_that_are_allowed(client: Client, sales: None) -> None:
    item_id = "deal:A-17_v2." + "x" * 115  # 128 characters
    status, answer = await put_item(client, item_id, card("NEW"))
    assert status == 201 and answer["id"] == item_id


# Lookup by phone


async def test_lookup_encoded_and_unencoded_plus(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA))
    assert await ids_for(client, "%2B34600111222") == ["D1"]
    assert await ids_for(client, "+34600111222") == ["D1"]  # arrives as " 34600111222"
    assert await ids_for(client, "%2B34%20600-111-222") == ["D1"]
    assert await ids_for(client, "%2B34600999999") == []


async def test_lookup_returns_whole_cards(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("CALL_BACK", ANA))
    resp = await client.get("/v1/items", params={"phone": ANA}, headers=API)
    (item,) = (await resp.json())["items"]
    assert item["id"] == "D1" and item["stage"] == "CALL_BACK"
    assert item["fields"]["order"] == "A-17"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?phone=", "missing"),
        ("?phone=600111222", None),
        ("?phone=%2B34", None),
        ("?phone=abc", None),
        ("?phone=+", None),
    ],
)
async def test_lookup_bad_phone(client: Client, query: str, code: str | None) -> None:
    resp = await client.get(f"/v1/items{query}", headers=API)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["field"] == "phone"
    if code:
        assert error["code"] == code


async def test_index_follows_a_cards_numbers(client: Client, sales: None, redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await put_item(client, "D1", card("NEW", ANA))
    assert await ids_for(client, ANA) == ["D1"]

    # The CRM replaces Ana's number with Bob's: the old number no longer finds the card.
    status, _ = await put_item(client, "D1", card("NEW", BOB))
    assert status == 200
    assert await ids_for(client, ANA) == []
    assert await ids_for(client, BOB) == ["D1"]
    assert await redis.smembers(keys.phone(ANA)) == set()
    assert await redis.smembers(keys.phone(BOB)) == {"D1"}

    # Adding a number keeps the others.
    await put_item(client, "D1", card("NEW", BOB, ANA))
    assert await ids_for(client, ANA) == ["D1"]
    assert await ids_for(client, BOB) == ["D1"]

    # Removing every contact empties the index for this card.
    await put_item(client, "D1", {"pipeline": "sales", "stage": "NEW"})
    assert await ids_for(client, ANA) == []
    assert await ids_for(client, BOB) == []


async def test_a_lookup_skips_an_index_entry_the_card_no_longer_backs(
    client: Client, sales: None, redis: Redis, prefix: str
) -> None:
    # The index is written around the card's step: a change that died between the two
    # leaves an entry naming a card without the number.
    await put_item(client, "D1", card("NEW", ANA))
    await redis.sadd(Keys(prefix).phone(BOB), "D1")
    assert await ids_for(client, BOB) == []
    assert await ids_for(client, ANA) == ["D1"]
    await put_item(client, "D1", card("NEW", ANA, BOB))
    assert await ids_for(client, BOB) == ["D1"]


async def test_index_covers_company_phones(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA, company=[ACME]))
    assert await ids_for(client, ACME) == ["D1"]
    await put_item(client, "D1", card("NEW", ANA, company=[]))
    assert await ids_for(client, ACME) == []
    assert await ids_for(client, ANA) == ["D1"]
    # A number moving from a contact to the company stays indexed.
    await put_item(client, "D1", card("NEW", company=[ANA]))
    assert await ids_for(client, ANA) == ["D1"]


async def test_items_sharing_a_number_are_all_found(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA))
    await put_item(client, "D2", card("NEW", BOB, company=[ANA]))
    await put_item(client, "D3", card("NEW", BOB))
    assert await ids_for(client, ANA) == ["D1", "D2"]
    assert await ids_for(client, BOB) == ["D2", "D3"]

    # One card dropping the number leaves the other.
    await put_item(client, "D1", card("NEW", BOB))
    assert await ids_for(client, ANA) == ["D2"]
    assert await ids_for(client, BOB) == ["D1", "D2", "D3"]


async def test_same_number_twice_on_a_card(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA, "+34 600 111 222", company=[ANA]))
    assert await ids_for(client, ANA) == ["D1"]
    await put_item(client, "D1", card("NEW", ANA))
    assert await ids_for(client, ANA) == ["D1"]


async def test_failed_update_keeps_the_index(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA))
    status, _ = await put_item(client, "D1", card("LOST", BOB))
    assert status == 422
    assert await ids_for(client, ANA) == ["D1"]
    assert await ids_for(client, BOB) == []


# Timeline


def parse_at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_timeline_created_then_stage_changed(client: Client, sales: None) -> None:
    await put_item(client, "D1", card("NEW", ANA))
    await put_item(client, "D1", card("NEW", ANA, responsible="maria"))  # no stage change: no entry
    await put_item(client, "D1", card("CALL_BACK", ANA))
    await put_item(client, "D1", card("WON", ANA))

    resp = await client.get("/v1/items/D1", headers=API)
    timeline = (await resp.json())["timeline"]
    assert [entry["type"] for entry in timeline] == ["item.created", "item.stage_changed", "item.stage_changed"]
    assert all(set(entry) == {"at", "type", "data"} for entry in timeline)
    assert timeline[0]["data"]["stage"] == "NEW"
    assert (timeline[1]["data"]["from"], timeline[1]["data"]["to"]) == ("NEW", "CALL_BACK")
    assert (timeline[2]["data"]["from"], timeline[2]["data"]["to"]) == ("CALL_BACK", "WON")
    moments = [parse_at(entry["at"]) for entry in timeline]
    assert moments == sorted(moments)  # oldest first
    assert all(moment.utcoffset() is not None for moment in moments)


async def test_timeline_is_bounded(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]) -> None:
    client = await aiohttp_client(create_app(make_settings(timeline_max=3)))
    await client.put("/v1/pipelines/sales", json={"stages": ["NEW", "CALL_BACK", "WON"]}, headers=ADMIN)
    stages = ["NEW", "CALL_BACK", "WON", "NEW", "CALL_BACK", "WON"]
    for stage in stages:
        resp = await client.put("/v1/items/D1", json=card(stage, ANA), headers=API)
        assert resp.status in {200, 201}
    resp = await client.get("/v1/items/D1", headers=API)
    timeline = (await resp.json())["timeline"]
    assert len(timeline) == 3
    # The newest entries are kept, still oldest first.
    assert [(e["data"]["from"], e["data"]["to"]) for e in timeline] == [
        ("WON", "NEW"),
        ("NEW", "CALL_BACK"),
        ("CALL_BACK", "WON"),
    ]


async def test_listing_pages_merge_the_partitions_in_update_order(redis: Redis, prefix: str) -> None:
    # Two partitions of over 200 items each: the merge reads each in several chunks, with
    # entries whose card is gone (deleted between the listing's read and the cards') among them.
    keys = Keys(prefix, partitions=2)
    transactions = Transactions(redis)
    items = Items(redis, transactions, keys, StageEntries(redis, transactions, keys), timeline_max=10)
    card = Card.model_validate({"pipeline": "sales", "stage": "NEW"})
    made = [(await items.put(f"L{n:03d}", card))[0] for n in range(450)]
    assert min(sum(keys.partition_of(item.id) == p for item in made) for p in range(2)) > 200
    expected = [item.id for item in sorted(made, key=lambda item: (item.updated_ms(), item.id))]
    for item in made[::7]:
        await redis.zadd(keys.items(keys.partition_of(item.id)), {f"{item.id}-gone": item.updated_ms()})
    listed: list[str] = []
    after: tuple[int, str] | None = None
    while True:
        page, cursor = await items.page(ItemQuery(after=after, limit=100))
        listed += [item.id for item in page]
        if cursor is None:
            break
        ms, _, member = cursor.partition(":")
        assert member == page[-1].id  # each card read is the one its listing entry names
        after = (int(ms), member)
    assert listed == expected
