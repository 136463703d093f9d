"""Stage rules: the robocalls and SMS a stage sends when an item enters it, whether a
trigger moved it or the CRM changed its stage; once per entry, again on a later entry,
each rule's outcome on the timeline, a rule the item cannot fill skipped with the reason."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from gateway.api.queueing import Queued
from gateway.api.sms import queue_sms
from gateway.app import create_app
from gateway.appkeys import RENDERER, SETTINGS, STORE
from gateway.engine import entries as stage_entries
from gateway.engine.entries import StageEntryRunner
from gateway.metrics import Metrics
from gateway.stage_rules import StageRules
from gateway.store import Store
from gateway.store.entries import StageEntry, new_entry_id
from sms.request import SmsRequest
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_crash import workers
from tests.gateway.test_robocalls import final, put_card
from tests.support import eventually, item, metric

LINE = "+34910000001"
CUSTOMER = "+34600111222"
STAGES = ["NEW", "CALL_BACK", "WON"]
SORRY = {"text": "Sorry we missed you, {{name}}"}


async def setup(client: Client, rules: list[dict[str, Any]] | None = None) -> None:
    """A sandbox line, a pipeline, a trigger moving callers back to CALL_BACK, its rules and D1."""
    for path, body in [
        ("/v1/pipelines/sales", {"stages": STAGES}),
        ("/v1/providers/sb", {"kind": "sandbox", "calls_per_second": 100, "sms_per_second": 100}),
        (f"/v1/lines/{LINE}", {"provider": "sb"}),
        ("/v1/stage-rules/sales/CALL_BACK", [SORRY] if rules is None else rules),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    trigger = {"name": "cb", "event": "callback.requested", "pipeline": "sales", "target_stage": "CALL_BACK"}
    resp = await client.post("/v1/triggers", json=trigger, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    await put_card(client, "D1", [{"type": "MOBILE", "value": CUSTOMER}])


async def ask_callback(client: TestClient, phone: str = CUSTOMER) -> None:  # type: ignore[type-arg]
    resp = await client.post("/v1/callback-requests", json={"phone": phone}, headers=API)
    assert resp.status == 202, await resp.text()


async def set_stage(client: Client, stage: str, item_id: str = "D1") -> None:
    card = (await item(client, item_id)) | {"stage": stage}
    body = {k: card[k] for k in ("pipeline", "stage", "fields", "contacts")}
    resp = await client.put(f"/v1/items/{item_id}", json=body, headers=API)
    assert resp.status == 200, await resp.text()


def entries(timeline: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in timeline if e["type"] == kind]


async def ran(client: Client, count: int, item_id: str = "D1") -> list[dict[str, Any]]:
    """The item's rule outcomes once there are ``count`` of them."""

    async def enough() -> bool:
        return len(entries((await item(client, item_id))["timeline"], "stage_rule.ran")) >= count

    await eventually(enough)
    return entries((await item(client, item_id))["timeline"], "stage_rule.ran")


async def none_waiting(client: TestClient) -> bool:  # type: ignore[type-arg]
    return await metric(client, "callgate_stage_entries_waiting") == 0


async def test_a_trigger_move_runs_the_stage_rules_once_with_the_outcome_on_the_timeline(client: Client) -> None:
    await setup(client)
    await ask_callback(client)
    [outcome] = await ran(client, 1)
    assert outcome["status"] == "queued" and outcome["kind"] == "sms" and outcome["reason"] is None
    assert (outcome["pipeline"], outcome["stage"], outcome["rule"]) == ("sales", "CALL_BACK", 0)
    done = await final(client, outcome["job_id"], "delivered")
    assert done["text"] == "Sorry we missed you, Ana" and done["to"] == CUSTOMER

    timeline = (await item(client, "D1"))["timeline"]
    [moved] = entries(timeline, "item.stage_changed")
    assert moved["to"] == "CALL_BACK" and moved["trigger_id"] is not None
    assert moved["entry_id"] == outcome["entry_id"]
    # The callback again: the item is in CALL_BACK already, no entry, nothing sent again.
    await ask_callback(client)
    await set_stage(client, "WON")  # a positive signal that the second request was processed first
    jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    assert [j["id"] for j in jobs] == [outcome["job_id"]]


