import json

import pytest

from config.vocabulary import EventKind
from webhooks.errors import MalformedWebhook
from webhooks.events import Event
from webhooks.voximplant import parse_voximplant

GOOD = {
    "event": "call.missed",
    "call_id": "8F3A2C1D.1700000000.42",
    "line": "+34911234567",
    "customer": "34600111222",
    "at": 1_700_000_000.25,
    "seq": 2,
    "status": "busy",
    "code": 486,
}


def body(**changes: object) -> bytes:
    payload = {**GOOD, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


def test_parse_missed() -> None:
    assert parse_voximplant(body(), "vox1") == Event(
        kind=EventKind.CALL_MISSED,
        provider="vox1",
        line="+34911234567",
        # Not E.164 without the "+": kept raw (the scenario adds the "+" before posting).
        customer="34600111222",
        ref="8F3A2C1D.1700000000.42",
        dedup="voximplant:8F3A2C1D.1700000000.42:call.missed:2",
        at=1_700_000_000.25,
        status="busy",
        sequence=2,
        extra={"code": "486"},
    )


@pytest.mark.parametrize(
    "event", ["call.incoming", "call.outgoing", "call.answered", "call.missed", "call.completed", "sms.incoming"]
)
def test_every_event_kind(event: str) -> None:
    parsed = parse_voximplant(body(event=event, code=..., status=...), "vox1")
    assert parsed.kind == EventKind(event)
    assert parsed.dedup == f"voximplant:{GOOD['call_id']}:{event}:2"
    assert parsed.status == ""
    assert parsed.extra == {}


def test_completed_with_duration() -> None:
    parsed = parse_voximplant(body(event="call.completed", status="completed", duration=42, code=...), "vox1")
    assert parsed.extra == {"duration": "42"}


def test_sms_text_and_integer_time() -> None:
    parsed = parse_voximplant(body(event="sms.incoming", text="STOP ✋", at=1_700_000_000, code=...), "vox1")
    assert parsed.text == "STOP ✋"
    assert parsed.at == 1_700_000_000.0


def test_normalises_parties() -> None:
    parsed = parse_voximplant(body(line="+34 911 234 567", customer="+34 600-111-222"), "vox1")
    assert (parsed.line, parsed.customer) == ("+34911234567", "+34600111222")


def test_unknown_keys_are_ignored() -> None:
    assert parse_voximplant(body(scenario_version="2"), "vox1").kind is EventKind.CALL_MISSED


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(b"not json", None, id="not-json"),
        pytest.param(b"\xff\xfe\x00", None, id="not-utf8"),
        pytest.param(b"[]", None, id="list"),
        pytest.param(b'"call.missed"', None, id="string"),
        pytest.param(b"null", None, id="null"),
        pytest.param(b"42", None, id="number"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, None, id="deep-nesting"),
        pytest.param(b'{"event": "call.missed"', None, id="truncated"),
        pytest.param(body(event="call.exploded"), "event", id="unknown-event"),
        pytest.param(body(event="sms.status"), "event", id="event-not-sent-by-scenarios"),
        pytest.param(body(event=["call.missed"]), "event", id="event-list"),
        pytest.param(body(event=...), "event", id="no-event"),
        pytest.param(body(call_id=...), "call_id", id="no-call-id"),
        pytest.param(body(call_id=""), "call_id", id="empty-call-id"),
        pytest.param(body(call_id="a:b"), "call_id", id="colon-in-call-id"),
        pytest.param(body(call_id="a b"), "call_id", id="space-in-call-id"),
        pytest.param(body(call_id="x" * 129), "call_id", id="long-call-id"),
        pytest.param(body(call_id=12345), "call_id", id="numeric-call-id"),
        pytest.param(body(line=...), "line", id="no-line"),
        pytest.param(body(line=""), "line", id="empty-line"),
        pytest.param(body(line={"$ne": 1}), "line", id="object-line"),
        pytest.param(body(customer=None), "customer", id="null-customer"),
        pytest.param(body(customer="x" * 257), "customer", id="long-customer"),
        pytest.param(body(at=...), "at", id="no-at"),
        pytest.param(body(at="1700000000"), "at", id="string-at"),
        pytest.param(body(at=-1), "at", id="negative-at"),
        pytest.param(body(at=True), "at", id="bool-at"),
        pytest.param(
            b'{"event":"call.missed","call_id":"c","line":"l","customer":"c","at":1e999,"seq":1}', "at", id="inf-at"
        ),
        pytest.param(body(seq=...), "seq", id="no-seq"),
        pytest.param(body(seq=1.5), "seq", id="float-seq"),
        pytest.param(body(seq="1"), "seq", id="string-seq"),
        pytest.param(body(seq=True), "seq", id="bool-seq"),
        pytest.param(body(seq=-1), "seq", id="negative-seq"),
        pytest.param(body(seq=2**31), "seq", id="big-seq"),
        pytest.param(body(seq=10**100), "seq", id="huge-seq"),
        pytest.param(b'{"seq":' + b"9" * 5000 + b"}", None, id="giant-int-literal"),
        pytest.param(body(status=None), "status", id="null-status"),
        pytest.param(body(status="x" * 33), "status", id="long-status"),
        pytest.param(body(text=["a"]), "text", id="list-text"),
        pytest.param(body(text="x" * 5001), "text", id="long-text"),
        pytest.param(body(duration="42"), "duration", id="string-duration"),
        pytest.param(body(duration=-5), "duration", id="negative-duration"),
        pytest.param(body(duration=10**12), "duration", id="huge-duration"),
        pytest.param(body(code=4860), "code", id="big-code"),
        pytest.param(body(code=486.0), "code", id="float-code"),
        pytest.param(body(code={"nested": [[[]]]}), "code", id="nested-code"),
    ],
)
def test_hostile_bodies(raw: bytes, field: str | None) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse_voximplant(raw, "vox1")
    assert caught.value.field == field
    assert caught.value.message
