"""The suite cleans up after itself: a run leaves no key of its prefix in the shared Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from redis.asyncio import Redis

from tests.conftest import leftover_keys

ROOT = Path(__file__).resolve().parent.parent


def _run(session: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLGATE_TEST_SESSION": session}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


async def test_app_tests_leave_no_key_behind(redis_url: str) -> None:
    """App tests whose workers (re-creating their streams on stop) ran while Redis was being
    cleaned used to leave one key each; a run must leave none."""
    session = "hyg" + uuid.uuid4().hex[:8]
    run = _run(session, "tests/gateway/test_feed.py", "tests/gateway/test_hooks_twilio.py")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "left" not in run.stderr
    assert await leftover_keys(redis_url, "cgt-" + session + "-") == []


async def test_a_run_that_leaves_a_key_fails(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """The end-of-run check itself: a key left under the run's stem fails the run."""
    session = "hyg" + uuid.uuid4().hex[:8]
    leaking = tmp_path / "test_leak.py"
    leaking.write_text(
        "from redis.asyncio import Redis\n\n"
        "from tests.conftest import SESSION_STEM\n\n\n"
        "async def test_leaks(redis: Redis) -> None:\n"
        "    await redis.set(SESSION_STEM + 'leak:x', 1)\n"
    )
    # The suite's conftest as a plugin, so a test file outside tests/ runs under it.
    run = _run(session, "-c", "pyproject.toml", "-p", "tests.conftest", "--rootdir", str(ROOT), str(leaking))
    stem = "cgt-" + session + "-"
    left = await leftover_keys(redis_url, stem)
    if left:
        await redis.delete(*left)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert left == [stem + "leak:x"]
    assert "test run left 1 key(s)" in run.stderr
