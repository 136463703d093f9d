"""Redis clients with timeouts that keep the gateway answering while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import get_node_name
from redis.connection import HiredisRespSerializer
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# What "Redis is not answering" looks like; the HTTP layer turns it into a 503 so a provider
# retries (or uses its fallback URL) instead of getting a 200 for an event we did not store.
# redis-py wraps socket errors in these; a bare OSError is someone else's (a client that
# hung up mid-body), not Redis's. A cluster that lost a master answers CLUSTERDOWN from
# every node until a replica takes over (MASTERDOWN from a replica cut off from its master):
# an outage as well, not a fault of the request. So is a Redis that became a replica (a
# failover demoted it, or REPLICAOF): it refuses every write until it is a master again.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ClusterDownError, ReadOnlyError)

# A client as the stores hold it: redis-py types replies as unions over both decode modes,
# and every client here decodes responses to str, so its replies are read untyped.
DecodedRedis: TypeAlias = Any


def out_of_memory(exc: BaseException) -> bool:
    """Redis at maxmemory refuses writes until memory frees up: as transient as an outage.

    A refused write inside a script arrives as a plain ResponseError naming the OOM.
    """
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)
    )


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def cluster_enabled(url: str, forced: bool | None = None) -> bool:
    """Whether ``url`` names a node of a Redis Cluster: ``forced`` when the settings say,
    else what the node's ``INFO cluster`` says. Raises one of UNAVAILABLE when it does not answer."""
    if forced is not None:
        return forced
    probe = Redis.from_url(url, decode_responses=True, socket_connect_timeout=0.5, socket_timeout=2.0)
    try:
        return str((await probe.info("cluster")).get("cluster_enabled", "0")) == "1"
    finally:
        await probe.aclose()


