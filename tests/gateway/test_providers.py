"""The provider registry: one client per provider record, each closed once it is replaced."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from config.lines import Provider, ProviderKind
from config.settings import Settings
from gateway.providers import CallProvider
from gateway.providers.registry import Providers
from gateway.store import Store
from gateway.store.records import Snapshots
from tests.support import eventually


class Held:
    """A provider client whose close waits for ``released``, as an HTTP session's close
    waits for its connections."""

    def __init__(self, released: asyncio.Event) -> None:
        self.released = released
        self.closing = 0
        self.closed = 0

    async def close(self) -> None:
        self.closing += 1
        await self.released.wait()
        self.closed += 1


async def test_a_get_while_the_replaced_client_closes_shares_the_new_one(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(redis, settings, Snapshots())
    released = asyncio.Event()
    built: list[Held] = []

    def build(self: Providers, name: str, record: Provider) -> CallProvider:
        built.append(Held(released))
        return built[-1]  # type: ignore[return-value]

    monkeypatch.setattr(Providers, "_build", build)
    providers = Providers(store, settings.base_url)
    await store.providers.put("sb", Provider(kind=ProviderKind.SANDBOX))
    await providers.get("sb")
    old = built[0]
    await store.providers.put("sb", Provider(kind=ProviderKind.SANDBOX, calls_per_second=2))
    replacing = asyncio.create_task(providers.get("sb"))

    async def closing() -> bool:
        return old.closing == 1

    await eventually(closing)
    meanwhile = asyncio.create_task(providers.get("sb"))

    async def settled() -> bool:
        return meanwhile.done() or old.closing > 1  # it took a client, or it is closing the old one too

    await eventually(settled)
    released.set()
    one, other = await asyncio.gather(replacing, meanwhile)

    new: object = built[-1]
    assert one is other is new
    await providers.close()
    assert [(client.closing, client.closed) for client in built] == [(1, 1), (1, 1)]  # none dropped unclosed
