"""Bearer tokens: from the settings, or generated on first start and kept in the data dir."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import replace
from pathlib import Path

from config.settings import Settings
from gateway.datadir import private_dir

TOKENS_FILE = "tokens.json"


class TokensError(RuntimeError):
    """The tokens file cannot be read or written; the message is one line for the operator."""


def ensure_tokens(settings: Settings) -> tuple[Settings, bool]:
    """Fill in missing tokens; True when they were generated now (print them, once).

    Tokens set in the environment win; otherwise the data dir's file is reused, so a
    restart keeps the tokens the CRM was configured with.
    """
    if settings.admin_token and settings.api_token:
        return settings, False
    path = Path(settings.data_dir) / TOKENS_FILE
    try:
        stored = read_stored(path)
        generated = not {"admin", "api"} <= stored.keys()
        if generated:
            stored = {"admin": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32), **stored}
            private_dir(path.parent)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(stored, handle)
    except OSError as exc:
        raise TokensError(f"CALLGATE_DATA_DIR: cannot keep tokens in {path}: {exc.strerror or exc}") from None
    filled = replace(
        settings,
        admin_token=settings.admin_token or stored["admin"],
        api_token=settings.api_token or stored["api"],
    )
    return filled, generated


def read_stored(path: Path) -> dict[str, str]:
    """The tokens kept in ``path`` ({} when there is no such file); never creates any."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise TokensError(f"{path} is not a tokens file; fix or delete it to generate new tokens") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and len(v) >= 16 for v in data.values()):
        raise TokensError(f"{path} is not a tokens file; fix or delete it to generate new tokens")
    return data
