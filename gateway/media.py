"""``play.url`` links fetched safely, and the audio files served at ``/media/{key}.mp3``.

SSRF guard (OWASP): the host is resolved once, every address must be public (unless
``CALLGATE_MEDIA_ALLOW_PRIVATE``), and the connection goes to exactly those addresses, so
a name cannot resolve to something else between the check and the connect. Redirects are
followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.datadir import private_dir
from voice.audio import InvalidAudio, decode_mp3

MAX_BYTES = 10 * 1024 * 1024
TIMEOUT_SECONDS = 15.0
MAX_REDIRECTS = 5
KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[Address], bool]


class MediaError(ValueError):
    """The link cannot be used; the message says why (a 422 on ``play.url``)."""


def is_public(address: Address) -> bool:
    """Routable on the internet: not loopback, private, link-local (cloud metadata),
    CGNAT, unique-local, multicast or reserved, including IPv4 wrapped in IPv6."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def any_address(_: Address) -> bool:
    return True


async def resolve(host: str, port: int, allowed: AddressPolicy) -> list[ResolveResult]:
    """The host's addresses, all of them allowed, or MediaError."""
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        found = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
            raise MediaError(f"the host {host} cannot be resolved ({exc})") from None
        found = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    for _, address in found:
        if not allowed(ipaddress.ip_address(address.split("%")[0])):
            raise MediaError(f"the host {host} resolves to {address}, a private or local address")
    return [
        ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=socket.AI_NUMERICHOST)
        for family, address in found
    ]


class _Pinned(AbstractResolver):
    """Answers with the addresses already checked, never a second lookup."""

    def __init__(self) -> None:
        self.answers: dict[str, list[ResolveResult]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self.answers[host]

    async def close(self) -> None:
        return None


async def download(url: str, allowed: AddressPolicy, max_bytes: int = MAX_BYTES) -> bytes:
    """The body at ``url``, following at most MAX_REDIRECTS checked redirects."""
    resolver = _Pinned()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise MediaError(f"{url} is not an http(s) URL")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            resolver.answers[parts.hostname] = await resolve(parts.hostname, port, allowed)
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in {301, 302, 303, 307, 308} and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise MediaError(f"{url} answered HTTP {response.status}")
                    if (response.content_length or 0) > max_bytes:
                        raise MediaError(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > max_bytes:
                            raise MediaError(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
                    return bytes(body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MediaError(f"{url} could not be fetched ({type(exc).__name__}: {exc})") from None
    raise MediaError(f"more than {MAX_REDIRECTS} redirects")


def check_mp3(data: bytes) -> None:
    """MediaError unless ``data`` decodes as MP3 audio (blocking: ffmpeg decodes it)."""
    try:
        decode_mp3(data)
    except InvalidAudio as exc:
        raise MediaError(f"the file is not an MP3: {exc}") from None


class MediaFiles:
    """Audio files under ``<data dir>/media``, named by unguessable keys."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "media"

    def path(self, key: str) -> Path | None:
        """The file of ``key``, or None when the key is malformed or unknown."""
        if not KEY.match(key):
            return None
        path = self.root / f"{key}.mp3"
        return path if path.is_file() else None

    def write(self, data: bytes) -> str:
        """Store ``data`` under a new key (written whole, then renamed into place)."""
        key = secrets.token_urlsafe(24)
        private_dir(self.root)
        temporary = self.root / f".{key}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(data)
        os.replace(temporary, self.root / f"{key}.mp3")
        return key
