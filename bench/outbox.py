"""Events to the CRM: how fast the outbox delivers signed events to a local receiver, the
delivery latency, and what a hung endpoint costs the others.

Each phase runs one ``callgate serve`` app (API and workers) in this process on its own
embedded Redis, and a receiver (aiohttp, in this process too, answering 204 at once) on
127.0.0.1. Events are stage changes made through ``PUT /v1/items/{id}`` (``--concurrency``
at a time, each item's in order), so each is an ``item.stage_changed`` on the timeline and one
delivery per subscription. Latency is from the event's ``created_at`` (its timeline entry)
to its arrival at the receiver. Events are made as fast as ``--concurrency`` clients can (a
burst: the receiver's rate is the outbox's throughput, latencies include the queue), or at
``--rate`` events/s (latencies of an outbox that keeps up).

Phase "alone": one subscription. Phase "beside a hung endpoint": the same, plus a second
subscription whose endpoint accepts connections and never answers (every attempt waits for
``--timeout`` seconds, then is retried with backoff).

    python bench/outbox.py --events 2000 --concurrency 16
    python bench/outbox.py --events 1000 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

# Run as a script, this file's directory comes first on the path: benchkit comes from it and
# takes it off the path.
from benchkit import ADMIN, API, embedded_gateway

from gateway.app import create_app

SECRET = "bench-secret-0123456789"
STAGES = ["A", "B"]


@dataclass
class Receiver:
    """Counts the events it is sent (each id once) and when each arrived."""

    latencies: list[float] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    last: float = 0.0

    def reset(self) -> None:
        self.latencies.clear()
        self.seen.clear()
        self.duplicates = 0

    async def handle(self, request: web.Request) -> web.Response:
        event: dict[str, Any] = json.loads(await request.read())
        now = time.time()
        if event["id"] in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(event["id"])
            created = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp()
            self.latencies.append(now - created)
            self.last = now
        return web.Response(status=204)


async def hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An endpoint that reads the request and never answers."""
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def phase(
    events: int, concurrency: int, rate: float, timeout: float, with_hung: bool, data_dir: Path
) -> dict[str, float]:
    redis, settings = await embedded_gateway(data_dir, media_allow_private=True, outbox_timeout_seconds=timeout)
    receiver = Receiver()
    crm_app = web.Application()
    crm_app.router.add_post("/events", receiver.handle)
    crm = TestServer(crm_app, host="127.0.0.1")
    await crm.start_server()
    black_hole = await asyncio.start_server(hung, "127.0.0.1", 0)
    hung_port = black_hole.sockets[0].getsockname()[1]
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        assert (await client.put("/v1/pipelines/p", json={"stages": STAGES}, headers=ADMIN)).status == 200
        urls = [f"http://127.0.0.1:{crm.port}/events"]
        if with_hung:
            urls.append(f"http://127.0.0.1:{hung_port}/events")
        for url in urls:
            body = {"url": url, "secret": SECRET, "events": ["item.stage_changed"]}
            assert (await client.post("/v1/subscriptions", json=body, headers=ADMIN)).status == 201
        items = concurrency * 4
        for i in range(items):
            card = {"pipeline": "p", "stage": STAGES[0]}
            assert (await client.put(f"/v1/items/I{i}", json=card, headers=API)).status in (200, 201)

        async def change(k: int) -> None:
            # Event k is item k % items's change number k // items + 1 (the warm-up's are -1,
            # -2 ...: each item's change number 0): every change flips the stage.
            card = {"pipeline": "p", "stage": STAGES[(k // items) % 2]}
            assert (await client.put(f"/v1/items/I{k % items}", json=card, headers=API)).status == 200

        async def flip(i: int) -> None:
            for k in range(i, events, items):
                await change(k)

        gate = asyncio.Semaphore(concurrency)

        async def gated(i: int) -> None:
            async with gate:
                await flip(i)

        async def paced() -> None:
            # An item's consecutive changes are items / rate seconds apart: in order.
            tasks = []
            for k in range(events):
                await asyncio.sleep(max(0.0, started + k / rate - time.time()))
                tasks.append(asyncio.create_task(change(k)))
            await asyncio.gather(*tasks)

        # Warm-up (connections, caches, consumer groups): one change per item, not measured.
        await asyncio.gather(*(change(-i - 1) for i in range(items)))
        while len(receiver.seen) < items:
            await asyncio.sleep(0.01)
        receiver.reset()
        started = time.time()
        await (paced() if rate else asyncio.gather(*(gated(i) for i in range(items))))
        made = time.time() - started
        while len(receiver.seen) < events:
            await asyncio.sleep(0.01)
        took = receiver.last - started
        return {
            "made/s": events / made,
            "delivered/s": events / took,
            "p50 ms": 1000 * statistics.median(receiver.latencies),
            "p99 ms": 1000 * percentile(receiver.latencies, 0.99),
            "max ms": 1000 * max(receiver.latencies),
            "duplicates": float(receiver.duplicates),
        }
    finally:
        await client.close()
        black_hole.close()
        await crm.close()
        await redis.stop()


async def run(events: int, concurrency: int, rate: float, timeout: float, rounds: int) -> None:
    phases = {"alone": False, "beside a hung endpoint": True}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in phases}
    for round_ in range(rounds):
        # Alternate the order: on a busy machine the first phase of a round fares differently.
        for name in list(phases) if round_ % 2 == 0 else reversed(list(phases)):
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(await phase(events, concurrency, rate, timeout, phases[name], Path(tmp)))
    results = {name: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for name, rs in runs.items()}
    made = f"{rate:g} events/s" if rate else f"as fast as {concurrency} concurrent clients can"
    print(f"events: {events}, made {made}, hung endpoint's timeout: {timeout} s; medians of {rounds} rounds")
    names = list(results)
    print(f"{'':<16}" + "".join(f"{n:>24}" for n in names))
    for figure in results[names[0]]:
        print(f"{figure:<16}" + "".join(f"{results[n][figure]:>24.1f}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to make (0: as fast as possible)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="CALLGATE_OUTBOX_TIMEOUT_SECONDS")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.concurrency, args.rate, args.timeout, args.rounds))


if __name__ == "__main__":
    main()
