import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping

import pytest

from config.vocabulary import EventKind
from webhooks.errors import MalformedWebhook
from webhooks.events import Event
from webhooks.twilio import (
    AmdResult,
    CallLine,
    dial_twiml,
    empty_twiml,
    is_amd,
    message_twiml,
    parse_amd,
    parse_sms,
    parse_sms_status,
    parse_voice,
    parse_voice_status,
)

LINE = "+34911234567"
CUSTOMER = "+34600111222"
AGENT = "+34600000009"
ON_LINE = CallLine(LINE, frozenset({AGENT}))
CALL_SID = "CA" + "0" * 32
NOW = 1_700_000_000.0

INBOUND = {
    "CallSid": CALL_SID,
    "AccountSid": "AC" + "1" * 32,
    "From": CUSTOMER,
    "To": LINE,
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
}
# An API-placed call: From is our line, To the customer.
OUTBOUND = {**INBOUND, "From": LINE, "To": CUSTOMER, "Direction": "outbound-api"}


def status(form: dict[str, str], line: CallLine = ON_LINE) -> list[Event]:
    return parse_voice_status(form, "tw1", NOW, line)


def test_parse_voice() -> None:
    event = parse_voice({**INBOUND, "CallStatus": "ringing", "CallerName": "ANA"}, "tw1", NOW)
    assert event == Event(
        kind=EventKind.CALL_INCOMING,
        provider="tw1",
        line=LINE,
        customer=CUSTOMER,
        ref=CALL_SID,
        dedup=f"twilio:call:{CALL_SID}:incoming",
        at=NOW,
        status="ringing",
        direction="inbound",
        extra={"CallerName": "ANA"},
    )


@pytest.mark.parametrize(
    ("dial_status", "kind"),
    [
        ("no-answer", EventKind.CALL_MISSED),
        ("busy", EventKind.CALL_MISSED),
        ("failed", EventKind.CALL_MISSED),
        ("canceled", EventKind.CALL_MISSED),
        ("completed", EventKind.CALL_ANSWERED),
        ("answered", EventKind.CALL_ANSWERED),
    ],
)
def test_dial_action(dial_status: str, kind: EventKind) -> None:
    form = {
        **INBOUND,
        "CallStatus": "in-progress",
        "DialCallStatus": dial_status,
        "DialCallSid": "CA" + "2" * 32,
        "DialCallDuration": "0",
    }
    (event,) = status(form)
    assert event.kind is kind
    assert event.status == dial_status
    assert event.dedup == f"twilio:call:{CALL_SID}:dial:{dial_status}"
    assert (event.line, event.customer, event.ref) == (LINE, CUSTOMER, CALL_SID)
    assert event.extra == {"DialCallSid": "CA" + "2" * 32, "DialCallDuration": "0"}


def test_dial_action_unknown_status_is_ignored() -> None:
    assert status({**INBOUND, "DialCallStatus": "teleported"}) == []


@pytest.mark.parametrize(
    ("call_status", "kind"),
    [
        ("queued", None),
        ("initiated", None),
        ("ringing", None),
        ("in-progress", EventKind.CALL_ANSWERED),
        ("completed", EventKind.CALL_COMPLETED),
        ("no-answer", EventKind.CALL_MISSED),
        ("busy", EventKind.CALL_MISSED),
        ("failed", EventKind.CALL_MISSED),
        ("canceled", EventKind.CALL_MISSED),
        ("exploded", None),
        ("", None),
    ],
)
def test_inbound_status(call_status: str, kind: EventKind | None) -> None:
    events = status({**INBOUND, "CallStatus": call_status, "SequenceNumber": "3"})
    if kind is None:
        assert events == []
        return
    (event,) = events
    assert event.kind is kind
    assert (event.line, event.customer) == (LINE, CUSTOMER)
    assert event.dedup == f"twilio:call:{CALL_SID}:{call_status}:3"
    assert event.sequence == 3
    assert event.status == call_status
    assert event.direction == "inbound"


