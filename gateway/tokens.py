"""Bearer tokens: from the settings, or generated on first start and kept in the data dir."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import replace
from pathlib import Path

from config.settings import Settings

TOKENS_FILE = "tokens.json"


def ensure_tokens(settings: Settings) -> tuple[Settings, bool]:
    """Fill in missing tokens; True when they were generated now (print them, once).

    Tokens set in the environment win; otherwise the data dir's file is reused, so a
    restart keeps the tokens the CRM was configured with.
    """
    if settings.admin_token and settings.api_token:
        return settings, False
    path = Path(settings.data_dir) / TOKENS_FILE
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    generated = not {"admin", "api"} <= stored.keys()
    if generated:
        stored = {"admin": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32), **stored}
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle)
    filled = replace(
        settings,
        admin_token=settings.admin_token or stored["admin"],
        api_token=settings.api_token or stored["api"],
    )
    return filled, generated
