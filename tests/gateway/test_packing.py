"""Commands are packed by hiredis's C packer, into the bytes redis-py's Python packer makes,
and written as redis-py writes them, within the socket timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.connection import connect, lean_connection
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
    python, packing = Connection(), lean_connection(Connection)()
    assert b"".join(packing.pack_command(*command)) == b"".join(python.pack_command(*command))


def test_what_redis_py_refuses_is_refused() -> None:
    with pytest.raises(DataError):
        lean_connection(Connection)().pack_command("SET", "k", None)  # type: ignore[arg-type]  # what it refuses


async def test_the_clients_connections_are_lean(private_redis: EmbeddedRedis) -> None:
    redis = connect(private_redis.url)  # a unix socket: its kind of connection is kept
    try:
        kind = redis.connection_pool.connection_class
        assert kind is lean_connection(UnixDomainSocketConnection)
        assert issubclass(kind, UnixDomainSocketConnection)
        assert kind.pack_command is not UnixDomainSocketConnection.pack_command
        assert kind.send_packed_command is not UnixDomainSocketConnection.send_packed_command
        assert await redis.set("packed", "é") and await redis.get("packed") == "é"
    finally:
        await redis.aclose()


async def test_a_write_the_server_does_not_read_times_out_and_drops_the_connection() -> None:
    # A peer that answers the handshake's commands (HELLO, CLIENT SETINFO: short, without a
    # "*" in their arguments) with OK, then reads no more: the sockets' buffers fill, and
    # the big write must wait.
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while (chunk := await reader.read(1024)) and len(chunk) < 1024:
            writer.write(b"+OK\r\n" * chunk.count(b"*"))

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = lean_connection(Connection)(port=port, socket_timeout=0.3)
    try:
        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        with pytest.raises(RedisTimeoutError, match="Timeout writing"):
            await asyncio.wait_for(connection.send_packed_command(b"x" * 64 * 2**20, check_health=False), 10)
        assert not connection.is_connected
    finally:
        await connection.disconnect()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
