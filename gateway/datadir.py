"""The data dir holds secrets (tokens, the embedded Redis's append-only file with provider
auth tokens): owner-only, whatever the umask, and tightened on start if an older version
left it readable."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

# What processes that write into the data dir (the embedded redis-server) run with.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """``path`` created if needed and owner-only (0700), as is each parent it had to create
    (``mkdir(parents=True)`` makes those with the umask's mode: the data dir readable by all
    when a file deep in it came first)."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        missing.mkdir(mode=0o700, exist_ok=True)
        missing.chmod(0o700)
    path.chmod(0o700)
    return path


def tighten(path: Path) -> None:
    """Make ``path`` (when it exists) and everything under it owner-only: 0700 dirs, 0600 files.

    A path we may not change (another owner, a read-only mount) is warned about, not fatal.
    """
    if not path.is_dir():
        return
    try:
        path.chmod(0o700)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                (Path(root) / name).chmod(0o700)
            for name in files:
                file = Path(root) / name
                mode = file.lstat().st_mode
                if stat.S_ISREG(mode) and mode & 0o077:
                    file.chmod(0o600)
    except OSError as exc:
        log.warning("data dir %s cannot be made owner-only: %s", path, exc)
