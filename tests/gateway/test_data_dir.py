"""The data dir holds secrets: it and everything in it are owner-only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.media import MediaFiles
from gateway.store.embedded import EmbeddedRedis
from gateway.tokens import ensure_tokens


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if path.is_dir() or path.is_file():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


@pytest.mark.usefixtures("permissive_umask")
async def test_the_embedded_redis_keeps_its_files_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = EmbeddedRedis(data)
    await server.start()
    try:
        client = Redis.from_url(server.url)
        await client.hset("providers", "tw", '{"auth_token": "secret"}')
        await client.aclose()
    finally:
        await server.stop()
    found = modes(data)
    assert any("appendonly" in name for name in found), found  # the file with the auth tokens
    assert all(mode & 0o077 == 0 for mode in found.values()), {k: oct(v) for k, v in found.items()}


@pytest.mark.usefixtures("permissive_umask")
def test_generated_tokens_live_in_an_owner_only_dir(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    ensure_tokens(Settings(data_dir=data))
    found = modes(data)
    assert found["."] == 0o700 and found["tokens.json"] == 0o600, found


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.usefixtures("permissive_umask")
def test_audio_written_first_makes_the_data_dir_owner_only(tmp_path: Path) -> None:
    """`callgate say` on a fresh machine writes media/ before anything else does."""
    data = tmp_path / "data"
    MediaFiles(data).write(b"ID3 not checked here")
    assert set(modes(data).values()) <= {0o700, 0o600}, modes(data)


def test_start_tightens_what_an_older_version_left_readable(settings: Settings) -> None:
    data = settings.data_dir
    (data / "redis").mkdir(parents=True)
    (data / "redis" / "appendonly.aof").write_text("*3\r\n$4\r\nHSET\r\n")
    data.chmod(0o755)
    (data / "redis").chmod(0o755)
    (data / "redis" / "appendonly.aof").chmod(0o644)
    create_app(settings)
    assert modes(data) == {".": 0o700, "redis": 0o700, "redis/appendonly.aof": 0o600}
