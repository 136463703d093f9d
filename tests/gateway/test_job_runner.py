"""The job runner against a scripted provider: transient failures back off and retry,
final ones fail at once, the limit dead-letters, and a placement a crash interrupted is
reconciled with the provider instead of dialled again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.jobs import JobRunner
from gateway.keys import JOBS_STREAM, Keys
from gateway.providers import CallProvider, OutboundCall, PlacementError
from gateway.providers.registry import Providers
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.limits import Limits
from gateway.store.records import Snapshots
from tests.conftest import ADMIN, Client, ClientFactory
from tests.gateway.test_robocalls import job_statuses, post, robocall, setup
from tests.media import media_server
from tests.support import jobs_due
from voice.render import renderer_for

NOW = 1_800_000_000.0


class Crash(Exception):
    """The process died after the provider placed the call, before we recorded it."""


@dataclass
class Scripted:
    outcomes: list[str | PlacementError | Crash]
    placed: list[str] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)
    finds: int = 0

    async def place(self, call: OutboundCall) -> str:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, PlacementError):
            raise outcome
        ref = f"CA{len(self.placed)}"
        self.placed.append(call.key)
        self.known[call.key] = ref
        if isinstance(outcome, Crash):
            raise outcome
        return ref

    async def find(self, call: OutboundCall) -> str | None:
        self.finds += 1
        return self.known.get(call.key)

    async def close(self) -> None:
        return None


class Only(Providers):
    def __init__(self, store: Store, provider: CallProvider) -> None:
        super().__init__(store, "https://gw.example.com")
        self._provider = provider

    async def get(self, name: str) -> CallProvider | None:
        return self._provider


@dataclass(frozen=True)
class Queued:
    settings: Settings
    job_id: str
    client: Client


@pytest.fixture
async def queued(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]) -> Queued:
    """A robocall job accepted by an API with no workers: nothing runs it but the test."""
    settings = make_settings(media_allow_private=True, job_max_tries=3, job_retry_seconds=2.0)
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup(client)
    server = await media_server()
    try:
        _, accepted = await post(client, robocall(str(server.make_url("/ok.mp3"))))
    finally:
        await server.close()
    return Queued(settings, str(accepted["id"]), client)


def runner_for(settings: Settings, redis: Redis, provider: Scripted) -> tuple[JobRunner, Store]:
    store = Store.open(redis, settings, Snapshots())
    speech = Speech(renderer_for(settings), 1)  # unused: these jobs play a fetched MP3
    runner = JobRunner(store, Only(store, provider), settings, speech, clock=lambda: NOW, jitter=lambda: 0.0)
    return runner, store


async def test_a_transient_failure_backs_off_then_the_retry_places_the_call(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([PlacementError("HTTP 503", transient=True), "ok"])
    runner, store = runner_for(settings, redis, provider)
    await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "queued" and job.tries == 1
    assert "retrying in 1.0 s" in job["reason"]  # 2 s halved by zero jitter
    assert await redis.zscore(jobs_due(settings.key_prefix, job_id), job_id) == NOW + 1.0

    await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "sent" and job["provider_ref"] == "CA0"
    assert provider.placed == [f"{job_id}-1"]
    timeline, _ = await store.items.timeline("D1", limit=100)
    assert job_statuses(timeline, job_id) == ["queued", "sending", "queued", "sending", "sent"]


async def test_a_final_failure_is_never_retried(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([PlacementError("HTTP 400: invalid To number", transient=False)])
    runner, store = runner_for(settings, redis, provider)
    await runner.run(job_id)
    await runner.run(job_id)  # a duplicate entry changes nothing
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "failed" and job["reason"] == "HTTP 400: invalid To number"
    assert provider.outcomes == [] and await redis.zscore(jobs_due(settings.key_prefix, job_id), job_id) is None


async def test_after_the_limit_the_job_fails_and_is_dead_lettered(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([PlacementError("HTTP 429", transient=True) for _ in range(3)])
    runner, store = runner_for(settings, redis, provider)
    for _ in range(3):
        await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "failed" and job["reason"] == "gave up after 3 tries: HTTP 429"
    keys = Keys(settings.key_prefix)
    dead = await redis.xrange(keys.dead(JOBS_STREAM, keys.partition_of(job_id))) or []
    assert [fields for _, fields in dead] == [{"job": job_id, "_error": "gave up after 3 tries: HTTP 429"}]
    resp = await queued.client.get("/v1/dead-letters", params={"stream": "jobs"}, headers=ADMIN)
    assert [e["job"] for e in (await resp.json())["entries"]] == [job_id]


async def test_a_job_whose_every_run_failed_ends_failed_with_the_error(queued: Queued, redis: Redis) -> None:
    """The jobs stream gave up on its entry (a defect raised in every run): the job fails,
    where the CRM sees it, instead of staying queued with nothing left to run it."""
    settings, job_id = queued.settings, queued.job_id
    runner, store = runner_for(settings, redis, Scripted([Crash()]))
    with pytest.raises(Crash):
        await runner.run(job_id)
    await runner.gave_up({"job": job_id}, "Crash: boom")
    await runner.gave_up({"job": job_id}, "a second report changes nothing")
    await runner.gave_up({"n": "1"}, "an entry of no job")
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "failed"
    # The crash came while placing: the provider may have the call.
    reason = f"gave up after {settings.max_deliveries} failed runs (a try may have reached the provider): Crash: boom"
    assert job["reason"] == reason
    timeline, _ = await store.items.timeline("D1", limit=100)
    assert job_statuses(timeline, job_id) == ["queued", "sending", "failed"]


async def test_a_placement_interrupted_by_a_crash_is_reconciled_not_redialled(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([Crash(), "never used"])
    runner, store = runner_for(settings, redis, provider)
    with pytest.raises(Crash):
        await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "sending"  # outcome unknown

    await runner.run(job_id)  # the entry, claimed by another consumer, runs again
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "sent" and job["provider_ref"] == "CA0"
    assert provider.placed == [f"{job_id}-1"] and provider.finds == 1


async def test_a_reconciled_job_takes_a_rate_limit_slot_only_when_it_dials(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([PlacementError("timed out", transient=True)])
    provider.known[f"{job_id}-1"] = "CA-made"  # the timed-out request did create the call
    runner, store = runner_for(settings, redis, provider)
    await runner.run(job_id)
    assert (job := await store.jobs.get(job_id)) is not None and job.status == "queued"

    # The provider's next slot is far away: a job that had to dial now would wait for it.
    limits = Limits(redis, Keys(settings.key_prefix))
    held = await limits.reserve({"calls:sb": 0.001}, 5)
    await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "sent" and job["provider_ref"] == "CA-made"
    assert (await limits.reserve({"calls:sb": 1000}, 0)).at == pytest.approx(held.at + 1000, abs=1e-3)


async def test_a_provider_429_holds_off_every_send_through_that_provider(queued: Queued, redis: Redis) -> None:
    settings, job_id = queued.settings, queued.job_id
    provider = Scripted([PlacementError("HTTP 429", transient=True, throttled=True)])
    runner, store = runner_for(settings, redis, provider)
    await runner.run(job_id)
    job = await store.jobs.get(job_id)
    assert job is not None and job.status == "queued" and "retrying in 1.0 s" in job["reason"]
    # Not this job alone: the provider's limit gives no slot for the job's backoff.
    held = await store.limits.reserve({f"calls:{job['provider']}": 1000}, 0.5)
    assert not held.granted and held.wait > 0.5
