"""What a robocall request asks for: who, from which line, and what is played or said.

One schema for ``POST /v1/robocalls``; provider-neutral, so the same request runs on
Twilio, Voximplant or the sandbox.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from config.cards import ItemId
from config.lines import Strict, TtsEngine, WebUrl
from config.phones import E164
from config.recipients import AUTO, PhoneChoice
from voice import render
from voice.audio import SPEED_MAX, SPEED_MIN, VOLUME_MAX_DB, VOLUME_MIN_DB
from voice.spoken import Spoken


class Say(Strict):
    """Text spoken by a robot voice (``{{field}}`` templates allowed)."""

    text: Annotated[str, Field(min_length=1, max_length=1500)]
    # None: the line's tts_engine, else piper when it has a voice for the language, else
    # espeak-ng (voice.render). "provider": the provider speaks the text (voice.spoken).
    engine: TtsEngine | None = None
    # A BCP 47 tag, or the en_US form piper's voices are named in (the engines read both).
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] = "en"
    voice: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    speed: Annotated[float, Field(ge=SPEED_MIN, le=SPEED_MAX)] = 1.0
    # dB from the level every render is normalised to (voice.audio); above +6 would clip.
    volume: Annotated[float, Field(ge=VOLUME_MIN_DB, le=VOLUME_MAX_DB)] = 0.0

    def utterance(self, text: str) -> render.Say:
        """What the renderer speaks: ``text`` (the template filled in) with these settings.
        Raises ``voice.tts.VoiceError`` when the text has nothing to say."""
        return render.Say(speakable(text), self.language, self.engine, self.voice, self.speed, self.volume)

    def spoken(self, text: str) -> Spoken:
        """``text`` with these settings, for the provider to speak (the ``provider`` engine)."""
        return Spoken(speakable(text), self.language, self.voice, self.speed, self.volume)


# Control characters other than line breaks and tabs: none is speech, a NUL (a card field
# may hold one) crashes piper's phonemizer, and XML (TwiML's <Say>) cannot carry them.
_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def speakable(text: str) -> str:
    """``text`` with each control character a space."""
    return _UNSPEAKABLE.sub(" ", text)


class Play(Strict):
    """A direct public link to an MP3 file."""

    url: WebUrl


def _robocall_schema(schema: dict[str, Any]) -> None:
    """Publish what ``_consistent`` enforces: exactly one of say and play; ``to`` exactly
    when ``test``."""
    absent = {"type": "null"}
    schema["allOf"] = [
        {
            "oneOf": [
                {"required": ["say"], "properties": {"say": {"type": "object"}, "play": absent}},
                {"required": ["play"], "properties": {"play": {"type": "object"}, "say": absent}},
            ]
        },
        {
            "oneOf": [
                {"required": ["test", "to"], "properties": {"test": {"const": True}, "to": {"type": "string"}}},
                {"properties": {"test": {"const": False}, "to": absent}},
            ]
        },
    ]


class Robocall(Strict):
    """A robocall for an item given elsewhere: a stage rule's robocall."""

    model_config = ConfigDict(json_schema_extra=_robocall_schema)

    line: E164
    phone_type: PhoneChoice = AUTO
    say: Say | None = None
    play: Play | None = None
    test: bool = False
    to: E164 | None = None
    delay_seconds: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] = 0
    # Twilio answering-machine detection (the call's callbacks then carry AnsweredBy).
    machine_detection: bool = False
    # Dials in all when the customer does not answer or is busy, and the pause between them.
    attempts: Annotated[int, Field(ge=1, le=10)] = 1
    retry_interval_seconds: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 600

    @model_validator(mode="after")
    def _consistent(self) -> Robocall:
        if (self.say is None) == (self.play is None):
            # Worded to start with a field, so the error names one (API.md: a rule between
            # fields names the one it faults).
            raise ValueError("say or play: give exactly one of them")
        if self.test and self.to is None:
            raise ValueError("to is required for a test call (the number to call instead of the customer)")
        if self.to is not None and not self.test:
            raise ValueError("to is only for test calls (test: true)")
        return self


class RobocallRequest(Robocall):
    item_id: ItemId
