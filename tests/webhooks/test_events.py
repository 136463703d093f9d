"""The event model's pure rules: who is a withheld caller, what makes two events one."""

import pytest

from config.vocabulary import EventKind
from webhooks.events import Event, withheld


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("+34600111222", None),
        ("+14158675309", None),
        ("+266696687", "anonymous"),  # Twilio's ANONYMOUS caller
        ("+86282452253", "unavailable"),  # Twilio's UNAVAILABLE caller
        ("client:anna", "client"),
        ("sip:agent@pbx.example.com", "sip"),
        ("SIP:agent@pbx.example.com", "sip"),
        ("Anonymous", "unknown"),
        ("+1", "unknown"),
        ("", "unknown"),
        ("34600111222", "unknown"),  # no +: not E.164 as received
    ],
)
def test_withheld(identity: str, reason: str | None) -> None:
    assert withheld(identity) == reason


def event(kind: EventKind, status: str) -> Event:
    return Event(kind, "tw", "+34911234567", "+34600111222", "SM1", f"d:{status}", 0.0, status=status)


def test_each_sms_status_is_its_own_effect_but_a_call_kind_is_once() -> None:
    sent, undelivered = event(EventKind.SMS_STATUS, "sent"), event(EventKind.SMS_STATUS, "undelivered")
    assert sent.identity != undelivered.identity
    assert event(EventKind.CALL_MISSED, "busy").identity == event(EventKind.CALL_MISSED, "no-answer").identity
