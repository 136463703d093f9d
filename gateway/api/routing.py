"""Endpoints declared once: the route, its auth scope and its body schema.

The same table registers the aiohttp routes, checks tokens, validates bodies and feeds
``/openapi.json``, so the published contract cannot drift from what the server does.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from aiohttp import HttpVersion11, hdrs, web
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from config.lines import plain_message
from gateway.appkeys import ENDPOINTS, TOKENS
from gateway.errors import UNDECODABLE, ApiError, Forbidden, declared_too_large

Handler = Callable[..., Awaitable[web.StreamResponse]]


class Scope(StrEnum):
    ADMIN = "admin"
    API = "api"


@dataclass(frozen=True)
class Tokens:
    admin: str
    api: str

    def scope_of(self, token: str) -> Scope | None:
        # Compare against both in constant time so timing does not tell which one was close.
        # surrogateescape: a header with non-UTF-8 bytes is an invalid token, not a 500.
        given = token.encode("utf-8", "surrogateescape")
        is_admin = hmac.compare_digest(given, self.admin.encode())
        is_api = hmac.compare_digest(given, self.api.encode())
        return Scope.ADMIN if is_admin else Scope.API if is_api else None


Schema = Mapping[str, Any]
STRING: Schema = {"type": "string"}


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    required: bool = False
    schema: Schema = field(default_factory=lambda: STRING)  # what the handler accepts, in /openapi.json


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: Scope | None = None
    body: Any = None  # a pydantic model or a type TypeAdapter accepts (e.g. list[Rule])
    status: int = 200
    query: Sequence[Param] = field(default_factory=tuple)
    tag: str = ""
    # The schema of each ``{name}`` in ``path`` (a plain string when not given).
    path_params: Mapping[str, Schema] = field(default_factory=dict)
    also: Sequence[int] = ()  # other success statuses (201 from a PUT that creates)


def authorize(request: web.Request, needed: Scope) -> None:
    """The admin token may do everything; the api token only CRM calls."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "a bearer token is required (Authorization: Bearer <token>)")
    scope = request.app[TOKENS].scope_of(token.strip())
    if scope is None:
        raise ApiError(401, "unauthorized", "the bearer token is not valid")
    if needed is Scope.ADMIN and scope is not Scope.ADMIN:
        raise Forbidden("this call needs the admin token", code="wrong_scope")


@functools.cache
def _adapter(schema: Any) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


_ABSENT = object()


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def _field_of(error: ErrorDetails, raw: bytes) -> str:
    """The error's location as ``a.0.b``, in the names the client sent.

    Pydantic inserts union members into a location (``fields.n.constrained-str``); a part
    the body does not have is such a tag and is left out, unless it names a key absent from
    an object: a required field, or a default that failed validation (whose input is the
    default, not the object).
    """
    loc = error["loc"]
    try:
        node: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return ".".join(str(part) for part in loc)
    parts: list[str] = []
    for index, part in enumerate(loc):
        child = _child(node, part)
        if child is not _ABSENT:
            parts.append(str(part))
            node = child
        elif (
            index == len(loc) - 1 and isinstance(node, dict) and (error["type"] == "missing" or error["input"] != node)
        ):
            parts.append(str(part))
    return ".".join(parts)


def refuse_declared_too_large(request: web.Request) -> None:
    """413 for a body whose Content-Length is over the limit, before any of it is read: the
    client gets its answer now, not after sending it all (or never, if it waits for one)."""
    if declared_too_large(request):
        message = f"the body is {request.content_length} bytes; at most {request.client_max_size} are accepted"
        raise ApiError(413, "body_too_large", message)


async def read_body(request: web.Request, schema: Any) -> Any:
    """Parse and validate the JSON body: 400 when it is not JSON, 422 naming the first bad field."""
    refuse_declared_too_large(request)
    try:
        raw = await request.read()
    except web.RequestPayloadError:
        raise ApiError(400, "malformed_json", UNDECODABLE) from None
    try:
        return _adapter(schema).validate_json(raw or b"null")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        if not raw:
            raise ApiError(400, "malformed_json", "the body is empty; this endpoint takes a JSON body") from None
        where = _field_of(first, raw)
        text = plain_message(str(first["msg"]))
        named = text.split(" ", 1)[0]
        if not where and named in getattr(schema, "model_fields", {}):
            # A rule between fields, checked on the whole body, whose message starts with the
            # field it faults.
            raise ApiError(422, _code(first["type"]), text, named) from None
        # A validator's own message may already start with the field it is about.
        message = f"{where}: {text}" if where and not text.startswith((f"{where}:", f"{where}.")) else text
        raise ApiError(422, _code(first["type"]), message, where or None) from None


def _code(pydantic_type: str) -> str:
    """One code per kind of problem, whatever pydantic calls it: a field the body lacks, a
    field the schema lacks, or a value that breaks a rule (the message says which)."""
    return {"missing": "missing", "extra_forbidden": "unknown_field"}.get(pydantic_type, "invalid")


def _bind(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    if endpoint.scope is None and endpoint.body is None:
        # Nothing to check or read first (a provider's webhook): no layer of its own.
        return cast(Callable[[web.Request], Awaitable[web.StreamResponse]], endpoint.handler)

    async def handle(request: web.Request) -> web.StreamResponse:
        if endpoint.scope is not None:
            authorize(request, endpoint.scope)
        if endpoint.body is None:
            return await endpoint.handler(request)
        return await endpoint.handler(request, await read_body(request, endpoint.body))

    handle.__name__ = endpoint.handler.__name__
    return handle


async def continue_unless_too_large(request: web.Request) -> None:
    """``Expect: 100-continue``: the body is asked for only when it may be accepted. One
    declared over the limit is not: the client has its final answer (401, 413) instead of
    sending a body that would be refused unread."""
    if declared_too_large(request):
        return
    if request.version != HttpVersion11:
        return  # HTTP/1.0 has no 100 Continue: the client sends its body regardless
    if request.headers[hdrs.EXPECT].lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown expectation {request.headers[hdrs.EXPECT]!r}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # What follows is the response proper: its size is counted from here.
    request.writer.output_size = 0


def add_endpoints(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    # Every handler that reads a body refuses one declared too large first (read_body, the
    # webhooks' refusal layer), so none is asked for.
    for endpoint in endpoints:
        handler = _bind(endpoint)
        app.router.add_route(endpoint.method, endpoint.path, handler, expect_handler=continue_unless_too_large)
        if endpoint.method == "GET":
            # What a GET answers without its body, as HTTP has it (a player asks a file's size).
            app.router.add_route("HEAD", endpoint.path, handler)
    app.setdefault(ENDPOINTS, []).extend(endpoints)
