"""gtts: Google Translate's speech, through the ``gTTS`` library's request format.

gTTS splits the text into short parts (one HTTP request each) and builds the requests; they
are sent here rather than by ``gTTS.stream``, which turns TLS verification off, and to a
configurable endpoint (``CALLGATE_GTTS_URL``) so a mirror or a test emulator can stand in.
Google may refuse or rate-limit at any time: callers fall back to an offline engine.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gtts import gTTS
from gtts.lang import tts_langs

from voice.audio import InvalidAudio, decode_mp3
from voice.tts import SynthesisFailed, Voice, normalise_language

if TYPE_CHECKING:
    from pydub import AudioSegment

# The audio travels base64-encoded inside the RPC answer (the pattern gTTS itself matches).
_AUDIO = re.compile(r'jQ1olc","\[\\"(.*)\\"]')


class GttsEngine:
    name = "gtts"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout

    def voices(self) -> Sequence[Voice]:
        """One voice per language Google speaks, named by gTTS's language code."""
        return [Voice(self.name, code, (normalise_language(code),), name) for code, name in tts_langs().items()]

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        try:
            bodies = gTTS(text, lang=voice.id, lang_check=False).get_bodies()
        except AssertionError:  # gTTS asserts that its tokenizer left something to send
            raise SynthesisFailed("gtts: nothing left to send once gTTS split the text") from None
        audio = b"".join(self._fetch(body) for body in bodies)
        try:
            return decode_mp3(audio)
        except InvalidAudio as exc:
            raise SynthesisFailed(f"gtts answered with no usable audio ({exc})") from None

    def _fetch(self, body: str) -> bytes:
        request = urllib.request.Request(self._url, data=body.encode(), headers=gTTS.GOOGLE_TTS_HEADERS, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: bytes = response.read()
        except urllib.error.HTTPError as exc:
            raise SynthesisFailed(f"gtts: Google answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            raise SynthesisFailed(f"gtts: Google unreachable ({exc})") from None
        found = _AUDIO.search(answer.decode("utf-8", errors="replace"))
        if not found:
            raise SynthesisFailed("gtts: Google's answer carried no audio")
        try:
            return base64.b64decode(found.group(1))
        except ValueError:
            raise SynthesisFailed("gtts: Google's audio is not base64") from None
