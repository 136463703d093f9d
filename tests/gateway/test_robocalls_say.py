"""Robocalls that speak: the text (templates filled from the card) is rendered by the voice
engines in a worker, cached, served under /media and played through the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.settings import Settings
from gateway.app import create_app
from gateway.providers.sandbox import CALL_SECONDS
from tests.conftest import ADMIN, Client, ClientFactory
from tests.gateway.test_robocalls import LINE, final, job_statuses, post, setup
from tests.support import item
from voice.audio import decode_mp3


@pytest.fixture
async def talk(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]) -> Client:
    # Google is unreachable here: gtts requests fail fast and fall back.
    client = await aiohttp_client(create_app(make_settings(gtts_url="http://127.0.0.1:9/tts")))
    await setup(client)
    return client


def say(text: str, **options: Any) -> dict[str, Any]:
    return {"item_id": "D1", "line": LINE, "say": {"text": text, **options}}


async def audio(client: Client, url: str) -> bytes:
    resp = await client.get(url.removeprefix("https://gw.example.com"))
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/mpeg"
    return await resp.read()


async def test_spanish_text_is_rendered_and_the_call_completes(talk: Client) -> None:
    _, accepted = await post(talk, say("Hola {{name}}, su pedido {{order}} llega mañana.", language="es"))
    done = await final(talk, accepted["id"], "completed")
    assert done["text"] == "Hola Ana, su pedido A-17 llega mañana."
    assert done["engine"] == "espeak-ng" and done["voice"] == "roa/es"
    speech = decode_mp3(await audio(talk, done["audio_url"]))
    assert speech.channels == 1 and speech.frame_rate in (8000, 16000)
    assert len(speech) > 1000  # milliseconds of speech

    # The same words again come from the render cache: the same file.
    _, again = await post(talk, say("Hola {{name}}, su pedido {{order}} llega mañana.", language="es"))
    assert (await final(talk, again["id"], "completed"))["audio_url"] == done["audio_url"]


async def test_a_language_in_the_form_piper_names_its_voices_is_spoken(talk: Client) -> None:
    """README: a tag such as es, pt-BR or en_US."""
    _, accepted = await post(talk, say("Hello {{name}}", language="en_US"))
    done = await final(talk, accepted["id"], "completed")
    assert (done["engine"], done["voice"]) == ("piper", "en_US-joe-medium")


async def test_when_google_fails_another_engine_speaks_and_the_timeline_says_so(talk: Client) -> None:
    _, accepted = await post(talk, say("Buenos días", language="es", engine="gtts"))
    done = await final(talk, accepted["id"], "completed")
    assert done["engine"] == "espeak-ng" and "spoken by espeak-ng" in done["note"]
    timeline = (await item(talk, "D1"))["timeline"]
    notes = [e["data"].get("note") for e in timeline if e["type"] == "job.updated" and e["data"]["status"] == "sending"]
    assert notes == [done["note"]]
    assert "completed" in job_statuses(timeline, accepted["id"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (say("...", language="es"), "say.text"),
        (say("Hola", language="es", voice="nobody"), "say.voice"),
        (say("Hola", language="xx"), "say.language"),
        (say("Hola", engine="festival"), "say.engine"),
        (say("Hola", speed=3), "say.speed"),
        (say("Hola", volume=10), "say.volume"),
        (say("Hola {{nombre}}"), "say.text"),
    ],
)
async def test_what_cannot_be_said_is_a_422(talk: Client, body: dict[str, Any], field: str) -> None:
    status, error = await post(talk, body)
    assert status == 422 and error["error"]["field"] == field, error


async def test_the_provider_engine_renders_nothing_and_the_sandbox_call_completes(talk: Client) -> None:
    _, accepted = await post(talk, say("Hola {{name}}", language="es", engine="provider", voice="Polly.Lucia"))
    done = await final(talk, accepted["id"], "completed")
    assert done["text"] == "Hola Ana" and done["engine"] == "provider" and done["voice"] == "Polly.Lucia"
    assert "audio_url" not in done and done["duration"] == CALL_SECONDS


async def test_a_line_s_tts_engine_is_the_default_and_a_request_s_engine_wins(talk: Client) -> None:
    resp = await talk.put(f"/v1/lines/{LINE}", json={"provider": "sb", "tts_engine": "espeak-ng"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    # English has a piper voice, so without the line's setting piper would speak.
    _, by_line = await post(talk, say("Hello there"))
    assert (await final(talk, by_line["id"], "completed"))["engine"] == "espeak-ng"
    _, by_request = await post(talk, say("Hello there", engine="piper"))
    assert (await final(talk, by_request["id"], "completed"))["engine"] == "piper"
    resp = await talk.put(f"/v1/lines/{LINE}", json={"provider": "sb", "tts_engine": "provider"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    _, spoken = await post(talk, say("Hello there"))
    done = await final(talk, spoken["id"], "completed")
    assert "audio_url" not in done and done["engine"] == "provider" and done["voice"] is None
