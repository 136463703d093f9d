"""Jobs in Redis: created once per Idempotency-Key, moved between statuses by compare-and-set
scripts, scheduled through a due set and run from the jobs stream."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from config.jobs import IN_CALL, RANK, JobStatus
from config.usage import Usage, money
from gateway.keys import JOBS_STREAM, Keys
from gateway.store.connection import Transactions
from gateway.store.items import append_lua, clamp_until, timeline_keys
from gateway.store.nodes import pipelined
from gateway.store.timers import FIRE_DUE, fire_all_due

# An Idempotency-Key names the job id it made (with the body's hash) from the first request
# on: the one key, alone in its step. A request finding it takes that id (or is a 409).
_CLAIM = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

# The job, its index entry, its first timeline entry (with its outbox record) and its
# queueing happen together, in the item's slot, once per job id: a request that claimed the
# id, and one that found the claim of a request that died before this step, may both run it.
# Returns 1 when it made the job.
_CREATE = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
else
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
end
"""
    + append_lua("KEYS[5]", "KEYS[6]", "KEYS[7]", "KEYS[8]", "ARGV[6]", "ARGV[4]", "ARGV[5]", "ARGV[7]")
    + """
return 1
"""
)

# The statuses of a call (config.jobs.IN_CALL) as a Lua set, for the scripts that ask.
_IN_CALL_LUA = ", ".join(f"['{status.value}'] = true" for status in sorted(IN_CALL))

# A status change applies only from the statuses (and the dial) the caller expects, and,
# for provider callbacks, only forward; scheduling and dead-lettering ride in the same step
# so a crash cannot leave a job waiting with nothing to wake it. A job in a call (``sent``,
# ``ringing``, ``answered``) is due for nothing but its call's check: moving on to
# ``ringing`` or ``answered`` keeps that check, as the call may still never report its end;
# leaving the call with no new due drops it, as it would wake the job for nothing. Returns
# 1 when it moved, 2 when the job already is in that status (a repeat), 0 otherwise.
_UPDATE = """
local in_call = {IN_CALL}
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank', 'dial', 'id')
if not cur[1] then return 0 end
if ARGV[2] ~= '' and ARGV[2] ~= cur[3] then return 0 end
if cur[1] == ARGV[7] then return 2 end
if ARGV[1] ~= '' and not string.find(',' .. ARGV[1] .. ',', ',' .. cur[1] .. ',', 1, true) then return 0 end
if ARGV[4] == '1' and tonumber(ARGV[3]) <= tonumber(cur[2]) then return 0 end
redis.call('HSET', KEYS[1], 'rank', ARGV[3], 'status', ARGV[7], unpack(ARGV, 9))
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[5], cur[4])
elseif in_call[cur[1]] and not in_call[ARGV[7]] then
  redis.call('ZREM', KEYS[2], cur[4])
end
if ARGV[6] ~= '' then redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[8], '*', 'job', cur[4], '_error', ARGV[6]) end
return 1
""".replace("IN_CALL", _IN_CALL_LUA)

# The provider check of a call a job is in, due at ARGV[2] (its time, as ``check_at``),
# unless the job has left the call or dial ARGV[1], or its check time is no longer ARGV[3]
# ('' for none yet). 1 when set.
_CHECK_CALL = """
local in_call = {IN_CALL}
local cur = redis.call('HMGET', KEYS[1], 'status', 'dial', 'check_at', 'id')
if not in_call[cur[1] or ''] or (cur[2] or '1') ~= ARGV[1] or (cur[3] or '') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'check_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], cur[4])
return 1
""".replace("IN_CALL", _IN_CALL_LUA)

# A job's usage counters are its hash fields ``usage_<counter>`` (config.usage.Usage).
USAGE_FIELD = "usage_"
VISIBLE_USAGE = ("calls", "seconds", "minutes", "tts_chars", "sms_segments")
_CALL_TTL = 2 * 24 * 3600
_MEDIA_URL_TTL = 24 * 3600


