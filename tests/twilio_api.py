"""A local emulator of Twilio's Calls and Messages APIs, shaped on what twilio-python's async
client sends (form-encoded POST /2010-04-01/Accounts/{sid}/Calls.json or Messages.json with
Basic auth; GET of the same path with To/From filters) and what it parses back (a call or
message resource; a page under "calls" or "messages")."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDictProxy

HANG = "hang"  # create the call, then never answer the request (the caller's process dies)
OPTED_OUT = 21610  # as a script entry: a 400 with Twilio's unsubscribed-recipient code


@dataclass
class TwilioApi:
    account_sid: str
    auth_token: str
    # What the next creates answer: an HTTP status (201 places the call) or HANG.
    script: list[int | str] = field(default_factory=list)
    # What the next listings answer: an HTTP status (200 lists what was created).
    list_script: list[int] = field(default_factory=list)
    requests: list[MultiDictProxy[str | bytes | bytearray | web.FileField]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _error(self, status: int) -> web.Response:
        code, message = {
            400: (21211, "The 'To' number is not a valid phone number."),
            429: (20429, "Too Many Requests"),
            OPTED_OUT: (OPTED_OUT, "Attempt to send to unsubscribed recipient"),
        }.get(status, (20500, "Internal Server Error"))
        status = 400 if status == OPTED_OUT else status
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        return web.json_response({**body, "status": status}, status=status)

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorized(request) or request.match_info["sid"] != self.account_sid:
            return self._error(401)
        form = await request.post()
        self.requests.append(form)
        outcome = self.script.pop(0) if self.script else 201
        if outcome not in (201, HANG):
            return self._error(int(outcome))
        message = request.match_info["resource"] == "Messages"
        kind = "SM" if message else "CA"
        call = {
            "sid": f"{kind}{next(self._sids):032x}",
            "account_sid": self.account_sid,
            "to": form["To"],
            "from": form["From"],
            "status": "queued",
            "direction": "outbound-api",
            "date_created": email.utils.formatdate(usegmt=True),
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/{request.match_info['resource']}/{kind}.json",
        }
        if message:
            call.update(body=form["Body"], num_segments="1")
        (self.messages if message else self.calls).append(call)
        if outcome == HANG:
            await self.release.wait()
        return web.json_response(call, status=201)

    async def list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401)
        outcome = self.list_script.pop(0) if self.list_script else 200
        if outcome != 200:
            return self._error(outcome)
        to, from_ = request.query.get("To"), request.query.get("From")
        resource = request.match_info["resource"]
        stored = self.messages if resource == "Messages" else self.calls
        found = [c for c in reversed(stored) if to in (None, c["to"]) and from_ in (None, c["from"])]
        uri = request.path
        return web.json_response(
            {
                resource.lower(): found,
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": 50,
                "start": 0,
                "end": len(found),
                "uri": uri,
            }
        )


@asynccontextmanager
async def twilio_api(account_sid: str, auth_token: str) -> AsyncIterator[TwilioApi]:
    api = TwilioApi(account_sid, auth_token)
    app = web.Application()
    path = "/2010-04-01/Accounts/{sid}/{resource:Calls|Messages}.json"
    app.router.add_post(path, api.create)
    app.router.add_get(path, api.list)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api.url = str(server.make_url("")).rstrip("/")
    try:
        yield api
    finally:
        api.release.set()
        await server.close()
