"""Usage totals per UTC hour: one hash per hour holds every provider's and line's counters,
so a report over any span reads one hash per hour, however many jobs ran.

Each addition names what it is for (a job's dial ending); the hour's set of names makes a
repeat (a provider callback processed again) add nothing. Both keys share the hour's hash
tag, so the check and the increments are one step on a cluster too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from config.usage import Usage
from gateway.keys import Keys
from gateway.store.nodes import pipelined

# Usage is kept for reports this long after its hour's last addition.
RETENTION_SECONDS = 400 * 24 * 3600
# Repeats of a callback come within minutes; the names that stop them are kept this long.
SEEN_SECONDS = 3 * 24 * 3600
HOUR = 3600

_ADD = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclass
class Totals:
    """One provider's (or provider and line's) counters, and costs by currency."""

    usage: Usage = field(default_factory=Usage)
    cost: dict[str, int] = field(default_factory=dict)  # currency -> nanos


class UsageStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str)
        self._keys = keys
        self._add = redis.register_script(_ADD)

    async def add(self, at: float, identity: str, provider: str, line: str, usage: Usage, currency: str) -> bool:
        """Add ``usage`` to the hour of ``at`` once per ``identity``; False for a repeat."""
        hour = int(at // HOUR)
        pairs: list[str | int] = []
        for name, value in usage.counters().items():
            if name == "cost_nanos":
                if currency:
                    pairs += [f"{provider}|{line}|cost|{currency}", value]
            elif value:
                pairs += [f"{provider}|{line}|{name}", value]
        keys = [self._keys.usage(hour), self._keys.usage_seen(hour)]
        return bool(await self._add(keys=keys, args=[identity, SEEN_SECONDS, RETENTION_SECONDS, *pairs]))

    async def totals(self, hours: Iterable[int]) -> dict[tuple[str, str], Totals]:
        """Counters summed over the given hours (unix seconds // 3600), by (provider, line)."""
        async with pipelined(self._redis) as pipe:
            for hour in hours:
                pipe.hgetall(self._keys.usage(hour))
            found: list[dict[str, str]] = await pipe.execute()
        sums: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        costs: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for bucket in found:
            for name, value in bucket.items():
                provider, line, counter, *currency = name.split("|")
                into = costs if currency else sums
                key = currency[0] if currency else counter
                into[provider, line][key] = into[provider, line].get(key, 0) + int(value)
        return {
            owner: Totals(Usage(**sums.get(owner, {})), costs.get(owner, {}))
            for owner in sorted(set(sums) | set(costs))
        }
