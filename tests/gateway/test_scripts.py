"""Scripts run many at a time: concurrent calls share one round trip, and a Redis that lost
its scripts (restarted, SCRIPT FLUSH) gets them again without a failed call."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from gateway.store.embedded import EmbeddedRedis
from gateway.store.scripts import Batched, run_many

_ECHO = "redis.call('INCR', KEYS[1]) return ARGV[1]"


async def reads_processed(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_concurrent_calls_share_one_round_trip(private_redis: EmbeddedRedis) -> None:
    redis = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        batched = Batched(redis, redis.register_script(_ECHO))
        await batched(["n"], ["warm"])  # loads the script
        before = await reads_processed(redis)
        replies = await asyncio.gather(*(batched(["n"], [str(i)]) for i in range(50)))
        used = await reads_processed(redis) - before
        assert replies == [str(i) for i in range(50)]
        assert await redis.get("n") == "51"
        assert used <= 3, used  # the pipeline (however the server splits its reads) and INFO, not 50
    finally:
        await redis.aclose()


async def test_a_lost_script_is_loaded_again(private_redis: EmbeddedRedis) -> None:
    redis = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        script = redis.register_script(_ECHO)
        assert await run_many(redis, script, [(["n"], ["a"])]) == ["a"]
        await redis.script_flush()
        replies: list[Any] = await run_many(redis, script, [(["n"], ["b"]), (["n"], ["c"])])
        assert replies == ["b", "c"]
        assert await redis.get("n") == "3"  # each call ran once
    finally:
        await redis.aclose()
