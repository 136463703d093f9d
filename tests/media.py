"""Audio for tests: a valid MP3 made of silent frames, and a local server that hands out
MP3s, non-MP3s, oversized files and redirects."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

# MPEG-1 Layer III, 128 kb/s, 44.1 kHz, mono, no padding: 417-byte frames; zeroed side
# information decodes as silence.
_FRAME = bytes([0xFF, 0xFB, 0x90, 0xC0]) + bytes(413)


def silent_mp3(seconds: float = 1.0) -> bytes:
    return _FRAME * max(1, round(seconds * 44100 / 1152))


async def media_server(redirect_to: str = "", host: str = "127.0.0.1") -> TestServer:
    """Serves /ok.mp3, /notmp3.mp3, /huge.mp3 (over 10 MB), /missing.mp3 (404) and
    /redirect.mp3 (to ``redirect_to``, default /ok.mp3) on ``host``."""
    huge = silent_mp3(700)  # 700 s at 128 kb/s is about 11 MB

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=silent_mp3(), content_type="audio/mpeg")

    async def not_mp3(request: web.Request) -> web.Response:
        return web.Response(text="<html>not audio</html>" * 50, content_type="audio/mpeg")

    async def too_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse early
        await response.prepare(request)
        for start in range(0, len(huge), 1 << 20):
            await response.write(huge[start : start + (1 << 20)])
        return response

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(redirect_to or "/ok.mp3")

    app = web.Application()
    app.router.add_get("/ok.mp3", ok)
    app.router.add_get("/notmp3.mp3", not_mp3)
    app.router.add_get("/huge.mp3", too_big)
    app.router.add_get("/redirect.mp3", redirect)
    server = TestServer(app, host=host)
    await server.start_server()
    return server
