"""What an SMS request asks for (``POST /v1/sms``) and the rule its text must keep."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from config.cards import ItemId
from config.lines import Name, Strict
from config.phones import E164
from config.recipients import AUTO, PhoneChoice
from config.templates import fixed_length

# SPEC 1.1: the rule's message is at most 200 characters once the card's values are in.
MAX_CHARS = 200


class SmsMessage(Strict):
    """What an SMS says and how it goes, for an item given elsewhere: a stage rule's SMS."""

    # A template: its length counts after rendering (rendered_length_error).
    text: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2000,
            description=(
                "A template ({{field}} from the item's fields): at most 200 characters once rendered. "
                "A text over 200 characters without its {{field}} placeholders is refused (422)."
            ),
        ),
    ]
    phone_type: PhoneChoice = AUTO
    provider: Name | None = None
    line: E164 | None = None
    delay_seconds: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] = 0


class SmsRequest(SmsMessage):
    item_id: ItemId


def fixed_length_error(template: str) -> str | None:
    """Why ``template`` can never be sent, whatever a card fills it with, or None. Asked of
    what an API request sets down (a stage rule), not of what is stored: a rule saved before
    this check still loads, and fails at rendering as it did."""
    fixed = fixed_length(template)
    if fixed > MAX_CHARS:
        return (
            f"the text is {fixed} characters without its {{{{field}}}} placeholders; "
            f"at most {MAX_CHARS} are allowed once they are filled in"
        )
    return None


def rendered_length_error(text: str) -> str | None:
    """Why the rendered ``text`` cannot be sent, or None when it can."""
    if not text.strip():
        return "text: the rendered text is empty"
    if len(text) > MAX_CHARS:
        return f"text: the rendered text is {len(text)} characters; at most {MAX_CHARS} are allowed"
    return None
