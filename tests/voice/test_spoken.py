"""The provider engine's mapping of speed and volume to what each provider's TTS takes."""

from __future__ import annotations

from voice.spoken import Spoken, locale, twilio_problem, voxengine_say


def test_voxengine_say_carries_only_what_differs_from_the_defaults() -> None:
    assert voxengine_say(Spoken("Hola", "es")) == {"text": "Hola", "language": "es"}
    shaped = voxengine_say(Spoken("Hola", "es-mx", "Amazon.es_MX_Mia", speed=0.5, volume=-3.5))
    assert shaped == {
        "text": "Hola",
        "language": "es-MX",
        "voice": "Amazon.es_MX_Mia",
        "ttsOptions": {"rate": "x-slow", "volume": "-3.5dB"},
    }
    rates = [voxengine_say(Spoken("a", speed=speed))["ttsOptions"]["rate"] for speed in (0.8, 1.05, 1.2, 2.0)]
    assert rates == ["slow", "medium", "fast", "x-fast"]


def test_twilio_needs_an_ssml_voice_only_for_prosody() -> None:
    assert twilio_problem(Spoken("a")) is None
    assert twilio_problem(Spoken("a", voice="Polly.Joanna", speed=1.2)) is None
    assert twilio_problem(Spoken("a", voice="Google.en-US-Standard-C", volume=3)) is None
    assert twilio_problem(Spoken("a", voice="alice", volume=3)) is not None
    assert locale("pt_br") == "pt-BR" and locale("EN") == "en"
