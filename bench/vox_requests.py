"""The cost of one Voximplant management API request through voximplant-apiclient, as the
gateway's provider makes it: the SDK signs a fresh RS256 JWT per request and opens a new
HTTPS connection each time. Measured against the tests' local emulator of the API (TLS on
127.0.0.1), with the service account's private key given to the SDK as PEM text (the SDK's
own way: parsed and validated on every request) and as a key object parsed once (what
gateway/providers/voximplant.py does).

    python bench/vox_requests.py --requests 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from voximplant.apiclient import VoximplantAPI

from tests.voximplant_api import RULE_ID, voximplant_api


def timed(action: Callable[[], object], count: int) -> list[float]:
    spans = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        spans.append((time.perf_counter() - started) * 1000)
    return spans


def summary(spans: list[float]) -> str:
    ordered = sorted(spans)
    return f"median {statistics.median(ordered):7.2f} ms   p90 {ordered[int(len(ordered) * 0.9) - 1]:7.2f} ms"


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with voximplant_api(Path(directory)) as api:
            os.environ["REQUESTS_CA_BUNDLE"] = str(api.ca_file)
            credentials = Path(directory) / "service-account.json"
            credentials.write_text(api.service_account)
            client = VoximplantAPI(str(credentials), endpoint=api.endpoint)
            pem = client.credentials["private_key"]
            for label, key in (
                ("PEM text (SDK as is)", pem),
                ("key parsed once", load_pem_private_key(pem.encode(), None)),
            ):
                client.credentials["private_key"] = key
                jwt = timed(client.build_auth_header, requests)
                calls = await asyncio.to_thread(
                    timed, lambda: client.start_scenarios(rule_id=RULE_ID, script_custom_data="{}"), requests
                )
                print(f"{label:22} JWT only: {summary(jwt)}   StartScenarios: {summary(calls)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    asyncio.run(main(parser.parse_args().requests))
