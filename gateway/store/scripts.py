"""Lua scripts run many at a time: one pipelined round trip for a batch of calls, or one
command for a batch (``Looped``).

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
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from gateway.store.nodes import pipelined, raise_first

Call = tuple[Sequence[str], Sequence[str | int | float]]  # (keys, args)


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
    """One try of each call, errors as replies: in one pipelined round trip (on a cluster,
    one to each shard owning some of the calls' keys, at once)."""
    if len(calls) == 1 and not isinstance(redis, RedisCluster):
        # The usual batch of a Looped script on one Redis: a pipeline's own plumbing cost
        # more CPU than the command's.
        ((keys, args),) = calls
        try:
            return [await redis.evalsha(script.sha, len(keys), *keys, *args)]
        except ResponseError as exc:
            return [exc]
    async with pipelined(redis) as pipe:
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


# Calls of a ``Looped`` script per command at most, so one command never holds Redis long.
_LOOPED_MOST = 256


def looped_lua(body: str) -> str:
    """A script running ``body`` once per call it carries, in order, and returning their
    replies as one list. ``body`` is a Lua function body of ``K`` and ``A``, one call's keys
    and arguments (as ``KEYS`` and ``ARGV`` would be); it must not return nil (a hole ends
    Redis's list). ARGV[1..3]: the number of calls, keys per call, arguments per call; then
    every call's arguments, and KEYS every call's keys.

    A call that raises an error has it as its reply, and the calls after it still run: one
    call's failure is its own (what it wrote before failing stays, as in any script).
    """
    return f"""
local function one(K, A)
{body}
end
local n, nk, na = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {{}}
for i = 0, n - 1 do
  local K, A = {{}}, {{}}
  for j = 1, nk do K[j] = KEYS[i * nk + j] end
  for j = 1, na do A[j] = ARGV[3 + i * na + j] end
  local ok, reply = pcall(one, K, A)
  if ok then
    out[i + 1] = reply
  elseif type(reply) == 'table' and reply.err then
    out[i + 1] = reply
  else
    out[i + 1] = redis.error_reply(tostring(reply))
  end
end
return out
"""


def _looped(calls: Sequence[Call], cluster: bool) -> tuple[list[list[int]], list[Call]]:
    """The commands of a looped script carrying ``calls``, and the calls each carries (their
    places in ``calls``): consecutive calls of one slot with as many keys and arguments go
    together, so a slot's calls still run in their order (its commands go to its node in
    one pipeline)."""
    chunks: list[list[int]] = []
    open_chunk: dict[int, tuple[tuple[int, int], list[int]]] = {}  # per slot: its last chunk's shape
    for i, (keys, args) in enumerate(calls):
        slot = key_slot(keys[0].encode()) if cluster and keys else 0
        shape = (len(keys), len(args))
        last = open_chunk.get(slot)
        if last is None or last[0] != shape or len(last[1]) == _LOOPED_MOST:
            last = open_chunk[slot] = (shape, [])
            chunks.append(last[1])
        last[1].append(i)
    commands: list[Call] = []
    for chunk in chunks:
        keys, args = calls[chunk[0]]
        flat_keys = [key for i in chunk for key in calls[i][0]]
        flat_args: list[str | int | float] = [len(chunk), len(keys), len(args)]
        flat_args.extend(arg for i in chunk for arg in calls[i][1])
        commands.append((flat_keys, flat_args))
    return chunks, commands


class Looped:
    """Many calls of one script sent as few commands as Redis allows: on one Redis, every
    call of a batch in one command; on Redis Cluster, one command per slot (each call's keys
    must share a slot, as any script's do there). Per call this saves the command's
    encoding, reply and round-trip plumbing, which cost far more than the Lua loop.

    Scripts do not roll back: when a call fails, the others have run, so the calls must be
    safe to run again (the batch's caller retries them).
    """

    def __init__(self, redis: Redis, body: str) -> None:
        self._redis = redis
        self._script = redis.register_script(looped_lua(body))
        self._cluster = isinstance(redis, RedisCluster)

    async def __call__(self, calls: Sequence[Call]) -> list[Any]:
        """The reply of each call, in order; raises the first error met (every call has run)."""
        return raise_first(await self.replies(calls))

    async def replies(self, calls: Sequence[Call]) -> list[Any]:
        """The reply of each call, in order, a call's error as its reply (a command's error,
        when it failed as a whole, as the reply of each of its calls)."""
        chunks, commands = _looped(calls, self._cluster)
        replies: list[Any] = [None] * len(calls)
        for chunk, reply in zip(chunks, await run_many(self._redis, self._script, commands), strict=True):
            for place, i in enumerate(chunk):
                replies[i] = _as_raised(reply if isinstance(reply, Exception) else reply[place])
        return replies


def _as_raised(reply: Any) -> Any:
    """A call's reply; its error as a bare command would have raised it. Redis 6.2 hands a
    script's error back as text that carries Redis's own error ("@user_script: 20: -READONLY
    ...", from ``pcall``; "ERR Error running script ... -READONLY ..." when the whole
    command failed), which redis-py reads as a plain ResponseError (7.x keeps the error's
    own code first, which redis-py reads as its class): a replica's refusal is an outage
    (READONLY), not a defect."""
    if isinstance(reply, ResponseError) and not isinstance(reply, ReadOnlyError) and "-READONLY " in str(reply):
        return ReadOnlyError(str(reply))
    return reply


class Batched:
    """Calls of one looped script (``body``, as ``Looped``'s) from concurrent requests, sent
    together: the calls queued in one turn of the event loop go out as ``Looped`` commands,
    in one pipelined round trip. Each caller gets its own call's reply or error; only a
    command that fails as a whole (Redis gone, out of memory) fails all of its callers.

    Each turn's calls go at once, whatever is still out: measured, waiting for the round
    trip out to gather more per command gained nothing, and it made every webhook wait
    behind a send to a Redis that stopped answering (its timeouts, then their own).
    """

    def __init__(self, redis: Redis, body: str) -> None:
        self._looped = Looped(redis, body)
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
            replies = await self._looped.replies([call for call, _ in queue])
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
