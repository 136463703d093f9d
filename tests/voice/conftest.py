"""Voice fixtures: the real engines (piper's model loads once per session) and a local
emulator of Google's speech endpoint, since Google is not reachable from tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.speech import Speech
from tests.voice.support import Clock, GoogleEmulator
from voice.cache import RenderCache
from voice.engines.espeak import EspeakEngine
from voice.engines.gtts import GttsEngine
from voice.engines.piper import PiperEngine
from voice.render import Renderer
from voice.tts import Engine


@pytest.fixture(scope="session")
def piper(tmp_path_factory: pytest.TempPathFactory) -> PiperEngine:
    return PiperEngine(tmp_path_factory.mktemp("voices"))


@pytest.fixture(scope="session")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture
async def google() -> AsyncIterator[GoogleEmulator]:
    emulator = GoogleEmulator()
    app = web.Application()
    app.router.add_post("/_/TranslateWebserverUi/data/batchexecute", emulator.batchexecute)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    emulator.url = f"http://{host}:{port}/_/TranslateWebserverUi/data/batchexecute"
    yield emulator
    await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path) -> RenderCache:
    return RenderCache(tmp_path / "media")


@pytest.fixture
def renderer(
    piper: PiperEngine, espeak: EspeakEngine, google: GoogleEmulator, cache: RenderCache, clock: Clock
) -> Renderer:
    engines: list[Engine] = [piper, espeak, GttsEngine(google.url, timeout=5)]
    return Renderer(engines, cache, clock=clock)


@pytest.fixture
def speech(renderer: Renderer) -> Iterator[Speech]:
    pool = Speech(renderer, workers=2)
    yield pool
    pool.close()
