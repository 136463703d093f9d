"""espeak-ng through its C library, the one the ``espeakng-loader`` wheel ships with its data.

No system package is needed: the wheel carries ``libespeak-ng.so`` and ``espeak-ng-data``
(every language espeak-ng has). The library keeps one global synthesiser, so calls are
serialised by a lock; espeak-ng renders far faster than real time, so the lock is brief.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from functools import cached_property
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


class EspeakEngine:
    name = "espeak-ng"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples = bytearray()
        # Kept on the instance: the C side holds only a raw pointer to this callback.
        self._callback = _SynthCallback(self._collect)

    @cached_property
    def _lib(self) -> ctypes.CDLL:
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
        self._rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
        if self._rate <= 0:
            raise SynthesisFailed(f"espeak-ng did not initialise from {data}")
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if wav and count > 0:
            self._samples += ctypes.string_at(wav, count * 2)
        return 0

    def voices(self) -> Sequence[Voice]:
        with self._lock:
            listed = self._lib.espeak_ListVoices(None)
            found = []
            index = 0
            while listed[index]:
                entry = listed[index].contents
                tags, priorities = _languages(entry.languages)
                found.append(Voice(self.name, entry.identifier.decode(), tags, entry.name.decode(), priorities))
                index += 1
        return found

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment:
        encoded = text.encode()
        with self._lock:
            lib = self._lib
            if lib.espeak_SetVoiceByName(voice.id.encode()) != _OK:
                raise SynthesisFailed(f"espeak-ng cannot load voice {voice.id!r}")
            self._samples = bytearray()
            status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            pcm = bytes(self._samples)
        if status != _OK or not pcm:
            raise SynthesisFailed(f"espeak-ng produced no audio (status {status})")
        return from_pcm(pcm, self._rate)
