"""The provider client of each configured provider, built on first use and rebuilt when an
admin changes its record."""

from __future__ import annotations

from config.lines import Provider, ProviderKind
from gateway.providers import CallProvider, PlacementError
from gateway.providers.sandbox import Sandbox
from gateway.providers.twilio import Twilio
from gateway.store import Store

# The kinds robocalls can be placed through.
CALLING = frozenset({ProviderKind.SANDBOX, ProviderKind.TWILIO})
# The kinds SMS can be sent through.
TEXTING = frozenset({ProviderKind.SANDBOX, ProviderKind.TWILIO})


class Providers:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._clients: dict[str, tuple[Provider, CallProvider]] = {}

    async def get(self, name: str) -> CallProvider | None:
        """The client for provider ``name``; None when no such provider is configured."""
        record = await self._store.providers.get(name)
        if record is None:
            return None
        cached = self._clients.get(name)
        if cached is not None and cached[0] == record:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        client = self._build(name, record)
        self._clients[name] = (record, client)
        return client

    def _build(self, name: str, record: Provider) -> CallProvider:
        if record.kind is ProviderKind.SANDBOX:
            return Sandbox(name, self._store)
        if record.kind is ProviderKind.TWILIO:
            return Twilio(record.credentials)
        raise PlacementError(f"{record.kind} providers cannot place robocalls yet", transient=False)

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()
