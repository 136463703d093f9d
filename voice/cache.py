"""Rendered audio on disk, one MP3 per distinct (engine, voice, language, speed, volume, text).

A campaign that says the same text to ten thousand customers renders it once. File names
are an HMAC of those fields under a secret kept beside the files: stable across restarts
and processes, yet unguessable, so knowing a text does not let anyone fetch (or confirm) a
customer's audio by computing its name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from functools import cached_property
from pathlib import Path

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_SECRET_FILE = ".key"


class RenderCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @cached_property
    def _secret(self) -> bytes:
        path = self.directory / _SECRET_FILE
        if not path.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory)  # created 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            try:
                os.link(temporary, path)  # atomic and refuses to replace: two processes agree on one secret
            except FileExistsError:
                pass
            finally:
                os.unlink(temporary)
        return path.read_bytes()

    def key(self, *fields: str) -> str:
        message = json.dumps(fields, ensure_ascii=False).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def find(self, key: str) -> Path | None:
        """The file for ``key`` if it is rendered; None for a missing or malformed key."""
        if not KEY_PATTERN.fullmatch(key):
            return None
        path = self.directory / f"{key}.mp3"
        return path if path.is_file() else None

    def put(self, key: str, data: bytes) -> Path:
        """Store ``data`` under ``key``; readers see the whole file or none of it."""
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{key}.mp3"
        fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        return path
