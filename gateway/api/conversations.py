"""``POST /v1/conversations/{number}/close`` (api token): an agent marks a customer's SMS
conversation done; the line's closing reply, when it has one, is sent."""

from __future__ import annotations

from aiohttp import web

from gateway.api import params
from gateway.api.routing import Endpoint, Scope
from gateway.appkeys import SETTINGS, STORE
from gateway.conversations import Conversations
from gateway.errors import NotFound


async def close_conversation(request: web.Request) -> web.Response:
    number = params.phone(request.match_info["number"], "number")
    closed = await Conversations(request.app[STORE], request.app[SETTINGS]).close(number)
    if closed is None:
        raise NotFound(f"open conversation with {number}")
    line, job_id = closed
    return web.json_response({"number": number, "line": line, "closing_job": job_id})


ENDPOINTS_CONVERSATIONS = [
    Endpoint(
        "POST",
        "/v1/conversations/{number}/close",
        close_conversation,
        "Close the customer's SMS conversation; the line's replies.closing is sent when set",
        Scope.API,
        tag="conversations",
        path_params={"number": params.PHONE},
    ),
]
