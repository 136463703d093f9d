"""Redis clients with timeouts that keep the gateway answering while Redis is away."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AskError, MovedError, OutOfMemoryError, ResponseError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# What "Redis is not answering" looks like; the HTTP layer turns it into a 503 so a provider
# retries (or uses its fallback URL) instead of getting a 200 for an event we did not store.
# redis-py wraps socket errors in these; a bare OSError is someone else's (a client that
# hung up mid-body), not Redis's.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)

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
        return cast(Redis, RedisCluster.from_url(url, **options))
    return Redis.from_url(url, retry_on_error=[RedisConnectionError], **options)


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


# Times a step starts over on a node that no longer owns its slot, each after reading the
# slot map again; a slot still moving after that fails the step (a 500) rather than wait.
_MOVED_ATTEMPTS = 3
# Connections of a node's client: a burst of steps waits for one of them (at most this
# many seconds, then the step fails like an outage) instead of opening a connection each,
# whose connects time out together while the event loop is busy with the burst.
_NODE_CONNECTIONS = 16
_NODE_CONNECTION_WAIT = 1.0


class Transactions:
    """MULTI/EXEC steps (WATCH ones too) on keys of one hash slot.

    redis-py's cluster client runs each command of its transaction pipeline (queued ones
    too, and the reads after WATCH) in a thread of its own with an event loop of its own:
    it blocks ours and, under concurrency, fails on locks bound to the other loop. On a cluster a step runs instead on a plain
    client of the node that owns the slot (one per node, made when first needed, closed by
    ``aclose``). A node that no longer owns it (resharding, failover) answers MOVED or ASK
    to the WATCH, a read or a queued write, so EXEC writes nothing; the slot map is read
    again and the step starts over.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._nodes: dict[str, Redis] = {}

    async def run(self, watch: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` in WATCH/MULTI on ``watch`` until no concurrent writer interferes.

        ``body`` reads after WATCH (immediate mode), then calls ``pipe.multi()`` and queues
        writes; EXEC fails if a watched key changed, and we start over with fresh reads.
        """
        attempt = 1
        while True:
            try:
                async with (await self._client(watch[0])).pipeline(transaction=True) as pipe:
                    while True:
                        try:
                            await pipe.watch(*watch)
                            result = await body(pipe)
                            await pipe.execute()
                            return result
                        except WatchError:
                            continue
            except (MovedError, AskError):
                if attempt == _MOVED_ATTEMPTS or not isinstance(self._redis, RedisCluster):
                    raise
                attempt += 1
                await self._redis.nodes_manager.initialize()

    @asynccontextmanager
    async def pipeline(self, key: str) -> AsyncIterator[Pipeline]:
        """A MULTI/EXEC pipeline for keys in ``key``'s slot, without WATCH: a node that no
        longer owns the slot refuses its commands (MOVED), and EXEC raises that."""
        async with (await self._client(key)).pipeline(transaction=True) as pipe:
            yield pipe

    async def _client(self, key: str) -> Redis:
        cluster = self._redis
        if not isinstance(cluster, RedisCluster):
            return self._redis
        await cluster.initialize()  # the slot map, unless this client has it already
        node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
        client = self._nodes.get(node.name)
        if client is None:
            pool = BlockingConnectionPool(
                connection_class=node.connection_class,
                max_connections=_NODE_CONNECTIONS,
                timeout=_NODE_CONNECTION_WAIT,
                **node.connection_kwargs,
            )
            client = self._nodes[node.name] = Redis.from_pool(pool)
        return client

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for client in nodes:
            await client.aclose()
