"""What the gateway benchmarks share: known tokens and a gateway's settings on its own
embedded Redis, so each script measures its subject, not its setup."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# A benchmark run as a script imports this while its directory (this one) comes first on the
# path; the project's root takes its place before the gateway is imported, so that "sms" is the
# sms package, not bench/sms.py, and the tests' cluster starter (tests/cluster.py) imports.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from config.settings import Settings
from gateway.store.embedded import EmbeddedRedis

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
API_TOKEN = "bench-api-token-0123456789abcdefgh"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = {"Authorization": f"Bearer {API_TOKEN}"}


async def embedded_gateway(data_dir: Path, **settings: Any) -> tuple[EmbeddedRedis, Settings]:
    """A started embedded Redis (the caller stops it) and the settings of a gateway on it."""
    redis = EmbeddedRedis(data_dir / "redis")
    await redis.start()
    return redis, Settings(
        redis_url=redis.url,
        data_dir=data_dir / "data",
        admin_token=ADMIN_TOKEN,
        api_token=API_TOKEN,
        access_log=False,
        **settings,
    )
