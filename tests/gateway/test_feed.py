"""The events feed and visible refusals: what reached the gateway, accepted or refused."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from config.settings import Settings
from config.vocabulary import EventKind
from gateway.app import create_app
from gateway.appkeys import STORE
from gateway.store.feed import entry_fields
from gateway.store.inbox import Arrival
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.support import CUSTOMER, LINE, PUBLIC_URL, call_form, configure, sms_form, twilio_post
from webhooks.events import Event

STRANGER = "+34600999888"


async def _events(client: Client, **query: str) -> dict[str, Any]:
    resp = await client.get("/v1/events", params=query, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_sms_from_unknown_number_on_a_line_without_lead_is_in_the_feed(client: Client) -> None:
    await configure(client)  # no lead: the SMS matches no item and creates none
    resp = await twilio_post(client, "/webhooks/twilio/sms", sms_form(From=STRANGER, body="info?"))
    assert resp.status == 200
    events = (await _events(client))["events"]
    assert [(e["kind"], e["customer"], e["line"], e["text"]) for e in events] == [
        ("sms.incoming", STRANGER, LINE, "info?")
    ]
    assert events[0]["provider"] == "tw" and events[0]["at"].endswith("Z")
    found = await client.get("/v1/items", params={"phone": STRANGER}, headers=API)
    assert (await found.json())["items"] == []


@pytest.mark.parametrize(
    ("customer", "text", "status", "withheld"),
    [
        (STRANGER, 'ñ "quoted" \\ 😀 \x00 end', "", None),
        ("Anonymous", "", "no-answer", "unknown"),
    ],
)
async def test_an_accepted_events_entry_has_its_fields_in_order(
    client: Client, customer: str, text: str, status: str, withheld: str | None
) -> None:
    """The inbox builds the entry in Lua from the event's JSON: what it stores is what the
    fields of the event give, non-ASCII and empty values included, in the feed's order."""
    event = Event(EventKind.SMS_INCOMING, "tw", LINE, customer, "SM1", "SM1", 1700000000.25, status, text, "inbound")
    await client.app[STORE].inbox.accept(event)
    details = {"ref": "SM1", "status": status, "text": text, "direction": "inbound", "withheld": withheld or ""}
    expected = entry_fields("sms.incoming", "tw", LINE, customer, 1700000000.25, details)
    (entry,) = (await _events(client))["events"]
    assert list(entry.items())[1:] == list(expected.items())
    assert event.withheld == withheld


class _Unreadable(Event):
    """An event whose JSON Lua's reader refuses: none of callgate's own is such."""

    def to_json(self) -> str:
        return '{"kind": "sms.incoming", "text": "'


async def test_an_event_the_inbox_cannot_read_is_not_half_stored(client: Client) -> None:
    """The call fails before it writes, so the identity is free for a delivery that can be read."""
    event = _Unreadable(EventKind.SMS_INCOMING, "tw", LINE, STRANGER, "SM2", "SM2", 1700000000.0, text="x")
    with pytest.raises(ResponseError):
        await client.app[STORE].inbox.accept(event)
    readable = Event(**{**vars(event), "text": "readable"})
    assert await client.app[STORE].inbox.accept(readable) is Arrival.NEW
    assert [e["text"] for e in (await _events(client))["events"]] == ["readable"]


async def test_a_lone_surrogate_is_stored_as_a_replacement_character(client: Client) -> None:
    """JSON escapes allow "\\ud800", which is no character and which Lua's reader refuses."""
    event = Event(EventKind.SMS_INCOMING, "tw", LINE, STRANGER, "SM2", "SM2", 1700000000.0, text="\ud800!")
    assert await client.app[STORE].inbox.accept(event) is Arrival.NEW
    assert [e["text"] for e in (await _events(client))["events"]] == ["\ufffd!"]


