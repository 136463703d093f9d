"""Who a robocall or SMS goes to: SPEC 1.1's phone selection, one function for both."""

from __future__ import annotations

from typing import Literal

from config.cards import Card, PhoneType

PhoneChoice = Literal["AUTO"] | PhoneType
AUTO: PhoneChoice = "AUTO"


class NoRecipient(ValueError):
    """The card has no number the rule may use; the job ends ``skipped`` with this reason."""


def select_phone(card: Card, choice: PhoneChoice) -> str:
    """The number to call or text.

    The first contact is used; the company only when there is no contact. A type the chosen
    party lacks is a skip even when the other party has it: the CRM rule named that person.
    ``AUTO`` takes the party's first number, whatever its type.
    """
    if card.contacts:
        party, who = card.contacts[0], "the first contact"
    elif card.company is not None:
        party, who = card.company, "the company"
    else:
        raise NoRecipient("the item has no contact and no company")
    if choice == AUTO:
        if not party.phones:
            raise NoRecipient(f"{who} has no phone number")
        return party.phones[0].value
    for phone in party.phones:
        if phone.type == choice:
            return phone.value
    raise NoRecipient(f"{who} has no {choice} phone number")
