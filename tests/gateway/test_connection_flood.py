"""Connection floods: a cap below the file limit, idle clients shed, health checks still
answered while hundreds of slow clients hold connections, and the log stays quiet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import CONNECTIONS
from gateway.launch import listen
from gateway.serving import RESERVED_DESCRIPTORS, ConnectionGate, connection_cap, raise_file_limit, start_gated

CAP = 40
SLOW_CLIENTS = 300


@pytest.fixture
async def gated(settings: Settings) -> AsyncIterator[tuple[int, ConnectionGate]]:
    """The app served as ``callgate serve`` serves it, behind a gate with a low cap."""
    gate = ConnectionGate(CAP, idle_timeout=1.0)
    app = create_app(settings, workers=False)
    app[CONNECTIONS] = gate
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = listen("127.0.0.1", 0)
    server = await start_gated(runner, sock, gate)
    try:
        yield sock.getsockname()[1], gate
    finally:
        await server.close()
        await runner.cleanup()
        sock.close()


# A request head that never ends (a header every 0.3 s), or a body that never ends (a
# webhook reads its body before it can check the signature).
SLOW_HEAD = (b"GET /healthz HTTP/1.1\r\nHost: t\r\n", b"X-Slow: 1\r\n")
SLOW_BODY = (
    b"POST /webhooks/twilio/sms HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n",
    b"a=1&",
)


async def slow_client(port: int, stop: asyncio.Event, slow: tuple[bytes, bytes]) -> None:
    """A slowloris, which reconnects when cut."""
    start, drip = slow
    while not stop.is_set():
        writer = None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(start)
            while not stop.is_set():
                await asyncio.sleep(0.3)
                writer.write(drip)
                await writer.drain()
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


@pytest.mark.parametrize("slow", [SLOW_HEAD, SLOW_BODY], ids=["head", "body"])
async def test_health_checks_answer_during_a_flood_of_slow_clients(
    gated: tuple[int, ConnectionGate], caplog: pytest.LogCaptureFixture, slow: tuple[bytes, bytes]
) -> None:
    port, gate = gated
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO):
        flood = [asyncio.create_task(slow_client(port, stop, slow)) for _ in range(SLOW_CLIENTS)]
        try:

            async def flooded() -> None:
                while gate.shed < SLOW_CLIENTS:  # the cap was reached and slow clients shed
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(flooded(), 30)
            # A probe opens a connection of its own each time, as load balancers and orchestrators
            # do: a kept-alive one idles between probes and is fair game for shedding at the cap.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                for _ in range(5):
                    async with session.get(
                        f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)
                    ) as resp:
                        assert resp.status == 200
        finally:
            stop.set()
            await asyncio.gather(*flood)
    assert gate.most <= CAP
    shed_lines = [r for r in caplog.records if r.name == "gateway.serving"]
    assert 1 <= len(shed_lines) <= 2, [r.getMessage() for r in shed_lines]  # once per spell
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeRequest:
    """A request being handled on ``transport``, its body all received or not."""

    def __init__(self, transport: FakeTransport, body_received: bool = True) -> None:
        self.transport = transport
        self.content = self
        self._received = body_received

    def is_eof(self) -> bool:
        return self._received


def test_the_gate_sheds_the_longest_idle_and_refuses_only_when_all_are_busy() -> None:
    now = [0.0]
    gate = ConnectionGate(2, idle_timeout=10, clock=lambda: now[0])
    first, second, third, fourth = (FakeTransport() for _ in range(4))
    transports: list[Any] = [first, second, third, fourth]
    assert gate.admit(transports[0]) and gate.admit(transports[1])
    now[0] = 1
    gate.active(transports[0])  # second is now the one idle the longest
    assert gate.admit(transports[2])
    assert second.aborted and not first.aborted and len(gate) == 2

    handled: list[Any] = [FakeRequest(first), FakeRequest(third)]
    for request in handled:
        gate.handling(request, started=True)
    assert not gate.admit(transports[3])  # every connection waits on us: the newcomer waits its turn
    gate.handling(handled[1], started=False)

    now[0] = 20
    gate.sweep()  # third idled past the timeout; first is being handled
    assert third.aborted and not first.aborted and len(gate) == 1

    late: Any = FakeRequest(first, body_received=False)  # its body stopped arriving
    gate.handling(handled[0], started=False)
    gate.handling(late, started=True)
    now[0] = 40
    gate.sweep()
    assert first.aborted and len(gate) == 0


def test_the_cap_stays_under_a_raised_file_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = raise_file_limit()
    assert limit >= before
    assert connection_cap(10**9, limit) == limit - RESERVED_DESCRIPTORS
    assert connection_cap(100, limit) == min(100, limit - RESERVED_DESCRIPTORS)
    assert connection_cap(10, RESERVED_DESCRIPTORS) == 1  # never none at all