OUTGOING = EventKind.CALL_OUTGOING
ANSWERED = EventKind.CALL_ANSWERED
COMPLETED = EventKind.CALL_COMPLETED


@pytest.mark.parametrize(
    ("direction", "call_status", "kinds"),
    [
        ("outbound-api", "queued", [OUTGOING]),
        ("outbound-api", "initiated", [OUTGOING]),
        ("outbound-api", "ringing", [OUTGOING]),
        # Subscribed to answered+completed: in-progress is the first callback.
        ("outbound-api", "in-progress", [OUTGOING, ANSWERED]),
        # Twilio's default StatusCallback: completed is the only callback.
        ("outbound-api", "completed", [OUTGOING, COMPLETED]),
        ("outbound-api", "busy", [OUTGOING, COMPLETED]),
        ("outbound-api", "no-answer", [OUTGOING, COMPLETED]),
        ("outbound-api", "failed", [OUTGOING, COMPLETED]),
        ("outbound-api", "canceled", [OUTGOING, COMPLETED]),
        ("outbound-api", "exploded", []),
        ("outbound-api", "", []),
        ("outbound-dial", "ringing", [OUTGOING]),
        ("outbound-dial", "completed", [OUTGOING, COMPLETED]),
        ("trunking-terminating", "completed", []),
        ("", "completed", []),
    ],
)
def test_outbound_status(direction: str, call_status: str, kinds: list[EventKind]) -> None:
    events = status({**OUTBOUND, "Direction": direction, "CallStatus": call_status, "SequenceNumber": "2"})
    assert [event.kind for event in events] == kinds
    for event in events:
        assert (event.line, event.customer, event.ref, event.status) == (LINE, CUSTOMER, CALL_SID, call_status)
        assert event.sequence == 2
    if events:
        # call.outgoing once per call, whichever callback reports it first; progress per callback.
        assert events[0].dedup == f"twilio:call:{CALL_SID}:outgoing"
        assert [e.dedup for e in events[1:]] == [f"twilio:call:{CALL_SID}:{call_status}:2"] * (len(events) - 1)


PARENT_SID = "CA" + "9" * 32


@pytest.mark.parametrize("call_status", ["initiated", "ringing", "in-progress", "completed", "no-answer"])
@pytest.mark.parametrize("caller", [LINE, "client:anna", "sip:anna@acme.sip.twilio.com"])
def test_dial_child_leg_to_a_customer_is_the_outgoing_call(call_status: str, caller: str) -> None:
    """A softphone or click-to-call reaches the customer through a <Dial> child leg."""
    form = {**OUTBOUND, "From": caller, "Direction": "outbound-dial", "ParentCallSid": PARENT_SID}
    events = status({**form, "CallStatus": call_status})
    assert events[0].kind is OUTGOING
    assert (events[0].line, events[0].customer) == (LINE, CUSTOMER)
    assert events[0].extra["ParentCallSid"] == PARENT_SID


@pytest.mark.parametrize(
    ("caller", "callee"),
    [
        pytest.param(CUSTOMER, AGENT, id="inbound-call-forwarded-to-an-agent"),
        pytest.param(LINE, AGENT, id="line-rings-its-agent"),
        pytest.param(LINE, "client:anna", id="click-to-call-rings-the-agent-first"),
        pytest.param(LINE, "sip:anna@acme.sip.twilio.com", id="sip-agent"),
        pytest.param(CUSTOMER, "+34600333444", id="not-from-our-line"),
        pytest.param(LINE, LINE, id="to-the-line-itself"),
        pytest.param(LINE, "+266696687", id="to-a-withheld-number"),
    ],
)
def test_legs_that_reach_no_customer_are_not_outgoing(caller: str, callee: str) -> None:
    for direction in ("outbound-dial", "outbound-api"):
        form = {**OUTBOUND, "From": caller, "To": callee, "Direction": direction, "ParentCallSid": PARENT_SID}
        assert status({**form, "CallStatus": "completed"}) == []


