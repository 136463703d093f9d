"""Fixtures of the gateway tests that place robocalls or send SMS: the providers' emulators,
an MP3 to play, settings for jobs through a provider, and a gateway with a sandbox line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import Client, ClientFactory
from tests.gateway.test_robocalls import setup
from tests.media import media_server
from tests.support import ACCOUNT_SID, AUTH_TOKEN
from tests.twilio_api import TwilioApi, twilio_api
from tests.voximplant_api import VoximplantApi, voximplant_api


@pytest.fixture
async def mp3() -> AsyncIterator[str]:
    """The URL of a valid MP3 on a local server (robocalls' play.url)."""
    server = await media_server()
    yield str(server.make_url("/ok.mp3"))
    await server.close()


@pytest.fixture
async def api() -> AsyncIterator[TwilioApi]:
    """The Twilio Calls and Messages API emulator."""
    async with twilio_api(ACCOUNT_SID, AUTH_TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def vox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VoximplantApi]:
    """The Voximplant management API emulator. The SDK trusts its certificate through
    REQUESTS_CA_BUNDLE, read at each request; a worker process started meanwhile inherits it."""
    async with voximplant_api(tmp_path) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_file))
        yield emulator


@pytest.fixture
def tw_settings(make_settings: Callable[..., Settings]) -> Settings:
    """MP3s from the local server may be played; a failed try is retried at once."""
    return make_settings(media_allow_private=True, job_retry_seconds=0.05)


@pytest.fixture
async def robo(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]) -> Client:
    """A gateway that may fetch MP3s from the local test server, with a sandbox line."""
    client = await aiohttp_client(create_app(make_settings(media_allow_private=True)))
    await setup(client)
    return client
