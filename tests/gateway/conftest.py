"""Fixtures of the gateway tests that place robocalls or send SMS through providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