def test_status_extra_fields() -> None:
    form = {
        **OUTBOUND,
        "CallStatus": "completed",
        "SequenceNumber": "4",
        "CallDuration": "31",
        "AnsweredBy": "human",
        "SipResponseCode": "200",
        "ParentCallSid": "",
        "Timestamp": "Tue, 14 Nov 2023 22:13:20 +0000",
    }
    for event in status(form):
        assert event.extra == {"CallDuration": "31", "AnsweredBy": "human", "SipResponseCode": "200"}


def test_status_duplicates_share_dedup_and_statuses_do_not() -> None:
    (first,) = status({**INBOUND, "CallStatus": "completed", "SequenceNumber": "2"})
    (again,) = status({**INBOUND, "CallStatus": "completed", "SequenceNumber": "2"})
    (answered,) = status({**INBOUND, "CallStatus": "in-progress", "SequenceNumber": "1"})
    assert first.dedup == again.dedup != answered.dedup


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+34 600 111 222", "+34600111222"),
        ("+1 (415) 867-5309", "+14158675309"),
        ("client:anna", "client:anna"),
        ("Anonymous", "Anonymous"),
        ("+266696687", "+266696687"),
        ("sip:agent@pbx.example.com", "sip:agent@pbx.example.com"),
        (" +34600111222 ", "+34600111222"),
    ],
)
def test_callers_normalised_or_kept_raw(raw: str, expected: str) -> None:
    voice = parse_voice({**INBOUND, "From": raw}, "tw1", NOW)
    sms = parse_sms({"MessageSid": "SM1", "From": raw, "To": LINE}, "tw1", NOW)
    assert voice.customer == sms.customer == expected


@pytest.mark.parametrize("missing", ["CallSid", "To", "From"])
@pytest.mark.parametrize("parser", [parse_voice, functools.partial(parse_voice_status, line=ON_LINE)])
def test_call_without_identity_is_malformed(
    missing: str, parser: Callable[[Mapping[str, str], str, float], object]
) -> None:
    form = {**INBOUND, "CallStatus": "completed"}
    for blank in (None, "", "   "):
        if blank is None:
            del form[missing]
        else:
            form[missing] = blank
        with pytest.raises(MalformedWebhook) as caught:
            parser(form, "tw1", NOW)
        assert caught.value.field == missing


@pytest.mark.parametrize("sequence", ["-1", "1.5", "abc", "1" * 10, "²", " 1"])
def test_bad_sequence_number_is_malformed(sequence: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        status({**INBOUND, "CallStatus": "completed", "SequenceNumber": sequence})
    assert caught.value.field == "SequenceNumber"


def test_parse_sms() -> None:
    form = {
        "MessageSid": "SM" + "3" * 32,
        "SmsSid": "SM" + "3" * 32,
        "From": CUSTOMER,
        "To": LINE,
        "Body": "Hola, ¿me llamáis? 👋",
        "NumSegments": "2",
        "NumMedia": "0",
    }
    event = parse_sms(form, "tw1", NOW)
    assert event == Event(
        kind=EventKind.SMS_INCOMING,
        provider="tw1",
        line=LINE,
        customer=CUSTOMER,
        ref="SM" + "3" * 32,
        dedup=f"twilio:sms:SM{'3' * 32}:incoming",
        at=NOW,
        text="Hola, ¿me llamáis? 👋",
        extra={"NumSegments": "2", "NumMedia": "0"},
    )


def test_parse_sms_without_body() -> None:
    assert parse_sms({"MessageSid": "MM1", "From": CUSTOMER, "To": LINE, "NumMedia": "1"}, "tw1", NOW).text == ""


@pytest.mark.parametrize("missing", ["MessageSid", "To", "From"])
def test_sms_without_identity_is_malformed(missing: str) -> None:
    form = {"MessageSid": "SM1", "From": CUSTOMER, "To": LINE, "Body": "hi", "MessageStatus": "sent"}
    del form[missing]
    for parser in (parse_sms, parse_sms_status):
        with pytest.raises(MalformedWebhook) as caught:
            parser(form, "tw1", NOW)
        assert caught.value.field == missing


@pytest.mark.parametrize(
    ("fields", "expected_status"),
    [
        ({"MessageStatus": "delivered", "SmsStatus": "sent"}, "delivered"),
        ({"SmsStatus": "sent"}, "sent"),
        ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, "undelivered"),
    ],
)
def test_parse_sms_status(fields: dict[str, str], expected_status: str) -> None:
    form = {"MessageSid": "SM9", "From": LINE, "To": CUSTOMER, **fields}
    event = parse_sms_status(form, "tw1", NOW)
    assert event.kind is EventKind.SMS_STATUS
    assert (event.line, event.customer) == (LINE, CUSTOMER)
    assert event.status == expected_status
    assert event.dedup == f"twilio:sms:SM9:{expected_status}"
    assert event.extra == ({"ErrorCode": "30003"} if "ErrorCode" in fields else {})


