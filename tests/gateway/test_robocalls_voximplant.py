"""Robocalls through Voximplant: the real ``voximplant-apiclient`` against a local emulator
of the management API. StartScenarios carries the dial's custom data, the session fetches
its script and reports progress as robocall.js does (signed with the dial's secret), the
progress moves the job (and fires no call.outgoing), a second session of the dial is refused
its script, and failures retry or fail as they should."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import STORE
from gateway.jobs import JobRunner
from gateway.providers import PlacementError
from gateway.providers.registry import Providers
from gateway.providers.voximplant import CHECK_AFTER_SECONDS, GIVE_UP_AFTER_SECONDS
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.embedded import EmbeddedRedis
from gateway.store.jobs import Jobs
from gateway.store.records import Snapshots
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_robocalls import final, job, job_statuses, post, put_card, robocall
from tests.support import PUBLIC_URL, eventually, item, voximplant_post
from tests.voximplant_api import RULE_ID, VoximplantApi
from voice.render import renderer_for
from webhooks.signatures import robocall_secret

LINE = "+34910000001"
CUSTOMER = "+34600111222"
WEBHOOK_SECRET = "vox-webhook-secret"


@pytest.fixture
def vox_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(media_allow_private=True, job_retry_seconds=0.05)


def credentials(api: VoximplantApi, **changes: str) -> dict[str, str]:
    given = {
        "webhook_secret": WEBHOOK_SECRET,
        "service_account": api.service_account,
        "rule_id": str(RULE_ID),
        "endpoint": api.endpoint,
    }
    return {key: value for key, value in {**given, **changes}.items() if value}


async def setup_voximplant(client: Client, api: VoximplantApi, **changes: str) -> None:
    for path, body in [
        ("/v1/pipelines/sales", {"stages": ["NEW", "CALLED", "WON"]}),
        ("/v1/providers/vox", {"kind": "voximplant", "credentials": credentials(api, **changes)}),
        (f"/v1/lines/{LINE}", {"provider": "vox"}),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    await put_card(client, "D1", [{"type": "MOBILE", "value": CUSTOMER}])


async def placed(
    aiohttp_client: ClientFactory, settings: Settings, api: VoximplantApi, body: dict[str, Any]
) -> tuple[Client, str, str]:
    """A gateway with its workers and a Voximplant line, and a robocall of ``body`` placed
    (``sent``): the client, the job's id and the call's session."""
    client = await aiohttp_client(create_app(settings))
    await setup_voximplant(client, api)
    _, accepted = await post(client, body)
    job_id = accepted["id"]
    return client, job_id, (await final(client, job_id, "sent"))["provider_ref"]


async def queued(
    aiohttp_client: ClientFactory, settings: Settings, api: VoximplantApi, body: dict[str, Any]
) -> tuple[Client, str]:
    """A gateway without workers (the test runs the job) and a Voximplant line, and a
    robocall of ``body`` queued: the client and the job's id."""
    client = await aiohttp_client(create_app(settings, workers=False))
    await setup_voximplant(client, api)
    _, accepted = await post(client, body)
    return client, str(accepted["id"])


async def scenario_post(
    client: Client, job_id: str, event: str, session: str, seq: int, *, dial: int = 1, **fields: Any
) -> ClientResponse:
    """What robocall.js posts: signed with the dial's secret, to the URL its custom data names."""
    payload = {"event": event, "call_id": session, "line": LINE, "customer": CUSTOMER, "seq": seq, **fields}
    payload["at"] = 1.7e9 + seq
    secret = robocall_secret(WEBHOOK_SECRET, job_id, dial)
    return await voximplant_post(client, f"/webhooks/voximplant/vox?job={job_id}&dial={dial}", payload, secret)


