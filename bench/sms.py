"""SMS jobs per second through the sandbox, end to end: POST /v1/sms (concurrent) until every
job is delivered (queued -> sending -> sent -> delivered, each a timeline entry), one
``callgate serve`` app in this process on its own embedded Redis.

    python bench/sms.py --jobs 500 --concurrency 32

With ``--rate``, the limiter's accuracy instead: the API in this process, two ``callgate
worker`` processes sending, the provider's ``sms_per_second`` (or, ``--by line``, the line's)
set to the rate; the achieved rate is read from when each job went ``sending``.

    python bench/sms.py --rate 30 --jobs 150
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

# Run as a script, this file's directory comes first on the path: benchkit comes from it and
# takes it off the path.
from benchkit import ADMIN, ADMIN_TOKEN, API, embedded_gateway

from config.settings import Settings
from gateway.app import create_app

LINE = "+34910000001"
WORKERS = 2
Client = TestClient[web.Request, web.Application]


def phone(index: int) -> str:
    return f"+346{index:08d}"[:12]


async def post_all(client: Client, jobs: int, concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def post(i: int) -> str:
        async with gate:
            resp = await client.post("/v1/sms", json={"item_id": f"I{i}", "text": "Hola {{name}} 😀"}, headers=API)
            assert resp.status == 202
            return str((await resp.json())["id"])

    return await asyncio.gather(*(post(i) for i in range(jobs)))


async def until_done(client: Client, ids: list[str]) -> None:
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            status = (await (await client.get(f"/v1/jobs/{job_id}", headers=API)).json())["status"]
            if status in ("delivered", "failed", "skipped"):
                pending.discard(job_id)
        await asyncio.sleep(0.05)


async def throughput(client: Client, jobs: int, concurrency: int) -> None:
    started = time.perf_counter()
    ids = await post_all(client, jobs, concurrency)
    accepted = time.perf_counter() - started
    await until_done(client, ids)
    total = time.perf_counter() - started
    print(f"jobs: {jobs}, concurrency: {concurrency}")
    print(f"accepted (202) in {accepted:.2f} s: {jobs / accepted:.0f} requests/s")
    print(f"all delivered in {total:.2f} s: {jobs / total:.0f} jobs/s end to end")


async def sending_times(client: Client, jobs: int) -> list[float]:
    """When each item's SMS went ``sending`` (after its rate-limit slot), sorted."""
    times = []
    for i in range(jobs):
        timeline = (await (await client.get(f"/v1/items/I{i}", headers=API)).json())["timeline"]
        times += [
            datetime.fromisoformat(e["at"]).timestamp()
            for e in timeline
            if e["type"] == "job.updated" and e["data"]["status"] == "sending"
        ]
    return sorted(times)


async def accuracy(client: Client, settings: Settings, rate: float, by: str, jobs: int) -> None:
    env = {
        **os.environ,
        "CALLGATE_REDIS_URL": str(settings.redis_url),
        "CALLGATE_DATA_DIR": str(settings.data_dir),
        "CALLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "CALLGATE_API_TOKEN": API["Authorization"].split()[1],
        "CALLGATE_ACCESS_LOG": "false",
        "CALLGATE_LOG_LEVEL": "WARNING",
    }
    workers = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "worker"], env=env) for _ in range(WORKERS)]
    try:
        ids = await post_all(client, jobs, 32)
        await until_done(client, ids)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    times = await sending_times(client, jobs)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"limit: {rate:g} messages/s on the {by}, {WORKERS} worker processes, {jobs} jobs")
    print(f"achieved: {achieved:.3f} messages/s ({(achieved / rate - 1) * 100:+.2f}% off the limit)")
    print(f"gap between sends: min {min(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    redis, settings = await embedded_gateway(data_dir)
    limited = args.rate is not None
    provider_rate = args.rate if limited and args.by == "provider" else 1000
    line: dict[str, object] = {"provider": "sb"}
    if limited and args.by == "line":
        line["sms_per_second"] = args.rate
    client = TestClient(TestServer(create_app(settings, workers=not limited)))
    await client.start_server()
    try:
        for path, body in [
            ("/v1/pipelines/sales", {"stages": ["NEW"]}),
            ("/v1/providers/sb", {"kind": "sandbox", "sms_per_second": provider_rate}),
            (f"/v1/lines/{LINE}", line),
        ]:
            assert (await client.put(path, json=body, headers=ADMIN)).status == 200
        for i in range(args.jobs):
            card = {
                "pipeline": "sales",
                "stage": "NEW",
                "fields": {"name": f"C{i}"},
                "contacts": [{"phones": [{"type": "MOBILE", "value": phone(i * 10 + 2)}]}],
            }
            assert (await client.put(f"/v1/items/I{i}", json=card, headers=API)).status in (200, 201)
        if limited:
            await accuracy(client, settings, args.rate, args.by, args.jobs)
        else:
            await throughput(client, args.jobs, args.concurrency)
    finally:
        await client.close()
        await redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, help="measure the limiter at this many messages/s")
    parser.add_argument("--by", choices=["provider", "line"], default="provider", help="whose sms_per_second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
