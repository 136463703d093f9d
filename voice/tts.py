"""Text-to-speech engines behind one interface, and the voice matching they share.

An engine lists the voices it has (each with the languages it speaks) and turns text into
audio with one of them. Choosing a voice is separate from synthesising, so a render can be
named (and found in the cache) before any audio is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydub import AudioSegment


class VoiceError(ValueError):
    """A request names an engine, language or voice this machine cannot speak."""


class SynthesisFailed(RuntimeError):
    """An engine could not produce audio (a network engine unreachable, a broken voice file)."""


class TextRefused(SynthesisFailed):
    """An engine failed on this text alone: it says nothing of the engine's health."""


@dataclass(frozen=True)
class Voice:
    engine: str
    id: str  # what a request's ``voice`` names, and what the cache key records
    languages: tuple[str, ...]  # normalised tags (``en-us``)
    description: str = ""
    # How well the voice speaks each of ``languages`` (lower is better, espeak-ng's scale);
    # empty when the engine does not say.
    priorities: tuple[int, ...] = ()

    def rank(self, accepts: Callable[[str], bool]) -> int | None:
        """The best priority among this voice's languages that ``accepts`` takes, or None."""
        ranks = [
            self.priorities[index] if self.priorities else 0 for index, tag in enumerate(self.languages) if accepts(tag)
        ]
        return min(ranks, default=None)


class Engine(Protocol):
    name: str

    def voices(self) -> Sequence[Voice]: ...

    def synthesize(self, text: str, voice: Voice, language: str) -> AudioSegment: ...


def normalise_language(tag: str) -> str:
    """``pt_BR`` and ``PT-br`` are both ``pt-br``: engines spell tags differently."""
    return tag.strip().replace("_", "-").lower()


def pick_voice(engine: str, voices: Iterable[Voice], language: str, wanted: str | None = None) -> Voice:
    """The voice named ``wanted`` (it must speak ``language``), else the best speaker of it.

    Best is an exact tag (``es-419``) before the base language (``es`` for ``es-mx``) before
    any variant of it, then the engine's priority for that tag, then the order listed.
    """
    tag = normalise_language(language)
    base = tag.split("-")[0]
    candidates = list(voices)
    if wanted is not None:
        named = [v for v in candidates if v.id.lower() == wanted.strip().lower()]
        if not named:
            raise VoiceError(f"{engine} has no voice {wanted!r} (see `callgate voices`)")
        candidates = named
    for accepts in (tag.__eq__, base.__eq__, lambda other: other.split("-")[0] == base):
        ranked = [(rank, index) for index, v in enumerate(candidates) if (rank := v.rank(accepts)) is not None]
        if ranked:
            return candidates[min(ranked)[1]]
    if wanted is not None:
        raise VoiceError(f"{engine} voice {wanted!r} does not speak {language!r}")
    raise VoiceError(f"{engine} has no voice for language {language!r} (see `callgate voices`)")
