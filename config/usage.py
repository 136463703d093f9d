"""What jobs used and what it cost: a provider's prices, and the usage of one dial or job.

Money is counted in integer nanos of the provider's currency (10^-9), so totals summed in
Redis are exact however many jobs add to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from decimal import Decimal

from config.lines import Prices

NANOS = 10**9


def _nanos(price: float) -> int:
    return int(Decimal(repr(price)) * NANOS)


def billed_minutes(seconds: int) -> int:
    """Providers bill each call by the started minute: 61 s is 2 minutes."""
    return math.ceil(seconds / 60)


@dataclass(frozen=True)
class Usage:
    """Counters of one dial, one job or a total. ``tts_chars`` counts the characters of a
    said job's text; only those the provider spoke (``provider_chars``) are priced."""

    jobs: int = 0
    calls: int = 0
    seconds: int = 0
    minutes: int = 0
    tts_chars: int = 0
    provider_chars: int = 0
    sms_segments: int = 0
    cost_nanos: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def counters(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def priced(self, prices: Prices | None) -> Usage:
        """These counters with their cost (none without prices) added."""
        if prices is None:
            return self
        cost = (
            self.minutes * _nanos(prices.per_minute)
            + self.provider_chars * _nanos(prices.per_tts_char)
            + self.sms_segments * _nanos(prices.per_sms_segment)
        )
        return Usage(**{**self.counters(), "cost_nanos": self.cost_nanos + cost})


def call_usage(seconds: int) -> Usage:
    """One placed call that lasted ``seconds`` (0 when unanswered)."""
    return Usage(calls=1, seconds=seconds, minutes=billed_minutes(seconds))


def money(nanos: int) -> float:
    """Nanos as an amount (rounded to the nano, as stored)."""
    return float(Decimal(nanos) / NANOS)
