"""``callgate serve`` as an operator sees it: what cannot work stops the start with one line
before anything is generated or started; one line says what runs, one that it stopped."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from config.settings import STRONG_TOKEN_LENGTH, Settings
from gateway.app import StartupError, create_app
from gateway.appkeys import CONNECTIONS
from gateway.datadir import private_dir
from gateway.serving import ConnectionGate, connection_cap, raise_file_limit, start_gated
from gateway.store.connection import UNAVAILABLE, connect, redacted
from gateway.store.embedded import EmbeddedRedis
from gateway.workers import EVENT_CONSUMERS

log = logging.getLogger("callgate")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound first: a port in use is found before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise StartupError(f"CALLGATE_HOST: cannot listen on {host!r}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        raise StartupError(
            f"cannot listen on {host}:{port}: {why} (another callgate or program holds it? set CALLGATE_PORT)"
        ) from None
    sock.setblocking(False)
    return sock


def check_data_dir(path: Path) -> None:
    try:
        private_dir(path)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(f"CALLGATE_DATA_DIR: {path} is not writable: {exc.strerror or exc}") from None


async def check_redis(url: str) -> None:
    redis = connect(url)
    try:
        await redis.ping()
    except UNAVAILABLE as exc:
        raise StartupError(
            f"CALLGATE_REDIS_URL: Redis at {redacted(url)} does not answer ({exc}); "
            "unset CALLGATE_REDIS_URL to run the embedded Redis instead"
        ) from None
    finally:
        await redis.aclose()


def unreachable_public_url(settings: Settings) -> str | None:
    """Why providers cannot reach the public URL derived from the listen address, if so."""
    if settings.public_url:
        return None
    host = settings.host.strip("[]")
    if host in {"", "0.0.0.0", "::"}:
        return f"derived from the wildcard listen address {settings.host or '*'}"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return f"derived from the loopback listen address {host}"
    if host == "localhost":
        return "derived from localhost"
    return None


def describe(settings: Settings) -> str:
    redis = (
        f"redis {redacted(settings.redis_url)}"
        if settings.redis_url
        else f"embedded redis in {EmbeddedRedis(settings.data_dir).data}"
    )
    listening = f"http://{settings.host}:{settings.port}"
    return (
        f"callgate started: listening on {listening}, public URL {settings.base_url}, {redis}, "
        f"{EVENT_CONSUMERS} event consumer and {settings.consumers} job consumers"
    )


async def preflight(settings: Settings) -> socket.socket:
    """Everything that can be checked before starting anything; the bound socket."""
    sock = listen(settings.host, settings.port)
    try:
        check_data_dir(settings.data_dir)
        if settings.redis_url:
            await check_redis(settings.redis_url)
    except BaseException:
        sock.close()
        raise
    return sock


# Container objects allocated (net) between young collections. Python's 700 made a webhook
# pay for a collection every dozen events: 5% of serve's CPU, measured in instructions.
YOUNG_COLLECTION_EVERY = 20_000


def tune_garbage_collector() -> None:
    """Set the collector for a long-running server, once the process has started.

    What it holds for good by then (modules, the app, its clients) is kept out of the full
    collections: each walked all of it, some 130,000 objects, and stopped the event loop for
    60-100 ms, the p99 of the acknowledgements caught behind it. Startup's own garbage is
    collected first, not kept. Young collections run less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


async def serve(settings: Settings, sock: socket.socket, access_log: logging.Logger | None) -> None:
    """Run until SIGTERM or SIGINT; one line when serving, one when stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gate = ConnectionGate(connection_cap(settings.max_connections, raise_file_limit()), settings.idle_timeout_seconds)
    app = create_app(settings)
    app[CONNECTIONS] = gate
    runner = web.AppRunner(app, access_log=access_log, handle_signals=False)
    gated = None
    try:
        await runner.setup()
        gated = await start_gated(runner, sock, gate)
        tune_garbage_collector()
        why = unreachable_public_url(settings)
        if why:
            log.warning(
                "the public URL %s is %s: providers cannot reach it, and Twilio signatures are checked "
                "against it; set CALLGATE_PUBLIC_URL to the URL providers reach this gateway at",
                settings.base_url,
                why,
            )
        for name in settings.short_tokens():
            log.warning(
                "%s is shorter than %d characters: a token that short can be guessed; use a long random one",
                name,
                STRONG_TOKEN_LENGTH,
            )
        log.info("%s; at most %d client connections", describe(settings), gate.cap)
        await stop.wait()
    finally:
        if gated is not None:
            await gated.close()
        await runner.cleanup()
        sock.close()
    log.info("callgate stopped")


Announce = Callable[[Settings], Settings]


def run(settings: Settings, announce: Announce, access_log: logging.Logger | None) -> None:
    """Check, then ``announce`` (generates and prints tokens on a first start), then serve."""

    async def main() -> None:
        sock = await preflight(settings)
        try:
            ready = announce(settings)
        except BaseException:
            sock.close()
            raise
        await serve(ready, sock, access_log)

    asyncio.run(main())