async def test_a_crm_stage_change_runs_them_and_a_later_entry_runs_them_again(client: Client) -> None:
    await setup(client)
    # An item created in the stage has not entered it: an import of cards sends nothing.
    await put_card(client, "E1", [{"type": "MOBILE", "value": "+34600111333"}], stage="CALL_BACK")
    await set_stage(client, "CALL_BACK")
    [first] = await ran(client, 1)
    await set_stage(client, "CALL_BACK")  # unchanged: not an entry
    await set_stage(client, "WON")
    await set_stage(client, "CALL_BACK")
    outcomes = await ran(client, 2)
    assert len(outcomes) == 2 and outcomes[0] == first
    assert outcomes[1]["entry_id"] != first["entry_id"] and outcomes[1]["job_id"] != first["job_id"]
    moves = entries((await item(client, "D1"))["timeline"], "item.stage_changed")
    assert [(m["to"], m["act_as"]) for m in moves] == [("CALL_BACK", "crm"), ("WON", "crm"), ("CALL_BACK", "crm")]
    assert [m["entry_id"] for m in moves if m["to"] == "CALL_BACK"] == [o["entry_id"] for o in outcomes]
    await eventually(lambda: none_waiting(client))  # dropped just after their last outcome
    assert await metric(client, "callgate_stage_rules_total", kind="sms", outcome="queued") == 2
    assert entries((await item(client, "E1"))["timeline"], "stage_rule.ran") == []


async def test_a_rule_the_item_cannot_fill_is_skipped_with_the_reason_and_the_others_run(client: Client) -> None:
    robocall = {"line": LINE, "say": {"text": "Hello {{name}}"}, "delay_seconds": 3600}
    await setup(client, [{"kind": "sms", "text": "Your order {{invoice}}"}, robocall])
    await set_stage(client, "CALL_BACK")
    skipped, queued = await ran(client, 2)
    assert skipped["status"] == "skipped" and skipped["job_id"] is None
    assert "invoice" in skipped["reason"]
    assert queued["status"] == "queued" and queued["kind"] == "robocall" and queued["rule"] == 1
    job = await (await client.get(f"/v1/jobs/{queued['job_id']}", headers=API)).json()
    assert job["kind"] == "robocall" and job["status"] == "queued"  # delayed an hour


async def take_one(store: Store, now: float) -> StageEntry:
    """The one due entry, leased for a second."""
    [entry] = [entry for entries in await store.stage_entries.take(now, now + 1, 10) for entry in entries]
    return entry


