"""Text the provider speaks (the ``provider`` engine): nothing is rendered here; the call
carries the text and the settings, mapped to what each provider's TTS understands.

Twilio: ``<Say voice language>`` with an SSML ``<prosody rate="N%" volume="+NdB">``.
Twilio applies SSML with its Amazon Polly (``Polly.*``) and Google (``Google.*``) voices
only; its basic voices (``man``, ``woman``, ``alice``, the account default) ignore it, so a
speed or volume other than the default needs one of those voices.
Voximplant: ``call.say(text, {voice, ttsOptions: {rate, volume}})``; its TTSOptions take
``rate`` as a word (x-slow ... x-fast), so speed is mapped to the nearest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Voices whose <Say> honours SSML prosody (Twilio's prefixes for Polly and Google voices).
TWILIO_SSML_VOICES = ("Polly.", "Google.")
# Upper bounds of the speeds each Voximplant rate word stands for.
_VOX_RATES = ((0.7, "x-slow"), (0.9, "slow"), (1.1, "medium"), (1.5, "fast"), (float("inf"), "x-fast"))


@dataclass(frozen=True)
class Spoken:
    text: str
    language: str = "en"
    voice: str | None = None  # the provider's own voice name (Polly.Joanna, ...)
    speed: float = 1.0  # 0.5-2.0, as for rendered speech
    volume: float = 0.0  # dB, -20 to +6, as for rendered speech

    @property
    def plain(self) -> bool:
        """Whether the default speed and volume are asked for (no prosody needed)."""
        return self.speed == 1.0 and self.volume == 0.0


def ssml_rate(speed: float) -> str:
    """SSML prosody rate for a tempo multiplier: 1.5 is ``150%``."""
    return f"{round(speed * 100)}%"


def ssml_volume(volume: float) -> str:
    """SSML prosody volume for a gain in dB: ``+3dB``, ``-6.5dB``."""
    return f"{volume:+g}dB"


def locale(language: str) -> str:
    """``es-mx`` as providers spell locales: ``es-MX``."""
    base, _, region = language.replace("_", "-").partition("-")
    return f"{base.lower()}-{region.upper()}" if region else base.lower()


def twilio_problem(spoken: Spoken) -> str | None:
    """Why Twilio would not speak ``spoken`` as asked (None: it would)."""
    if spoken.plain or (spoken.voice or "").startswith(TWILIO_SSML_VOICES):
        return None
    return "a speed or volume other than the default needs a Twilio Polly.* or Google.* voice (SSML prosody)"


def voxengine_say(spoken: Spoken) -> dict[str, Any]:
    """The arguments of VoxEngine's ``call.say`` for ``spoken``: the text, the voice (a
    ``VoiceList`` name such as ``Amazon.en_US_Joanna``, resolved by the scenario; absent:
    the scenario's default for the language) and ``ttsOptions`` when not the defaults."""
    options: dict[str, str] = {}
    if spoken.speed != 1.0:
        options["rate"] = next(word for bound, word in _VOX_RATES if spoken.speed < bound)
    if spoken.volume != 0.0:
        options["volume"] = ssml_volume(spoken.volume)
    say: dict[str, Any] = {"text": spoken.text, "language": locale(spoken.language)}
    if spoken.voice:
        say["voice"] = spoken.voice
    if options:
        say["ttsOptions"] = options
    return say
