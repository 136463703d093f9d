"""Quiet hours: when a robocall or SMS may reach a customer, from the line's ``hours``.

The hours are read in the customer's local time, from the number (libphonenumber knows
the zones a number may be in; all of them must be open, so a Spanish mobile that may be in
the Canaries is not called an hour early there). A number whose zone is unknown, or whose
zones never share an open window, falls back to the line's own ``tz``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_zones

from config.lines import DAYS, Hours

_LOOKAHEAD_DAYS = 8


class NeverOpen(ValueError):
    """The hours have no open window in the coming week."""


@functools.lru_cache(maxsize=65536)
def zones_of(number: str) -> tuple[str, ...]:
    """The IANA zones ``number`` (E.164) may ring in; empty when unknown."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ()
    return tuple(zone for zone in number_zones.time_zones_for_number(parsed) if zone != "Etc/Unknown")


def _span(hours: Hours, day: int) -> tuple[time, time] | None:
    span = getattr(hours, DAYS[day])
    return None if span is None else (time.fromisoformat(span[0]), time.fromisoformat(span[1]))


def _open_in(hours: Hours, zone: str, moment: datetime) -> bool:
    local = moment.astimezone(ZoneInfo(zone))
    span = _span(hours, local.weekday())
    return span is not None and span[0] <= local.time().replace(tzinfo=None) < span[1]


def _openings(hours: Hours, zone: str, now: datetime) -> list[datetime]:
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    found = []
    for offset in range(_LOOKAHEAD_DAYS):
        day = today + timedelta(days=offset)
        span = _span(hours, day.weekday())
        if span is not None:
            found.append(datetime.combine(day, span[0], tzinfo=tz))
    return found


def _first_open(hours: Hours, zones: Sequence[str], now: datetime) -> datetime | None:
    if all(_open_in(hours, zone, now) for zone in zones):
        return now
    for candidate in sorted(t for zone in zones for t in _openings(hours, zone, now) if t > now):
        if all(_open_in(hours, zone, candidate) for zone in zones):
            return candidate
    return None


def next_open(hours: Hours, number: str, now: datetime) -> datetime:
    """``now`` when ``number`` may be called now, else the next moment it may (aware)."""
    for zones in (zones_of(number), (hours.tz,)):
        if zones:
            moment = _first_open(hours, zones, now)
            if moment is not None:
                return moment
    raise NeverOpen(f"the line's hours ({hours.tz}) have no open window in the next {_LOOKAHEAD_DAYS} days")
