"""The provider client of each configured provider, built on first use and rebuilt when an
admin changes its record."""

from __future__ import annotations

from collections.abc import Mapping

from config.lines import Provider, ProviderKind
from gateway.providers import CallProvider
from gateway.providers.sandbox import Sandbox
from gateway.providers.twilio import Twilio
from gateway.providers.voximplant import SERVICE_ACCOUNT, Voximplant
from gateway.store import Store

# The kinds robocalls can be placed through, with the credentials each needs for it beyond
# the ones every provider of the kind has (a Voximplant provider may serve inbound calls only).
CALLING: Mapping[ProviderKind, tuple[str, ...]] = {
    ProviderKind.SANDBOX: (),
    ProviderKind.TWILIO: (),
    ProviderKind.VOXIMPLANT: (SERVICE_ACCOUNT, "rule_id"),
}
# The kinds SMS can be sent through, likewise.
TEXTING: Mapping[ProviderKind, tuple[str, ...]] = {
    ProviderKind.SANDBOX: (),
    ProviderKind.TWILIO: (),
    ProviderKind.VOXIMPLANT: (SERVICE_ACCOUNT,),
}


def unable(record: Provider, able: Mapping[ProviderKind, tuple[str, ...]]) -> str | None:
    """Why ``record`` cannot do what ``able`` lists the kinds and credentials of (None: it can)."""
    if record.kind not in able:
        return f"supported kinds: {', '.join(sorted(able))}"
    missing = [key for key in able[record.kind] if not record.credentials.get(key)]
    return f"it has no credentials {', '.join(missing)}" if missing else None


class Providers:
    def __init__(self, store: Store, base_url: str) -> None:
        self._store = store
        self._base_url = base_url
        self._clients: dict[str, tuple[Provider, CallProvider]] = {}

    async def get(self, name: str) -> CallProvider | None:
        """The client for provider ``name``; None when no such provider is configured."""
        record = await self._store.providers.get(name)
        if record is None:
            return None
        cached = self._clients.get(name)
        if cached is not None and cached[0] == record:
            return cached[1]
        # Replaced before the old one is closed: a concurrent get() meanwhile takes the new
        # client instead of building a twin of its own, which would be dropped unclosed (its
        # HTTP session and sockets left open).
        client = self._build(name, record)
        self._clients[name] = (record, client)
        if cached is not None:
            await cached[1].close()
        return client

    def _build(self, name: str, record: Provider) -> CallProvider:
        if record.kind is ProviderKind.SANDBOX:
            return Sandbox(name, self._store)
        if record.kind is ProviderKind.TWILIO:
            return Twilio(record.credentials)
        return Voximplant(name, record.credentials, self._store, self._base_url)

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()
