"""The consent ledger: one record per number, shared by SMS and robocalls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Keys
from gateway.store.items import now_iso

# A change applies only when it is at least as new as the last one (a STOP processed again
# after a later START must not opt the number out again) and changes the state.
_CHANGE = """
local cur = redis.call('HMGET', KEYS[1], 'at', 'opted_out')
if cur[1] and tonumber(cur[1]) > tonumber(ARGV[1]) then return 0 end
if cur[2] == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'opted_out', ARGV[2], unpack(ARGV, 3))
return 1
"""


@dataclass(frozen=True)
class ConsentRecord:
    number: str
    opted_out: bool
    source: str  # sms (a keyword), admin, provider (a carrier's refusal)
    detail: str  # the keyword, the admin's reason, the provider's error
    at: float

    def view(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "opted_out": self.opted_out,
            "source": self.source,
            "detail": self.detail or None,
            "changed_at": now_iso(self.at),
        }


class ConsentLedger:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis: Any = redis  # decoded replies (str)
        self._keys = keys
        self._change = redis.register_script(_CHANGE)

    async def get(self, number: str) -> ConsentRecord | None:
        raw = await self._redis.hgetall(self._keys.consent(number))
        if not raw:
            return None
        return ConsentRecord(
            number, raw["opted_out"] == "1", raw.get("source", ""), raw.get("detail", ""), float(raw["at"])
        )

    async def change(self, record: ConsentRecord) -> bool:
        """Record ``record`` unless a newer change is there or the state is the same; True
        when it changed the number's consent."""
        fields = ["source", record.source, "detail", record.detail[:500]]
        args = [repr(record.at), "1" if record.opted_out else "0", *fields]
        return bool(await self._change(keys=[self._keys.consent(record.number)], args=args))
