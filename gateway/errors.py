"""One error family and the middleware that renders API.md's envelope for every failure."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from gateway.appkeys import METRICS, OUT_OF_MEMORY
from gateway.store.connection import UNAVAILABLE, out_of_memory

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-Id"
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors (routing, body size) mapped to stable codes clients can switch on.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}

# aiohttp's RequestPayloadError: a body that does not decompress as its Content-Encoding says.
UNDECODABLE = "the body does not decode as its Content-Encoding says"


def declared_too_large(request: web.Request) -> bool:
    """Whether the request's Content-Length is over the body limit: refused before any of
    the body is read (so it is never asked for), and the connection closed after."""
    return (request.content_length or 0) > request.client_max_size


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class NotFound(ApiError):
    def __init__(self, what: str) -> None:
        super().__init__(404, "not_found", f"{what} not found")


class Invalid(ApiError):
    """A rule broken by one field (422)."""

    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(422, code, message, field)


class UnknownReference(Invalid):
    """A field names a record that does not exist (a provider, pipeline, stage or line)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, code="unknown_reference")


class InUse(ApiError):
    """A change would leave other records pointing at nothing (409)."""

    def __init__(self, message: str) -> None:
        super().__init__(409, "in_use", message)


class Forbidden(ApiError):
    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(403, code, message)


class Spell:
    """A condition that repeats on every request while it lasts (Redis out of memory): logged
    when it begins, then again only after ``quiet`` seconds without it, so an hour of refused
    writes is one log line and not one per request."""

    def __init__(self, quiet: float = 60.0) -> None:
        self._quiet = quiet
        self._last = -quiet

    def begins(self, now: float) -> bool:
        new = now - self._last >= self._quiet
        self._last = now
        return new


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    """aiohttp's own errors, saying which path or method they are about."""
    if exc.status == 404:
        return f"no endpoint at {request.path}; GET /openapi.json lists them"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}" + (f"; allowed: {allowed}" if allowed else "")
    return exc.text or HTTPStatus(exc.status).phrase


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID, "")
    # Echoed in a header and written to logs: only a short token of visible ASCII is kept.
    # A fresh one is 32 random hex digits, as uuid4().hex gave. It names a request, it guards
    # nothing: not the OS's random bytes, whose system call cost 1-3% of a webhook's CPU.
    request_id = given if _REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), _http_message(request, exc))
        for header in ("Allow", "Content-Range"):  # a 405's methods, a 416's length
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
    except UNAVAILABLE as exc:
        # One WARNING per outage (RedisHealth), not one per request while it lasts.
        request.app[METRICS].health.lost(exc)
        log.debug("redis unavailable request_id=%s path=%s error=%s", request_id, request.path, exc)
        response = error_response(503, "unavailable", "storage is unavailable; retry later")
        response.headers["Retry-After"] = "1"
    except Exception as exc:
        if out_of_memory(exc):
            if request.app[OUT_OF_MEMORY].begins(time.monotonic()):
                log.error("redis out of memory; writes answer 503 until it frees up: %s", exc)
            response = error_response(503, "unavailable", "storage is full; retry later")
            response.headers["Retry-After"] = "5"
        elif isinstance(exc, ConnectionResetError | RuntimeError) and request.transport is None:
            # The client hung up (or was shed) mid-body: aiohttp's body reader says so with a
            # ConnectionResetError or RuntimeError("Connection closed."); nobody is left to answer.
            log.info("client disconnected request_id=%s path=%s", request_id, request.path)
            response = error_response(400, "incomplete_request", "the client disconnected mid-request")
        else:
            log.exception("unhandled error request_id=%s path=%s", request_id, request.path)
            response = error_response(500, "internal", f"internal error; request id {request_id}")
    # An answered request read its body: only a refused one may have left it unread.
    too_large = response.status >= 400 and (response.status == 413 or declared_too_large(request))
    if request.content.exception() is not None or too_large:
        # The body broke mid-stream (it does not decompress) or is left unread (too large):
        # the connection is dropped after this answer, so no other request goes on it.
        response.force_close()
    response.headers[REQUEST_ID] = request_id
    return response
