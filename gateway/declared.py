"""``callgate apply`` and ``callgate export``: configuration files against a gateway's admin API.

Through the API, not Redis: every rule (references, 409s, credential shapes) is the one the
API enforces, and a file applies the same to a gateway on this host or another.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from config.declared import Change, Current, DeclaredError, export, file_format, parse, plan


class AdminApiError(RuntimeError):
    """The gateway refused a call or could not be reached; the message is one line."""


class AdminApi:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._session.request(method, self._base + path, json=body, headers=self._headers) as resp:
                data = await resp.json(content_type=None) if resp.status != 204 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AdminApiError(f"{method} {self._base}{path}: {exc or type(exc).__name__}") from None
        if resp.status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise AdminApiError(f"{method} {path}: {resp.status} {error.get('message', 'failed')}")
        return data

    async def current(self) -> Current:
        providers = (await self.call("GET", "/v1/providers"))["providers"]
        pipelines = (await self.call("GET", "/v1/pipelines"))["pipelines"]
        lines = (await self.call("GET", "/v1/lines"))["lines"]
        triggers = (await self.call("GET", "/v1/triggers"))["triggers"]
        return Current(
            providers={p["name"]: p for p in providers},
            pipelines={p["id"]: p for p in pipelines},
            lines={line["number"]: line for line in lines},
            triggers=triggers,
        )


async def apply_file(
    base_url: str, token: str, path: Path, environ: Mapping[str, str], out: TextIO, *, dry_run: bool = False
) -> list[Change]:
    """Print the changes ``path`` makes to the gateway, then (unless ``dry_run``) make them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeclaredError(f"{path}: {exc.strerror or exc}") from None
    declared = parse(text, file_format(path.name), environ)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        api = AdminApi(session, base_url, token)
        changes = plan(declared, await api.current(), token)
        for change in changes:
            print(change.summary, file=out)
        if not changes:
            print("no changes: the gateway already holds this configuration", file=out)
        if dry_run or not changes:
            return changes
        for change in changes:
            await api.call(change.method, change.path, change.body)
        print(f"applied {len(changes)} change(s)", file=out)
    return changes


async def exported(base_url: str, token: str) -> dict[str, Any]:
    """The gateway's configuration as a file declares it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        return export(await AdminApi(session, base_url, token).current())
