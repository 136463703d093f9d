"""Audio as a call plays it: speed, volume and telephony MP3 (pydub driving ffmpeg).

ffmpeg is the system's when one is on PATH, else the static binary the ``imageio-ffmpeg``
wheel ships, so a fresh ``pip install`` can encode with no system package.
"""

from __future__ import annotations

import io
import shutil
import warnings
from functools import cache

import imageio_ffmpeg

# pydub warns at import when no ffmpeg is on PATH (we hand it one below) and, on Python 3.11
# and 3.12, that the stdlib audioop it uses is deprecated (audioop-lts replaces it on 3.13).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

SAMPLE_RATE = 16_000  # wideband telephony; providers that carry 8 kHz downsample it themselves
BITRATE = "32k"  # about 4 KB per second of speech
SPEED_MIN, SPEED_MAX = 0.5, 2.0  # ffmpeg's atempo range in one pass
VOLUME_MIN_DB, VOLUME_MAX_DB = -20.0, 6.0
# Every render is first scaled so its loudest sample sits here: engines differ by 10 dB or
# more, and volume 0 should mean the same loudness whichever spoke. +6 dB still leaves 1 dB.
REFERENCE_PEAK_DBFS = -7.0


class InvalidAudio(ValueError):
    """Bytes that do not decode as audio of the expected format."""


@cache
def ffmpeg_path() -> str:
    return shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()


def _use_ffmpeg() -> None:
    # pydub keeps the binary in a class attribute; set it before each use instead of at import.
    AudioSegment.converter = ffmpeg_path()


def from_pcm(pcm: bytes, sample_rate: int) -> AudioSegment:
    """Mono 16-bit little-endian samples, as piper and espeak-ng produce them."""
    return AudioSegment(data=pcm, sample_width=2, frame_rate=sample_rate, channels=1)


def decode_mp3(data: bytes) -> AudioSegment:
    """The audio in ``data``, which must be MP3 with at least one frame of sound.

    ffmpeg is told the format rather than left to guess, so a WAV or an HTML error page
    served as ``.mp3`` is refused instead of played.
    """
    _use_ffmpeg()
    try:
        segment = AudioSegment.from_file(io.BytesIO(data), format="mp3", codec="mp3")
    except CouldntDecodeError:
        raise InvalidAudio("not MP3 audio (ffmpeg cannot decode it)") from None
    if segment.frame_count() == 0:
        raise InvalidAudio("MP3 with no audio in it")
    return segment


def to_telephony_mp3(segment: AudioSegment, speed: float = 1.0, volume_db: float = 0.0) -> bytes:
    """Mono 16 kHz MP3 of ``segment`` played ``speed`` times as fast (tempo only, the pitch
    stays) and ``volume_db`` louder than the reference level."""
    if not SPEED_MIN <= speed <= SPEED_MAX:
        raise ValueError(f"speed {speed} is outside {SPEED_MIN}-{SPEED_MAX}")
    if not VOLUME_MIN_DB <= volume_db <= VOLUME_MAX_DB:
        raise ValueError(f"volume {volume_db} dB is outside {VOLUME_MIN_DB}-{VOLUME_MAX_DB}")
    if segment.max_dBFS != float("-inf"):  # silence has no peak to scale
        segment = segment.apply_gain(REFERENCE_PEAK_DBFS - segment.max_dBFS + volume_db)
    parameters = ["-ac", "1", "-ar", str(SAMPLE_RATE)]
    if speed != 1.0:
        parameters += ["-filter:a", f"atempo={speed}"]
    out = io.BytesIO()
    _use_ffmpeg()
    segment.export(out, format="mp3", bitrate=BITRATE, parameters=parameters)
    return out.getvalue()
