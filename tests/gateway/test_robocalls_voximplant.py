"""Robocalls through Voximplant: the real ``voximplant-apiclient`` against a local emulator
of the management API. StartScenarios carries the dial's custom data, the session fetches
its script and reports progress as robocall.js does (signed with the dial's secret), the
progress moves the job (and fires no call.outgoing), a second session of the dial is refused
its script, and failures retry or fail as they should."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import STORE
from tests.conftest import ADMIN, Client, ClientFactory
from tests.gateway.test_robocalls import final, job, job_statuses, post, put_card, robocall
from tests.support import PUBLIC_URL, eventually, item, voximplant_post
from tests.voximplant_api import RULE_ID, VoximplantApi
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
    client = await aiohttp_client(create_app(vox_settings))
    await setup_voximplant(client, vox)
    _, accepted = await post(client, robocall(mp3))
    job_id = accepted["id"]
    session = (await final(client, job_id, "sent"))["provider_ref"]
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
