"""Robocalls through the sandbox: jobs per second end to end, TTS real-time factor, the
dispatch latency of a job whose audio is cached, and the limiter's accuracy across processes.

* **jobs/s, cached audio**: POST /v1/robocalls (concurrent) with one text, rendered once
  before the clock starts, until every job is ``completed`` (queued -> sending -> sent ->
  ringing -> answered -> completed, each a timeline entry);
* **jobs/s, fresh synthesis**: the same with a different text per job (the default engine,
  piper, renders each one);
* **TTS RTF** per engine (piper, espeak-ng): seconds of synthesis per second of audio, warm;
* **dispatch latency**: ``JobRunner.run`` of a queued job whose audio is already cached, to
  the provider's ``place`` returning (a provider that answers at once, so only callgate's
  own work is timed: the job read, recipient, caps and consent, the render-cache lookup
  through the TTS pool, quiet hours, the rate-limit slot and both compare-and-sets);
* **limiter accuracy**: two processes each reserving the next slot of one provider limit
  and "calling" when it comes, at 1 and 10 calls/s: the achieved rate and the most calls
  in any one-second window.

One ``callgate serve`` app in this process on its own embedded Redis; about 45 s by default.

    python bench/robocall.py [--jobs 200] [--fresh 12] [--dispatch 300] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

# Run as a script, this file's directory comes first on the path: benchkit comes from it and
# takes it off the path.
from benchkit import ADMIN, API, embedded_gateway
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.jobs import JobRunner
from gateway.providers import CallProvider, OutboundCall
from gateway.providers.registry import Providers
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.records import Snapshots
from voice.engines.espeak import EspeakEngine
from voice.engines.piper import PiperEngine
from voice.render import Say, renderer_for
from voice.tts import Engine, pick_voice

LINE = "+34910000001"
TEXT = "Hello, your order is ready for pickup at our store."
ENDED = ("completed", "no_answer", "busy", "failed", "skipped")

_RESERVER = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from gateway.keys import Keys
from gateway.store.limits import Limits

async def main():
    redis = Redis.from_url(sys.argv[1], decode_responses=True)
    limits = Limits(redis, Keys(sys.argv[2]))
    rate, start, until, calls = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), []
    await asyncio.sleep(start - time.time())
    while time.time() < until:
        slot = await limits.reserve({"calls:bench:" + sys.argv[3]: rate}, 3600)
        await asyncio.sleep(slot.wait)
        calls.append((slot.at, time.time()))
    print(json.dumps(calls))
    await redis.aclose()

asyncio.run(main())
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Instant:
    """A provider that places every call at once: dispatch is timed without a provider."""

    def __init__(self) -> None:
        self.placed = 0

    async def place(self, call: OutboundCall) -> str:
        self.placed += 1
        return f"CA{self.placed}"

    async def find(self, call: OutboundCall) -> str | None:
        return None

    async def close(self) -> None:
        return None


class Only(Providers):
    def __init__(self, store: Store, provider: CallProvider) -> None:
        super().__init__(store, "http://127.0.0.1")
        self._provider = provider

    async def get(self, name: str) -> CallProvider | None:
        return self._provider


async def setup(client: TestClient[Any, Any], items: int) -> None:
    for path, body in [
        ("/v1/pipelines/sales", {"stages": ["NEW"]}),
        ("/v1/providers/sb", {"kind": "sandbox", "calls_per_second": 1000}),
        (f"/v1/lines/{LINE}", {"provider": "sb"}),
    ]:
        assert (await client.put(path, json=body, headers=ADMIN)).status == 200
    for i in range(items):
        card = {
            "pipeline": "sales",
            "stage": "NEW",
            "fields": {"name": f"C{i}"},
            "contacts": [{"phones": [{"type": "MOBILE", "value": f"+346{i:07d}2"}]}],
        }
        assert (await client.put(f"/v1/items/I{i}", json=card, headers=API)).status in (200, 201)


async def end_to_end(client: TestClient[Any, Any], texts: list[str], concurrency: int) -> float:
    """Jobs per second from the first POST to the last job ended."""
    gate = asyncio.Semaphore(concurrency)

    async def post(i: int, text: str) -> str:
        async with gate:
            body = {"item_id": f"I{i}", "line": LINE, "say": {"text": text}}
            resp = await client.post("/v1/robocalls", json=body, headers=API)
            assert resp.status == 202, await resp.text()
            return str((await resp.json())["id"])

    started = time.perf_counter()
    pending = set(await asyncio.gather(*(post(i, text) for i, text in enumerate(texts))))
    while pending:
        for job_id in list(pending):
            job = await (await client.get(f"/v1/jobs/{job_id}", headers=API)).json()
            if job["status"] in ENDED:
                assert job["status"] == "completed", job
                pending.discard(job_id)
        await asyncio.sleep(0.02)
    return len(texts) / (time.perf_counter() - started)


async def dispatch(settings: Settings, client: TestClient[Any, Any], count: int) -> list[float]:
    """Seconds each ``JobRunner.run`` took for queued jobs whose audio is cached."""
    redis = Redis.from_url(str(settings.redis_url), decode_responses=True)
    store = Store.open(redis, settings, Snapshots())
    speech = Speech(renderer_for(settings), settings.tts_workers)
    runner = JobRunner(store, Only(store, Instant()), settings, speech)
    try:
        ids = []
        for i in range(count):
            body = {"item_id": f"I{i}", "line": LINE, "say": {"text": TEXT}}
            resp = await client.post("/v1/robocalls", json=body, headers=API)
            ids.append(str((await resp.json())["id"]))
        took = []
        for job_id in ids:
            started = time.perf_counter()
            await runner.run(job_id)
            took.append(time.perf_counter() - started)
            job = await store.jobs.get(job_id)
            assert job is not None and job.status == "sent", job
        return took
    finally:
        speech.close()
        await redis.aclose()


def rtf(engine: Engine, language: str, sentences: list[str]) -> float:
    voice = pick_voice(engine.name, engine.voices(), language)
    engine.synthesize(sentences[0], voice, language)  # warm: model or library loaded
    spent = audio = 0.0
    for text in sentences:
        started = time.perf_counter()
        segment = engine.synthesize(text, voice, language)
        spent += time.perf_counter() - started
        audio += float(segment.duration_seconds)
    return spent / audio


async def limiter(settings: Settings, rate: float, seconds: float) -> tuple[int, float, int, float]:
    """Of two processes' calls: how many, the achieved calls/s, the most slots (Redis'
    clock) in any one-second window, and the latest a call came after its slot (the
    sleep's lateness, not the limiter's)."""
    # Both processes start (Python and the imports take a second or more on a loaded
    # machine) before the window opens, and call until it closes.
    start = time.time() + 3.0
    window = [str(rate), str(start), str(start + seconds)]
    args = [sys.executable, "-c", _RESERVER, str(settings.redis_url), settings.key_prefix, *window]
    procs = [await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE) for _ in range(2)]
    calls: list[tuple[float, float]] = []
    for proc in procs:
        calls += [(slot, at) for slot, at in json.loads((await proc.communicate())[0])]
    calls.sort()
    slots, made = [slot for slot, _ in calls], sorted(at for _, at in calls)
    achieved = (len(made) - 1) / (made[-1] - made[0])
    # A slot is due exactly one interval after the last: compare with a microsecond's slack.
    busiest = max(sum(1 for other in slots if start <= other < start + 1.0 - 1e-6) for start in slots)
    return len(calls), achieved, busiest, max(at - slot for slot, at in calls)


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    redis, settings = await embedded_gateway(data_dir)
    serve: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await serve.start_server()
    try:
        await setup(serve, max(args.jobs, args.dispatch, args.fresh))
        renderer_for(settings).render(Say(TEXT))  # the cached jobs' audio, rendered once
        cached = await end_to_end(serve, [TEXT] * args.jobs, args.concurrency)
        print(f"jobs/s through the sandbox, cached audio: {cached:.1f} ({args.jobs} jobs)", flush=True)
        fresh_texts = [f"Order number {i} for {{{{name}}}} ships on day {i + 3}." for i in range(args.fresh)]
        fresh = await end_to_end(serve, fresh_texts, args.concurrency)
        print(f"jobs/s through the sandbox, fresh synthesis (piper): {fresh:.2f} ({args.fresh} jobs)", flush=True)
    finally:
        await serve.close()
    try:
        sentences = [
            "Hello Ana, this is a reminder from Acme.",
            "Your order A-17 is ready for pickup at our store on Main Street from nine to six.",
        ]
        for engine in (PiperEngine(settings.data_dir / "voices"), EspeakEngine()):
            print(f"TTS real-time factor, {engine.name} (en, warm): {rtf(engine, 'en', sentences):.3f}", flush=True)

        # Jobs queued by an API without workers: only the timed runner runs them.
        api: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, workers=False)))
        await api.start_server()
        try:
            took = await dispatch(settings, api, args.dispatch)
        finally:
            await api.close()
        print(
            f"dispatch latency, cached audio ({args.dispatch} jobs): p50 {statistics.median(took) * 1000:.2f} ms, "
            f"p99 {percentile(took, 0.99) * 1000:.2f} ms",
            flush=True,
        )
        for rate, seconds in ((1.0, args.seconds), (10.0, args.seconds / 2)):
            calls, achieved, busiest, late = await limiter(settings, rate, seconds)
            print(
                f"limiter at {rate:g} calls/s, two processes, {seconds:g} s: {calls} calls, "
                f"{achieved:.3f} calls/s ({(achieved / rate - 1) * 100:+.2f} %), at most {busiest} slots "
                f"in any 1 s, calls at most {late * 1000:.1f} ms after their slot",
                flush=True,
            )
    finally:
        await redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200, help="jobs with cached audio (default 200)")
    parser.add_argument("--fresh", type=int, default=12, help="jobs each rendering a new text (default 12)")
    parser.add_argument("--dispatch", type=int, default=300, help="dispatches timed (default 300)")
    parser.add_argument("--seconds", type=float, default=8.0, help="limiter run at 1 call/s (10/s: half)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
