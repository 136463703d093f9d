"""Phone selection (SPEC 1.1) and ``{{field}}`` templates: the pure pieces SMS reuses."""

from __future__ import annotations

from typing import Any

import pytest

from config.cards import Card, PhoneType
from config.recipients import AUTO, NoRecipient, select_phone
from config.templates import FieldValue, UnknownField, render


def card(contacts: list[list[tuple[str, str]]], company: list[tuple[str, str]] | None = None) -> Card:
    data: dict[str, Any] = {
        "pipeline": "sales",
        "stage": "NEW",
        "contacts": [{"phones": [{"type": t, "value": v} for t, v in phones]} for phones in contacts],
    }
    if company is not None:
        data["company"] = {"phones": [{"type": t, "value": v} for t, v in company]}
    return Card.model_validate(data)


def test_auto_takes_the_first_contacts_first_number_whatever_its_type() -> None:
    c = card([[("HOME", "+34600000001"), ("MOBILE", "+34600000002")], [("MOBILE", "+34600000003")]])
    assert select_phone(c, AUTO) == "+34600000001"


def test_a_type_is_looked_up_on_the_first_contact() -> None:
    c = card([[("HOME", "+34600000001"), ("MOBILE", "+34600000002")]], company=[("MOBILE", "+34910000009")])
    assert select_phone(c, PhoneType.MOBILE) == "+34600000002"


def test_a_type_the_contact_lacks_is_a_skip_even_when_the_company_has_it() -> None:
    c = card([[("HOME", "+34600000001")]], company=[("WORK", "+34910000009")])
    with pytest.raises(NoRecipient, match="first contact has no WORK"):
        select_phone(c, PhoneType.WORK)


def test_the_company_is_used_only_without_contacts() -> None:
    c = card([], company=[("WORK", "+34910000009")])
    assert select_phone(c, PhoneType.WORK) == "+34910000009"
    assert select_phone(c, AUTO) == "+34910000009"


def test_nobody_to_call_is_a_skip() -> None:
    with pytest.raises(NoRecipient, match="no contact and no company"):
        select_phone(card([]), AUTO)
    with pytest.raises(NoRecipient, match="no phone number"):
        select_phone(card([[]]), AUTO)


def test_templates_fill_fields_and_name_the_unknown_one() -> None:
    fields: dict[str, FieldValue] = {"name": "Ana", "order": "A-17", "amount": 12.5, "vip": True, "note": None}
    assert render("Hola {{name}}, pedido {{ order }}: {{amount}} {{vip}}{{note}}", fields) == (
        "Hola Ana, pedido A-17: 12.5 yes"
    )
    with pytest.raises(UnknownField) as raised:
        render("Hola {{nombre}}", fields)
    assert raised.value.name == "nombre"
    assert render("no {placeholders} here {{", fields) == "no {placeholders} here {{"
