"""``/v1/optouts/{number}`` (admin): read and change the consent ledger by hand."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from aiohttp import web
from pydantic import Field

from config.lines import Strict
from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import SETTINGS, STORE
from gateway.consent import Consents
from gateway.errors import NotFound
from gateway.store.consent import ConsentRecord


class OptOutRequest(Strict):
    reason: Annotated[str, Field(max_length=200)] = ""


async def _change(request: web.Request, opted_out: bool, reason: str) -> ConsentRecord:
    number = params.phone(request.match_info["number"], "number")
    record = ConsentRecord(number, opted_out, "admin", reason, time.time())
    consents = Consents(request.app[STORE], request.app[SETTINGS])
    return await consents.record(record, f"consent:admin:{secrets.token_hex(8)}")


async def get_optout(request: web.Request) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    record = await request.app[STORE].consent.get(number)
    if record is None:
        raise NotFound(f"consent record of {number} (it never opted out)")
    return web.json_response(record.view())


async def put_optout(request: web.Request, body: OptOutRequest | None) -> web.Response:
    return web.json_response((await _change(request, True, body.reason if body else "")).view())


async def delete_optout(request: web.Request) -> web.Response:
    return web.json_response((await _change(request, False, "")).view())


_PATH = "/v1/optouts/{number}"
_NUMBER = {"number": params.PHONE}
ENDPOINTS_OPTOUTS = [
    Endpoint(
        "GET",
        _PATH,
        get_optout,
        "A number's consent: opted out or not, by what and when",
        Scope.ADMIN,
        tag="consent",
        path_params=_NUMBER,
    ),
    Endpoint(
        "PUT",
        _PATH,
        put_optout,
        "Opt a number out of SMS and robocalls (body optional: reason)",
        Scope.ADMIN,
        OptOutRequest | None,
        tag="consent",
        path_params=_NUMBER,
    ),
    Endpoint("DELETE", _PATH, delete_optout, "Opt a number back in", Scope.ADMIN, tag="consent", path_params=_NUMBER),
]
