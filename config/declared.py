"""Configuration as code: providers, pipelines, lines and triggers declared in a TOML or YAML
file, compared with what a gateway holds, and the changes that make it so.

Pure: parsing, the diff and the rendering of an export. ``gateway/declared.py`` does the HTTP.
Secrets never appear in a file: credentials are environment references (``"${TW_AUTH_TOKEN}"``)
filled in when the file is read; stored credentials are compared by their keyed digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import tomli_w
import yaml
from pydantic import Field, ValidationError

from config.lines import Line, Name, Pipeline, Provider, Strict, plain_message
from config.phones import E164
from config.triggers import TriggerSpec

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class DeclaredError(ValueError):
    """The file cannot be used; the message names the place in it."""


class Declared(Strict):
    providers: dict[Name, Provider] = Field(default_factory=dict)
    pipelines: dict[Name, Pipeline] = Field(default_factory=dict)
    lines: dict[E164, Line] = Field(default_factory=dict)
    # In the order they apply in; a trigger is known by its name.
    triggers: Annotated[list[TriggerSpec], Field(max_length=1000)] = Field(default_factory=list)


def credentials_digest(credentials: Mapping[str, str], key: str) -> str:
    """HMAC-SHA256 of ``credentials`` keyed by the admin token: whoever holds that token can
    tell whether a file's credentials are the stored ones, and nobody can read them back."""
    canonical = json.dumps(dict(credentials), sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def file_format(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".toml"):
        return "toml"
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    raise DeclaredError(f"{name}: the file name must end in .toml, .yaml or .yml")


def _substitute(value: str, environ: Mapping[str, str], where: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise DeclaredError(f"{where}: the environment variable {name} is not set")
        return environ[name]

    return _REFERENCE.sub(fill, value)


def parse(text: str, fmt: str, environ: Mapping[str, str]) -> Declared:
    """The declared configuration, with the credentials' environment references filled in."""
    try:
        raw = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DeclaredError(f"not valid {fmt.upper()}: {exc}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise DeclaredError("the file must hold a table/mapping at its top")
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            credentials = provider.get("credentials") if isinstance(provider, dict) else None
            if isinstance(credentials, dict):
                for key, value in credentials.items():
                    if isinstance(value, str):
                        credentials[key] = _substitute(value, environ, f"providers.{name}.credentials.{key}")
    try:
        declared = Declared.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DeclaredError(f"{where}: {plain_message(first['msg'])}") from None
    names = [trigger.name for trigger in declared.triggers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DeclaredError(f"triggers: names must be unique (a trigger is known by its name): {repeated[0]!r}")
    return declared


@dataclass(frozen=True)
class Current:
    """What the gateway holds, as its admin API shows it."""

    providers: dict[str, dict[str, Any]]
    pipelines: dict[str, dict[str, Any]]
    lines: dict[str, dict[str, Any]]
    triggers: list[dict[str, Any]]  # in the order they apply in


@dataclass(frozen=True)
class Change:
    """One admin API call, and the line the diff shows for it."""

    method: str
    path: str
    body: dict[str, Any]
    summary: str


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], secret: frozenset[str] = frozenset()) -> list[str]:
    shown = []
    for key in new:
        if old.get(key) != new[key]:
            shown.append(f"{key} changed" if key in secret else f"{key}: {old.get(key)!r} -> {new[key]!r}")
    return shown


def _plan_record(kind: str, name: str, path: str, old: Mapping[str, Any] | None, new: dict[str, Any]) -> list[Change]:
    if old is None:
        return [Change("PUT", path, new, f"+ {kind} {name}")]
    changed = _differences(old, new)
    return [Change("PUT", path, new, f"~ {kind} {name}: {'; '.join(changed)}")] if changed else []


def _plan_provider(name: str, provider: Provider, current: dict[str, Any] | None, key: str) -> list[Change]:
    body = provider.model_dump(mode="json")
    if current is None:
        return [Change("PUT", f"/v1/providers/{name}", body, f"+ provider {name} ({provider.kind})")]
    shown = {k: v for k, v in body.items() if k != "credentials"}
    changed = _differences(current, shown)
    if current.get("credentials_digest") != credentials_digest(provider.credentials, key):
        changed.append("credentials changed")
    return [Change("PUT", f"/v1/providers/{name}", body, f"~ provider {name}: {'; '.join(changed)}")] if changed else []


def _spec(view: Mapping[str, Any]) -> dict[str, Any]:
    return TriggerSpec.model_validate({k: view[k] for k in TriggerSpec.model_fields if k in view}).model_dump(
        mode="json"
    )


def _plan_triggers(declared: list[TriggerSpec], current: list[dict[str, Any]]) -> list[Change]:
    """Declared triggers first, in the file's order; triggers the file does not name keep
    their order after them. Positions are worked out on a copy of the order as each change
    would leave it, so the diff shows only real moves."""
    by_name: dict[str, dict[str, Any]] = {}
    for view in current:
        by_name.setdefault(view["name"], view)
    order: list[str] = [view["id"] for view in current]
    changes = []
    for index, trigger in enumerate(declared):
        body = {**trigger.model_dump(mode="json"), "position": index + 1}
        existing = by_name.get(trigger.name)
        if existing is None:
            changes.append(Change("POST", "/v1/triggers", body, f"+ trigger {trigger.name!r} at position {index + 1}"))
            order.insert(index, f"new:{trigger.name}")
            continue
        changed = _differences(_spec(existing), trigger.model_dump(mode="json"))
        if order.index(existing["id"]) != index:
            order.remove(existing["id"])
            order.insert(index, existing["id"])
            changed.append(f"moved to position {index + 1}")
        if changed:
            summary = f"~ trigger {trigger.name!r}: {'; '.join(changed)}"
            changes.append(Change("PUT", f"/v1/triggers/{existing['id']}", body, summary))
    return changes


def plan(declared: Declared, current: Current, key: str) -> list[Change]:
    """The calls that make the gateway hold ``declared``, in an order that satisfies the
    references (providers and pipelines before the lines and triggers naming them). Records
    the file does not mention are left alone."""
    changes: list[Change] = []
    for name, provider in declared.providers.items():
        changes += _plan_provider(name, provider, current.providers.get(name), key)
    for name, pipeline in declared.pipelines.items():
        changes += _plan_record(
            "pipeline", name, f"/v1/pipelines/{name}", current.pipelines.get(name), pipeline.model_dump(mode="json")
        )
    for number, line in declared.lines.items():
        old = current.lines.get(number)
        normal = (
            Line.model_validate({k: v for k, v in old.items() if k != "number"}).model_dump(mode="json")
            if old
            else None
        )
        changes += _plan_record("line", number, f"/v1/lines/{number}", normal, line.model_dump(mode="json"))
    return changes + _plan_triggers(declared.triggers, current.triggers)


def _env_name(provider: str, key: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", f"{provider}_{key}".upper()).strip("_")


def _without_none(value: Any) -> Any:
    """TOML has no null: a field left out takes its default, which is what null meant."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def export(current: Current) -> dict[str, Any]:
    """``current`` as a file would declare it, credentials as environment references."""
    providers = {
        name: {
            **{k: v for k, v in view.items() if k not in {"name", "credentials", "credentials_digest"}},
            "credentials": {key: "${" + _env_name(name, key) + "}" for key in view.get("credentials", {})},
        }
        for name, view in current.providers.items()
    }
    data = {
        "providers": providers,
        "pipelines": {name: {"stages": view["stages"]} for name, view in current.pipelines.items()},
        "lines": {number: {k: v for k, v in view.items() if k != "number"} for number, view in current.lines.items()},
        "triggers": [_spec(view) for view in current.triggers],
    }
    return {key: value for key, value in _without_none(data).items() if value}


def render(data: Mapping[str, Any], fmt: str) -> str:
    if fmt == "toml":
        return tomli_w.dumps(dict(data))
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)


def environment_references(data: Mapping[str, Any]) -> list[str]:
    """The environment variables an exported configuration's credentials name."""
    found = [
        match.group(1)
        for provider in data.get("providers", {}).values()
        for value in provider.get("credentials", {}).values()
        for match in _REFERENCE.finditer(str(value))
    ]
    return sorted(set(found))
