"""Lua scripts run many at a time: one pipelined round trip for a batch of calls.

redis-py's pipelines check that their scripts are loaded with a SCRIPT EXISTS round trip
before each execute; here the calls go out as EVALSHA at once, and only the calls that met
NOSCRIPT (a Redis restarted or flushed) are sent again after loading the script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[Sequence[str], Sequence[str | int | float]]  # (keys, args)
# Script calls of one batch in flight at once on Redis Cluster: well under the client's 100
# connections per node, with room for the other requests of the process.
_CLUSTER_CONCURRENCY = 32


async def run_many(redis: Redis, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """The reply of each call, in order; a call that failed has its exception as its reply.

    Calls that met NOSCRIPT go again once the script is loaded, by one SCRIPT LOAD (to every
    primary of a cluster), not one per call: many at once trip up the cluster client.
    """
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        results = await _send(redis, script, [calls[i] for i in todo])
        for i, result in zip(todo, results, strict=True):
            replies[i] = result
        todo = [i for i, result in zip(todo, results, strict=True) if isinstance(result, NoScriptError)]
        if not todo or attempt:
            break
        script.sha = str(await redis.script_load(script.script))
    return replies


async def _send(redis: Redis, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """One try of each call, errors as replies: pipelined in one round trip on one Redis."""
    if isinstance(redis, RedisCluster):
        # redis-py's cluster pipelines refuse EVALSHA: the calls go out concurrently instead,
        # each to the shard owning its keys, a bounded number at a time (the cluster client
        # fails a command outright when a node's connections are all taken).
        limit = asyncio.Semaphore(_CLUSTER_CONCURRENCY)

        async def call(keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            async with limit:
                return await redis.evalsha(script.sha, len(keys), *keys, *args)

        return list(await asyncio.gather(*(call(keys, args) for keys, args in calls), return_exceptions=True))
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def raise_first(replies: list[Any]) -> list[Any]:
    """``replies`` unless one of them is an error, which is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class Batched:
    """Calls of one script from concurrent requests, sent together: the calls queued in one
    turn of the event loop go out in one pipelined round trip."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((keys, args), future))
        if len(self._queue) == 1:
            # After the handlers that run in this turn have queued their calls too.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(queue))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queue: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await run_many(self._redis, self._script, [call for call, _ in queue])
        except asyncio.CancelledError:
            for _, future in queue:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every caller gets the error
            replies = [exc] * len(queue)
        for (_, future), reply in zip(queue, replies, strict=True):
            if future.done():  # its request went away meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
