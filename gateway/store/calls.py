"""Calls and answers: how far each provider call got, and when we last reached a customer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from config.vocabulary import CALL_PROGRESS
from gateway.keys import Keys
from gateway.store.connection import Transactions
from gateway.store.scripts import Call, Looped
from webhooks.events import Event

# Returns the rank the call had and whether a job placed it; the status only moves forward.
_PROGRESS = """
local current = tonumber(redis.call('HGET', K[1], 'rank') or '0')
if tonumber(A[1]) >= current then
  redis.call('HSET', K[1], 'rank', A[1], 'status', A[2])
end
redis.call('EXPIRE', K[1], A[3])
return {current, redis.call('HEXISTS', K[1], 'job')}
"""

_CALL_TTL = 2 * 24 * 3600
# An answer older than the longest overdue delay can no longer void a timer.
RESPONDED_TTL = 31 * 24 * 3600


class Calls:
    def __init__(self, redis: Redis, transactions: Transactions, keys: Keys) -> None:
        self._redis = redis
        self._transactions = transactions
        self._keys = keys
        self._progress = Looped(redis, _PROGRESS)

    async def progress(self, events: Sequence[Event]) -> list[tuple[bool, bool]]:
        """Record how far each call got, in one command (one per call on Redis Cluster, where
        each call is its own slot). Returns, per event, whether it
        is not behind what we already saw, and whether callgate placed the call (a job's)."""
        if not events:
            return []
        calls: list[Call] = [
            (
                [self._keys.call(event.provider, event.ref)],
                [CALL_PROGRESS[event.kind], event.status or event.kind.value, _CALL_TTL],
            )
            for event in events
        ]
        replies = await self._progress(calls)
        return [
            (CALL_PROGRESS[event.kind] >= int(previous), bool(placed))
            for event, (previous, placed) in zip(events, replies, strict=True)
        ]

    async def record_answered_by(
        self, provider: str, call_sid: str, answered_by: str, detection_ms: int | None
    ) -> None:
        """What answering-machine detection found on a call (a robocall's job reads it)."""
        fields: dict[str, str | int] = {"answered_by": answered_by}
        if detection_ms is not None:
            fields["machine_detection_ms"] = detection_ms
        key = self._keys.call(provider, call_sid)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
            pipe.expire(key, _CALL_TTL)

        await self._transactions.multi(key, queue)

    async def answered_by(self, provider: str, call_sid: str) -> str | None:
        value = await self._redis.hget(self._keys.call(provider, call_sid), "answered_by")
        return None if value is None else str(value)

    async def mark_responded(self, answers: Mapping[str, float]) -> None:
        """Customer -> when we reached them. GT keeps the latest answer when callbacks
        arrive out of order."""
        if answers:
            await self._redis.zadd(self._keys.responded, dict(answers), gt=True)

    async def responded_since(self, customer: str, since: float) -> bool:
        score = await self._redis.zscore(self._keys.responded, customer)
        return score is not None and score > since

    async def forget_answers_before(self, moment: float) -> None:
        await self._redis.zremrangebyscore(self._keys.responded, "-inf", moment)
