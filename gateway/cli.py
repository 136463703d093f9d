"""``callgate``: serve the gateway and administer it. The only place that configures logging."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from config.declared import DeclaredError, environment_references, file_format, render
from config.settings import Settings, SettingsError, load_settings
from gateway import launch
from gateway.app import StartupError
from gateway.declared import AdminApiError, apply_file, exported
from gateway.metrics import Metrics
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.connection import UNAVAILABLE, cluster_enabled, connect, redacted
from gateway.store.embedded import EmbeddedRedisError
from gateway.store.records import Snapshots
from gateway.tokens import TOKENS_FILE, TokensError, ensure_tokens, read_stored
from gateway.workers import EVENT_CONSUMERS, running_workers
from voice.render import Say, renderer_for
from voice.tts import SynthesisFailed, VoiceError, normalise_language

log = logging.getLogger("callgate")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``CALLGATE_LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])


def _announce_tokens(settings: Settings) -> Settings:
    settings, generated = ensure_tokens(settings)
    if generated:
        # Printed once, on the start that created them; later starts reuse the stored ones.
        print(f"callgate: generated tokens (stored in {settings.data_dir / TOKENS_FILE}):", flush=True)
        print(f"  admin token: {settings.admin_token}", flush=True)
        print(f"  api token:   {settings.api_token}", flush=True)
    return settings


def _serve(settings: Settings) -> None:
    access_log = logging.getLogger("gateway.access") if settings.access_log else None
    launch.run(settings, _announce_tokens, access_log)


async def _work(settings: Settings) -> None:
    if not settings.redis_url:
        raise StartupError("CALLGATE_REDIS_URL: a worker shares a Redis with the server; set it")
    try:
        cluster = await cluster_enabled(settings.redis_url, settings.redis_cluster)
    except UNAVAILABLE as exc:
        raise StartupError(
            f"CALLGATE_REDIS_URL: Redis at {redacted(settings.redis_url)} does not answer ({exc})"
        ) from None
    redis = connect(settings.redis_url, blocking=True, cluster=cluster)
    store = Store.open(redis, settings, Snapshots())
    try:
        try:
            await redis.ping()
        except UNAVAILABLE as exc:
            raise StartupError(
                f"CALLGATE_REDIS_URL: Redis at {redacted(settings.redis_url)} does not answer ({exc})"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with running_workers(store, settings, Metrics()):
            launch.tune_garbage_collector()
            log.info(
                "callgate worker started: redis %s, %d event consumer and %d job consumers",
                redacted(settings.redis_url),
                EVENT_CONSUMERS,
                settings.consumers,
            )
            await stop.wait()
    finally:
        await store.aclose()
        await redis.aclose()
    log.info("callgate worker stopped")


def _tokens(settings: Settings) -> int:
    """The tokens a gateway on this data dir uses; never makes any (``serve`` does)."""
    path = settings.data_dir.resolve() / TOKENS_FILE
    stored = read_stored(path)
    shown = []
    for label, name, given in [
        ("admin token:", "admin", settings.admin_token),
        ("api token:  ", "api", settings.api_token),
    ]:
        if given:
            shown.append(f"{label} {given}  (from CALLGATE_{name.upper()}_TOKEN)")
        elif name in stored:
            shown.append(f"{label} {stored[name]}")
    if not shown:
        print(
            f"callgate: no tokens in {path} yet: `callgate serve` generates them on its first start "
            "(or set CALLGATE_ADMIN_TOKEN and CALLGATE_API_TOKEN)",
            file=sys.stderr,
        )
        return 1
    print(f"callgate: tokens of the data dir {path.parent}:")
    for line in shown:
        print(line)
    return 0


def _say(settings: Settings, args: argparse.Namespace) -> None:
    say = Say(args.text, args.language, args.engine, args.voice, args.speed, args.volume)
    speech = Speech(renderer_for(settings), settings.tts_workers)
    try:
        rendered = asyncio.run(speech.render(say))
    finally:
        speech.close()
    shutil.copyfile(rendered.path, args.output)
    how = "from the cache" if rendered.cached else "rendered"
    print(f"{args.output}: engine={rendered.engine} voice={rendered.voice} ({how}, key {rendered.key})")
    if rendered.note:
        print(f"note: {rendered.note}")


def _voices(settings: Settings, args: argparse.Namespace) -> None:
    base = normalise_language(args.language).split("-")[0] if args.language else None
    print("default engine: piper where it has a voice for the language, else espeak-ng")
    for engine, voices in renderer_for(settings).voices().items():
        if args.engine not in (None, engine):
            continue
        for voice in voices:
            if base is None or any(tag.split("-")[0] == base for tag in voice.languages):
                print(f"{engine:<10} {voice.id:<28} {' '.join(voice.languages):<24} {voice.description}")


def _admin_url(settings: Settings, given: str | None) -> str:
    """The gateway to administer: ``--url``, else this host's gateway as configured."""
    if given:
        return given
    host = settings.host.strip("[]")
    host = "127.0.0.1" if host in {"", "0.0.0.0"} else "[::1]" if host == "::" else settings.host
    return f"http://{host}:{settings.port}"


