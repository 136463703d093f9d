"""Quiet hours in the customer's time zone: open now, the next window, and the fallbacks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.hours import NeverOpen, next_open, zones_of
from config.lines import Hours

WEEKDAYS = Hours(tz="Europe/Madrid", mon=["09:00", "18:00"], tue=["09:00", "18:00"], fri=["10:00", "14:00"])
NEW_YORK = "+12125551234"
MADRID_OR_CANARIES = "+34600111222"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_zones_come_from_the_number() -> None:
    assert zones_of(NEW_YORK) == ("America/New_York",)
    assert set(zones_of(MADRID_OR_CANARIES)) == {"Atlantic/Canary", "Europe/Madrid"}
    assert zones_of("client:anna") == ()


def test_open_now_is_now() -> None:
    monday_noon_ny = at("2026-11-23T17:00:00")  # 12:00 in New York
    assert next_open(WEEKDAYS, NEW_YORK, monday_noon_ny) == monday_noon_ny


def test_at_night_the_job_waits_for_the_customers_morning() -> None:
    monday_night_ny = at("2026-11-24T03:00:00")  # Monday 22:00 in New York
    opening = next_open(WEEKDAYS, NEW_YORK, monday_night_ny)
    assert opening == at("2026-11-24T14:00:00")  # Tuesday 09:00 in New York


def test_every_zone_of_the_number_must_be_open() -> None:
    # 08:30 UTC on a Monday: 09:30 in Madrid but 08:30 in the Canaries.
    opening = next_open(WEEKDAYS, MADRID_OR_CANARIES, at("2026-11-23T08:30:00"))
    assert opening == at("2026-11-23T09:00:00")  # 09:00 in the Canaries


def test_an_unknown_zone_uses_the_lines_tz() -> None:
    friday_evening = at("2026-11-27T17:00:00")  # 18:00 in Madrid, after Friday's 14:00
    opening = next_open(WEEKDAYS, "client:anna", friday_evening)
    assert opening == at("2026-11-30T08:00:00")  # Monday 09:00 in Madrid


def test_hours_with_no_open_day_never_open() -> None:
    with pytest.raises(NeverOpen):
        next_open(Hours(tz="Europe/Madrid"), NEW_YORK, at("2026-11-23T12:00:00"))
