"""A local emulator of Voximplant's management API, shaped on what ``voximplant-apiclient``
sends and parses: HTTPS ``POST /platform_api`` (the SDK always speaks https to its endpoint)
with a form of ``cmd`` and the method's parameters, ``Authorization: Bearer`` an RS256 JWT
of a service account (checked here with the account's public key, as the API does), and
``{"result": ...}`` or ``{"error": {"msg", "code"}}`` back.

It serves over TLS with a certificate of its own for 127.0.0.1; the SDK trusts it through
``REQUESTS_CA_BUNDLE``, which it reads itself.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HANG = "hang"  # do what was asked, then never answer (the caller's process dies meanwhile)
ACCOUNT_ID = 4100123
RULE_ID = 3300777
API_DATETIME = "%Y-%m-%d %H:%M:%S"  # how the API writes and reads times (UTC here)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate's file."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voximplant-emulator")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "voximplant-cert.pem", directory / "voximplant-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_text(_pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@dataclass
class VoximplantApi:
    ca_file: Path
    endpoint: str = ""
    # What the next StartScenarios / SendSmsMessage answer: 200 does it, HANG does it and never
    # answers, another HTTP status fails (5xx as a gateway would, with text), "error:<code>"
    # is the API's own error.
    script: list[int | str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _key: rsa.RSAPrivateKey = field(default_factory=_key)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(880001))

    @property
    def service_account(self) -> str:
        """The service account's JSON key file, as the control panel hands it out."""
        account = {
            "account_email": "robot@callgate.test",
            "account_id": ACCOUNT_ID,
            "key_id": "k-emulated",
            "private_key": _pem(self._key),
        }
        return json.dumps(account)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return False
        try:
            claims = jwt.decode(token, self._key.public_key(), algorithms=["RS256"], options={"require": ["exp"]})
        except jwt.PyJWTError:
            return False
        return bool(jwt.get_unverified_header(token).get("kid") == "k-emulated" and claims["iss"] == str(ACCOUNT_ID))

    async def platform_api(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        if not self._authorized(request):
            return web.json_response({"error": {"msg": "Authorization failed", "code": 100}})
        self.requests.append(form)
        handler = {
            "StartScenarios": self._start_scenarios,
            "GetCallHistory": self._call_history,
            "SendSmsMessage": self._send_sms,
            "GetSmsHistory": self._sms_history,
        }.get(form["cmd"])
        if handler is None:
            return web.json_response({"error": {"msg": f"Unknown method {form['cmd']}", "code": 101}})
        return await handler(form)

    async def _scripted(self, form: dict[str, str], done: dict[str, Any]) -> web.Response:
        outcome = self.script.pop(0) if self.script else 200
        if isinstance(outcome, str) and outcome.startswith("error:"):
            return web.json_response({"error": {"msg": "Scripted refusal", "code": int(outcome[6:])}})
        if outcome not in (200, HANG):
            return web.Response(status=int(outcome), text="Service Unavailable", content_type="text/plain")
        if outcome == HANG:
            await self.release.wait()
        return web.json_response(done)

    async def _start_scenarios(self, form: dict[str, str]) -> web.Response:
        if form.get("rule_id") != str(RULE_ID):
            return web.json_response({"error": {"msg": "Invalid rule_id", "code": 186}})
        session = next(self._ids)
        outcome = self.script[0] if self.script else 200
        if outcome in (200, HANG):
            self.sessions.append(
                {
                    "call_session_history_id": session,
                    "account_id": ACCOUNT_ID,
                    "rule_name": "robocall",
                    "start_date": datetime.datetime.now(datetime.UTC).strftime(API_DATETIME),
                    "custom_data": form.get("script_custom_data", ""),
                    "finish_reason": "",
                    "duration": 0,
                }
            )
        control = f"{session}.1700000000.1_127.0.0.1/0123456789abcdef"
        return await self._scripted(
            form,
            {
                "result": 1,
                "media_session_access_url": f"http://127.0.0.1/request/{control}",
                "media_session_access_secure_url": f"https://127.0.0.1/request/{control}",
                "call_session_history_id": session,
            },
        )

    async def _call_history(self, form: dict[str, str]) -> web.Response:
        """Sessions started in the span, by custom data or id; a session's ``calls`` (what the
        test put there: the calls it made) only ``with_calls``."""
        since = datetime.datetime.strptime(form["from_date"], API_DATETIME)
        until = datetime.datetime.strptime(form["to_date"], API_DATETIME)
        wanted = form.get("call_session_history_custom_data")
        session_id = form.get("call_session_history_id")
        found = [
            {key: value for key, value in session.items() if key != "calls" or form.get("with_calls") == "True"}
            for session in self.sessions
            if since <= datetime.datetime.strptime(session["start_date"], API_DATETIME) <= until
            and wanted in (None, session["custom_data"])
            and session_id in (None, str(session["call_session_history_id"]))
        ][: int(form.get("count", 20))]
        return web.json_response({"result": found, "count": len(found), "timezone": "Etc/GMT"})

    async def _send_sms(self, form: dict[str, str]) -> web.Response:
        message_id = next(self._ids)
        outcome = self.script[0] if self.script else 200
        if outcome in (200, HANG):
            message = {
                "message_id": message_id,
                "source_number": form["source"],
                "destination_number": form["destination"],
                "direction": "OUT",
                "fragments": 1,
                "cost": 0.0081,
                "status_id": "1",
                "processed_date": datetime.datetime.now(datetime.UTC).strftime(API_DATETIME),
            }
            if form.get("store_body") == "True":  # the SDK sends booleans as True/False
                message["text"] = form["sms_body"]
            self.messages.append(message)
        return await self._scripted(form, {"result": 1, "message_id": message_id, "fragments_count": 1})

    async def _sms_history(self, form: dict[str, str]) -> web.Response:
        since = datetime.datetime.strptime(form["from_date"], API_DATETIME)
        until = datetime.datetime.strptime(form["to_date"], API_DATETIME)
        found = [
            message
            for message in self.messages
            if since <= datetime.datetime.strptime(message["processed_date"], API_DATETIME) <= until
            and form.get("source_number") in (None, message["source_number"])
            and form.get("destination_number") in (None, message["destination_number"])
            and form.get("direction") in (None, message["direction"])
        ]
        return web.json_response({"result": found, "total_count": len(found)})


@asynccontextmanager
async def voximplant_api(directory: Path) -> AsyncIterator[VoximplantApi]:
    context, ca_file = _tls(directory)
    api = VoximplantApi(ca_file)
    app = web.Application()
    app.router.add_post("/platform_api", api.platform_api)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    api.endpoint = f"127.0.0.1:{server.port}"
    try:
        yield api
    finally:
        api.release.set()
        await server.close()
