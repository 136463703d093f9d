"""Configuration as code: ``callgate export`` then ``callgate apply`` round-trips a gateway's
providers, pipelines, lines and triggers; apply shows its diff first and is idempotent."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.declared import DeclaredError, environment_references, render
from config.settings import Settings
from gateway.app import create_app
from gateway.declared import AdminApiError, apply_file, exported
from tests.conftest import ADMIN, ADMIN_TOKEN, Client, ClientFactory
from tests.support import ACCOUNT_SID, AUTH_TOKEN, LINE, add_trigger, configure
from tests.test_cli import clean_env

SECRETS = {"TW_ACCOUNT_SID": ACCOUNT_SID, "TW_AUTH_TOKEN": AUTH_TOKEN}


def url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def configured(client: Client) -> None:
    await configure(client, lead=True)
    await add_trigger(client, name="missed", event="call.missed", line=LINE)
    await add_trigger(client, name="keyword", event="sms.incoming", keywords=["baja"], target_stage="WON")


async def apply(client: Client, path: Path, env: dict[str, str] | None = None, *, dry_run: bool = False) -> str:
    out = io.StringIO()
    await apply_file(url(client), ADMIN_TOKEN, path, SECRETS if env is None else env, out, dry_run=dry_run)
    return out.getvalue()


@pytest.fixture
async def other(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], prefix: str) -> Client:
    """A second, empty gateway (its keys under this test's prefix, so they are cleaned too)."""
    return await aiohttp_client(create_app(make_settings(key_prefix=prefix + "other:")))


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
async def test_export_then_apply_round_trips(client: Client, other: Client, tmp_path: Path, fmt: str) -> None:
    await configured(client)
    data = await exported(url(client), ADMIN_TOKEN)
    text = render(data, fmt)
    assert AUTH_TOKEN not in text and ACCOUNT_SID not in text  # credentials are references
    assert environment_references(data) == ["TW_ACCOUNT_SID", "TW_AUTH_TOKEN"]
    path = tmp_path / f"callgate.{fmt}"
    path.write_text(text)

    assert await apply(client, path, dry_run=True) == "no changes: the gateway already holds this configuration\n"
    shown = await apply(other, path)
    assert shown.splitlines()[:3] == ["+ provider tw (twilio)", "+ pipeline sales", f"+ line {LINE}"]
    assert shown.endswith("applied 5 change(s)\n")
    assert await exported(url(other), ADMIN_TOKEN) == data
    assert "no changes" in await apply(other, path)  # idempotent
    # The credentials arrived whole, filled in from the environment.
    digests = [
        (await (await c.get("/v1/providers/tw", headers=ADMIN)).json())["credentials_digest"] for c in (client, other)
    ]
    assert digests[0] == digests[1]


async def test_dry_run_shows_the_diff_and_changes_nothing(client: Client, tmp_path: Path) -> None:
    await configured(client)
    data = await exported(url(client), ADMIN_TOKEN)
    data["lines"][LINE]["forward_to"] = ["+34600000010"]
    data["triggers"].reverse()
    data["triggers"].append({"name": "new", "event": "call.incoming", "pipeline": "sales", "target_stage": "WON"})
    path = tmp_path / "callgate.toml"
    path.write_text(render(data, "toml"))
    env = {**SECRETS, "TW_AUTH_TOKEN": "a-new-auth-token"}

    before = await exported(url(client), ADMIN_TOKEN)
    diff = (await apply(client, path, env, dry_run=True)).splitlines()
    assert diff == [
        "~ provider tw: credentials changed",
        f"~ line {LINE}: forward_to: ['+34600000009'] -> ['+34600000010']",
        "~ trigger 'keyword': moved to position 1",
        "+ trigger 'new' at position 3",
    ]
    assert "a-new-auth-token" not in "\n".join(diff)
    assert await exported(url(client), ADMIN_TOKEN) == before

    await apply(client, path, env)
    after = await exported(url(client), ADMIN_TOKEN)
    assert after["lines"][LINE]["forward_to"] == ["+34600000010"]
    assert [t["name"] for t in after["triggers"]] == ["keyword", "missed", "new"]
    assert "no changes" in await apply(client, path, env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.tw]\nkind = "twilio"\ncredentials = {account_sid = "${NOPE}"}\n', "NOPE is not set"),
        ('[[triggers]]\nname = "a"\nevent = "call.missed"\npipeline = "s"\ntarget_stage = "X"\n' * 2, "unique"),
        ('[pipelines.sales]\nstages = "NEW"\n', "pipelines.sales.stages"),
        ("[lines.nonsense]\nprovider = 'tw'\n", "lines.nonsense"),
        ("colour = 1\n", "colour"),
        (
            '[providers.tw]\nkind = "twilio"\ncredentials = {account_sid = "AC1", auth_token = "t"}\n',
            r"^providers\.tw\.credentials.*: .*Twilio Account SID is AC followed by 32 hex digits$",
        ),
        ("not toml [", "not valid TOML"),
    ],
)
async def test_bad_files_are_refused_before_any_change(client: Client, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DeclaredError, match=message) as raised:
        await apply(client, path, {})
    assert "Value error" not in str(raised.value)


async def test_an_api_refusal_stops_the_apply(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "callgate.yaml"
    path.write_text(f"lines:\n  '{LINE}':\n    provider: missing\n")
    with pytest.raises(AdminApiError, match="provider: no provider named 'missing'"):
        await apply(client, path, {})


async def test_the_cli_exports_and_applies(client: Client, tmp_path: Path) -> None:
    await configured(client)
    target = tmp_path / "callgate.yaml"
    env = clean_env(CALLGATE_ADMIN_TOKEN=ADMIN_TOKEN, CALLGATE_DATA_DIR=str(tmp_path / "data"), **SECRETS)

    async def callgate(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", *args, env=env, stdout=-1, stderr=-1
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, _, err = await callgate("export", "--url", url(client), "-o", str(target))
    assert code == 0, err
    assert "set TW_ACCOUNT_SID, TW_AUTH_TOKEN" in err
    assert "${TW_AUTH_TOKEN}" in target.read_text()
    code, out, err = await callgate("apply", str(target), "--dry-run", "--url", url(client))
    assert (code, out) == (0, "no changes: the gateway already holds this configuration\n"), err
    code, _, err = await callgate("apply", str(tmp_path / "missing.toml"), "--url", url(client))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "missing.toml" in err
