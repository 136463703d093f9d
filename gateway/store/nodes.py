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
from collections.abc import Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import AskError, ClusterDownError, MaxConnectionsError, MovedError, ReadOnlyError, TryAgainError
from redis.typing import EncodableT

from gateway.store.connection import UNAVAILABLE

# A command, and the key whose slot's owner runs it (None: any node will do); optionally
# the options redis-py's command methods give it (how to read its reply: ``withscores``).
Routed = tuple[str | None, Sequence[EncodableT]] | tuple[str | None, Sequence[EncodableT], Mapping[str, Any]]

# What the cluster client knows how to send again: the slot moved (or is moving), or the
# node did not answer. Not CLUSTERDOWN, after which it closes every connection it has
# (the commands of others in flight on them), nor a node's pool found full: sent again one
# by one, the commands would meet it full again; nor READONLY, which a resend meets again
# (a replica of a cluster answers MOVED, so only a node demoted outside it says READONLY).
_SEND_AGAIN = (MovedError, AskError, TryAgainError, *UNAVAILABLE)
_NOT_AGAIN = (ClusterDownError, MaxConnectionsError, ReadOnlyError)
# Slots whose commands are sent again at once through the cluster client: well under its
# connections per node, with room for the other requests of the process.
_AGAIN_AT_ONCE = 32


async def on_owners(cluster: RedisCluster, commands: Sequence[Routed]) -> list[Any]:
    """The reply of each command, in order, its error as its reply."""
    await cluster.initialize()  # the slot map, after a failure dropped it
    queued = [
        PipelineCommand(position, *routed[1], **(routed[2] if len(routed) > 2 else {}))
        for position, routed in enumerate(commands)
    ]
    slots = [None if key is None else cluster.keyslot(key) for key, *_ in commands]
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    for command, slot in zip(queued, slots, strict=True):
        if slot is not None:
            node = cluster.nodes_manager.get_node_from_slot(slot)
            by_node.setdefault(node.name, (node, []))[1].append(command)
    await asyncio.gather(*(_pipelined(node, share) for node, share in by_node.values()))
    # A slot's commands go again one after another, in their order: a SET NX and the GET
    # after it must not swap.
    again: dict[int | None, list[PipelineCommand]] = {}
    for command, slot in zip(queued, slots, strict=True):
        if slot is None or (isinstance(command.result, _SEND_AGAIN) and not isinstance(command.result, _NOT_AGAIN)):
            again.setdefault(slot, []).append(command)
    if again:
        limit = asyncio.Semaphore(_AGAIN_AT_ONCE)

        async def in_order(slot_commands: list[PipelineCommand]) -> None:
            async with limit:
                for command in slot_commands:
                    try:
                        command.result = await cluster.execute_command(*command.args, **command.kwargs)
                    except Exception as exc:  # the caller gets each command's error as its reply
                        command.result = exc

        await asyncio.gather(*(in_order(slot_commands) for slot_commands in again.values()))
    return [command.result for command in queued]


async def _pipelined(node: ClusterNode, share: list[PipelineCommand]) -> None:
    """``share`` in one round trip to ``node``: each command's reply or error in its result."""
    try:
        await node.execute_pipeline(share)
    except Exception as exc:  # a connection that failed (or none free) fails the node's share
        for command in share:
            command.result = exc


def pipelined(redis: Redis) -> Pipeline:
    """A pipeline (not a transaction) of ``redis``: on a cluster, one whose commands go to
    their keys' nodes by ``on_owners`` (each command's keys in one slot, as any command's
    must be there)."""
    if isinstance(redis, RedisCluster):
        return _OwnersPipeline(redis)
    return redis.pipeline(transaction=False)


class _OwnersPipeline(Pipeline):
    """Queues commands as any pipeline does (its command methods build them and the options
    their replies are read with); ``execute`` sends them by ``on_owners``. It never holds a
    connection: it has no pool of its own."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__(cast(ConnectionPool, None), {}, False, None)
        self._cluster = cluster

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        replies = await on_owners(self._cluster, [(_key(args), args, options) for args, options in stack])
        return raise_first(replies) if raise_on_error else replies


def _key(args: Sequence[EncodableT]) -> str | None:
    """The first key of a command (a script's first key), which names its slot."""
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return str(args[3]) if int(args[2]) else None
    return str(args[1]) if len(args) > 1 else None


async def mget(redis: Redis, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys``, None for a missing one: one MGET, or on a cluster one per
    slot, pipelined to each node."""
    if not isinstance(redis, RedisCluster):
        return list(await redis.mget(keys))
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_slot.setdefault(redis.keyslot(key), []).append(i)
    groups = list(by_slot.values())
    replies = await on_owners(redis, [(keys[group[0]], ("MGET", *(keys[i] for i in group))) for group in groups])
    values: list[Any] = [None] * len(keys)
    for group, reply in zip(groups, raise_first(replies), strict=True):
        for i, value in zip(group, reply, strict=True):
            values[i] = value
    return values


def raise_first(replies: list[Any]) -> list[Any]:
    """``replies`` unless one of them is an error, which is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
