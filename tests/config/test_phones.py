"""E.164 normalisation: the one form numbers are stored, indexed and compared in."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from config.phones import E164, InvalidPhone, normalize, to_e164


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+34600111222", "+34600111222"),
        ("+34 600 111 222", "+34600111222"),
        ("+34-600-111-222", "+34600111222"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("  +49 30 901820  ", "+4930901820"),
        ("+7 (912) 345-67-89", "+79123456789"),
        ("+34.600.111.222", "+34600111222"),
    ],
)
def test_international_numbers_become_e164(raw: str, expected: str) -> None:
    assert to_e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "600111222",  # no country code: a gateway for many countries cannot guess it
        "0034600111222",  # international prefix instead of +: still a guess
        "(415) 555-2671",
        "+34 600",  # too short
        "+1 555 0100",
        "+999 1234567",  # no such country code
        "+",
        "",
        "   ",
        "abc",
        "client:anna",
        "+34 600 111 222 333 444 555",
    ],
)
def test_invalid_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        to_e164(raw)


def test_invalid_phone_is_a_value_error_naming_the_input() -> None:
    with pytest.raises(ValueError, match="600111222"):
        to_e164("600111222")


def test_normalize_keeps_identities_that_are_not_numbers() -> None:
    assert normalize("+34 600-111-222") == "+34600111222"
    assert normalize("client:x") == "client:x"
    assert normalize(" sip:anna@pbx.example.com ") == "sip:anna@pbx.example.com"
    assert normalize("Anonymous") == "Anonymous"
    assert normalize("600111222") == "600111222"


def test_the_pydantic_type_normalises_and_refuses() -> None:
    adapter = TypeAdapter(E164)
    assert adapter.validate_python("+34 (600) 111-222") == "+34600111222"
    with pytest.raises(ValidationError) as raised:
        adapter.validate_python("600111222")
    assert raised.value.errors()[0]["type"] == "value_error"
