"""SMS jobs per second through the sandbox, end to end: POST /v1/sms (concurrent) until every
job is delivered (queued -> sending -> sent -> delivered, each a timeline entry), one
``callgate serve`` app in this process on its own embedded Redis.

    python bench/sms.py --jobs 500 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's directory comes first on the path and "sms" would be this
# file, not the sms package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from gateway.app import create_app
from gateway.store.embedded import EmbeddedRedis

ADMIN = {"Authorization": "Bearer bench-admin-token-0123456789abcdef"}
API = {"Authorization": "Bearer bench-api-token-0123456789abcdefgh"}
LINE = "+34910000001"


def phone(index: int) -> str:
    return f"+346{index:08d}"[:12]


async def run(jobs: int, concurrency: int, data_dir: Path) -> None:
    redis = EmbeddedRedis(data_dir / "redis")
    await redis.start()
    settings = Settings(
        redis_url=redis.url,
        data_dir=data_dir / "data",
        admin_token=ADMIN["Authorization"].split()[1],
        api_token=API["Authorization"].split()[1],
        access_log=False,
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        for path, body in [
            ("/v1/pipelines/sales", {"stages": ["NEW"]}),
            ("/v1/providers/sb", {"kind": "sandbox", "sms_per_second": 1000}),
            (f"/v1/lines/{LINE}", {"provider": "sb"}),
        ]:
            assert (await client.put(path, json=body, headers=ADMIN)).status == 200
        for i in range(jobs):
            card = {
                "pipeline": "sales",
                "stage": "NEW",
                "fields": {"name": f"C{i}"},
                "contacts": [{"phones": [{"type": "MOBILE", "value": phone(i * 10 + 2)}]}],
            }
            assert (await client.put(f"/v1/items/I{i}", json=card, headers=API)).status in (200, 201)

        gate = asyncio.Semaphore(concurrency)

        async def post(i: int) -> str:
            async with gate:
                resp = await client.post("/v1/sms", json={"item_id": f"I{i}", "text": "Hola {{name}} 😀"}, headers=API)
                assert resp.status == 202
                return str((await resp.json())["id"])

        started = time.perf_counter()
        ids = await asyncio.gather(*(post(i) for i in range(jobs)))
        accepted = time.perf_counter() - started
        pending = set(ids)
        while pending:
            for job_id in list(pending):
                status = (await (await client.get(f"/v1/jobs/{job_id}", headers=API)).json())["status"]
                if status in ("delivered", "failed", "skipped"):
                    pending.discard(job_id)
            await asyncio.sleep(0.05)
        total = time.perf_counter() - started
        print(f"jobs: {jobs}, concurrency: {concurrency}")
        print(f"accepted (202) in {accepted:.2f} s: {jobs / accepted:.0f} requests/s")
        print(f"all delivered in {total:.2f} s: {jobs / total:.0f} jobs/s end to end")
    finally:
        await client.close()
        await redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.jobs, args.concurrency, Path(tmp)))


if __name__ == "__main__":
    main()
