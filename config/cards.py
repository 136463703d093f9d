"""The customer card a CRM syncs: contacts, company, typed phones and template fields."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from config.lines import Label, Name, Strict
from config.phones import E164

# What a CRM may use as an item id (robocall and SMS requests name items by it).
ItemId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class PhoneType(StrEnum):
    WORK = "WORK"
    MOBILE = "MOBILE"
    HOME = "HOME"
    FAX = "FAX"
    PAGER = "PAGER"
    MAILING = "MAILING"
    OTHER = "OTHER"


class Phone(Strict):
    type: PhoneType = PhoneType.OTHER
    value: E164


Phones = Annotated[list[Phone], Field(max_length=50)]


class Party(Strict):
    """A contact or a company: someone with a name and phones."""

    name: Label = ""
    phones: Phones = Field(default_factory=list)


FieldValue = Annotated[str, Field(max_length=2000)] | int | float | bool | None


class Card(Strict):
    pipeline: Name
    stage: Name
    responsible: Label = ""
    fields: Annotated[dict[Annotated[str, Field(max_length=64)], FieldValue], Field(max_length=200)] = Field(
        default_factory=dict
    )
    contacts: Annotated[list[Party], Field(max_length=50)] = Field(default_factory=list)
    company: Party | None = None

    def numbers(self) -> set[str]:
        """Every number on the card: the phone index maps each of them to this item."""
        parties = [*self.contacts, *([self.company] if self.company else [])]
        return {phone.value for party in parties for phone in party.phones}
