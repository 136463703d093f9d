"""Provider events in Redis: accept once, track call progress, arm and fire overdue timers."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.keys import Keys
from webhooks.events import CALL_PROGRESS, Event

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

# Returns the rank the call had and whether a job placed it; the status only moves forward.
_PROGRESS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
if tonumber(ARGV[1]) >= current then
  redis.call('HSET', KEYS[1], 'rank', ARGV[1], 'status', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {current, redis.call('HEXISTS', KEYS[1], 'job')}
"""

# Due timers move into the events stream in one step, so a timer fires exactly once
# even with many workers polling, and none is lost if a worker dies mid-poll.
_FIRE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'event', member)
end
return #due
"""

_CALL_TTL = 2 * 24 * 3600
# An answer older than the longest overdue delay can no longer void a timer.
_RESPONDED_TTL = 31 * 24 * 3600


class Events:
    def __init__(self, redis: Redis, keys: Keys, dedup_ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._dedup_ttl = dedup_ttl
        self._accept = redis.register_script(_ACCEPT)
        self._progress = redis.register_script(_PROGRESS)
        self._fire_due = redis.register_script(_FIRE_DUE)

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

    async def progress(self, event: Event) -> tuple[bool, bool]:
        """Record how far the call got. Returns whether ``event`` is not behind what we
        already saw, and whether callgate placed the call itself (a job's call)."""
        rank = CALL_PROGRESS[event.kind]
        key = self._keys.call(event.provider, event.ref)
        previous, placed = await self._progress(keys=[key], args=[rank, event.status or event.kind.value, _CALL_TTL])
        return rank >= int(previous), bool(placed)

    async def mark_responded(self, customer: str, at: float) -> None:
        # GT keeps the latest answer when callbacks arrive out of order.
        await self._redis.zadd(self._keys.responded, {customer: at}, gt=True)

    async def responded_since(self, customer: str, since: float) -> bool:
        score = await self._redis.zscore(self._keys.responded, customer)
        return score is not None and score > since

    async def arm(self, timer: Event) -> None:
        """Schedule ``timer`` (a ``response.overdue``) for its ``at``; arming twice is harmless."""
        await self._redis.zadd(self._keys.timers, {timer.to_json(): timer.at})

    async def fire_due(self, now: float, limit: int = 100) -> int:
        stream = self._keys.stream(EVENTS_STREAM)
        fired = int(await self._fire_due(keys=[self._keys.timers, stream], args=[now, limit]))
        await self._redis.zremrangebyscore(self._keys.responded, "-inf", now - _RESPONDED_TTL)
        return fired
