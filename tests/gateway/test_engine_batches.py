"""The engine takes a consumer's whole read at once: a customer's events keep their stream
order, one bad entry fails alone, and every event still has its effects exactly once."""

from __future__ import annotations

from redis.asyncio import Redis

from config.settings import Settings
from config.vocabulary import EventKind
from gateway.app import create_app
from gateway.engine.processor import rounds
from gateway.keys import Keys
from gateway.store.inbox import EVENTS_STREAM
from tests.conftest import ClientFactory
from tests.support import CUSTOMER, LINE, add_item, add_trigger, configure, eventually, item, timeline_types
from webhooks.events import Event

OTHER = "+34600333444"


def event(kind: EventKind, customer: str, ref: str) -> Event:
    return Event(kind=kind, provider="tw", line=LINE, customer=customer, ref=ref, dedup=ref, at=1.0)


def test_rounds_hold_one_event_per_customer_in_stream_order() -> None:
    a1, b1, a2, c1, a3, b2 = (
        event(EventKind.SMS_INCOMING, customer, ref)
        for customer, ref in [("A", "a1"), ("B", "b1"), ("A", "a2"), ("C", "c1"), ("A", "a3"), ("B", "b2")]
    )
    batch = [(e.ref, e) for e in (a1, b1, a2, c1, a3, b2)]
    assert [[entry_id for entry_id, _ in r] for r in rounds(batch)] == [["a1", "b1", "c1"], ["a2", "b2"], ["a3"]]


async def test_one_read_keeps_each_customers_order_and_fails_only_the_bad_entry(
    aiohttp_client: ClientFactory, settings: Settings, redis: Redis
) -> None:
    api = await aiohttp_client(create_app(settings, workers=False))
    await configure(api)
    await add_item(api, "D1")
    await add_item(api, "D2", phone=OTHER)
    await add_trigger(api, event="call.missed")
    keys = Keys(settings.key_prefix)
    # One customer's events are in their partition; the other's may be in another.
    streams = {customer: keys.stream(EVENTS_STREAM, keys.partition_of(customer)) for customer in (CUSTOMER, OTHER)}
    kinds = [EventKind.SMS_INCOMING, EventKind.CALL_MISSED, EventKind.CALLBACK_REQUESTED, EventKind.SMS_INCOMING]
    # Interleaved, with a malformed entry in the middle: all in the consumers' first read.
    for n, kind in enumerate(kinds):
        await redis.xadd(streams[CUSTOMER], {"event": event(kind, CUSTOMER, f"d1-{n}").to_json()})
        await redis.xadd(streams[OTHER], {"event": event(kind, OTHER, f"d2-{n}").to_json()})
        if n == 1:
            await redis.xadd(streams[CUSTOMER], {"event": "not-json"})
    await aiohttp_client(create_app(settings))  # its workers read the stream

    async def all_but_the_bad_one_done() -> bool:
        return [await redis.xlen(streams[CUSTOMER]), await redis.xlen(streams[OTHER])] == [1, 0]

    await eventually(all_but_the_bad_one_done)
    for item_id in ("D1", "D2"):
        data = await item(api, item_id)
        recorded = [t for t in timeline_types(data) if t != "item.created"]
        assert recorded == ["sms.incoming", "call.missed", "item.stage_changed", "callback.requested", "sms.incoming"]
        assert data["stage"] == "CALL_BACK"
    errors = await redis.hgetall(keys.errors(EVENTS_STREAM, keys.partition_of(CUSTOMER)))
    assert [str(e).split(":")[0] for e in errors.values()] == ["JSONDecodeError"]