async def test_a_voximplant_robocall_starts_the_rule_and_its_scenario_s_progress_moves_the_job(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    resp = await client.post(
        "/v1/triggers",
        json={"name": "t", "event": "call.outgoing", "pipeline": "sales", "target_stage": "CALLED"},
        headers=ADMIN,
    )
    assert resp.status == 201
    _, accepted = await post(client, robocall(mp3))
    job_id = accepted["id"]
    sent = await final(client, job_id, "sent")

    [start] = vox.requests
    assert (start["cmd"], start["rule_id"]) == ("StartScenarios", str(RULE_ID))
    custom = start["script_custom_data"]
    assert len(custom.encode()) <= 200  # VoxEngine keeps at most 200 bytes
    assert json.loads(custom) == {
        "url": f"{PUBLIC_URL}/webhooks/voximplant/vox?job={job_id}&dial=1",
        "secret": robocall_secret(WEBHOOK_SECRET, job_id, 1),
    }
    session = str(vox.sessions[0]["call_session_history_id"])
    assert sent["provider_ref"] == session

    # The session asks for its script; another session of the same dial is refused it.
    resp = await scenario_post(client, job_id, "robocall.start", session, 1)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"to": CUSTOMER, "caller_id": LINE, "play": sent["audio_url"]}
    stray = await scenario_post(client, job_id, "robocall.start", "990001", 1)
    assert stray.status == 409 and (await stray.json())["error"]["code"] == "not_the_call"

    steps: list[tuple[str, dict[str, Any], str]] = [
        ("call.outgoing", {"status": "ringing"}, "ringing"),
        ("call.answered", {"status": "in-progress"}, "answered"),
        ("call.completed", {"status": "completed", "duration": 42}, "completed"),
    ]
    for seq, (event, fields, status) in enumerate(steps, start=2):
        for _ in range(2):  # robocall.js retries a report whose answer it lost
            resp = await scenario_post(client, job_id, event, session, seq, **fields)
            assert resp.status == 200, await resp.text()
        done = await final(client, job_id, status)
    assert done["duration"] == 42
    data = await item(client, "D1")
    assert job_statuses(data["timeline"], job_id) == ["queued", "sending", "sent", "ringing", "answered", "completed"]
    # The gateway's own call is no call.outgoing: the trigger did not move the item.
    assert data["stage"] == "NEW"
    assert not [e for e in data["timeline"] if e["type"] == "call.outgoing"]
    assert len(vox.sessions) == 1


