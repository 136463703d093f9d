"""espeak-ng through its C library, the one the ``espeakng-loader`` wheel ships with its data.

No system package is needed: the wheel carries ``libespeak-ng.so`` and ``espeak-ng-data``
(every language espeak-ng has). The library keeps one global synthesiser, so calls are
serialised by a lock; espeak-ng renders hundreds of times faster than real time, so the
lock is brief.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import espeakng_loader

from voice.audio import from_pcm
from voice.tts import SynthesisFailed, Voice, normalise_language

if TYPE_CHECKING:
    from pydub import AudioSegment

_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: the callback receives samples before espeak_Synth returns
_CHARS_UTF8 = 1
_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated tag)*, then a zero byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


def _languages(address: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A voice's language tags and espeak-ng's priority for each (lower is preferred)."""
    tags, priorities = [], []
    while priority := ctypes.c_ubyte.from_address(address).value:
        tag = ctypes.string_at(address + 1)
        tags.append(normalise_language(tag.decode()))
        priorities.append(priority)
        address += len(tag) + 2
    return tuple(tags), tuple(priorities)


class _Library:
    """The process's one espeak-ng: the C library keeps a single global synthesiser (voice,
    callback, buffers), so every engine object shares this and its lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._samples = bytearray()
        # Kept referenced here: the C side holds only a raw pointer to this callback.
        self._callback = _SynthCallback(self._collect)
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        # The data path is the directory holding espeak-ng-data (a NULL would mean the system's).
        data = espeakng_loader.get_data_path().removesuffix("espeak-ng-data").rstrip("/")
        self.rate: int = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
        if self.rate <= 0:
            raise SynthesisFailed(f"espeak-ng did not initialise from {data}")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        # Listed once: they come from the wheel's data, which does not change while running.
        self.voices = self._list()

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if wav and count > 0:
            self._samples += ctypes.string_at(wav, count * 2)
        return 0

    def _list(self) -> tuple[Voice, ...]:
        listed = self._lib.espeak_ListVoices(None)
        found = []
        index = 0
        while listed[index]:
            entry = listed[index].contents
            tags, priorities = _languages(entry.languages)
            found.append(Voice(EspeakEngine.name, entry.identifier.decode(), tags, entry.name.decode(), priorities))
            index += 1
        return tuple(found)

    def speak(self, text: str, voice_id: str) -> bytes:
        encoded = text.encode()
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice_id.encode()) != _OK:
                raise SynthesisFailed(f"espeak-ng cannot load voice {voice_id!r}")
            self._samples = bytearray()
            status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            pcm = bytes(self._samples)
        if status != _OK or not pcm:
            raise SynthesisFailed(f"espeak-ng produced no audio (status {status})")
        return pcm


_LOADING = threading.Lock()


@cache
def _load() -> _Library:
    return _Library()


def _library() -> _Library:
    with _LOADING:  # two threads' first renders must not initialise the library twice
        return _load()


class EspeakEngine:
    name = "espeak-ng"

    def voices(self) -> Sequence[Voice]:
        return _library().voices

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        library = _library()
        return from_pcm(library.speak(text, voice.id), library.rate)
