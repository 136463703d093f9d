"""Text-to-speech benchmark: real-time factor per engine, cold and warm, and cache hits.

For each offline engine (piper with the bundled ``en_US-joe-medium``, espeak-ng):

* **cold**: a fresh engine's first synthesis, model or library load included (what the first
  robocall after a start pays);
* **warm synthesis**: the engine alone on a set of sentences, ``--rounds`` times over;
* **warm render**: the whole path a call takes on a cache miss (voice choice, synthesis,
  gain, tempo, ffmpeg to telephony MP3, the file written), at speed 1.0 and 1.25.

The real-time factor (RTF) is seconds spent per second of audio produced: 0.05 means 20x
faster than real time. Then the cache: the latency of a render whose audio is already on
disk, called directly and through ``gateway.speech.Speech`` (the thread pool the event loop
uses). gTTS is not measured: Google is unreachable from this machine.

    python bench/tts.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.speech import Speech
from voice.audio import decode_mp3
from voice.cache import RenderCache
from voice.engines.espeak import EspeakEngine
from voice.engines.piper import PiperEngine
from voice.render import Renderer, Say
from voice.tts import Engine, pick_voice

SENTENCES = {
    "en": [
        "Hello Ana, this is a reminder from Acme.",
        "Your order A-17 is ready for pickup at our store on Main Street from nine to six.",
        "If you would like to reschedule your appointment, please call us back at any time "
        "during working hours, and one of our agents will be happy to help you.",
    ],
    "es": [
        "Hola Ana, le llamamos de Acme.",
        "Su pedido A-17 está listo para recoger en nuestra tienda de la calle Mayor de nueve a seis.",
        "Si desea cambiar la fecha de su cita, llámenos en horario de oficina y uno de nuestros "
        "agentes le atenderá con mucho gusto.",
    ],
}
CASES: list[tuple[str, Callable[[Path], Engine], str]] = [
    ("piper", PiperEngine, "en"),
    ("espeak-ng", lambda _: EspeakEngine(), "en"),
    ("espeak-ng", lambda _: EspeakEngine(), "es"),
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def synthesis(engine: Engine, language: str, text: str) -> tuple[float, float]:
    """(seconds spent, seconds of audio) for one synthesis, choosing the voice included (on a
    fresh engine that loads the library or lists the voices files)."""
    started = time.perf_counter()
    audio = engine.synthesize(text, pick_voice(engine.name, engine.voices(), language), language)
    return time.perf_counter() - started, float(audio.duration_seconds)


def render_rtf(engine: Engine, language: str, rounds: int, speed: float) -> float:
    spent = audio = 0.0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as directory:
            renderer = Renderer([engine], RenderCache(Path(directory)))
            for text in SENTENCES[language]:
                started = time.perf_counter()
                rendered = renderer.render(Say(text, language, engine.name, speed=speed))
                spent += time.perf_counter() - started
                audio += float(decode_mp3(rendered.path.read_bytes()).duration_seconds)
    return spent / audio


def engine_rows(rounds: int, voices_dir: Path) -> list[str]:
    rows = []
    for name, make, language in CASES:
        engine = make(voices_dir)
        cold_spent, cold_audio = synthesis(engine, language, SENTENCES[language][0])
        spent = audio = 0.0
        latencies = []
        for _ in range(rounds):
            for text in SENTENCES[language]:
                took, seconds = synthesis(engine, language, text)
                spent, audio = spent + took, audio + seconds
                latencies.append(took)
        rows.append(
            f"| {name} ({language}) | {cold_spent:.2f} s for {cold_audio:.1f} s (RTF {cold_spent / cold_audio:.3f}) "
            f"| {spent / audio:.3f} | {statistics.median(latencies) * 1000:.0f} ms "
            f"| {render_rtf(engine, language, rounds, 1.0):.3f} | {render_rtf(engine, language, rounds, 1.25):.3f} |"
        )
    return rows


async def cache_hits(renderer: Renderer, say: Say, count: int) -> tuple[list[float], list[float]]:
    renderer.render(say)  # the one miss
    direct = []
    for _ in range(count):
        started = time.perf_counter()
        renderer.render(say)
        direct.append(time.perf_counter() - started)
    speech = Speech(renderer, workers=2)
    pooled = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await speech.render(say)
            pooled.append(time.perf_counter() - started)
    finally:
        speech.close()
    return direct, pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the sentences (default 5)")
    parser.add_argument("--hits", type=int, default=2000, help="cache-hit renders timed (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        print(
            "| engine | cold: first synthesis | warm synthesis RTF | warm latency p50 | render RTF (speed 1) | render RTF (speed 1.25) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for row in engine_rows(args.rounds, root / "voices"):
            print(row, flush=True)
        renderer = Renderer([PiperEngine(root / "voices"), EspeakEngine()], RenderCache(root / "media"))
        for say in (Say(SENTENCES["en"][1], "en"), Say(SENTENCES["es"][1], "es")):
            direct, pooled = asyncio.run(cache_hits(renderer, say, args.hits))
            print(
                f"cache hit ({renderer.offline_engine(say.language)}, {say.language}): "
                f"direct p50 {statistics.median(direct) * 1e6:.0f} us p99 {percentile(direct, 0.99) * 1e6:.0f} us; "
                f"through the pool p50 {statistics.median(pooled) * 1e6:.0f} us p99 {percentile(pooled, 0.99) * 1e6:.0f} us"
            )


if __name__ == "__main__":
    main()