@dataclass(frozen=True)
class Job:
    """One job as stored: every field a string in a Redis hash."""

    fields: Mapping[str, str]

    def __getitem__(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def id(self) -> str:
        return self["id"]

    @property
    def status(self) -> JobStatus:
        return JobStatus(self["status"])

    @property
    def dial(self) -> int:
        return int(self["dial"] or 1)

    @property
    def tries(self) -> int:
        return int(self["tries"] or 0)

    @property
    def request(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self["request"])
        return data

    @property
    def usage(self) -> Usage:
        """What the job used so far, over all its dials (config.usage)."""
        return Usage(**{name: int(self[USAGE_FIELD + name] or 0) for name in Usage().counters()})

    def view(self, base_url: str) -> dict[str, Any]:
        """The job as ``GET /v1/jobs/{id}`` shows it (API.md's fields)."""
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self["kind"],
            "status": self["status"],
            "reason": self["reason"] or None,
            "item_id": self["item_id"],
            "to": self["to"] or None,
            "line": self["line"],
            "provider": self["provider"],
            "provider_ref": self["provider_ref"] or None,
            "text": self["text"] or None,
            "cost": money(int(self["usage_cost_nanos"] or 0)) if self["currency"] else None,
            "test": self["test"] == "1",
            "attempt": self.dial,
            "created_at": self["created_at"],
            "updated_at": self["updated_at"],
        }
        if self["media"]:
            data["audio_url"] = f"{base_url}/media/{self['media']}.mp3"
        if self["duration"]:
            data["duration"] = int(self["duration"])
        if self["engine"]:
            data["engine"], data["voice"] = self["engine"], self["voice"] or None  # None: the provider's default
        if self["note"]:
            data["note"] = self["note"]
        if self["reply"]:
            data["reply"] = self["reply"]
        if self["currency"]:
            data["currency"] = self["currency"]
        if self["usage_jobs"] or self["usage_calls"]:
            used = self.usage.counters()
            data["usage"] = {name: used[name] for name in VISIBLE_USAGE}
        if self["encoding"]:
            data["segments"], data["encoding"] = int(self["segments"]), self["encoding"]
        return data


class Moved(IntEnum):
    NO = 0
    YES = 1
    ALREADY = 2  # the job was in that status already: a repeat of a move made before


