"""Robocalls through Twilio: the real SDK's async client against a local emulator of the
Calls API. The call is created with the right TwiML and status callback, its signed
callbacks move the job (and fire no call.outgoing), and failures retry or fail as they
should (a worker SIGKILLed mid-placement: test_placement_crash.py)."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import ADMIN, Client, ClientFactory
from tests.gateway.test_robocalls import final, job, job_statuses, post, put_card, robocall
from tests.support import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, eventually, item, status_form, twilio_post
from tests.twilio_api import TwilioApi

LINE = "+34910000001"
CUSTOMER = "+34600111222"
STATUS_PATH = "/webhooks/twilio/voice/status"


async def setup_twilio(client: Client, api: TwilioApi) -> None:
    credentials = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base": api.url}
    for path, body in [
        ("/v1/pipelines/sales", {"stages": ["NEW", "CALLED", "WON"]}),
        ("/v1/providers/tw", {"kind": "twilio", "credentials": credentials}),
        (f"/v1/lines/{LINE}", {"provider": "tw"}),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    await put_card(client, "D1", [{"type": "MOBILE", "value": CUSTOMER}])


async def progress(
    client: Client, job_id: str, sid: str, statuses: list[str], first: int = 0, dial: int = 1, **fields: str
) -> None:
    """Twilio's signed status callbacks for the call, as its status_callback URL receives them."""
    path = f"{STATUS_PATH}?job={job_id}&dial={dial}"
    for sequence, status in enumerate(statuses, start=first):
        form = {**status_form(sid, status, str(sequence), From=LINE, To=CUSTOMER, Direction="outbound-api"), **fields}
        resp = await twilio_post(client, path, form)
        assert resp.status == 200, await resp.text()


async def test_a_twilio_robocall_plays_the_mp3_and_its_callbacks_move_the_job(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    resp = await client.post("/v1/triggers", json=trigger("call.outgoing"), headers=ADMIN)
    assert resp.status == 201
    _, accepted = await post(client, robocall(mp3))
    sent = await final(client, accepted["id"], "sent")

    [request] = api.requests
    assert request["To"] == CUSTOMER and request["From"] == LINE
    assert (
        request["Twiml"]
        == f'<?xml version="1.0" encoding="UTF-8"?><Response><Play>{sent["audio_url"]}</Play></Response>'
    )
    assert request["StatusCallback"] == f"{PUBLIC_URL}{STATUS_PATH}?job={accepted['id']}&dial=1"
    assert request.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert request["StatusCallbackMethod"] == "POST" and "MachineDetection" not in request
    assert sent["provider_ref"] == api.calls[0]["sid"]

    # Each callback is processed before the next is sent (as Twilio spaces them in time).
    steps = [("initiated", "sent"), ("ringing", "ringing"), ("in-progress", "answered"), ("completed", "completed")]
    for sequence, (twilio_status, status) in enumerate(steps):
        await progress(client, accepted["id"], sent["provider_ref"], [twilio_status], sequence)
        done = await final(client, accepted["id"], status)
    assert done["duration"] == 42
    data = await item(client, "D1")
    assert job_statuses(data["timeline"], accepted["id"])[-3:] == ["ringing", "answered", "completed"]
    # The gateway's own call is no call.outgoing: the trigger did not move the item.
    assert data["stage"] == "NEW"
    assert not [e for e in data["timeline"] if e["type"] == "call.outgoing"]


def trigger(event: str) -> dict[str, Any]:
    return {"name": "t", "event": event, "pipeline": "sales", "target_stage": "CALLED"}


async def test_no_answer_from_twilio_ends_the_job_no_answer(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    _, accepted = await post(client, robocall(mp3, machine_detection=True))
    sent = await final(client, accepted["id"], "sent")
    assert api.requests[0]["MachineDetection"] == "Enable"
    await progress(client, accepted["id"], sent["provider_ref"], ["ringing", "no-answer"])
    done = await final(client, accepted["id"], "no_answer")
    assert done["reason"] == "the call ended no-answer"


async def test_a_twilio_5xx_is_retried_and_the_call_placed_once(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, mp3: str
) -> None:
    api.script = [503, 429]
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    _, accepted = await post(client, robocall(mp3))
    sent = await final(client, accepted["id"], "sent")
    assert len(api.requests) == 3 and len(api.calls) == 1
    assert sent["provider_ref"] == api.calls[0]["sid"]


async def test_an_invalid_number_fails_at_once(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, mp3: str
) -> None:
    api.script = [400]
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    _, accepted = await post(client, robocall(mp3))
    failed = await final(client, accepted["id"], "failed")
    assert (
        failed["reason"]
        == "Twilio HTTP 400 (21211): Unable to create record: The 'To' number is not a valid phone number."
    )
    assert len(api.requests) == 1 and api.calls == []


async def test_no_answer_is_redialled_but_a_declined_call_never(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi, mp3: str
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    _, accepted = await post(client, robocall(mp3, attempts=3, retry_interval_seconds=1))
    first = await final(client, accepted["id"], "sent")
    await progress(client, accepted["id"], first["provider_ref"], ["no-answer"])

    async def second_dial_placed() -> bool:
        data = await job(client, accepted["id"])
        return bool(data["attempt"] == 2 and data["status"] == "sent")

    await eventually(second_dial_placed)
    assert len(api.calls) == 2
    second = await job(client, accepted["id"])
    assert second["provider_ref"] == api.calls[1]["sid"] != first["provider_ref"]
    # A late report on the first dial changes nothing now.
    await progress(client, accepted["id"], first["provider_ref"], ["completed"], first=5)

    await progress(client, accepted["id"], second["provider_ref"], ["busy"], dial=2, SipResponseCode="603")
    done = await final(client, accepted["id"], "busy")
    assert done["attempt"] == 2 and done["reason"] == "the call ended busy (SIP 603)"
    assert len(api.calls) == 2  # declined: attempt 3 is never dialled


async def test_the_provider_engine_says_the_text_with_ssml_prosody(
    aiohttp_client: ClientFactory, tw_settings: Settings, api: TwilioApi
) -> None:
    client = await aiohttp_client(create_app(tw_settings))
    await setup_twilio(client, api)
    text = {"text": "Hola {{name}}", "language": "es-ES", "engine": "provider"}
    _, plain = await post(client, {"item_id": "D1", "line": LINE, "say": text})
    await final(client, plain["id"], "sent")
    prosody = {**text, "voice": "Polly.Lucia", "speed": 1.5, "volume": -3}
    _, shaped = await post(client, {"item_id": "D1", "line": LINE, "say": prosody})
    assert "audio_url" not in await final(client, shaped["id"], "sent")
    head = '<?xml version="1.0" encoding="UTF-8"?><Response>'
    assert [request["Twiml"] for request in api.requests] == [
        f'{head}<Say language="es-ES">Hola Ana</Say></Response>',
        f'{head}<Say language="es-ES" voice="Polly.Lucia"><prosody rate="150%" volume="-3dB">Hola Ana</prosody>'
        "</Say></Response>",
    ]
    # Twilio's basic voices ignore SSML: a speed they cannot honour is refused up front.
    status, error = await post(client, {"item_id": "D1", "line": LINE, "say": {**text, "speed": 0.8}})
    assert status == 422 and error["error"]["field"] == "say.voice", error
