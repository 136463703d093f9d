"""Settings: the environment (``CALLGATE_*``) over an optional TOML file over defaults.

Loaded once at start into a frozen object; a bad value stops the process with one line
naming the setting, so a typo never becomes a half-working gateway.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "CALLGATE_"
CONFIG_FILE_VAR = "CALLGATE_CONFIG"


# Characters of a bearer token below which it is called guessable at start (the generated
# ones are far longer).
STRONG_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """A setting has a value callgate cannot use; the message names the variable."""


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("not a boolean (true/false)")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("not a whole number") from None


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("not a port (0-65535)")
    return value


def _positive(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not 0 < value <= 3600:
        raise ValueError("must be more than 0 and at most 3600")
    return value


def _duration(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise ValueError("must be more than 0")
    return value


def _non_negative(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("not an http(s) URL")
    return raw.rstrip("/")


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("not a redis://, rediss:// or unix:// URL")
    return raw


def _auto_bool(raw: str) -> bool | None:
    """``auto`` (or empty) is None: detect it."""
    return None if raw.strip().lower() in {"", "auto"} else _bool(raw)


def _log_format(raw: str) -> str:
    chosen = raw.strip().lower()
    if chosen not in {"text", "json"}:
        raise ValueError("not one of text, json")
    return chosen


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("not one of DEBUG, INFO, WARNING, ERROR")
    return level


def _key_prefix(raw: str) -> str:
    if "{" in raw or "}" in raw:
        # Redis hashes the first {...} of a key: a tag in the prefix would put every key in
        # one slot, on one shard of a cluster.
        raise ValueError("must not contain { or }: callgate tags each key with its partition itself")
    return raw


def _partitions(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 1024:
        raise ValueError("must be 1 to 1024")
    return value


def _words(raw: str) -> tuple[str, ...]:
    words = tuple(word.strip() for word in raw.split(",") if word.strip())
    if any(" " in word for word in words):
        raise ValueError("keywords are single words, separated by commas")
    return words


def _secret(default: str | None = None) -> Any:
    return field(default=default, repr=False)


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = _secret()  # may carry a password (redis://:pw@host)
    redis_cluster: bool | None = None  # None: ask the node (INFO cluster) at start
    data_dir: Path = Path("callgate-data")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    admin_token: str | None = _secret()
    api_token: str | None = _secret()
    media_allow_private: bool = False
    # No hash tag of its own (refused): keys carry their partition's tag after it, so they
    # spread over a Redis Cluster's shards while each multi-key step stays in one slot.
    key_prefix: str = "callgate:"
    # Keys are split into this many partitions (an item's by its id, a customer's events by
    # the number), each under its own hash tag: on Redis Cluster they spread over the shards.
    partitions: int = 16
    max_body_bytes: int = 1024 * 1024
    consumers: int = 8
    webhook_tolerance_seconds: int = 300
    claim_idle_seconds: int = 30
    max_deliveries: int = 5
    timeline_max: int = 1000
    dedup_ttl_seconds: int = 7 * 24 * 3600
    feed_max: int = 10000
    # Client connections at once (lowered to fit the process's file limit), and how long one
    # may sit without sending a byte while no request of it is being handled.
    max_connections: int = 10000
    idle_timeout_seconds: int = 15
    dead_letters_max: int = 10000
    lead_ttl_seconds: int = 0  # 0: leads never expire
    log_level: str = "INFO"
    log_format: str = "text"
    access_log: bool = True
    # Provider failures that may pass (timeouts, 5xx, 429): tries before the job fails, and
    # the first backoff, doubled on each try.
    job_max_tries: int = 5
    job_retry_seconds: float = 2.0
    tts_workers: int = 2
    # Events to the CRM: the first retry after this, doubled per failure up to the max
    # (with jitter); given up (dead-lettered) once an event failed for the window; each
    # attempt times out; at most this many attempts in flight per subscription and process.
    outbox_retry_seconds: float = 1.0
    outbox_retry_max_seconds: float = 3600.0
    outbox_window_seconds: float = 24 * 3600.0
    outbox_timeout_seconds: float = 10.0
    outbox_concurrency: int = 4
    gtts_url: str = "https://translate.google.com/_/TranslateWebserverUi/data/batchexecute"
    # Inbound SMS keywords that opt a number out of / back into SMS and robocalls; empty:
    # sms.consent's defaults (Twilio's plus Spanish, Portuguese and German).
    stop_words: tuple[str, ...] = ()
    # An SMS conversation quiet this long is over: the customer's next message opens a new
    # one (and gets the welcome or after-hours reply again).
    conversation_idle_seconds: int = 24 * 3600
    start_words: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def short_tokens(self) -> list[str]:
        """The token settings set shorter than STRONG_TOKEN_LENGTH. They are accepted (a
        test rig's ``admin`` must start), and warned about: they can be guessed."""
        tokens = {"admin_token": self.admin_token, "api_token": self.api_token}
        return [
            ENV_PREFIX + name.upper()
            for name, token in tokens.items()
            if token is not None and len(token) < STRONG_TOKEN_LENGTH
        ]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _redis_url,
    "redis_cluster": _auto_bool,
    "data_dir": Path,
    "host": str,
    "port": _port,
    "public_url": _url,
    "admin_token": str,
    "api_token": str,
    "media_allow_private": _bool,
    "key_prefix": _key_prefix,
    "partitions": _partitions,
    "max_body_bytes": _positive,
    "consumers": _positive,
    "webhook_tolerance_seconds": _positive,
    "claim_idle_seconds": _positive,
    "max_deliveries": _positive,
    "timeline_max": _positive,
    "dedup_ttl_seconds": _positive,
    "feed_max": _positive,
    "max_connections": _positive,
    "idle_timeout_seconds": _positive,
    "dead_letters_max": _positive,
    "lead_ttl_seconds": _non_negative,
    "log_level": _log_level,
    "log_format": _log_format,
    "access_log": _bool,
    "job_max_tries": _positive,
    "job_retry_seconds": _seconds,
    "tts_workers": _positive,
    "outbox_retry_seconds": _seconds,
    "outbox_retry_max_seconds": _seconds,
    "outbox_window_seconds": _duration,
    "outbox_timeout_seconds": _seconds,
    "outbox_concurrency": _positive,
    "gtts_url": _url,
    "stop_words": _words,
    "conversation_idle_seconds": _positive,
    "start_words": _words,
}


def _from_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{CONFIG_FILE_VAR} file {str(path)!r} cannot be read: {exc}") from exc
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise SettingsError(f"{CONFIG_FILE_VAR} file {str(path)!r} has unknown setting {unknown[0]!r}")
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in data.items()}


def load_settings(environ: Mapping[str, str], file: Path | None = None) -> Settings:
    """Build Settings from ``environ`` (wins) and the TOML ``file`` (or ``$CALLGATE_CONFIG``).

    The file uses the setting names without the prefix, in lower case (``port = 9000``).
    """
    file = file or (Path(environ[CONFIG_FILE_VAR]) if environ.get(CONFIG_FILE_VAR) else None)
    raw = _from_file(file) if file else {}
    for name in _PARSERS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            raw[name] = environ[env_name]
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name in {"admin_token", "api_token", "redis_url", "public_url"} and value == "":
            continue
        try:
            values[name] = _PARSERS[name](value)
        except ValueError as exc:
            # A malformed URL's password cannot be told from the rest: none of it is shown.
            shown = "***" if name.endswith("token") or name == "redis_url" else value
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} has value {shown!r}: {exc}") from None
    return Settings(**values)