class Jobs:
    def __init__(
        self,
        redis: Redis,
        transactions: Transactions,
        keys: Keys,
        timeline_max: int,
        idempotency_ttl: int,
        dead_max: int,
    ) -> None:
        self._redis: Any = redis  # decoded replies (str); redis-py types both modes
        self._transactions = transactions
        self._keys = keys
        self._dead_max = dead_max
        self._timeline_max = timeline_max
        self._idempotency_ttl = idempotency_ttl
        self._claim = redis.register_script(_CLAIM)
        self._create = redis.register_script(_CREATE)
        self._update = redis.register_script(_UPDATE)
        self._fire_due = redis.register_script(FIRE_DUE)
        self._check_call = redis.register_script(_CHECK_CALL)

    def new_id(self, item_id: str) -> str:
        """A fresh job id in ``item_id``'s partition, so the job's keys share the item's slot."""
        while True:
            job_id = "job_" + secrets.token_hex(8)
            if self._keys.partition_of(job_id) == self._keys.partition_of(item_id):
                return job_id

    async def claim(self, idempotency_key: str, job_id: str, body_hash: str) -> tuple[str, str]:
        """(job id, body hash) of ``idempotency_key``: those given, when it is new."""
        claimed = await self._claim(
            keys=[self._keys.idempotency("jobs", idempotency_key)],
            args=[f"{job_id}|{body_hash}", self._idempotency_ttl],
        )
        claimed_id, _, claimed_hash = str(claimed).partition("|")
        return claimed_id, claimed_hash

    async def create(self, fields: Mapping[str, str], *, created: float, due: float, entry: str) -> bool:
        """Store and queue a new job (``fields["id"]``) unless it exists; True when made."""
        job_id, item_id = fields["id"], fields["item_id"]
        partition = self._keys.partition_of(item_id)
        keys = [
            self._keys.job(job_id),
            self._keys.item_jobs(item_id),
            self._keys.stream(JOBS_STREAM, partition),
            self._keys.jobs_due(partition),
            *timeline_keys(self._keys, item_id),
        ]
        pairs = [value for pair in {**fields, "rank": str(RANK[JobStatus.QUEUED])}.items() for value in pair]
        args: list[str | int | float] = [job_id, created, due, entry, self._timeline_max, item_id, clamp_until()]
        return bool(await self._create(keys=keys, args=[*args, *pairs]))

    async def existing(self, idempotency_key: str) -> tuple[str, str] | None:
        """(job id, body hash) an Idempotency-Key already produced."""
        raw = await self._redis.get(self._keys.idempotency("jobs", idempotency_key))
        if raw is None:
            return None
        job_id, _, body_hash = str(raw).partition("|")
        return job_id, body_hash

    async def get(self, job_id: str) -> Job | None:
        fields = await self._redis.hgetall(self._keys.job(job_id))
        return Job(fields) if fields else None

    async def made(self, idempotency_key: str) -> str | None:
        """The id of the job an Idempotency-Key produced, once that job exists (the request
        that claimed the key may have died before making it)."""
        existing = await self.existing(idempotency_key)
        return existing[0] if existing is not None and await self.exists(existing[0]) else None

    async def exists(self, job_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.job(job_id)))

    async def of_item(self, item_id: str, limit: int = 100) -> list[Job]:
        ids = await self._redis.zrevrange(self._keys.item_jobs(item_id), 0, limit - 1)
        async with pipelined(self._redis) as pipe:
            for job_id in ids:
                pipe.hgetall(self._keys.job(job_id))
            found = await pipe.execute()
        return [Job(fields) for fields in found if fields]

    async def update(
        self,
        job_id: str,
        status: JobStatus,
        *,
        expect: Iterable[JobStatus] = (),
        on_dial: int | None = None,
        forward: bool = False,
        due: float | None = None,
        dead: str = "",
        **fields: str | int | float,
    ) -> Moved:
        """Move the job to ``status`` (and set ``fields``) when it is in one of ``expect``,
        on dial ``on_dial``, and (``forward``) behind ``status``.

        ``due`` schedules it to run again at that time; ``dead`` dead-letters it with that
        reason, both in the same step. Without ``due``, a job in a call keeps its pending
        call check into ``ringing`` or ``answered`` and drops it on leaving the call.
        """
        pairs = [str(value) for pair in fields.items() for value in pair]
        partition = self._keys.partition_of(job_id)
        keys = [self._keys.job(job_id), self._keys.jobs_due(partition), self._keys.dead(JOBS_STREAM, partition)]
        args: list[str | int] = [
            ",".join(s.value for s in expect),
            "" if on_dial is None else str(on_dial),
            RANK[status],
            "1" if forward else "0",
            "" if due is None else repr(due),
            dead[:2000],
            status.value,
            self._dead_max,
        ]
        return Moved(int(await self._update(keys=keys, args=[*args, *pairs])))

    async def set_fields(self, job_id: str, fields: Mapping[str, str]) -> None:
        """Record facts about the job that change no status (e.g. its rendered audio)."""
        await self._redis.hset(self._keys.job(job_id), mapping=dict(fields))

    async def defer(self, job_id: str, due: float, **fields: str) -> None:
        """Leave the job where it is until ``due`` (quiet hours, a busy rate limit), with
        ``fields`` (its reason, ...) set in the same step."""
        key = self._keys.job(job_id)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
            pipe.zadd(self._keys.jobs_due(self._keys.partition_of(job_id)), {job_id: due})

        await self._transactions.multi(key, queue)

    async def check_call(self, job_id: str, dial: int, due: float, since: str = "") -> bool:
        """Look the job's call up with its provider at ``due``, in one step with finding it
        still in dial ``dial``'s call with its check time still ``since`` ("": none set);
        True when this set it. A report or redial that moved the job meanwhile keeps its due."""
        keys = [self._keys.job(job_id), self._keys.jobs_due(self._keys.partition_of(job_id))]
        return bool(await self._check_call(keys=keys, args=[str(dial), repr(due), since]))

    async def mark_call(self, provider: str, ref: str, job_id: str) -> None:
        """Tag a provider call as a job's: its callbacks update the job, never fire triggers."""
        key = self._keys.call(provider, ref)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(key, "job", job_id)
            pipe.expire(key, _CALL_TTL)

        await self._transactions.multi(key, queue)

    async def fire_due(self, now: float) -> int:
        """Move the jobs due by ``now`` into their partition's jobs stream; how many."""
        pairs = [(self._keys.jobs_due(p), self._keys.stream(JOBS_STREAM, p)) for p in range(self._keys.partitions)]
        return await fire_all_due(self._redis, self._fire_due, pairs, "job", now)

    async def record_call(self, key: str, ref: str) -> str:
        """Record ``ref`` as the call of ``key`` unless one is recorded already; the
        reference recorded (this one, or the one that came first)."""
        async with pipelined(self._redis) as pipe:
            _, first = await self._claim_call(pipe, key, ref).execute()
        return str(first or ref)

    async def claim_dial(self, key: str, session: str) -> tuple[str | None, str]:
        """A Voximplant robocall's session claiming the dial ``key``, in one round trip: the
        dial's script (None when it has none: unknown, or expired) and the session that is
        its call (this one, unless another claimed the dial first). A dial with no script
        is left unclaimed."""
        async with pipelined(self._redis) as pipe:
            pipe.get(self._keys.call_script(key))
            script, claimed, first = await self._claim_call(pipe, key, session).execute()
        if script is None and claimed:
            await self._redis.delete(self._keys.placed_call(key))
        return (None if script is None else str(script)), str(first or session)

    def _claim_call(self, pipe: Any, key: str, ref: str) -> Any:
        """``pipe`` with ``ref`` recorded as the call of ``key`` unless one is (SET NX, not
        GET in the same command, which Redis 6.2 refuses), then the one recorded. Not one
        script with the dial's other keys: they may be in other slots of a cluster."""
        stored = self._keys.placed_call(key)
        return pipe.set(stored, ref, nx=True, ex=_CALL_TTL).get(stored)

    async def recorded_call(self, key: str) -> str | None:
        ref = await self._redis.get(self._keys.placed_call(key))
        return None if ref is None else str(ref)

    async def save_script(self, key: str, script: str) -> None:
        await self._redis.set(self._keys.call_script(key), script, ex=_CALL_TTL)

    async def media_for_url(self, digest: str) -> str | None:
        key = await self._redis.get(self._keys.media_url(digest))
        return None if key is None else str(key)

    async def remember_media(self, digest: str, key: str) -> None:
        await self._redis.set(self._keys.media_url(digest), key, ex=_MEDIA_URL_TTL)