def connect(url: str, *, blocking: bool = False, cluster: bool = False) -> Redis:
    """A client for request handlers, or (``blocking``) for consumers' blocking reads.

    Request handlers must fail within 2 s when Redis is down (Twilio gives a webhook 15 s
    and we want its retry, not its timeout): short socket timeouts, one quick retry that
    rides over a reconnect after a Redis restart. A Redis that accepts connections but
    never answers costs at most three timeouts (read, reconnect handshake, retried read).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 0.5,
        "socket_timeout": 10.0 if blocking else 0.5,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        "health_check_interval": 30,
    }
    if cluster:
        # The cluster client sends each command to the shard that owns its key (any node of
        # the cluster will do in the URL). Typed as Redis: callgate uses only commands both
        # clients have, each multi-key step inside one hash slot.
        # A MOVED corrects only the slot it names (reinitialize_steps=0): by default redis-py
        # 8.1 closes every connection of the client at each 5th MOVED, under the commands
        # other tasks are sending or waiting on ("Connection closed by server", or an
        # AttributeError on its writer), and until the slot map is read again sends keyed
        # commands to random nodes, whose MOVEDs close everything again.
        cluster_client = RedisCluster.from_url(url, reinitialize_steps=0, **options)
        # Nodes found later are made with the manager's settings, the first ones already.
        settings = cluster_client.nodes_manager.connection_kwargs
        settings["connection_class"] = lean_connection(settings["connection_class"])
        for node in cluster_client.nodes_manager.startup_nodes.values():
            node.connection_class = lean_connection(node.connection_class)
        return cast(Redis, cluster_client)
    client = Redis.from_url(url, retry_on_error=[RedisConnectionError], **options)
    pool = client.connection_pool
    pool.connection_class = lean_connection(pool.connection_class)
    return client


_Connection = TypeVar("_Connection", bound=AbstractConnection)
_SERIALIZER = HiredisRespSerializer()
_lean: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def lean_connection(connection: type[_Connection]) -> type[_Connection]:
    """``connection`` packing commands with hiredis's C packer, as redis-py's synchronous
    connections do but its asyncio ones do not (their packing in Python took half the CPU of
    every pipeline, and 8% of serve's), and writing them without a task of their own."""
    lean = _lean.get(connection)
    if lean is None:
        methods = {"pack_command": _hiredis_pack, "send_packed_command": _send_packed}
        lean = _lean[connection] = type(connection.__name__, (connection,), methods)
    return cast(type[_Connection], lean)


def _hiredis_pack(self: AbstractConnection, *args: Any) -> list[bytes]:
    command = args[0]
    # The usual command straight to the C packer; redis-py's serializer (splitting a name
    # of two words such as "CONFIG GET", copying views) cost twice the packing itself.
    if isinstance(command, str) and " " not in command:
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass  # a memoryview or bytearray, which the serializer copies; None or a bool, which it refuses
    return cast(list[bytes], _SERIALIZER.pack(*args))


async def _send_packed(
    self: AbstractConnection, command: bytes | str | Iterable[bytes], check_health: bool = True
) -> None:
    """redis-py's ``send_packed_command`` without its ``asyncio.wait_for``, which ran every
    write as a task of its own (2-3% of serve's CPU). The transport takes the bytes at once;
    only when the socket could not take them all is there a drain to wait for, and that wait
    is bounded by the socket timeout, as redis-py bounds the whole write."""
    if not self.is_connected:
        await self.connect_check_health(check_health=False)
    if check_health:
        await self.check_health()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    try:
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = cast(asyncio.StreamWriter, self._writer)
        writer.writelines(command)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(self.socket_timeout or None):  # as redis-py: 0 is none
                await writer.drain()
        else:
            await writer.drain()  # raises at once if the connection was lost
    except TimeoutError:
        await self.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        await self.disconnect(nowait=True)
        err_no, message = exc.args[:2] if len(exc.args) > 1 else ("UNKNOWN", exc.args[0] if exc.args else exc)
        raise RedisConnectionError(f"Error {err_no} while writing to socket. {message}.") from exc
    except BaseException:
        # As redis-py: a write cut short leaves the connection unusable.
        await self.disconnect(nowait=True)
        raise


class RedisHealth:
    """This process's view of whether Redis answers, shared by its consumers, timers and
    handlers: one WARNING when it stops answering and one INFO when it is back, instead of
    a line per consumer per retry."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("gateway.redis")
        self._down_since: float | None = None

    def lost(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._log.warning("redis unavailable: %s; webhooks and API calls answer 503 until it is back", exc)

    def back(self) -> None:
        if self._down_since is not None:
            self._log.info("redis is back after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


# Times a step is sent to a node: after ASK, once more on the node the slot is moving to;
# after MOVED, again after reading the slot map. A slot still moving after that fails the
# step (a 500) rather than wait.
_ATTEMPTS = 3
# Waits before a step refused with TRYAGAIN starts over: its keys are split between the two
# nodes of a slot migration, which moves them a batch at a time. Still split after these
# (1.5 s in all), the step fails.
_SPLIT_WAITS = (0.05, 0.1, 0.2, 0.4, 0.75)
# Connections of a node's client: a burst of steps waits for one of them (at most this
# many seconds, then the step fails like an outage) instead of opening a connection each,
# whose connects time out together while the event loop is busy with the burst.
_NODE_CONNECTIONS = 16
_NODE_CONNECTION_WAIT = 1.0


class _NodePipeline(Pipeline):
    """A pipeline on one node. ``asking`` when an ASK named the node: it is importing the
    slot and serves the slot's commands only right after ASKING, which lasts one command,
    or until EXEC when the next is MULTI."""

    asking = False

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        if self.asking:
            await super().immediate_execute_command("ASKING")  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        return await super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def _execute_transaction(self, connection: Connection, commands: Any, raise_on_error: bool) -> Any:
        # Here rather than in execute: after the scripts' checks, and again on its retry.
        if self.asking:
            await connection.send_command("ASKING")
            await connection.read_response()
        return await super()._execute_transaction(connection, commands, raise_on_error)


@dataclass
class _Node:
    """A node's client and how many steps use it: one dropped after a failure is closed when
    its last step ends, not under steps that may still finish on it."""

    client: Redis
    users: int = 0
    dropped: bool = False


def _pool_busy(exc: BaseException) -> bool:
    """Whether an UNAVAILABLE error says only that the client's connections were all busy
    (BlockingConnectionPool raises that from asyncio's timeout): nothing about the node."""
    return isinstance(exc.__cause__, asyncio.TimeoutError)


class Transactions:
    """MULTI/EXEC steps (WATCH ones too) on keys of one hash slot.

    redis-py's cluster client runs each command of its transaction pipeline (queued ones
    too, and the reads after WATCH) in a thread of its own with an event loop of its own:
    it blocks ours and, under concurrency, fails on locks bound to the other loop. On a
    cluster a step runs instead on a plain client of the node that owns the slot (one per
    node, made when first needed, closed by ``aclose``), and follows the cluster when the
    slot moves:

    - ASK (the slot is migrating, the key already gone to the importing node): the step
      runs once more there, each command after ASKING; the slot map is not read again, as
      the slot is still the old node's until the migration ends.
    - MOVED (the node no longer owns the slot): the slot map is read again and the step
      starts over. Steps refused together read it once: one that chose its node before
      the last read only starts over.
    - TRYAGAIN (mid-migration, the step's keys are some on each node): the step starts
      over on the owner a little later, until the keys are together again.
    - A node that does not answer (failover, restart): its client is dropped and the slot
      map read again before the error goes up, so the next step finds the slot's owner.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._nodes: dict[str, _Node] = {}
        self._map_reads = 0
        self._reading_map = asyncio.Lock()

    async def run(self, watch: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` in WATCH/MULTI on ``watch`` until no concurrent writer interferes.

        ``body`` reads after WATCH (immediate mode), then calls ``pipe.multi()`` and queues
        writes; EXEC fails if a watched key changed, and we start over with fresh reads.
        """

        async def watched(pipe: Pipeline) -> T:
            while True:
                try:
                    await pipe.watch(*watch)
                    result = await body(pipe)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

        return await self._on_owner(watch[0], watched)

    async def multi(self, key: str, queue: Callable[[Pipeline], object]) -> list[Any]:
        """The replies of the commands ``queue`` puts on a pipeline for keys in ``key``'s
        slot, run in one MULTI/EXEC."""

        async def queued(pipe: Pipeline) -> list[Any]:
            queue(pipe)
            return await pipe.execute()

        return await self._on_owner(key, queued)

    async def _on_owner(self, key: str, step: Callable[[Pipeline], Awaitable[T]]) -> T:
        cluster = self._redis
        if not isinstance(cluster, RedisCluster):
            async with cluster.pipeline(transaction=True) as pipe:
                return await step(pipe)
        await cluster.initialize()  # the slot map, unless this client has it already
        slot = cluster.keyslot(key)
        asked: str | None = None  # the node an ASK named
        attempt = 1
        waits = iter(_SPLIT_WAITS)
        while True:
            map_reads = self._map_reads
            owner = cluster.nodes_manager.get_node_from_slot(slot)
            address = asked or owner.name
            node = self._node(address, owner)
            node.users += 1
            try:
                pipe = _NodePipeline(node.client.connection_pool, node.client.response_callbacks, True, None)
                pipe.asking = asked is not None
                async with pipe:
                    return await step(pipe)
            except MovedError:
                if attempt == _ATTEMPTS:
                    raise
                asked = None
                await self._read_map(map_reads)
            except AskError as exc:
                if asked is not None or attempt == _ATTEMPTS:
                    raise
                asked = get_node_name(exc.host, exc.port)
            except TryAgainError:
                wait = next(waits, None)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                asked, attempt = None, 0  # from the owner again, with its redirections
            except UNAVAILABLE as exc:
                if not _pool_busy(exc):
                    # A node answering CLUSTERDOWN is alive: its client stays. The map is read
                    # either way (cut off from the majority, a node may not hear of the
                    # failover soon). The step's error goes up; a map no node can give now is
                    # read after a later step fails on the old owner again.
                    if not isinstance(exc, ClusterDownError):
                        self._drop(address, node)
                    with suppress(RedisError):
                        await self._read_map(map_reads)
                raise
            finally:
                await self._release(node)
            attempt += 1

    def _node(self, address: str, like: ClusterNode) -> _Node:
        """The client of the node at ``address``, made with the settings of ``like`` (a
        node the slot map knows; an ASK may name one it does not)."""
        node = self._nodes.get(address)
        if node is None:
            host, port = address.rsplit(":", 1)
            pool = BlockingConnectionPool(
                connection_class=like.connection_class,
                max_connections=_NODE_CONNECTIONS,
                timeout=_NODE_CONNECTION_WAIT,
                **{**like.connection_kwargs, "host": host, "port": int(port)},
            )
            node = self._nodes[address] = _Node(Redis.from_pool(pool))
        return node

    def _drop(self, address: str, node: _Node) -> None:
        # Unless a step that failed on it too has dropped it already, and another has made
        # a client for the node (back after a restart) since.
        if self._nodes.get(address) is node:
            del self._nodes[address]
        node.dropped = True

    async def _release(self, node: _Node) -> None:
        node.users -= 1
        if node.dropped and not node.users:
            # Its node failed: a close that fails too changes nothing for the step.
            with suppress(*UNAVAILABLE):
                await node.client.aclose()

    async def _read_map(self, seen: int) -> None:
        """Read the slot map again, unless it was read since ``seen`` reads."""
        cluster = cast(RedisCluster, self._redis)
        async with self._reading_map:
            if self._map_reads == seen:
                await cluster.nodes_manager.initialize()
                self._map_reads += 1

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            node.dropped = True  # those still in use are closed by their last step
            if not node.users:
                await node.client.aclose()
