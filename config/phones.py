"""E.164 phone numbers: the one normalisation every part of callgate uses."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, WithJsonSchema


class InvalidPhone(ValueError):
    """A number libphonenumber cannot read as a valid international number."""


# Every webhook and card repeats the same few numbers; parsing one costs ~30 us.
@functools.lru_cache(maxsize=65536)
def to_e164(raw: str) -> str:
    """Parse ``raw`` (international form, spaces and punctuation allowed) into E.164.

    Numbers must carry their country code: a gateway serving many countries cannot guess one.
    """
    try:
        parsed = phonenumbers.parse(raw.strip(), None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{raw!r} is not an international phone number (+ and country code)") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize(raw: str) -> str:
    """E.164 when ``raw`` is a phone number, else ``raw`` unchanged.

    Providers send identities that are not numbers (``client:anna``, ``sip:...``,
    ``Anonymous``); those must still flow through events, they just match no card.
    """
    try:
        return to_e164(raw)
    except InvalidPhone:
        return raw.strip()


# The published shape of a phone number. No pattern can say "a number libphonenumber knows
# as valid" (what ``to_e164`` checks): the ``e164`` format names that rule.
PHONE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "e164",
    "description": "an international number with its country code, e.g. +34600111222 (stored as E.164)",
    "examples": ["+34600111222"],
}

E164 = Annotated[str, AfterValidator(to_e164), WithJsonSchema(PHONE_SCHEMA)]
