"""An item's timeline stays in time order whoever appends to it and however late: an entry
stamped before the last one takes the last one's time, in the timeline and in the CRM's
event alike."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from config.cards import Card
from config.settings import Settings
from gateway.keys import OUTBOX_STREAM
from gateway.store import Store
from gateway.store.items import now_iso, timeline_entry
from gateway.store.records import Snapshots

ITEM = "D1"
T0 = 1_780_000_000.0  # a moment of 2026
NOW = T0 + 3600.0  # the gateway's clock in these tests


async def entries(store: Store) -> list[dict[str, Any]]:
    listed, _ = await store.items.timeline(ITEM, 100)
    return [json.loads(entry) if isinstance(entry, str) else entry for entry in listed]


async def test_an_entry_stamped_before_the_last_takes_its_time(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [NOW]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the stamps callgate takes itself
    store = Store.open(redis, settings, Snapshots())
    await store.outbox.open("sub-1")  # so that every entry is an event for the CRM too
    card = Card.model_validate({"pipeline": "sales", "stage": "NEW"})
    await store.items.put(ITEM, card)

    # An event received before the card was written, processed after it.
    assert await store.items.record(ITEM, "call:1", timeline_entry("call.missed", {"ref": "CA1"}, T0))
    # One stamped by a process whose clock is a little ahead.
    assert await store.items.record(ITEM, "call:2", timeline_entry("call.missed", {"ref": "CA2"}, NOW + 0.9))
    # A change in a transaction (a CRM's stage change) stamped now, before that one.
    clock[0] = NOW + 0.2
    await store.items.put(ITEM, card.model_copy(update={"stage": "WON"}))
    # A stamp far ahead (a scenario's clock) keeps its time, and does not drag the next one's.
    assert await store.items.record(ITEM, "call:3", timeline_entry("call.missed", {"ref": "CA3"}, NOW + 10**8))
    await store.items.put(ITEM, card)

    timeline = await entries(store)
    assert [(e["type"], e["data"].get("ref")) for e in timeline] == [
        ("item.created", None),
        ("call.missed", "CA1"),
        ("call.missed", "CA2"),
        ("item.stage_changed", None),
        ("call.missed", "CA3"),
        ("item.stage_changed", None),
    ]
    now, ahead = now_iso(NOW), now_iso(NOW + 0.9)
    assert [e["at"] for e in timeline] == [now, now, ahead, ahead, now_iso(NOW + 10**8), now_iso(NOW + 0.2)]

    keys = store.keys
    stream = keys.stream(OUTBOX_STREAM, keys.partition_of(ITEM))
    outbox: Any = await redis.xrange(stream)  # decoded: (id, {field: value})
    published = [json.loads(fields["entry"]) for _, fields in outbox]
    assert published == timeline


def test_stamps_have_four_digit_years_and_milliseconds() -> None:
    # The timeline compares stamps as text: they must all have one width.
    assert now_iso(-62135596800.0) == "0001-01-01T00:00:00.000Z"
    assert now_iso(-61000000000.0) == "0036-12-26T11:33:20.000Z"
    assert now_iso(T0 + 0.0004) == "2026-05-28T20:26:40.000Z"
    assert now_iso(T0 + 0.9996) == "2026-05-28T20:26:40.999Z"  # milliseconds cut, as isoformat does
    assert now_iso(T0 + 0.9999996) == "2026-05-28T20:26:41.000Z"  # the microseconds rounded up
    assert now_iso(-0.25) == "1969-12-31T23:59:59.750Z"
