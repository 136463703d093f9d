"""Say a text as a call plays it: choose the engine and voice, synthesise, shape, cache.

The one path from a ``say`` request to an MP3 file, used by robocalls and by
``callgate say`` alike, so a preview sounds exactly like the call. Blocking (synthesis,
ffmpeg, files): callers in an event loop run it in a pool (``gateway.speech``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from config.settings import Settings
from voice.audio import SPEED_MAX, SPEED_MIN, VOLUME_MAX_DB, VOLUME_MIN_DB, to_telephony_mp3
from voice.cache import RenderCache
from voice.engines.espeak import EspeakEngine
from voice.engines.gtts import GttsEngine
from voice.engines.piper import PiperEngine
from voice.tts import Engine, SynthesisFailed, TextRefused, Voice, VoiceError, normalise_language, pick_voice

MAX_TEXT = 5000  # characters; about five minutes of speech
# After Google fails, gtts requests go straight to the fallback for this long instead of
# each waiting out a timeout: a campaign would otherwise stall on every call.
GTTS_RETRY_AFTER = 60.0
# Renders of one key wait for each other (so a text is synthesised once); keys share a
# fixed set of locks so the set never grows with the number of texts.
_STRIPES = 64


@dataclass(frozen=True)
class Say:
    text: str
    language: str = "en"
    engine: str | None = None  # None: piper when it has a voice for the language, else espeak-ng
    voice: str | None = None  # None: the engine's best voice for the language
    speed: float = 1.0  # tempo multiplier, 0.5-2.0; the pitch stays
    volume: float = 0.0  # dB above (or below) the reference level, -20 to +6

    def __post_init__(self) -> None:
        if not any(character.isalnum() for character in self.text):
            # Engines disagree on punctuation alone (silence, an error, a crash in gTTS).
            raise VoiceError("text has no words to say")
        if len(self.text) > MAX_TEXT:
            raise VoiceError(f"text is {len(self.text)} characters; at most {MAX_TEXT}")
        if not SPEED_MIN <= self.speed <= SPEED_MAX:
            raise VoiceError(f"speed must be between {SPEED_MIN} and {SPEED_MAX}")
        if not VOLUME_MIN_DB <= self.volume <= VOLUME_MAX_DB:
            raise VoiceError(f"volume must be between {VOLUME_MIN_DB:g} and {VOLUME_MAX_DB:+g} dB")


@dataclass(frozen=True)
class Rendered:
    key: str  # the cache key; the file is ``path``
    path: Path
    engine: str  # the engine that spoke (the fallback's when ``note`` says so)
    voice: str
    cached: bool  # True when an earlier render was reused
    note: str | None = None  # for the item's timeline: why another engine spoke


class Renderer:
    def __init__(
        self,
        engines: Sequence[Engine],
        cache: RenderCache,
        *,
        clock: Callable[[], float] = time.monotonic,
        gtts_retry_after: float = GTTS_RETRY_AFTER,
    ) -> None:
        self.engines: Mapping[str, Engine] = {engine.name: engine for engine in engines}
        self._cache = cache
        self._clock = clock
        self._retry_after = gtts_retry_after
        self._gtts_down: tuple[float, str] | None = None  # (since, why)
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def voices(self) -> dict[str, Sequence[Voice]]:
        return {name: engine.voices() for name, engine in self.engines.items()}

    def offline_engine(self, language: str) -> str:
        """The default engine: piper (neural) when it has a voice for ``language``, else espeak-ng."""
        piper = self.engines.get("piper")
        try:
            pick_voice("piper", piper.voices() if piper else (), language)
        except VoiceError:
            return "espeak-ng"
        return "piper"

    def render(self, say: Say) -> Rendered:
        engine = say.engine or self.offline_engine(say.language)
        if engine != "gtts":
            return self._render(engine, say)
        down = self._gtts_down
        if down is not None and self._clock() - down[0] < self._retry_after:
            _, voice, key = self._choose(engine, say)
            path = self._cache.find(key)  # what Google said before still plays
            if path is not None:
                return Rendered(key, path, engine, voice.id, cached=True)
            return self._fall_back(say, f"gtts skipped: Google failed under {self._retry_after:g} s ago ({down[1]})")
        try:
            rendered = self._render(engine, say)
        except SynthesisFailed as exc:
            if not isinstance(exc, TextRefused):  # Google itself failed: others skip it a while
                self._gtts_down = (self._clock(), str(exc))
            return self._fall_back(say, str(exc))
        self._gtts_down = None
        return rendered

    def _fall_back(self, say: Say, why: str) -> Rendered:
        engine = self.offline_engine(say.language)
        rendered = self._render(engine, replace(say, engine=engine, voice=None))
        return replace(rendered, note=f"{why}; spoken by {engine} voice {rendered.voice} instead")

    def _choose(self, name: str, say: Say) -> tuple[Engine, Voice, str]:
        """The engine, its voice for ``say`` and the render's cache key; no audio yet."""
        engine = self.engines.get(name)
        if engine is None:
            raise VoiceError(f"unknown engine {name!r}; one of {', '.join(self.engines)}")
        voice = pick_voice(name, engine.voices(), say.language, say.voice)
        language = normalise_language(say.language)
        key = self._cache.key(name, voice.id, language, repr(float(say.speed)), repr(float(say.volume)), say.text)
        return engine, voice, key

    def _render(self, name: str, say: Say) -> Rendered:
        engine, voice, key = self._choose(name, say)
        with self._stripes[int(key[:8], 16) % _STRIPES]:
            path = self._cache.find(key)
            if path is not None:
                return Rendered(key, path, name, voice.id, cached=True)
            try:
                audio = engine.synthesize(say.text, voice, normalise_language(say.language))
            except (SynthesisFailed, VoiceError):
                raise
            except Exception as exc:
                # An engine's library failing on this text fails the same way next time: the
                # job fails with the reason (or gTTS falls back) instead of retrying it.
                raise TextRefused(f"{name} could not say this text ({type(exc).__name__}: {exc})") from exc
            path = self._cache.put(key, to_telephony_mp3(audio, say.speed, say.volume))
        return Rendered(key, path, name, voice.id, cached=False)


def renderer_for(settings: Settings) -> Renderer:
    """The engines this machine has: admins' piper voices live in ``DATA_DIR/voices``."""
    engines: list[Engine] = [
        PiperEngine(settings.data_dir / "voices"),
        EspeakEngine(),
        GttsEngine(settings.gtts_url),
    ]
    return Renderer(engines, RenderCache(settings.data_dir / "media"))
