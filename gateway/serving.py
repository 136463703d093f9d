"""The HTTP server around the app: how many clients it holds, for how long, and how it logs
what never reaches a handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.appkeys import CONNECTIONS
from gateway.errors import Handler, Spell

log = logging.getLogger(__name__)


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's protocol logger (``handler_args``). A request it cannot parse (its head, or a
    body that does not decompress, met again when the unread rest is drained) is the client's
    fault: one WARNING line naming it, not an ERROR traceback per request that a scanner can
    multiply at will. Anything else keeps its traceback."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            exc = exc.__cause__  # the body parser's own error
        if isinstance(exc, HttpProcessingError):
            remote = args[0] if args else "?"
            self.logger.warning("malformed request from %s: %s", remote, " ".join(str(exc.message).split())[:200])
            return
        super().log(level, msg, *args, **kwargs)


def server_log() -> ServerLog:
    return ServerLog(logging.getLogger("gateway.http"))


# Descriptors kept free below the process's limit for Redis connections, the embedded
# Redis, media files and logs: the cap on clients never starves the gateway itself.
RESERVED_DESCRIPTORS = 256


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a process may, unprivileged); the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(wanted: int, file_limit: int) -> int:
    """``wanted`` (CALLGATE_MAX_CONNECTIONS), lowered to fit under ``file_limit``."""
    return max(min(wanted, file_limit - RESERVED_DESCRIPTORS), 1)


@dataclass
class _Connection:
    transport: asyncio.Transport
    last_active: float
    # Requests being handled (the app's middleware registers them).
    requests: list[web.BaseRequest] = field(default_factory=list)

    @property
    def waiting_on_client(self) -> bool:
        """Nothing of ours to wait for: no request, or only requests whose body is still
        arriving (a client can trickle a body as slowly as a request head)."""
        return all(not request.content.is_eof() for request in self.requests)


class ConnectionGate:
    """At most ``cap`` client connections, none of them allowed to sit idle.

    A connection that is not being handled (still sending its request, or idle between
    keep-alive requests) is closed after ``idle_timeout`` seconds without a byte; at the cap,
    the one idle the longest makes room for the newcomer, so slow clients cannot lock the
    others (health checks included) out; a request whose body is still arriving counts as
    the client's to finish, like its head. Only when every connection waits on us is a
    newcomer refused. Both are counted and logged once per spell, not once per connection.
    """

    def __init__(self, cap: int, idle_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.idle_timeout = idle_timeout
        self.most = 0  # the most connections open at once
        self.shed = 0  # connections closed for the cap or for idling
        self._clock = clock
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        self._spell = Spell()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.Transport) -> bool:
        now = self._clock()
        if len(self._open) >= self.cap:
            idle = [c for c in self._open.values() if c.waiting_on_client]
            if not idle:
                self._note("refused: every connection has a request being handled", now)
                return False
            self._close(min(idle, key=lambda c: c.last_active), "at the cap", now)
        self._open[transport] = _Connection(transport, now)
        self.most = max(self.most, len(self._open))
        return True

    def active(self, transport: asyncio.BaseTransport) -> None:
        connection = self._open.get(transport)
        if connection is not None:
            connection.last_active = self._clock()

    def handling(self, request: web.BaseRequest, started: bool) -> None:
        transport = request.transport
        connection = self._open.get(transport) if transport is not None else None
        if connection is None:
            return
        if started:
            connection.requests.append(request)
        elif request in connection.requests:
            connection.requests.remove(request)
        connection.last_active = self._clock()

    def release(self, transport: asyncio.BaseTransport) -> None:
        self._open.pop(transport, None)

    def sweep(self) -> None:
        """Close the connections idle longer than ``idle_timeout``."""
        now = self._clock()
        for connection in list(self._open.values()):
            if connection.waiting_on_client and now - connection.last_active > self.idle_timeout:
                self._close(connection, "idle", now)

    def _close(self, connection: _Connection, why: str, now: float) -> None:
        self._open.pop(connection.transport, None)
        connection.transport.abort()
        self._note(f"closed {why}", now)

    def _note(self, what: str, now: float) -> None:
        self.shed += 1
        if self._spell.begins(now):
            log.warning(
                "connections over the cap or idle (%s); open=%d cap=%d idle_timeout=%ss, shed so far %d",
                what,
                len(self._open),
                self.cap,
                self.idle_timeout,
                self.shed,
            )


class _Gated(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the gate."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self._inner = inner
        self._gate = gate
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._gate.admit(transport):
            transport.abort()
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._gate.active(self._transport)
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._gate.release(self._transport)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A connection with a request being handled is not idle (unless its body is late)."""
    gate = request.app.get(CONNECTIONS)
    if gate is None:  # served without a gate (tests' TestServer)
        return await handler(request)
    gate.handling(request, started=True)
    try:
        return await handler(request)
    finally:
        gate.handling(request, started=False)


@dataclass
class GatedServer:
    listening: asyncio.Server
    sweeper: asyncio.Task[None]

    async def close(self) -> None:
        self.sweeper.cancel()
        self.listening.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper


async def start_gated(runner: web.AppRunner, sock: socket.socket, gate: ConnectionGate) -> GatedServer:
    """Serve ``runner``'s app on ``sock`` behind ``gate``; close the result, then clean up
    the runner."""
    server = runner.server
    assert server is not None, "runner.setup() first"

    def protocol() -> asyncio.Protocol:
        return _Gated(server(), gate)

    listening = await asyncio.get_running_loop().create_server(protocol, sock=sock)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(min(gate.idle_timeout / 4, 1.0))
            gate.sweep()

    return GatedServer(listening, asyncio.create_task(sweep(), name="connection-sweeper"))