async def test_a_failed_call_ends_the_job_with_the_sip_code_and_refusals_change_nothing(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client, job_id, session = await placed(aiohttp_client, vox_settings, vox, robocall(mp3))
    completed: dict[str, Any] = {"status": "busy", "code": 486}
    # Signed with the provider's own secret, or for another dial: refused.
    wrong = await voximplant_post(
        client,
        f"/webhooks/voximplant/vox?job={job_id}&dial=1",
        {"event": "call.completed", "call_id": session, "line": LINE, "customer": CUSTOMER, "at": 1.7e9, "seq": 1},
        WEBHOOK_SECRET,
    )
    assert wrong.status == 403 and (await wrong.json())["error"]["code"] == "bad_signature"
    later_dial = await scenario_post(client, job_id, "call.completed", session, 1, dial=2, **completed)
    assert later_dial.status == 409
    malformed = await scenario_post(client, job_id, "call.incoming", session, 1)
    assert malformed.status == 400
    assert (await final(client, job_id, "sent"))["status"] == "sent"

    resp = await scenario_post(client, job_id, "call.completed", session, 1, **completed)
    assert resp.status == 200, await resp.text()
    done = await final(client, job_id, "busy")
    assert done["reason"] == "the call ended busy (SIP 486)"


@pytest.mark.parametrize(
    ("event", "fields", "status", "due"),
    [
        # The call may still never report its end: its check stays as it was.
        ("call.outgoing", {"status": "ringing"}, "ringing", "check"),
        ("call.answered", {"status": "in-progress"}, "answered", "check"),
        ("call.completed", {"status": "completed", "duration": 3}, "completed", None),
        # The redial's own due survives the report that ended the dial.
        ("call.completed", {"status": "no-answer"}, "queued", "redial"),
    ],
)
async def test_a_report_keeps_the_call_s_check_until_it_reports_the_end(
    aiohttp_client: ClientFactory,
    vox_settings: Settings,
    vox: VoximplantApi,
    mp3: str,
    event: str,
    fields: dict[str, Any],
    status: str,
    due: str | None,
) -> None:
    client, job_id, session = await placed(
        aiohttp_client, vox_settings, vox, robocall(mp3, attempts=2, retry_interval_seconds=900)
    )
    check = await due_at(client, job_id)
    assert check is not None and check < time.time() + CHECK_AFTER_SECONDS + 1

    resp = await scenario_post(client, job_id, event, session, 1, **fields)
    assert resp.status == 200, await resp.text()
    await final(client, job_id, status)
    after = await due_at(client, job_id)
    if due == "check":
        assert after == check
    elif due == "redial":
        assert after is not None and after > time.time() + 800
    else:
        assert after is None


async def test_a_session_claims_its_dial_in_one_round_trip(
    private_redis: EmbeddedRedis, make_settings: Callable[..., Settings]
) -> None:
    redis = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        jobs = Store.open(redis, make_settings(), Snapshots()).jobs
        await jobs.save_script("J1-1", '{"to": "+34600111222"}')

        async def claim(key: str, session: str) -> tuple[str | None, str]:
            before = int((await redis.info("stats"))["total_reads_processed"])
            claimed = await jobs.claim_dial(key, session)
            used = int((await redis.info("stats"))["total_reads_processed"]) - before
            assert used <= 3, used  # one pipeline (however the server splits its reads) and INFO
            return claimed

        assert await claim("J1-1", "801") == ('{"to": "+34600111222"}', "801")
        assert await claim("J1-1", "802") == ('{"to": "+34600111222"}', "801")  # the first session is the call
        assert await jobs.recorded_call("J1-1") == "801"
        # A dial with no script stays unclaimed: a later placement of it records its own session.
        assert await claim("J1-2", "803") == (None, "803")
        assert await jobs.recorded_call("J1-2") is None
    finally:
        await redis.aclose()


async def test_a_5xx_is_retried_and_the_rule_started_once(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    vox.script = [503, 503]
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    _, accepted = await post(client, robocall(mp3))
    sent = await final(client, accepted["id"], "sent")
    # Each retry first asks the call history whether the failed try started a session.
    assert [r["cmd"] for r in vox.requests] == ["StartScenarios", "GetCallHistory"] * 2 + ["StartScenarios"]
    assert len(vox.sessions) == 1 and sent["provider_ref"] == str(vox.sessions[0]["call_session_history_id"])


async def test_a_reconciled_dial_the_rate_limit_defers_asks_the_call_history_once(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    vox.script = [503]
    # No workers: the test runs the job, each run as the due set would start it.
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3))
    store = client.app[STORE]
    providers = Providers(store, vox_settings.base_url)
    runner = JobRunner(store, providers, vox_settings, Speech(renderer_for(vox_settings), 1))
    try:
        await runner.run(job_id)  # StartScenarios answers 503: the retry must reconcile first
        assert (await job(client, job_id))["status"] == "queued"
        held = await store.limits.reserve({"calls:vox": 0.001}, 5)  # the provider's next slot is far off
        assert held.granted
        for _ in range(3):
            await runner.run(job_id)
            assert (await job(client, job_id))["status"] == "sending"
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios", "GetCallHistory"]

        await store.redis.delete(store.keys.limit("calls:vox"))  # the slot comes
        await runner.run(job_id)
        sent = await job(client, job_id)
        assert sent["status"] == "sent" and sent["provider_ref"] == str(vox.sessions[0]["call_session_history_id"])
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios", "GetCallHistory", "StartScenarios"]
    finally:
        await providers.close()


async def test_a_429_holds_off_every_call_through_the_provider(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], vox: VoximplantApi, mp3: str
) -> None:
    vox.script = ["error:429"]
    # A first backoff of 15-30 s: the provider's limit is held at least that long.
    client = await aiohttp_client(create_app(make_settings(media_allow_private=True, job_retry_seconds=30)))
    await setup_voximplant(client, vox)
    _, accepted = await post(client, robocall(mp3))

    async def retrying() -> bool:
        return "retrying in" in ((await job(client, accepted["id"]))["reason"] or "")

    await eventually(retrying)
    held = await client.app[STORE].limits.reserve({"calls:vox": 1000}, 5)
    assert not held.granted and held.wait > 5


