"""Scripts run many at a time: concurrent calls share one round trip, a looped script's
calls share one command, and a Redis that lost its scripts (restarted, SCRIPT FLUSH) gets
them again without a failed call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.store.embedded import EmbeddedRedis
from gateway.store.scripts import Batched, Looped, run_many

_ECHO = "redis.call('INCR', KEYS[1]) return ARGV[1]"


@pytest.fixture
async def redis(private_redis: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url, decode_responses=True)
    yield client
    await client.aclose()


async def reads_processed(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_concurrent_calls_share_one_round_trip(redis: Redis) -> None:
    batched = Batched(redis, "redis.call('INCR', K[1]) return A[1]")
    await batched(["n"], ["warm"])  # loads the script
    await redis.config_resetstat()
    before = await reads_processed(redis)
    replies = await asyncio.gather(*(batched(["n"], [str(i)]) for i in range(50)))
    used = await reads_processed(redis) - before
    commands = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert replies == [str(i) for i in range(50)]
    assert await redis.get("n") == "51"
    assert used <= 3, used  # the pipeline (however the server splits its reads) and INFO, not 50
    assert commands == 1  # one looped command carried the 50 calls


async def test_a_failing_call_fails_its_own_caller_only(redis: Redis) -> None:
    batched = Batched(redis, "redis.call('INCR', K[1]) if A[1] == 'bad' then error('refused') end return A[1]")
    calls = [batched(["n"], ["a"]), batched(["n"], ["bad"]), batched(["n"], ["c"]), batched(["m", "x"], ["d"])]
    replies = await asyncio.gather(*calls, return_exceptions=True)
    assert [replies[0], replies[2], replies[3]] == ["a", "c", "d"]
    assert isinstance(replies[1], ResponseError) and "refused" in str(replies[1])
    # Scripts do not roll back: the failing call's INCR, before its error, stays.
    assert (await redis.get("n"), await redis.get("m")) == ("3", "1")


async def test_calls_of_other_shapes_keep_their_order_and_their_replies(redis: Redis) -> None:
    """A call of another shape between two calls of one shape splits their command: one
    customer's webhooks are stored in the order they were accepted."""
    batched = Batched(redis, "redis.call('RPUSH', K[1], A[1]) return A[#A]")
    calls = [
        batched(["order"], ["first", "reply 1"]),
        batched(["order"], ["second"]),
        batched(["order"], ["third", "reply 3"]),
    ]
    assert await asyncio.gather(*calls) == ["reply 1", "second", "reply 3"]
    assert await redis.lrange("order", 0, -1) == ["first", "second", "third"]


async def test_a_lost_script_is_loaded_again(redis: Redis) -> None:
    script = redis.register_script(_ECHO)
    assert await run_many(redis, script, [(["n"], ["a"])]) == ["a"]
    await redis.script_flush()
    replies: list[Any] = await run_many(redis, script, [(["n"], ["b"]), (["n"], ["c"])])
    assert replies == ["b", "c"]
    await redis.script_flush()
    assert await run_many(redis, script, [(["n"], ["d"])]) == ["d"]  # one call: one command, no pipeline
    assert await redis.get("n") == "4"  # each call ran once


async def test_a_single_calls_error_is_its_reply(redis: Redis) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    (reply,) = await run_many(redis, script, [(["n"], ["not a number"])])
    assert isinstance(reply, ResponseError) and "not an integer" in str(reply)
    assert await run_many(redis, script, [(["n"], ["2"])]) == [2]


async def test_looped_calls_go_in_one_command_and_reply_in_order(redis: Redis) -> None:
    looped = Looped(redis, "redis.call('INCR', K[1]) return {A[1], redis.call('GET', K[2])}")
    await redis.set("x", "here")
    await looped([(["n0", "x"], ["warm"])])  # loads the script
    await redis.config_resetstat()
    calls = [([f"n{i % 3}", "x" if i % 2 else "gone"], [str(i)]) for i in range(600)]
    replies = await looped(calls)
    commands = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert replies == [[str(i), "here" if i % 2 else None] for i in range(600)]
    assert [await redis.get(f"n{i}") for i in range(3)] == ["201", "200", "200"]
    assert commands == 3  # 600 calls, at most 256 per command
    assert await looped([]) == []


async def test_a_failing_looped_call_raises(redis: Redis) -> None:
    looped = Looped(redis, "return redis.call('INCRBY', K[1], A[1])")
    with pytest.raises(ResponseError):
        await looped([(["n"], ["1"]), (["n"], ["not a number"]), (["n"], ["2"])])
    assert await redis.get("n") == "3"  # scripts do not roll back, and every other call ran
