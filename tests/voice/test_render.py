"""The render path: cache keys and reuse, engine choice, gTTS against a local Google, fallback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydub import AudioSegment

from gateway.speech import Speech
from tests.voice.support import Clock, GoogleEmulator, seconds
from voice.cache import RenderCache
from voice.engines.espeak import EspeakEngine
from voice.engines.gtts import GttsEngine
from voice.render import Renderer, Say
from voice.robocall import Say as RobocallSay
from voice.tts import SynthesisFailed, Voice, VoiceError


class Counting:
    """espeak-ng, counting its syntheses and holding each until released (to overlap renders)."""

    name = "espeak-ng"

    def __init__(self, engine: EspeakEngine) -> None:
        self.engine = engine
        self.calls = 0
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()
        self.changed = threading.Condition()
        self.release = threading.Event()
        self.release.set()

    def voices(self) -> Sequence[Voice]:
        return self.engine.voices()

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        with self.changed:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
            self.changed.notify_all()
        try:
            self.release.wait(timeout=10)
            return self.engine.synthesize(text, voice, language)
        finally:
            with self.changed:
                self.inside -= 1

    def wait_inside(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.inside >= count, timeout=10)


async def test_a_campaign_renders_each_text_once(espeak: EspeakEngine, cache: RenderCache) -> None:
    counting = Counting(espeak)
    speech = Speech(Renderer([counting], cache), workers=4)
    counting.release.clear()
    try:
        say = Say("Su cita es mañana a las diez.", "es", "espeak-ng")
        renders = [asyncio.ensure_future(speech.render(say)) for _ in range(8)]
        await asyncio.sleep(0)
        counting.release.set()
        results = await asyncio.gather(*renders)
        again = await speech.render(say)
    finally:
        speech.close()
    assert counting.calls == 1
    assert len({r.key for r in [*results, again]}) == 1
    assert sum(not r.cached for r in results) == 1 and again.cached
    assert sorted(p.name for p in cache.directory.glob("*.mp3")) == [f"{again.key}.mp3"]


async def test_synthesis_runs_in_the_bounded_pool_while_the_loop_serves(
    espeak: EspeakEngine, cache: RenderCache
) -> None:
    counting = Counting(espeak)
    speech = Speech(Renderer([counting], cache), workers=2)
    counting.release.clear()
    try:
        renders = [asyncio.ensure_future(speech.render(Say(f"Turno número {n}.", "es", "espeak-ng"))) for n in range(5)]
        assert await asyncio.to_thread(counting.wait_inside, 2)  # both workers busy, the loop still answers
        counting.release.set()
        results = await asyncio.gather(*renders)
    finally:
        speech.close()
    assert len({r.key for r in results}) == 5 and counting.calls == 5
    assert counting.most_inside == 2
    assert all(name.startswith("tts") for name in counting.threads)


def test_every_field_of_the_request_names_its_own_render(renderer: Renderer) -> None:
    base = Say("Hello", "en", "espeak-ng")
    variants = [
        base,
        Say("Hello!", "en", "espeak-ng"),
        Say("Hello", "en-us", "espeak-ng"),
        Say("Hello", "en", "espeak-ng", voice="gmw/en-GB-x-rp"),
        Say("Hello", "en", "espeak-ng", speed=1.25),
        Say("Hello", "en", "espeak-ng", volume=-3),
        Say("Hello", "en", "piper"),
    ]
    assert len({renderer.render(say).key for say in variants}) == len(variants)
    assert renderer.render(Say("Hello", "EN", "espeak-ng", speed=1, volume=0)).cached  # same render, spelled otherwise


def test_keys_are_stable_per_data_dir_and_unguessable_across_them(tmp_path: Path) -> None:
    fields = ("piper", "en_US-joe-medium", "en", "1.0", "0.0", "Your balance is 100 euros")
    first, same, other = RenderCache(tmp_path / "a"), RenderCache(tmp_path / "a"), RenderCache(tmp_path / "b")
    assert first.key(*fields) == same.key(*fields)
    assert first.key(*fields) != other.key(*fields)
    assert (tmp_path / "a" / ".key").stat().st_mode & 0o077 == 0
    assert first.find("../../etc/passwd") is None
    assert first.find(first.key(*fields)) is None  # not rendered yet


def test_the_default_engine_is_piper_where_it_speaks_the_language_else_espeak(renderer: Renderer) -> None:
    assert renderer.render(Say("Hello", "en-US")).engine == "piper"
    assert renderer.render(Say("Hola", "es")).engine == "espeak-ng"


@pytest.mark.parametrize(
    ("say", "message"),
    [
        (lambda: Say("   "), "text has no words to say"),
        (lambda: Say("... !!! 😀"), "text has no words to say"),
        (lambda: Say("x" * 5001), "at most 5000"),
        (lambda: Say("hi", speed=0.4), "speed must be between 0.5 and 2.0"),
        (lambda: Say("hi", volume=7), "volume must be between -20 and \\+6 dB"),
    ],
)
def test_bad_requests_are_refused_before_any_work(say: Callable[[], Say], message: str) -> None:
    with pytest.raises(VoiceError, match=message):
        say()


@pytest.mark.parametrize(
    ("say", "message"),
    [
        (Say("hi", engine="festival"), "unknown engine 'festival'"),
        (Say("hi", engine="piper", voice="nope"), "piper has no voice 'nope'"),
        (Say("hi", "de", engine="piper", voice="en_US-joe-medium"), "does not speak 'de'"),
        (Say("hi", "xx-klingon", engine="espeak-ng"), "no voice for language 'xx-klingon'"),
    ],
)
def test_unknown_engines_voices_and_languages_are_named(renderer: Renderer, say: Say, message: str) -> None:
    with pytest.raises(VoiceError, match=message):
        renderer.render(say)


async def test_gtts_speaks_through_the_google_endpoint(speech: Speech, google: GoogleEmulator) -> None:
    first = "Olá Ana o seu pedido número dezassete está pronto para levantar na nossa loja do centro"
    second = "Obrigado pela preferência."
    rendered = await speech.render(Say(f"{first}. {second}", "pt-BR", "gtts"))
    assert (rendered.engine, rendered.voice, rendered.note) == ("gtts", "pt", None)
    assert google.spoken == [(first, "pt"), (second, "pt")]  # over 100 characters: a request per sentence
    assert seconds(rendered.path) == pytest.approx(0.06 * (len(first) + len(second)), abs=0.3)  # the two tones


async def test_when_google_fails_another_engine_speaks_with_a_note(
    speech: Speech, google: GoogleEmulator, clock: Clock
) -> None:
    said_before = await speech.render(Say("Buenos días.", "es", "gtts"))
    google.fail_with = 429
    rendered = await speech.render(Say("Hola Ana.", "es", "gtts"))
    assert (rendered.engine, rendered.voice) == ("espeak-ng", "roa/es")
    assert rendered.note == "gtts: Google answered HTTP 429; spoken by espeak-ng voice roa/es instead"
    assert seconds(rendered.path) > 0.3
    asked = len(google.spoken)

    english = await speech.render(Say("Hello Ana.", "en", "gtts"))  # within a minute: Google is not asked
    assert english.engine == "piper"
    assert english.note is not None and english.note.startswith("gtts skipped: Google failed under 60 s ago")
    assert len(google.spoken) == asked
    again = await speech.render(Say("Buenos días.", "es", "gtts"))  # what Google said before still plays
    assert (again.engine, again.path, again.cached, again.note) == ("gtts", said_before.path, True, None)

    google.fail_with = None
    clock.now += 61
    recovered = await speech.render(Say("Hola Ana.", "es", "gtts"))
    assert (recovered.engine, recovered.note) == ("gtts", None)
    assert len(google.spoken) == asked + 1


async def test_google_unreachable_falls_back_too(espeak: EspeakEngine, cache: RenderCache) -> None:
    renderer = Renderer([espeak, GttsEngine("http://127.0.0.1:9/unreachable", timeout=2)], cache)
    rendered = await asyncio.to_thread(renderer.render, Say("Hallo", "de", "gtts"))
    assert rendered.engine == "espeak-ng"
    assert rendered.note is not None and "Google unreachable" in rendered.note


class Failing:
    """An engine whose library fails on the text the way piper's phonemizer fails on a NUL."""

    name = "espeak-ng"

    def __init__(self, engine: EspeakEngine) -> None:
        self.engine = engine

    def voices(self) -> Sequence[Voice]:
        return self.engine.voices()

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        raise ValueError("embedded null character")


