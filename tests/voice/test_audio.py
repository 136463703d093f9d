"""Audio shaping through the real ffmpeg: telephony MP3, tempo without pitch, volume in dB."""

from __future__ import annotations

import io
import itertools

import pytest
from pydub import AudioSegment
from pydub.generators import Sine

from voice.audio import SAMPLE_RATE, InvalidAudio, decode_mp3, ffmpeg_path, to_telephony_mp3


def tone(seconds: float = 2.0, hz: int = 440) -> AudioSegment:
    return Sine(hz).to_audio_segment(duration=seconds * 1000, volume=-12).set_channels(2)


def crossings_per_second(segment: AudioSegment) -> float:
    samples = segment.get_array_of_samples()
    changes = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return changes / float(segment.duration_seconds)


def test_ffmpeg_is_found_without_a_system_package() -> None:
    assert ffmpeg_path()


def test_telephony_mp3_is_mono_16khz_and_decodes() -> None:
    decoded = decode_mp3(to_telephony_mp3(tone()))
    assert (decoded.channels, decoded.frame_rate) == (1, SAMPLE_RATE)
    assert decoded.duration_seconds == pytest.approx(2.0, abs=0.1)


def test_speed_changes_tempo_not_pitch() -> None:
    normal = decode_mp3(to_telephony_mp3(tone(), speed=1.0))
    fast = decode_mp3(to_telephony_mp3(tone(), speed=2.0))
    slow = decode_mp3(to_telephony_mp3(tone(), speed=0.5))
    assert fast.duration_seconds == pytest.approx(normal.duration_seconds / 2, rel=0.08)
    assert slow.duration_seconds == pytest.approx(normal.duration_seconds * 2, rel=0.08)
    # A 440 Hz tone crosses zero 880 times a second at any tempo.
    for played in (normal, fast, slow):
        assert crossings_per_second(played) == pytest.approx(880, rel=0.03)


def test_volume_is_decibels_from_one_reference_whatever_the_input_level() -> None:
    quiet_input = Sine(440).to_audio_segment(duration=1000, volume=-30)
    loud_input = Sine(440).to_audio_segment(duration=1000, volume=-3)
    assert decode_mp3(to_telephony_mp3(quiet_input)).dBFS == pytest.approx(
        decode_mp3(to_telephony_mp3(loud_input)).dBFS, abs=0.5
    )
    levels = [decode_mp3(to_telephony_mp3(loud_input, volume_db=db)).dBFS for db in (-20, -6, 0, 6)]
    assert [b - a for a, b in itertools.pairwise(levels)] == pytest.approx([14, 6, 6], abs=0.5)


def test_out_of_range_speed_or_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        to_telephony_mp3(tone(), speed=2.5)
    with pytest.raises(ValueError, match="volume"):
        to_telephony_mp3(tone(), volume_db=7)


@pytest.mark.parametrize(
    "data",
    [b"", b"<html><body>Not found</body></html>" * 20, b"\x00" * 4096],
    ids=["empty", "html", "zeros"],
)
def test_non_mp3_bytes_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidAudio):
        decode_mp3(data)


def test_a_wav_named_mp3_is_invalid() -> None:
    wav = io.BytesIO()
    tone().export(wav, format="wav")
    with pytest.raises(InvalidAudio):
        decode_mp3(wav.getvalue())
