"""``callgate serve`` tells the truth: one line on start and on stop, one line per failure
before anything is generated or started, and a gateway killed with SIGKILL starts again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import Served, callgate, clean_env, free_port, get_status, redis_servers_for


def start(data_dir: Path, *args: str, **env: str) -> Served:
    port = free_port()
    settings = {"CALLGATE_DATA_DIR": str(data_dir), "CALLGATE_LOG_LEVEL": "INFO", **env}
    process = subprocess.Popen(
        callgate("serve", "--port", str(port), *args),
        env=clean_env(**settings),
        cwd=data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Served(process, port, data_dir)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(callgate(*args), env=clean_env(**env), capture_output=True, text=True, timeout=30)


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    for pid in redis_servers_for(path):  # never leave a server behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(90)
def test_start_and_stop_lines_and_options_after_the_subcommand(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "callgate.toml"
    config.write_text("consumers = 2\n")
    served = start(data_dir, "--host", "127.0.0.1", "--config", str(config))
    try:
        served.wait_ready()
    finally:
        code, _, err = served.stop()
    assert code == 0, err
    started = [line for line in err.splitlines() if "callgate started:" in line]
    assert len(started) == 1, err
    assert f"listening on http://127.0.0.1:{served.port}" in started[0]
    assert f"public URL http://127.0.0.1:{served.port}" in started[0]
    assert f"embedded redis in {data_dir.resolve() / 'redis'}" in started[0]
    assert "2 job consumers" in started[0]  # --config after the subcommand was read
    # Derived from a loopback address, the public URL reaches no provider: said once.
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "CALLGATE_PUBLIC_URL" in warnings[0], err
    assert "loopback" in warnings[0]
    assert err.strip().splitlines()[-1].endswith("callgate stopped")


@pytest.mark.timeout(90)
def test_json_logs_with_the_access_log_and_without(data_dir: Path) -> None:
    public = {"CALLGATE_PUBLIC_URL": "https://gw.example.com", "CALLGATE_LOG_FORMAT": "json"}
    for access_log in ("true", "false"):
        served = start(data_dir, CALLGATE_ACCESS_LOG=access_log, **public)
        try:
            served.wait_ready()
            assert get_status(f"http://127.0.0.1:{served.port}/healthz") == 200
        finally:
            code, _, err = served.stop()
        assert code == 0, err
        entries = [json.loads(line) for line in err.strip().splitlines()]  # every line is JSON
        assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
        accessed = [e for e in entries if e["logger"] == "gateway.access" and "GET /healthz" in e["message"]]
        assert bool(accessed) == (access_log == "true"), entries
        assert not [e for e in entries if e["level"] == "WARNING"]  # a public URL is set


def test_port_in_use_is_one_line_and_nothing_is_generated(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port), CALLGATE_DATA_DIR=str(data_dir))
    line = one_line_failure(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "CALLGATE_PORT" in line
    assert not data_dir.exists()  # no tokens, no Redis


def test_data_dir_not_writable_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_line_failure(run("serve", "--port", str(free_port()), CALLGATE_DATA_DIR=str(blocker / "data")))
    assert "CALLGATE_DATA_DIR" in line and "not writable" in line


def test_redis_not_answering_suggests_the_embedded_one(data_dir: Path) -> None:
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    result = run("serve", "--port", str(free_port()), CALLGATE_DATA_DIR=str(data_dir), CALLGATE_REDIS_URL=url)
    line = one_line_failure(result)
    assert "does not answer" in line and "unset CALLGATE_REDIS_URL" in line
    assert "hunter2-password" not in result.stderr and ":***@" in line
    assert not (data_dir / "tokens.json").exists()


@pytest.mark.timeout(120)
def test_serve_starts_in_one_step_after_kill_9(data_dir: Path) -> None:
    first = start(data_dir, CALLGATE_PUBLIC_URL="https://gw.example.com")
    first.wait_ready()
    tokens = json.loads((data_dir / "tokens.json").read_text())
    admin = {"Authorization": f"Bearer {tokens['admin']}", "Content-Type": "application/json"}
    body = json.dumps({"stages": ["NEW", "WON"]}).encode()
    put = urllib.request.Request(f"http://127.0.0.1:{first.port}/v1/pipelines/sales", body, admin, method="PUT")
    with urllib.request.urlopen(put, timeout=5) as resp:
        assert resp.status == 200
    first.process.kill()  # SIGKILL: its embedded Redis is left running, holding the data dir
    first.process.communicate(timeout=20)
    leftover = redis_servers_for(data_dir)
    assert len(leftover) == 1

    second = start(data_dir, CALLGATE_PUBLIC_URL="https://gw.example.com")
    try:
        second.wait_ready()
        get = urllib.request.Request(f"http://127.0.0.1:{second.port}/v1/pipelines/sales", headers=admin)
        with urllib.request.urlopen(get, timeout=5) as resp:
            assert json.loads(resp.read())["stages"] == ["NEW", "WON"]  # the data was kept
        assert leftover[0] not in redis_servers_for(data_dir)
    finally:
        code, _, err = second.stop()
    assert code == 0, err
    said = [line for line in err.splitlines() if f"pid {leftover[0]}" in line]
    assert len(said) == 1 and "left running" in said[0], err
    assert redis_servers_for(data_dir) == []


@pytest.mark.timeout(90)
def test_a_second_gateway_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    first = start(data_dir, CALLGATE_PUBLIC_URL="https://gw.example.com")
    try:
        first.wait_ready()
        result = run("serve", "--port", str(free_port()), CALLGATE_DATA_DIR=str(data_dir))
        line = one_line_failure(result)
        assert f"another callgate (pid {first.process.pid})" in line
        assert get_status(f"http://127.0.0.1:{first.port}/readyz") == 200  # untouched
    finally:
        code, _, err = first.stop()
    assert code == 0, err
