"""Commands sent straight to the Redis Cluster nodes that own their keys: one pipelined
round trip per node, the nodes at once.

Sent one by one through redis-py's cluster client, each command costs far more CPU than
Redis takes to run it (routing, retry and timeout plumbing, a round trip of its own), and
the cluster pipeline resolves a command policy and a node per command, then closes every
connection of the client when a node fails it. Here the slot map the client holds routes
each command, and each node's share goes out as one pipeline on a connection of that
node's own pool. Only what a node refused as no longer its slot's (MOVED, ASK, TRYAGAIN)
or did not answer goes again, one by one, through the cluster client, which follows the
redirection or reads the slot map again as it does for any command it sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.typing import EncodableT

from gateway.store.connection import UNAVAILABLE

# A command, and the key whose slot's owner runs it (None: any node will do).
Routed = tuple[str | None, Sequence[EncodableT]]

# What the cluster client knows how to send again: the slot moved (or is moving), the
# cluster is failing over, or the node did not answer.
_SEND_AGAIN = (MovedError, AskError, TryAgainError, ClusterDownError, *UNAVAILABLE)
# Commands sent again at once through the cluster client: well under its connections per
# node, with room for the other requests of the process.
_AGAIN_AT_ONCE = 32


async def on_owners(cluster: RedisCluster, commands: Sequence[Routed]) -> list[Any]:
    """The reply of each command, in order, its error as its reply."""
    await cluster.initialize()  # the slot map, after a failure dropped it
    queued = [PipelineCommand(position, *args) for position, (_, args) in enumerate(commands)]
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    again: list[PipelineCommand] = []
    for command, (key, _) in zip(queued, commands, strict=True):
        if key is None:
            again.append(command)
            continue
        node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
        by_node.setdefault(node.name, (node, []))[1].append(command)
    await asyncio.gather(*(_pipelined(node, share) for node, share in by_node.values()))
    again += [command for command in queued if isinstance(command.result, _SEND_AGAIN)]
    if again:
        limit = asyncio.Semaphore(_AGAIN_AT_ONCE)

        async def one(command: PipelineCommand) -> None:
            async with limit:
                try:
                    command.result = await cluster.execute_command(*command.args)
                except Exception as exc:  # the caller gets each command's error as its reply
                    command.result = exc

        await asyncio.gather(*(one(command) for command in again))
    return [command.result for command in queued]


async def _pipelined(node: ClusterNode, share: list[PipelineCommand]) -> None:
    """``share`` in one round trip to ``node``: each command's reply or error in its result."""
    try:
        await node.execute_pipeline(share)
    except Exception as exc:  # a connection that failed (or none free) fails the node's share
        for command in share:
            command.result = exc
