"""The README's end-to-end demo, run as written: its receiver script, its ``callgate serve``
command (on a fresh data dir, with the embedded Redis) and its curl steps, taken from the
README itself so the test fails when the README drifts. Only the ports are changed (to free
ones) and ``.venv/bin/`` is this interpreter's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent


def block(name: str) -> str:
    """The fenced block right after ``<!-- demo:<name> -->`` in the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- demo:{name} -->\n```[a-z]*\n(.*?)\n```", readme, re.S)
    assert found is not None, f"README has no demo:{name} block"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def events(log: Path) -> list[tuple[str, dict[str, Any]]]:
    """What the receiver printed: (type, data) of each event whose signature verified."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].startswith("evt_"):
            found.append((parts[1], json.loads(parts[2])))
    return found


async def test_the_readme_demo_runs_as_written(tmp_path: Path) -> None:
    gw, crm = free_port(), free_port()

    def ported(text: str) -> str:
        return text.replace("localhost:8080", f"127.0.0.1:{gw}").replace("9000", str(crm))

    receiver = tmp_path / "crm_receiver.py"
    receiver.write_text(ported(block("receiver")), encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent) + "/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env.update(CALLGATE_PORT=str(gw), CALLGATE_DATA_DIR=str(tmp_path / "callgate-data"))
    serve = ["bash", "-c", ported(block("serve")).replace(".venv/bin/", bin_dir)]
    crm_log, gw_log = tmp_path / "crm.log", tmp_path / "gateway.log"

    with running([sys.executable, str(receiver)], env, crm_log), running(serve, env, gw_log) as gateway:

        async def up() -> bool:
            assert gateway.poll() is None, gw_log.read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", gw)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(up, timeout=60)
        steps = subprocess.run(
            ["bash", "-e", "-c", ported(block("steps"))], env=env, capture_output=True, text=True, timeout=60
        )
        assert steps.returncode == 0, steps.stdout + steps.stderr + gw_log.read_text()

        async def delivered() -> bool:
            return any(t == "job.updated" and d["status"] == "delivered" for t, d in events(crm_log))

        await eventually(delivered, timeout=30)
    seen = events(crm_log)
    moves = [d for t, d in seen if t == "item.stage_changed"]
    assert [(m["item_id"], m["from"], m["to"], m["cause"]) for m in moves] == [
        ("D1", "NEW", "CALL_BACK", "call.missed")
    ]
    statuses = [d["status"] for t, d in seen if t == "job.updated"]
    assert statuses == ["queued", "sending", "sent", "delivered"], seen
    sms = next(d for t, d in seen if t == "job.updated")
    assert sms["kind"] == "sms" and sms["text"] == "Sorry we missed you, Ana. We call you back today."
