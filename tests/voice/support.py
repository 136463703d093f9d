"""Helpers for the voice tests: a local emulator of Google's speech endpoint, a clock."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydub.generators import Sine

from voice.audio import decode_mp3, to_telephony_mp3


def seconds(mp3: Path) -> float:
    return float(len(decode_mp3(mp3.read_bytes()))) / 1000


@dataclass
class GoogleEmulator:
    """Answers gTTS's batchexecute RPC with a real MP3 (a tone as long as the text needs)."""

    url: str = ""
    fail_with: int | None = None  # an HTTP status to answer instead of audio
    spoken: list[tuple[str, str]] = field(default_factory=list)  # (text part, language)

    async def batchexecute(self, request: web.Request) -> web.Response:
        form = await request.post()
        rpc = json.loads(str(form["f.req"]))
        text, language = json.loads(rpc[0][0][1])[:2]
        self.spoken.append((text, language))
        if self.fail_with:
            return web.Response(status=self.fail_with, text="Too Many Requests")
        tone = Sine(440).to_audio_segment(duration=60 * len(text))
        audio = base64.b64encode(to_telephony_mp3(tone)).decode()
        body = f')]}}\'\n\n[["wrb.fr","jQ1olc","[\\"{audio}\\"]",null,null,null,"generic"]]\n'
        return web.Response(text=body)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now
