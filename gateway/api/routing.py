"""Endpoints declared once: the route, its auth scope and its body schema.

The same table registers the aiohttp routes, checks tokens, validates bodies and feeds
``/openapi.json``, so the published contract cannot drift from what the server does.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from gateway.errors import ApiError, Forbidden

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
        is_admin = hmac.compare_digest(token.encode(), self.admin.encode())
        is_api = hmac.compare_digest(token.encode(), self.api.encode())
        return Scope.ADMIN if is_admin else Scope.API if is_api else None


TOKENS = web.AppKey("tokens", Tokens)


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    required: bool = False


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


def _field_of(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


async def read_body(request: web.Request, schema: Any) -> Any:
    """Parse and validate the JSON body: 400 when it is not JSON, 422 naming the first bad field."""
    raw = await request.read()
    try:
        return _adapter(schema).validate_json(raw or b"null")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        where = _field_of(first["loc"])
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        raise ApiError(422, first["type"], message, where or None) from None


def _bind(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if endpoint.scope is not None:
            authorize(request, endpoint.scope)
        if endpoint.body is None:
            return await endpoint.handler(request)
        return await endpoint.handler(request, await read_body(request, endpoint.body))

    handle.__name__ = endpoint.handler.__name__
    return handle


ENDPOINTS: web.AppKey[list[Endpoint]] = web.AppKey("endpoints", list)


def add_endpoints(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, _bind(endpoint))
    app.setdefault(ENDPOINTS, []).extend(endpoints)