async def test_accepted_webhooks_are_logged_at_debug(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    await configure(client)
    with caplog.at_level(logging.DEBUG, logger="gateway.ingest"):
        assert (await twilio_post(client, "/webhooks/twilio/sms", sms_form(From=STRANGER))).status == 200
    accepted = [r for r in caplog.records if r.name == "gateway.ingest"]
    assert [r.levelno for r in accepted] == [logging.DEBUG]
    assert accepted[0].getMessage().startswith(f"accepted sms.incoming provider=tw line={LINE} customer={STRANGER}")


async def test_duplicates_are_recorded_once(client: Client) -> None:
    await configure(client)
    for _ in range(3):
        assert (await twilio_post(client, "/webhooks/twilio/sms", sms_form())).status == 200
    assert len((await _events(client))["events"]) == 1


async def test_callback_requests_are_in_the_feed(client: Client) -> None:
    await configure(client)
    resp = await client.post("/v1/callback-requests", json={"phone": CUSTOMER, "line": LINE}, headers=API)
    assert resp.status == 202
    assert [e["kind"] for e in (await _events(client, customer=CUSTOMER))["events"]] == ["callback.requested"]


async def test_missing_and_wrong_signatures_are_logged_counted_and_recorded_apart(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await configure(client)
    path = "/webhooks/twilio/sms"
    with caplog.at_level(logging.WARNING, logger="gateway"):
        missing = await twilio_post(client, path, sms_form(), signature="")
        wrong = await twilio_post(client, path, sms_form(), signature="bm90IGEgc2lnbmF0dXJl")
    assert (missing.status, (await missing.json())["error"]["code"]) == (403, "missing_signature")
    assert (wrong.status, (await wrong.json())["error"]["code"]) == (403, "bad_signature")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "missing" in warnings[0] and "reason=missing_signature" in warnings[0]
    assert f"line={LINE}" in warnings[0] and "provider=tw" in warnings[0]
    # The exact URL the signature was computed for, and what to change when it is not Twilio's.
    assert f"computed for {PUBLIC_URL}{path} " in warnings[1] and "CALLGATE_PUBLIC_URL" in warnings[1]
    assert "reason=bad_signature" in warnings[1]

    metrics = await (await client.get("/metrics")).text()
    assert 'callgate_webhook_refusals_total{provider="twilio",reason="missing_signature"} 1.0' in metrics
    assert 'callgate_webhook_refusals_total{provider="twilio",reason="bad_signature"} 1.0' in metrics

    refused = (await _events(client, kind="webhook.refused"))["events"]
    assert [e["reason"] for e in refused] == ["bad_signature", "missing_signature"]  # newest first
    assert all(e["line"] == LINE and e["path"] == path for e in refused)
    assert PUBLIC_URL + path in refused[0]["message"]


async def test_unknown_line_and_malformed_webhooks_are_refusals_too(client: Client) -> None:
    await configure(client)
    unknown = await twilio_post(client, "/webhooks/twilio/voice", call_form(To="+34910009999", From=STRANGER))
    assert unknown.status == 403
    voximplant = await client.post("/webhooks/voximplant/nobody", json={})
    assert voximplant.status == 403
    # Two lines' refusals sit in two partitions, which a millisecond cannot order: no order.
    refused = {e["reason"]: e for e in (await _events(client, kind="webhook.refused"))["events"]}
    assert {reason: e["provider"] for reason, e in refused.items()} == {
        "unknown_provider": "nobody",
        "unknown_line": "twilio",
    }
    assert "+34910009999" in refused["unknown_line"]["message"]


async def test_filters_and_cursor_pages(client: Client) -> None:
    feed = client.app[STORE].feed
    for index in range(7):
        line = LINE if index % 2 else "+34910000002"
        await feed.record("sms.incoming", provider="tw", line=line, customer=CUSTOMER, details={"ref": str(index)})
    await feed.record("call.missed", provider="tw", line=LINE, customer=STRANGER, details={"ref": "7"})

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {"line": LINE, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await _events(client, **query)
        pages.append([e["ref"] for e in page["events"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["7", "5"], ["3", "1"]]
    assert [e["ref"] for e in (await _events(client, kind="call.missed"))["events"]] == ["7"]
    assert [e["ref"] for e in (await _events(client, customer=STRANGER))["events"]] == ["7"]
    by_both = await _events(client, customer=CUSTOMER, line="+34910000002", limit="10")
    assert [e["ref"] for e in by_both["events"]] == ["6", "4", "2", "0"] and by_both["next_cursor"] is None
    assert (await _events(client, since="2999-01-01T00:00:00Z"))["events"] == []
    assert len((await _events(client, since="2000-01-01T00:00:00+01:00"))["events"]) == 8


@pytest.mark.parametrize(("line", "ref"), [("", "CA1"), (LINE, "")])
async def test_entries_without_a_customer_keep_their_order(client: Client, line: str, ref: str) -> None:
    """An AMD verdict names only its call, a refusal only its line: such entries go to that
    call's or line's partition, since entries of two partitions added in the same
    millisecond could not be told apart."""
    feed = client.app[STORE].feed
    for index in range(60):
        await feed.record("webhook.refused", provider="tw", line=line, details={"ref": ref, "reason": str(index)})
    page = await _events(client, kind="webhook.refused", limit="100")
    # An entry may be there twice: the feed is written at least once (redis-py sends an XADD
    # again after a read timed out), which a busy machine caused once. The order is the point.
    reasons = list(dict.fromkeys(e["reason"] for e in page["events"]))
    assert reasons == [str(index) for index in reversed(range(60))]


@pytest.mark.parametrize(("partitions", "kept"), [(1, ["4", "3", "2"]), (2, ["4", "3"])])
async def test_retention_keeps_the_newest(
    aiohttp_client: ClientFactory, make_settings: Any, partitions: int, kept: list[str]
) -> None:
    """Each partition's feed keeps its share of CALLGATE_FEED_MAX; a customer's are in one."""
    settings: Settings = make_settings(feed_max=3, partitions=partitions)
    client = await aiohttp_client(create_app(settings))
    for index in range(5):
        await client.app[STORE].feed.record("sms.incoming", customer=CUSTOMER, details={"ref": str(index)})
    assert [e["ref"] for e in (await _events(client))["events"]] == kept


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"line": "not-a-number"}, "line"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"kind": "SMS INCOMING"}, "kind"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(client: Client, query: dict[str, str], field: str) -> None:
    resp = await client.get("/v1/events", params=query, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == field


async def test_the_feed_needs_the_admin_token(client: Client) -> None:
    assert (await client.get("/v1/events", headers=API)).status == 403


async def test_pages_merge_the_partitions_even_where_their_entry_ids_meet(client: Client, redis: Redis) -> None:
    """Each partition's feed is a stream of its own, so two may hold the same entry id: the
    cursor names the partition too, and no entry is skipped or shown twice."""
    keys = client.app[STORE].keys
    for partition, ref in [(0, "a"), (3, "b"), (7, "c")]:
        await redis.xadd(keys.feed(partition), {"kind": "sms.incoming", "ref": ref}, id="1000-0")
    await redis.xadd(keys.feed(3), {"kind": "sms.incoming", "ref": "newest"}, id="2000-0")
    await redis.xadd(keys.feed(5), {"kind": "sms.incoming", "ref": "oldest"}, id="500-0")
    refs: list[str] = []
    cursor: str | None = None
    while True:
        page = await _events(client, limit="1", **({"cursor": cursor} if cursor else {}))
        refs += [e["ref"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert refs == ["newest", "c", "b", "a", "oldest"]
    assert [e["ref"] for e in (await _events(client, cursor="1000-0"))["events"]] == ["oldest"]
