"""Schemathesis extensions for the contract test (loaded through ``SCHEMATHESIS_HOOKS``).

The ``e164`` format stands for "a number libphonenumber knows as valid": no pattern can say
that, so valid numbers are drawn from libphonenumber's own examples. A reference to a record
that does not exist (422 ``unknown_reference``) and a URL whose host does not resolve to a
public address (422 ``url_refused``) are the refusals of schema-valid input the schema cannot
foresee: they depend on what is stored and on DNS, not on the request's shape.
"""

from __future__ import annotations

import json
from typing import Any

import phonenumbers
import schemathesis
from hypothesis import strategies as st

# Refusals a well-formed request can get: credentials, existence, state, rate.
_STATE_DEPENDENT = {401, 403, 404, 409, 429}
# Rules between two values that JSON Schema cannot state, each refused with this message
# (the schema's description says it).
_BETWEEN_VALUES = (
    "a day's opening time must be before its closing time",
    "characters without its {{field}} placeholders",  # the SMS text's rule
)


def _valid_numbers() -> list[str]:
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number(region)
        if example is None:
            continue
        for style in (phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL):
            numbers.append(phonenumbers.format_number(example, style))
    return numbers


schemathesis.openapi.format("e164", st.sampled_from(_valid_numbers()))


@schemathesis.check
def schema_valid_request_accepted(ctx: Any, response: Any, case: Any) -> None:
    """A request valid by /openapi.json is not refused for its shape (400, 422, ...)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    status = response.status_code
    if status < 400 or status >= 500 or status in _STATE_DEPENDENT:
        return
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if status == 422 and (
        code in ("unknown_reference", "url_refused") or any(rule in response.text for rule in _BETWEEN_VALUES)
    ):
        return
    raise AssertionError(f"schema-valid request rejected with {status}: {response.text[:300]}")
