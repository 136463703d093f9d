"""The inbox: provider events accepted once into the events stream."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.keys import Keys
from webhooks.events import Event

EVENTS_STREAM = "events"

# Dedup and store in one atomic step: a delivery is either stored (and its identity
# remembered) or a duplicate; never remembered-but-lost, which would drop the retries too.
_ACCEPT = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
for i = 2, #KEYS do redis.call('SET', KEYS[i], id, 'EX', ARGV[1]) end
return id
"""


class Inbox:
    def __init__(self, redis: Redis, keys: Keys, dedup_ttl: int) -> None:
        self._keys = keys
        self._dedup_ttl = dedup_ttl
        self._accept = redis.register_script(_ACCEPT)

    async def accept(self, event: Event, token: str | None = None) -> bool:
        """Store ``event`` durably unless it was seen; True when it is new.

        ``token`` is a provider's delivery id (Twilio's ``I-Twilio-Idempotency-Token``),
        a second identity a retry may be recognised by.
        """
        dedup = [self._keys.dedup(event.dedup)]
        if token:
            dedup.append(self._keys.dedup(f"token:{event.provider}:{token}"))
        stream = self._keys.stream(EVENTS_STREAM)
        return bool(await self._accept(keys=[stream, *dedup], args=[self._dedup_ttl, event.to_json()]))