def test_sms_status_without_status_is_malformed() -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse_sms_status({"MessageSid": "SM9", "From": LINE, "To": CUSTOMER}, "tw1", NOW)
    assert caught.value.field == "MessageStatus"


def test_dial_twiml() -> None:
    action = "https://gw.example.com/webhooks/twilio/voice/status?line=%2B34911234567&x=1"
    root = ET.fromstring(dial_twiml(["+34600000001", "+34600000002"], action, timeout=15))
    assert root.tag == "Response"
    (dial,) = list(root)
    assert dial.tag == "Dial"
    assert dial.attrib == {"action": action, "method": "POST", "timeout": "15"}
    assert [(n.tag, n.text) for n in dial] == [("Number", "+34600000001"), ("Number", "+34600000002")]


def test_dial_twiml_default_timeout() -> None:
    dial = ET.fromstring(dial_twiml(["+34600000001"], "https://gw/a")).find("Dial")
    assert dial is not None
    assert dial.attrib["timeout"] == "20"


def test_dial_twiml_without_agents_hangs_up() -> None:
    root = ET.fromstring(dial_twiml([], "https://gw/a"))
    assert [child.tag for child in root] == ["Hangup"]


def test_empty_twiml() -> None:
    root = ET.fromstring(empty_twiml())
    assert root.tag == "Response"
    assert list(root) == []


def test_message_twiml_escapes_text() -> None:
    text = "Gracias <Ana> & co. Te llamamos pronto"
    root = ET.fromstring(message_twiml(text))
    assert [(child.tag, child.text) for child in root] == [("Message", text)]


AMD = {"CallSid": CALL_SID, "AccountSid": "AC" + "1" * 32, "AnsweredBy": "human", "MachineDetectionDuration": "1830"}


def test_parse_amd() -> None:
    assert is_amd(AMD)
    assert parse_amd(AMD) == AmdResult(CALL_SID, "human", 1830)
    assert parse_amd({**AMD, "MachineDetectionDuration": ""}).detection_ms is None
    # A status callback with synchronous AMD names its parties: it is not an AMD callback.
    assert not is_amd({**OUTBOUND, "AnsweredBy": "human", "CallStatus": "in-progress"})


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({**AMD, "AnsweredBy": ""}, "AnsweredBy"),
        ({**AMD, "AnsweredBy": "<script>"}, "AnsweredBy"),
        ({k: v for k, v in AMD.items() if k != "CallSid"}, "CallSid"),
    ],
)
def test_parse_amd_malformed(form: dict[str, str], field: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse_amd(form)
    assert caught.value.field == field
