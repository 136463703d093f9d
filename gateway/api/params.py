"""Path and query values checked the same way body fields are: 422 naming the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from config.phones import PHONE_SCHEMA, InvalidPhone, to_e164
from gateway.api.routing import Schema
from gateway.errors import ApiError, Invalid

PHONE: Schema = PHONE_SCHEMA

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# A dead letter's id: its stream entry id (both parts 64-bit: 19 digits always fit), then
# ``.`` and its partition, which a client may leave out when one partition holds the id.
DEAD_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}(\.[0-9]{1,4})?$")
# Visible ASCII only: a header value becomes part of a Redis key and of logs.
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,255}")


def pattern_schema(regex: re.Pattern[str]) -> Schema:
    """The published schema of a value this module checks against ``regex``."""
    text = regex.pattern.removeprefix("^").removesuffix("$")
    # Anchored: a JSON Schema pattern matches anywhere, the checks here match whole values.
    return {"type": "string", "pattern": f"^(?:{text})$"}


NAME_SCHEMA = pattern_schema(NAME)
ITEM_ID_SCHEMA = pattern_schema(_ITEM_ID)
DEAD_ID_SCHEMA = pattern_schema(DEAD_ID)
TIME_SCHEMA: Schema = {"type": "string", "format": "date-time"}
POSITION_SCHEMA: Schema = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


def limit_schema(most: int = 500) -> Schema:
    return {"type": "integer", "minimum": 1, "maximum": most}


def name(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if not NAME.match(value):
        raise Invalid(key, f"{key}: 1-64 letters, digits, '_', '.' or '-'")
    return value


def item_id(request: web.Request, key: str = "id") -> str:
    return item_id_value(request.match_info[key], key)


def item_id_value(value: str, key: str) -> str:
    if not _ITEM_ID.match(value):
        raise Invalid(key, f"{key}: 1-128 letters, digits, '_', '.', ':' or '-'")
    return value


def dead_id(request: web.Request, key: str = "id") -> str:
    value = request.match_info[key]
    if not DEAD_ID.match(value):
        raise Invalid(key, f"{key}: a dead_id (e.g. 1700000000000-0.3) or a stream entry id (e.g. 1700000000000-0)")
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


def optional_phone(request: web.Request, key: str) -> str | None:
    value = request.query.get(key)
    return None if value is None else phone(value, key)


def iso_time(request: web.Request, key: str) -> float | None:
    """An ISO-8601 time in the query as unix seconds; without an offset it is UTC."""
    value = request.query.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        raise Invalid(key, f"{key}: not an ISO-8601 time (e.g. 2026-01-31T09:00:00Z)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def position(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise Invalid(key, f"{key}: a whole number from 0")
    return int(value)


def limit(request: web.Request, default: int = 50, most: int = 500) -> int:
    value = request.query.get("limit")
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= most:
        raise Invalid("limit", f"limit: a whole number from 1 to {most}")
    return int(value)


def matching(request: web.Request, key: str, pattern: re.Pattern[str], shape: str) -> str | None:
    value = request.query.get(key)
    if value is not None and not pattern.fullmatch(value):
        raise Invalid(key, f"{key}: {shape}")
    return value


def header_token(request: web.Request, header: str) -> str | None:
    """An id a client or provider sends in ``header`` (an idempotency key), or None when absent.

    aiohttp hands over non-UTF-8 bytes as surrogates, which no Redis key can hold: 400.
    """
    value = request.headers.get(header)
    if value is None:
        return None
    if not _HEADER_TOKEN.fullmatch(value):
        raise ApiError(400, "invalid_header", f"{header}: 1-255 visible ASCII characters")
    return value
