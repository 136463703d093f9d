"""Path and query values checked the same way body fields are: 422 naming the field."""

from __future__ import annotations

import re

from aiohttp import web

from config.phones import InvalidPhone, to_e164
from gateway.errors import Invalid

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def name(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if not _NAME.match(value):
        raise Invalid(key, f"{key}: 1-64 letters, digits, '_', '.' or '-'")
    return value


def item_id(request: web.Request, key: str = "id") -> str:
    value = request.match_info[key]
    if not _ITEM_ID.match(value):
        raise Invalid(key, f"{key}: 1-128 letters, digits, '_', '.', ':' or '-'")
    return value


def phone(value: str | None, field: str) -> str:
    if not value:
        raise Invalid(field, f"{field} is required", code="missing")
    if value.startswith(" "):
        # An unencoded "+" in a query string arrives as a space (?phone=+34600111222).
        value = "+" + value.lstrip()
    try:
        return to_e164(value)
    except InvalidPhone as exc:
        raise Invalid(field, f"{field}: {exc}") from None
