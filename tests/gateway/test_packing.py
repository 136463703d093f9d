"""Commands are packed by hiredis's C packer, into the bytes redis-py's Python packer makes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from gateway.store.connection import connect, hiredis_packing
from gateway.store.embedded import EmbeddedRedis

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "k", "é ünïcode"),
    ("EVALSHA", "a" * 40, 2, "{p}k1", "{p}k2", 1.5, -3, 10**20, b"\x00\xff"),
    ("CONFIG GET", "maxmemory"),  # a name of two words, sent as two arguments
    ("SET", "k", memoryview(b"a view")),
    (b"SET", b"k", bytearray(b"bytes")),
    ("SET", "k", "x" * 10_000),  # over the Python packer's chunk size
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: str(command[0]))
def test_packed_as_redis_py_packs(command: tuple[Any, ...]) -> None:
    python, packing = Connection(), hiredis_packing(Connection)()
    assert b"".join(packing.pack_command(*command)) == b"".join(python.pack_command(*command))


def test_what_redis_py_refuses_is_refused() -> None:
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", None)  # type: ignore[arg-type]  # what it refuses


async def test_the_clients_connections_pack_with_hiredis(private_redis: EmbeddedRedis) -> None:
    redis = connect(private_redis.url)  # a unix socket: its kind of connection is kept
    try:
        kind = redis.connection_pool.connection_class
        assert kind is hiredis_packing(UnixDomainSocketConnection)
        assert issubclass(kind, UnixDomainSocketConnection)
        assert kind.pack_command is not UnixDomainSocketConnection.pack_command
        assert await redis.set("packed", "é") and await redis.get("packed") == "é"
    finally:
        await redis.aclose()