async def test_an_api_error_fails_the_job_at_once(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox, rule_id="12")
    _, accepted = await post(client, robocall(mp3))
    failed = await final(client, accepted["id"], "failed")
    assert failed["reason"] == "Voximplant StartScenarios error 186: Invalid rule_id"
    assert len(vox.requests) == 1 and vox.sessions == []


async def test_a_voximplant_provider_without_a_usable_service_account_cannot_place_robocalls(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox, service_account="", rule_id="")
    status, refused = await post(client, robocall(mp3))
    assert status == 422
    assert refused["error"]["message"] == (
        "line: its provider vox cannot place robocalls (it has no credentials service_account, rule_id)"
    )
    resp = await client.put(
        "/v1/providers/vox", json={"kind": "voximplant", "credentials": credentials(vox, rule_id="r1")}, headers=ADMIN
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["message"] == "credentials.rule_id: a routing rule's numeric id"

    # A service account that is no key file fails the job with the reason, asking nothing.
    await setup_voximplant(client, vox, service_account='{"key_id": "k"}')
    _, accepted = await post(client, robocall(mp3))
    failed = await final(client, accepted["id"], "failed")
    assert failed["reason"] == (
        "provider vox's service_account is not a service account's JSON key file (account_id, key_id, private_key)"
    )
    assert vox.requests == []


async def test_the_provider_engine_s_text_is_in_the_script_for_call_say(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    say = {"text": "Hola {{name}}", "language": "es-ES", "engine": "provider", "voice": "Amazon.es_ES_Lucia"}
    _, accepted = await post(client, {"item_id": "D1", "line": LINE, "say": {**say, "speed": 1.3}})
    session = (await final(client, accepted["id"], "sent"))["provider_ref"]
    resp = await scenario_post(client, accepted["id"], "robocall.start", session, 1)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "to": CUSTOMER,
        "caller_id": LINE,
        "say": {"text": "Hola Ana", "language": "es-ES", "voice": "Amazon.es_ES_Lucia", "ttsOptions": {"rate": "fast"}},
    }


@pytest.mark.parametrize("query", ["job=J1&dial=%C2%B2", "job=J1&dial=1" + "0" * 5000, "job=J1%0A&dial=1"])
async def test_a_url_naming_no_job_and_dial_is_a_400(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, query: str
) -> None:
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    resp = await voximplant_post(client, f"/webhooks/voximplant/vox?{query}", {"event": "robocall.start"}, "x")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "malformed_webhook"


class Checking:
    """A runner of the test's own (the app has no workers) whose clock the test moves on;
    its providers' clients are closed when the ``async with`` ends."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.shift = 0.0
        store = client.app[STORE]
        self.providers = Providers(store, settings.base_url)
        speech = Speech(renderer_for(settings), 1)
        self.runner = JobRunner(store, self.providers, settings, speech, clock=lambda: time.time() + self.shift)

    async def __aenter__(self) -> Checking:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.providers.close()


async def due_at(client: Client, job_id: str) -> float | None:
    """When the job is next due (its check), or None when nothing is due of it."""
    store = client.app[STORE]
    at: float | None = await store.redis.zscore(store.keys.jobs_due(store.keys.partition_of(job_id)), job_id)
    return at


def dialled(successful: bool, duration: int = 0, code: int | None = None) -> dict[str, Any]:
    """A call of a session as GetCallHistory lists it with_calls."""
    call: dict[str, Any] = {"call_id": 5500001, "incoming": False, "successful": successful, "duration": duration}
    if code is not None:
        call["end_reason"] = {"code": code, "description": "from the emulator"}
    return call


@pytest.mark.parametrize(
    ("calls", "attempts", "statuses", "reason", "duration"),
    [
        ([dialled(True, 17)], 1, ["completed"], None, 17),
        ([dialled(False, code=486)], 1, ["busy"], "the call ended busy (SIP 486)", None),
        # No answer with attempts left: redialled as a reported no-answer would be.
        ([dialled(False, code=408)], 2, ["no_answer", "queued"], "attempt 1 of 2 ended no_answer; next in 600 s", None),
        ([], 1, ["failed"], "robocall.js never dialled: its session ended (Normal termination) without a call", None),
    ],
)
async def test_a_dial_that_never_reports_is_settled_once_from_the_call_history(
    aiohttp_client: ClientFactory,
    vox_settings: Settings,
    vox: VoximplantApi,
    mp3: str,
    calls: list[dict[str, Any]],
    attempts: int,
    statuses: list[str],
    reason: str | None,
    duration: int | None,
) -> None:
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3, attempts=attempts))
    async with Checking(client, vox_settings) as checking:
        await checking.runner.run(job_id)
        session = (await job(client, job_id))["provider_ref"]
        await checking.runner.run(job_id)  # a repeat of its entry before the check is due asks nothing
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios"]

        vox.sessions[0].update(finish_reason="Normal termination", calls=calls)
        checking.shift = CHECK_AFTER_SECONDS + 1
        # Several processes check at once: the job moves once.
        await asyncio.gather(checking.runner.run(job_id), checking.runner.run(job_id))
        done = await job(client, job_id)
        assert (done["status"], done["reason"], done.get("duration")) == (statuses[-1], reason, duration)
        timeline = (await item(client, "D1"))["timeline"]
        assert job_statuses(timeline, job_id) == ["queued", "sending", "sent", *statuses]
        looked_up = [r for r in vox.requests if r["cmd"] == "GetCallHistory"]
        assert looked_up and all(
            (r["call_session_history_id"], r["with_calls"]) == (session, "True") for r in looked_up
        )
        assert len(vox.sessions) == 1


@pytest.mark.parametrize("lost", ["records unreadable", "provider removed"])
async def test_a_dial_whose_end_cannot_be_known_is_failed_not_left_sent(
    aiohttp_client: ClientFactory,
    vox_settings: Settings,
    vox: VoximplantApi,
    mp3: str,
    monkeypatch: pytest.MonkeyPatch,
    lost: str,
) -> None:
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3))
    async with Checking(client, vox_settings) as checking:
        await checking.runner.run(job_id)
        session = (await job(client, job_id))["provider_ref"]
        if lost == "provider removed":
            # A provider still named by a line cannot be deleted (409): the line goes first.
            assert (await client.delete(f"/v1/lines/{LINE}", headers=ADMIN)).status == 204
            assert (await client.delete("/v1/providers/vox", headers=ADMIN)).status == 204
            expected = f"provider vox is no longer configured, so call {session} cannot be looked up"
        else:
            provider = await checking.providers.get("vox")

            async def unreadable(*_: object) -> None:
                raise PlacementError("GetCallHistory: 401 Authorization failed", transient=False)

            monkeypatch.setattr(provider, "call_end", unreadable)
            expected = (
                f"no report of call {session} came, and the provider's records could not be read "
                f"(GetCallHistory: 401 Authorization failed) {GIVE_UP_AFTER_SECONDS:.0f} s after the dial began"
            )
        checking.shift = GIVE_UP_AFTER_SECONDS + 1
        await checking.runner.run(job_id)
        failed = await job(client, job_id)
        assert (failed["status"], failed["reason"]) == ("failed", expected)


async def test_a_dial_the_call_history_shows_no_end_of_is_looked_up_again_then_failed(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3))
    async with Checking(client, vox_settings) as checking:
        await checking.runner.run(job_id)
        session = (await job(client, job_id))["provider_ref"]
        checking.shift = CHECK_AFTER_SECONDS + 1
        await checking.runner.run(job_id)  # the session is under way (no finish_reason yet)
        assert (await job(client, job_id))["status"] == "sent"
        # Looked up again later: the next check is due.
        due = await due_at(client, job_id)
        assert due is not None and due > time.time() + 2 * CHECK_AFTER_SECONDS
        vox.sessions.clear()  # and then the history has nothing at all of it
        checking.shift = GIVE_UP_AFTER_SECONDS + 1
        await checking.runner.run(job_id)
        failed = await job(client, job_id)
        assert failed["status"] == "failed"
        assert failed["reason"] == (
            f"no report of call {session} came, and the provider's records show no end of it "
            f"{GIVE_UP_AFTER_SECONDS:.0f} s after the dial began"
        )
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios", "GetCallHistory", "GetCallHistory"]


async def report(client: Client, job_id: str, session: str, *steps: tuple[str, dict[str, Any], str]) -> None:
    """The scenario's reports of a call, in order, each seen to move the job."""
    for seq, (event, fields, status) in enumerate(steps, start=1):
        resp = await scenario_post(client, job_id, event, session, seq, **fields)
        assert resp.status == 200, await resp.text()
        await final(client, job_id, status)


RINGING = ("call.outgoing", {"status": "ringing"}, "ringing")
ANSWERED = ("call.answered", {"status": "in-progress"}, "answered")


async def test_a_call_that_reported_answered_and_then_nothing_is_completed_from_the_call_history(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client, job_id, session = await placed(aiohttp_client, vox_settings, vox, robocall(mp3))
    await report(client, job_id, session, RINGING, ANSWERED)
    # The scenario crashed mid-call: the session ended with the call, and no end was reported.
    vox.sessions[0].update(finish_reason="Normal termination", calls=[dialled(True, 17)])
    async with Checking(client, vox_settings) as checking:
        checking.shift = CHECK_AFTER_SECONDS + 1
        # Several processes check at once: the job moves once.
        await asyncio.gather(checking.runner.run(job_id), checking.runner.run(job_id))
        done = await job(client, job_id)
        assert (done["status"], done["reason"], done["duration"]) == ("completed", None, 17)
        assert (done["usage"]["calls"], done["usage"]["seconds"]) == (1, 17)
        timeline = (await item(client, "D1"))["timeline"]
        assert job_statuses(timeline, job_id) == ["queued", "sending", "sent", "ringing", "answered", "completed"]
        # Until an hour on: the check's clock may have ended the call in the next hour.
        resp = await client.get("/v1/usage", params={"until": f"{time.time() + 3600:.0f}"}, headers=API)
        assert resp.status == 200, await resp.text()
        [line] = (await resp.json())["lines"]
        assert (line["jobs"], line["calls"], line["seconds"]) == (1, 1, 17)

        # Ended: never looked up again.
        looked_up = len([r for r in vox.requests if r["cmd"] == "GetCallHistory"])
        assert looked_up >= 1
        assert await due_at(client, job_id) is None
        await checking.runner.run(job_id)
        assert len([r for r in vox.requests if r["cmd"] == "GetCallHistory"]) == looked_up


async def test_a_call_that_reported_ringing_and_whose_records_show_no_end_is_failed(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client, job_id, session = await placed(aiohttp_client, vox_settings, vox, robocall(mp3))
    await report(client, job_id, session, RINGING)
    async with Checking(client, vox_settings) as checking:
        checking.shift = CHECK_AFTER_SECONDS + 1
        await checking.runner.run(job_id)  # the session is under way (no finish_reason yet)
        assert (await job(client, job_id))["status"] == "ringing"
        due = await due_at(client, job_id)
        assert due is not None and due > time.time() + 2 * CHECK_AFTER_SECONDS

        checking.shift = GIVE_UP_AFTER_SECONDS + 1
        await checking.runner.run(job_id)
        failed = await job(client, job_id)
        assert (failed["status"], failed["reason"]) == (
            "failed",
            f"no report of call {session} came after it was ringing, and the provider's records show no end "
            f"of it {GIVE_UP_AFTER_SECONDS:.0f} s after the dial began",
        )
        assert failed["usage"]["calls"] == 1 and failed["usage"]["seconds"] == 0
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios", "GetCallHistory", "GetCallHistory"]


async def test_a_call_whose_end_was_reported_is_not_looked_up(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    client, job_id, session = await placed(aiohttp_client, vox_settings, vox, robocall(mp3))
    ended = ("call.completed", {"status": "completed", "duration": 9}, "completed")
    await report(client, job_id, session, RINGING, ANSWERED, ended)
    assert await due_at(client, job_id) is None
    async with Checking(client, vox_settings) as checking:
        checking.shift = CHECK_AFTER_SECONDS + 1
        await checking.runner.run(job_id)  # an entry of the job run after all (a repeat)
        assert (await job(client, job_id))["status"] == "completed"
        assert [r["cmd"] for r in vox.requests] == ["StartScenarios"]


@pytest.mark.parametrize("dial", [1, 2])
async def test_a_call_that_reports_ringing_before_it_is_marked_sent_is_still_checked(
    aiohttp_client: ClientFactory,
    vox_settings: Settings,
    vox: VoximplantApi,
    mp3: str,
    monkeypatch: pytest.MonkeyPatch,
    dial: int,
) -> None:
    """The scenario's first report can beat the move to ``sent``, which then finds the job
    ringing: the call is looked up all the same, should the scenario crash mid-call. On a
    redial too, whose job still had the first dial's check time."""
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    jobs = client.app[STORE].jobs
    mark_call = Jobs.mark_call

    async def reported_meanwhile(self: Jobs, provider: str, ref: str, job_id: str) -> None:
        await mark_call(self, provider, ref, job_id)
        if len(vox.sessions) == dial:
            resp = await scenario_post(client, job_id, "call.outgoing", ref, 1, dial=dial, status="ringing")
            assert resp.status == 200, await resp.text()
            await final(client, job_id, "ringing")

    # The class's: the workers have a store of their own.
    monkeypatch.setattr(Jobs, "mark_call", reported_meanwhile)
    _, accepted = await post(client, robocall(mp3, attempts=dial, retry_interval_seconds=1))
    job_id = accepted["id"]
    statuses = ["queued", "sending", "ringing"]
    if dial == 2:
        session = (await final(client, job_id, "sent"))["provider_ref"]
        resp = await scenario_post(client, job_id, "call.completed", session, 1, status="no-answer")
        assert resp.status == 200, await resp.text()
        statuses = ["queued", "sending", "sent", "no_answer", *statuses]

    async def checked() -> bool:
        placed = await jobs.get(job_id)
        return placed is not None and placed.dial == dial and placed.status.value == "ringing"

    await eventually(checked)
    ringing = await job(client, job_id)
    assert ringing["provider_ref"] == str(vox.sessions[dial - 1]["call_session_history_id"])

    async def due() -> bool:
        at = await due_at(client, job_id)
        return at is not None and at > time.time() + CHECK_AFTER_SECONDS / 2

    await eventually(due)
    assert job_statuses((await item(client, "D1"))["timeline"], job_id) == statuses


async def test_a_repeat_of_the_entry_of_a_call_left_without_its_check_sets_it(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    """The process died after the first report had taken the job ringing and before it set
    the call's check: the entry's repeat sets it."""
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3))
    store = client.app[STORE]
    due_set = store.keys.jobs_due(store.keys.partition_of(job_id))
    async with Checking(client, vox_settings) as checking:
        await checking.runner.run(job_id)
        await store.redis.hset(store.keys.job(job_id), mapping={"status": "ringing", "check_at": ""})
        await store.redis.zrem(due_set, job_id)
        await checking.runner.run(job_id)
    due = await due_at(client, job_id)
    assert due is not None and due > time.time() + CHECK_AFTER_SECONDS / 2
    stored = await store.jobs.get(job_id)
    assert stored is not None and stored["check_at"] == repr(due)
    assert [r["cmd"] for r in vox.requests] == ["StartScenarios"]  # placed once


async def test_a_call_s_next_check_is_not_set_over_a_move_made_since_it_was_read(
    aiohttp_client: ClientFactory, vox_settings: Settings, vox: VoximplantApi, mp3: str
) -> None:
    """A check reads the job, asks the provider, then sets the next one: a report or another
    check that moved the job meanwhile keeps what it set."""
    client, job_id = await queued(aiohttp_client, vox_settings, vox, robocall(mp3))
    store = client.app[STORE]
    async with Checking(client, vox_settings) as checking:
        await checking.runner.run(job_id)
    placed = await store.jobs.get(job_id)
    assert placed is not None and placed["check_at"]
    first = await due_at(client, job_id)
    # Read before another process's check moved the check time on.
    assert not await store.jobs.check_call(job_id, 1, time.time() + 5, since="1.0")
    assert not await store.jobs.check_call(job_id, 2, time.time() + 5, since=placed["check_at"])
    assert await due_at(client, job_id) == first
    later = time.time() + 500
    assert await store.jobs.check_call(job_id, 1, later, since=placed["check_at"])
    assert await due_at(client, job_id) == later