async def test_an_entry_run_twice_queues_each_rule_once(aiohttp_client: ClientFactory, settings: Settings) -> None:
    """A worker that dies after queueing the jobs but before dropping the entry: the next
    run finds each rule's job by its key and writes each outcome once."""
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup(client, [SORRY, {"text": "Second"}])
    await set_stage(client, "CALL_BACK")
    app = client.app
    store = app[STORE]
    runner = StageEntryRunner(store, app[SETTINGS], app[RENDERER], Metrics())
    now = time.time()
    entry = await take_one(store, now)
    await runner.apply(entry)
    await runner.apply(entry)
    timeline = (await item(client, "D1"))["timeline"]
    outcomes = entries(timeline, "stage_rule.ran")
    assert [o["rule"] for o in outcomes] == [0, 1]
    jobs = (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    assert sorted(j["id"] for j in jobs) == sorted(o["job_id"] for o in outcomes)
    await eventually(lambda: none_waiting(client))


Runner = tuple[Client, StageEntryRunner, Metrics]


async def runner_of(aiohttp_client: ClientFactory, settings: Settings, rules: list[dict[str, Any]]) -> Runner:
    """An app without workers, set up with ``rules`` and D1 entered into CALL_BACK, and a
    runner of its entries that the test drives (with its metrics)."""
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup(client, rules)
    await set_stage(client, "CALL_BACK")
    app, metrics = client.app, Metrics()
    return client, StageEntryRunner(app[STORE], app[SETTINGS], app[RENDERER], metrics), metrics


class Killed(BaseException):
    """The worker's process dies here: nothing of the runner catches it."""


def failing_second(monkeypatch: pytest.MonkeyPatch, error: type[BaseException] = RuntimeError) -> list[str]:
    """Queueing the SMS ``Second`` fails every time with ``error`` (by default an unexpected
    error, not a refusal); the texts of the SMS the runner tries to queue, in order."""
    tried: list[str] = []

    async def queue(store: Store, body: SmsRequest, template: str, **kwargs: Any) -> Queued:
        tried.append(template)
        if template == "Second":
            raise error("the provider table is corrupt")
        return await queue_sms(store, body, template, **kwargs)

    monkeypatch.setattr(stage_entries, "queue_sms", queue)
    return tried


async def job_ids(client: Client) -> list[str]:
    return [j["id"] for j in (await (await client.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]]


async def test_a_rule_that_fails_every_attempt_is_recorded_failed_after_the_last(
    aiohttp_client: ClientFactory,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, runner, metrics = await runner_of(
        aiohttp_client, make_settings(max_deliveries=3), [SORRY, {"text": "Second"}]
    )
    store = client.app[STORE]
    tried = failing_second(monkeypatch)
    now = time.time()
    for attempt in (1, 2):
        # A failure leaves the entry leased; it is taken again once the lease (1 s) ends.
        await runner.run_due(now + 10 * attempt)
        assert await store.stage_entries.waiting() == 1
        assert tried == [SORRY["text"], "Second"] * attempt
    assert entries((await item(client, "D1"))["timeline"], "stage_rule.ran") == []

    with caplog.at_level(logging.WARNING, logger=stage_entries.__name__):
        await runner.run_due(now + 30)  # the last attempt
    first, second = entries((await item(client, "D1"))["timeline"], "stage_rule.ran")
    assert first["status"] == "queued" and await job_ids(client) == [first["job_id"]]
    assert (second["rule"], second["status"], second["job_id"]) == (1, "failed", None)
    assert "3 attempts" in second["reason"] and "the provider table is corrupt" in second["reason"]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "given up" in warning.getMessage() and first["entry_id"] in warning.getMessage()
    assert await store.stage_entries.waiting() == 0
    await runner.run_due(now + 40)
    assert len(tried) == 6  # three attempts, then none
    assert metrics.registry.get_sample_value("callgate_stage_entries_given_up_total") == 1
    assert metrics.registry.get_sample_value("callgate_stage_rules_total", {"kind": "sms", "outcome": "failed"}) == 1


async def test_an_entry_that_kills_its_worker_every_time_is_given_up_after_the_last_naming_the_jobs_made(
    aiohttp_client: ClientFactory,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, runner, metrics = await runner_of(
        aiohttp_client, make_settings(max_deliveries=2), [SORRY, {"text": "Second"}]
    )
    store = client.app[STORE]
    tried = failing_second(monkeypatch, Killed)
    now = time.time()
    # Each attempt queues rule 0's job (the first makes it, the second finds it), then its
    # worker dies in rule 1 without a word.
    for attempt in (1, 2):
        with pytest.raises(Killed):
            await runner.run_due(now + 10 * attempt)
        assert tried == [SORRY["text"], "Second"] * attempt
    [job_id] = await job_ids(client)

    with caplog.at_level(logging.WARNING, logger=stage_entries.__name__):
        await runner.run_due(now + 30)
    assert len(tried) == 4  # not run again
    first, second = entries((await item(client, "D1"))["timeline"], "stage_rule.ran")
    assert (first["status"], first["job_id"]) == ("queued", job_id)
    assert second["status"] == "failed" and "the worker running them stopped" in second["reason"]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "given up after 2 attempts" in warning.getMessage() and first["entry_id"] in warning.getMessage()
    assert await store.stage_entries.waiting() == 0 and await job_ids(client) == [job_id]
    assert metrics.registry.get_sample_value("callgate_stage_entries_given_up_total") == 1


async def test_entries_taken_and_never_started_are_no_attempts(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    """Workers that take a batch and die (or see their lease end) before reaching its entries
    burn none of their attempts: the entries all run afterwards, none given up."""
    client, runner, metrics = await runner_of(aiohttp_client, make_settings(max_deliveries=2), [SORRY])
    store = client.app[STORE]
    items = ["D1", *(f"K{n}" for n in range(5))]
    for n, item_id in enumerate(items[1:]):
        await put_card(client, item_id, [{"type": "MOBILE", "value": f"+3460011{n:04d}"}])
        await set_stage(client, "CALL_BACK", item_id)
    now = time.time()
    for abandoned in (1, 2, 3):
        taken = [
            entry for entries in await store.stage_entries.take(now + 10 * abandoned, now + 11, 50) for entry in entries
        ]
        assert sorted(entry.item_id for entry in taken) == sorted(items)

    assert await runner.run_due(now + 40) is False
    for item_id in items:
        [outcome] = await ran(client, 1, item_id)
        assert outcome["status"] == "queued" and outcome["entry_id"] in {entry.entry_id for entry in taken}
    assert await store.stage_entries.waiting() == 0
    assert metrics.registry.get_sample_value("callgate_stage_entries_given_up_total") == 0
    # A worker that reaches an entry another one finished after its lease ended skips it,
    # and leaves no count behind.
    assert await store.stage_entries.start(taken[0]) == 0
    for partition in range(store.keys.partitions):
        assert await store.redis.exists(store.keys.stage_entry_attempts(partition)) == 0


async def test_a_rule_edited_after_its_job_was_queued_and_before_it_was_recorded_records_that_job(
    aiohttp_client: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, runner, _ = await runner_of(aiohttp_client, settings, [SORRY])
    store = client.app[STORE]
    now = time.time()
    entry = await take_one(store, now)

    async def crash(records: Any) -> list[bool]:
        raise RuntimeError("the worker dies here")

    with monkeypatch.context() as patched:
        patched.setattr(store.items, "record_many", crash)
        with pytest.raises(RuntimeError):
            await runner.apply(entry)
    [job_id] = await job_ids(client)
    resp = await client.put("/v1/stage-rules/sales/CALL_BACK", json=[{"text": "Edited"}], headers=ADMIN)
    assert resp.status == 200, await resp.text()

    await runner.apply(entry)
    [outcome] = entries((await item(client, "D1"))["timeline"], "stage_rule.ran")
    assert (outcome["status"], outcome["job_id"], outcome["reason"]) == ("queued", job_id, None)
    assert await job_ids(client) == [job_id]
    assert await store.stage_entries.waiting() == 0


async def test_a_rule_whose_key_an_earlier_attempt_claimed_for_another_body_and_never_made_a_job_is_skipped(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    client, runner, _ = await runner_of(aiohttp_client, settings, [SORRY])
    store = client.app[STORE]
    entry = await take_one(store, time.time())
    # That attempt died between claiming the key (with the rule as it was) and making the job.
    await store.jobs.claim(stage_entries.rule_key(entry, 0), store.jobs.new_id(entry.item_id), "an edited rule")

    await runner.apply(entry)
    [outcome] = entries((await item(client, "D1"))["timeline"], "stage_rule.ran")
    assert (outcome["status"], outcome["job_id"]) == ("skipped", None)
    assert outcome["reason"] == "this Idempotency-Key was used with a different body"
    assert await job_ids(client) == []


async def test_the_runner_goes_again_at_once_only_when_a_partition_filled_its_batch(
    aiohttp_client: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage_entries, "BATCH", 2)
    client = await aiohttp_client(create_app(settings, workers=False))
    store = client.app[STORE]
    runner = StageEntryRunner(store, settings, client.app[RENDERER], Metrics())
    ids = [f"X{n}" for n in range(1000)]
    spread = [next(i for i in ids if store.keys.partition_of(i) == p) for p in (1, 2, 3)]
    same = [i for i in ids if store.keys.partition_of(i) == 0][:3]

    async def enter(item_ids: list[str]) -> None:
        # Entries of items that do not exist: each attempt just drops its entry.
        async with store.redis.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                store.stage_entries.enter(pipe, StageEntry(item_id, new_entry_id(), "sales", "NEW"))
            await pipe.execute()

    # Three entries, more than a batch, but one per partition: all taken, nothing left.
    await enter(spread)
    assert await runner.run_due(time.time()) is False
    assert await store.stage_entries.waiting() == 0
    # Three in one partition: a full batch taken there, one left.
    await enter(same)
    assert await runner.run_due(time.time()) is True
    assert await store.stage_entries.waiting() == 1
    assert await runner.run_due(time.time()) is False
    assert await store.stage_entries.waiting() == 0


async def test_a_worker_killed_between_moves_and_jobs_sends_each_entry_once(
    aiohttp_client: ClientFactory, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    n = 60
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup(client)
    phones = [f"+3460{2_000_000 + i:07d}" for i in range(n)]
    await asyncio.gather(*(put_card(client, f"K{i}", [{"type": "MOBILE", "value": p}]) for i, p in enumerate(phones)))
    await asyncio.gather(*(ask_callback(client, phone) for phone in phones))
    store = client.app[STORE]

    async def moved() -> int:
        cards = await asyncio.gather(*(store.items.get(f"K{i}") for i in range(n)))
        return sum(1 for card in cards if card is not None and card.stage == "CALL_BACK")

    with workers(settings, tmp_path, 2) as (first, second):
        first.start()

        async def started() -> bool:
            return await moved() > 0

        await eventually(started, timeout=15)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        # Typically some items moved whose entries wait: moved, no job queued yet.
        assert await moved() > 0
        second.start()

        async def all_ran() -> bool:
            timelines = await asyncio.gather(*(item(client, f"K{i}") for i in range(n)))
            return all(entries(t["timeline"], "stage_rule.ran") for t in timelines)

        await eventually(all_ran, timeout=30)
    for i in range(n):
        timeline = (await item(client, f"K{i}"))["timeline"]
        assert len(entries(timeline, "item.stage_changed")) == 1, i
        [outcome] = entries(timeline, "stage_rule.ran")
        jobs = (await (await client.get(f"/v1/jobs?item_id=K{i}", headers=API)).json())["jobs"]
        assert [j["id"] for j in jobs] == [outcome["job_id"]], i
    await eventually(lambda: none_waiting(client))


async def test_the_rules_api(client: Client) -> None:
    await setup(client)
    path = "/v1/stage-rules/sales/CALL_BACK"
    got = await (await client.get(path, headers=ADMIN)).json()
    assert got["pipeline"] == "sales" and got["stage"] == "CALL_BACK"
    assert [(r["kind"], r["text"]) for r in got["rules"]] == [("sms", SORRY["text"])]
    listed = await (await client.get("/v1/stage-rules", headers=ADMIN)).json()
    assert listed == {"stage_rules": [got]}

    for bad in ["/v1/stage-rules/nope/CALL_BACK", "/v1/stage-rules/sales/NOPE"]:
        resp = await client.put(bad, json=[SORRY], headers=ADMIN)
        assert (resp.status, (await resp.json())["error"]["code"]) == (404, "not_found")
    for body, field, code in [
        ([{"item_id": "D1", **SORRY}], "0.item_id", "unknown_field"),
        ([SORRY, {"delay_seconds": 5}], "1", "invalid"),
        ([{"kind": "robocall", **SORRY}], "0.line", "missing"),
        ([{**SORRY, "line": "+34910000002"}], "0.line", "unknown_reference"),
        ({"text": "not a list"}, None, "invalid"),
        # Over 200 characters whatever the card holds: it could never be sent.
        ([SORRY, {**SORRY, "text": "x" * 201 + "{{name}}"}], "1.text", "invalid"),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error.get("field")) == (422, code, field), error
    assert (await client.put(path, json=[SORRY], headers=API)).status == 403
    # A rule stored before that check still loads (and fails at rendering, as it did).
    assert StageRules.model_validate([{"text": "x" * 300}]).root[0].kind == "sms"

    # What the rules use cannot go from under them.
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW", "WON"]}, headers=ADMIN)
    assert resp.status == 409 and "stage rules of sales/CALL_BACK" in (await resp.json())["error"]["message"]
    resp = await client.put(path, json=[{**SORRY, "line": LINE}], headers=ADMIN)
    assert resp.status == 200
    resp = await client.delete(f"/v1/lines/{LINE}", headers=ADMIN)
    assert resp.status == 409 and "sales/CALL_BACK" in (await resp.json())["error"]["message"]

    # The demo's missed call is for sandbox lines only.
    resp = await client.post("/v1/sandbox/calls", json={"from": CUSTOMER, "to": "+34910000002"}, headers=ADMIN)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "to"

    assert (await client.delete(path, headers=ADMIN)).status == 204
    assert (await client.get(path, headers=ADMIN)).status == 404
    assert (await client.delete(path, headers=ADMIN)).status == 404