def test_an_engine_failing_on_a_text_is_a_synthesis_failure(espeak: EspeakEngine, cache: RenderCache) -> None:
    renderer = Renderer([Failing(espeak)], cache)
    with pytest.raises(SynthesisFailed, match=r"^espeak-ng could not say this text \(ValueError: embedded null"):
        renderer.render(Say("Hola", "es", "espeak-ng"))


@pytest.mark.parametrize("engine", ["piper", "espeak-ng"])
def test_control_characters_in_a_robocall_text_are_not_spoken(renderer: Renderer, engine: str) -> None:
    say = RobocallSay.model_validate({"text": "x", "engine": engine})
    utterance = say.utterance("Hello\x00 Ana,\x07 your\norder\tis ready\x1b.")
    assert utterance.text == "Hello  Ana,  your\norder\tis ready ."
    assert say.spoken("Hi\x00 Ana").text == "Hi  Ana"
    rendered = renderer.render(utterance)
    assert rendered.engine == engine and seconds(rendered.path) > 0.5


class Picky:
    """gTTS failing on one text only (its library's error), speaking the others."""

    name = "gtts"

    def __init__(self, engine: EspeakEngine) -> None:
        self.engine = engine
        self.asked: list[str] = []

    def voices(self) -> Sequence[Voice]:
        return [Voice("gtts", "es", ("es",), "Spanish")]

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        self.asked.append(text)
        if text == "Hola":
            raise ValueError("cannot split this text")
        return self.engine.synthesize(text, self.engine.voices()[0], "en")


def test_a_text_gtts_refuses_does_not_mark_google_down(espeak: EspeakEngine, cache: RenderCache) -> None:
    picky = Picky(espeak)
    renderer = Renderer([espeak, picky], cache)
    refused = renderer.render(Say("Hola", "es", "gtts"))
    assert refused.engine == "espeak-ng" and refused.note is not None and "could not say this text" in refused.note
    spoken = renderer.render(Say("Adios", "es", "gtts"))  # Google is asked again at once
    assert spoken.engine == "gtts" and picky.asked == ["Hola", "Adios"]