def _admin_token(settings: Settings) -> str:
    token = settings.admin_token or read_stored(settings.data_dir / TOKENS_FILE).get("admin")
    if not token:
        raise StartupError(
            f"no admin token: set CALLGATE_ADMIN_TOKEN, or run this where the gateway's data dir "
            f"({settings.data_dir / TOKENS_FILE}) is"
        )
    return token


def _apply(settings: Settings, args: argparse.Namespace) -> None:
    url, token = _admin_url(settings, args.url), _admin_token(settings)
    asyncio.run(apply_file(url, token, Path(args.file), os.environ, sys.stdout, dry_run=args.dry_run))


def _export(settings: Settings, args: argparse.Namespace) -> None:
    fmt = args.format or (file_format(args.output) if args.output else "toml")
    data = asyncio.run(exported(_admin_url(settings, args.url), _admin_token(settings)))
    text = render(data, fmt)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    names = environment_references(data)
    if names:
        print(f"callgate: credentials are environment references; set {', '.join(names)} to apply it", file=sys.stderr)


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port (0-65535)")
    return int(raw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callgate", description="Voice and SMS gateway for CRM automation")
    config_help = "TOML settings file (the environment wins over it)"
    parser.add_argument("--config", help=config_help)
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="run the API, the provider webhooks and the workers")
    serve.add_argument("--host", help="listen address (CALLGATE_HOST)")
    serve.add_argument("--port", type=_port, help="listen port (CALLGATE_PORT)")
    commands.add_parser("worker", parents=[common], help="run only the workers (event consumers, timers), to scale out")
    commands.add_parser("tokens", parents=[common], help="print the admin and api tokens of the data dir")
    url_help = "the gateway's base URL (default: this host's, from CALLGATE_HOST and CALLGATE_PORT)"
    apply = commands.add_parser(
        "apply", parents=[common], help="make a gateway hold the providers, pipelines, lines and triggers of a file"
    )
    apply.add_argument("file", help="a .toml, .yaml or .yml file (credentials as ${ENV_VAR} references)")
    apply.add_argument("--dry-run", action="store_true", help="only show the changes")
    apply.add_argument("--url", help=url_help)
    export = commands.add_parser("export", parents=[common], help="write a gateway's configuration as a file")
    export.add_argument("-o", "--output", help="the file to write (.toml, .yaml or .yml; default: stdout)")
    export.add_argument("--format", choices=("toml", "yaml"), help="default: from the file name, else toml")
    export.add_argument("--url", help=url_help)
    say = commands.add_parser("say", help="render text to an MP3 exactly as a robocall would play it")
    say.add_argument("text")
    say.add_argument(
        "--engine",
        choices=("piper", "espeak-ng", "gtts"),
        help="default: piper if it speaks the language, else espeak-ng",
    )
    say.add_argument("--language", default="en", help="a language tag such as en, es, pt-BR (default en)")
    say.add_argument("--voice", help="a voice from `callgate voices` (default: the engine's best for the language)")
    say.add_argument("--speed", type=float, default=1.0, help="tempo, 0.5-2.0 (default 1.0; the pitch stays)")
    say.add_argument("--volume", type=float, default=0.0, help="dB from the reference level, -20 to +6 (default 0)")
    say.add_argument("-o", "--output", required=True, type=Path, help="the MP3 file to write")
    voices = commands.add_parser("voices", help="list the engines, languages and voices on this machine")
    voices.add_argument("--engine", choices=("piper", "espeak-ng", "gtts"))
    voices.add_argument("--language", help="only voices that speak this language (any variant)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, file=Path(args.config) if args.config else None)
    except SettingsError as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "host", None) is not None:
        settings = replace(settings, host=args.host)
    if getattr(args, "port", None) is not None:
        settings = replace(settings, port=args.port)
    _configure_logging(settings)
    try:
        if args.command == "serve":
            _serve(settings)
        elif args.command == "worker":
            asyncio.run(_work(settings))
        elif args.command == "tokens":
            return _tokens(settings)
        elif args.command == "apply":
            _apply(settings, args)
        elif args.command == "export":
            _export(settings, args)
        elif args.command == "say":
            _say(settings, args)
        elif args.command == "voices":
            _voices(settings, args)
    except VoiceError as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 2
    except (StartupError, EmbeddedRedisError, TokensError, SynthesisFailed, DeclaredError, AdminApiError) as exc:
        print(f"callgate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
