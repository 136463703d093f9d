"""``callgate`` as an operator runs it: a real process, no Redis URL, a fresh data dir.

``serve`` tells the truth: one line on start and on stop, one line per failure before
anything is generated or started, and a gateway killed with SIGKILL starts again."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from gateway.launch import YOUNG_COLLECTION_EVERY, tune_garbage_collector
from gateway.tokens import ensure_tokens

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any CALLGATE_ setting (no Redis URL, no tokens)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def callgate(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def redis_servers_for(data_dir: Path) -> list[int]:
    """Pids of live redis-server processes whose command line names ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "redis-server" in cmdline and str(data_dir) in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, data_dir: Path) -> None:
        self.process = process
        self.port = port
        self.data_dir = data_dir

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"callgate serve exited {self.process.returncode}: {out}\n{err}")
            if get_status(f"http://127.0.0.1:{self.port}/readyz") == 200:
                return
            time.sleep(0.1)
        pytest.fail("callgate serve did not become ready within 20 s")

    def stop(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, out, err


def serve(data_dir: Path, **settings: str) -> Served:
    port = free_port()
    env = clean_env(CALLGATE_DATA_DIR=str(data_dir), CALLGATE_PORT=str(port), CALLGATE_LOG_LEVEL="INFO", **settings)
    process = subprocess.Popen(
        callgate("serve"), env=env, cwd=data_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Served(process, port, data_dir)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    for pid in redis_servers_for(path):  # never leave a server behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(90)
def test_serve_with_an_embedded_redis(data_dir: Path) -> None:
    served = serve(data_dir)
    try:
        served.wait_ready()
        assert redis_servers_for(data_dir), "the embedded redis-server should be running"
        assert get_status(f"http://127.0.0.1:{served.port}/healthz") == 200
    finally:
        code, out, err = served.stop()
    assert code == 0, err

    tokens = json.loads((data_dir / "tokens.json").read_text())
    assert out.count(tokens["admin"]) == 1, out
    assert out.count(tokens["api"]) == 1, out
    assert "admin token" in out and "api token" in out
    assert (data_dir / "redis").is_dir()
    assert redis_servers_for(data_dir) == []

    # A second start reuses the stored tokens and does not print them again.
    again = serve(data_dir)
    try:
        again.wait_ready()
        request = urllib.request.Request(
            f"http://127.0.0.1:{again.port}/v1/lines", headers={"Authorization": f"Bearer {tokens['admin']}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
    finally:
        code, out, err = again.stop()
    assert code == 0, err
    assert tokens["admin"] not in out and tokens["api"] not in out
    assert redis_servers_for(data_dir) == []


@pytest.mark.timeout(90)
def test_serve_takes_a_short_token_and_warns_of_it(data_dir: Path) -> None:
    served = serve(data_dir, CALLGATE_ADMIN_TOKEN="admin")
    try:
        served.wait_ready()
        request = urllib.request.Request(
            f"http://127.0.0.1:{served.port}/v1/lines", headers={"Authorization": "Bearer admin"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
    finally:
        code, out, err = served.stop()
    assert code == 0, err
    warned = [line for line in (out + err).splitlines() if "CALLGATE_ADMIN_TOKEN is shorter than 16" in line]
    assert len(warned) == 1, out + err
    assert "WARNING" in warned[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CALLGATE_PORT", "abc"), ("CALLGATE_REDIS_URL", "http://x"), ("CALLGATE_MEDIA_ALLOW_PRIVATE", "maybe")],
)
def test_a_bad_setting_exits_2_with_one_line(tmp_path: Path, variable: str, value: str) -> None:
    env = clean_env(CALLGATE_DATA_DIR=str(tmp_path / "data"), **{variable: value})
    result = subprocess.run(callgate("serve"), env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or written


def test_a_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "callgate.toml"
    config.write_text("prot = 8080\n")
    env = clean_env(CALLGATE_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        callgate("--config", str(config), "serve"), env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "prot" in result.stderr


def test_unreachable_redis_exits_1_with_one_line(tmp_path: Path) -> None:
    env = clean_env(CALLGATE_DATA_DIR=str(tmp_path / "data"), CALLGATE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = subprocess.run(callgate("serve"), env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "CALLGATE_REDIS_URL" in result.stderr.strip().splitlines()[-1]


def test_tokens_reads_the_data_dir_and_never_creates_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(CALLGATE_DATA_DIR=str(data))
    none = subprocess.run(callgate("tokens"), env=env, capture_output=True, text=True, timeout=30)
    assert none.returncode == 1
    assert none.stdout == ""
    assert str(data / "tokens.json") in none.stderr and "callgate serve" in none.stderr
    assert not data.exists()  # nothing was generated

    ensure_tokens(Settings(data_dir=data))  # what the first `callgate serve` does
    stored = json.loads((data / "tokens.json").read_text())
    first = subprocess.run(callgate("tokens"), env=env, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert str(data) in first.stdout.splitlines()[0]  # which data dir it read
    assert f"admin token: {stored['admin']}" in first.stdout
    assert f"api token:   {stored['api']}" in first.stdout
    second = subprocess.run(callgate("tokens"), env=env, capture_output=True, text=True, timeout=30)
    assert second.stdout == first.stdout

    configured = subprocess.run(
        callgate("tokens"),
        env={**env, "CALLGATE_ADMIN_TOKEN": "admin-from-env-0123456789"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "admin token: admin-from-env-0123456789  (from CALLGATE_ADMIN_TOKEN)" in configured.stdout
    assert f"api token:   {stored['api']}" in configured.stdout


def test_the_console_script_is_declared() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'callgate = "gateway.cli:main"' in pyproject


def test_a_corrupt_tokens_file_exits_1_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "tokens.json").write_text("{not json")
    result = subprocess.run(
        callgate("serve"), env=clean_env(CALLGATE_DATA_DIR=str(data)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "tokens.json" in result.stderr.strip().splitlines()[-1]


def test_a_worker_needs_a_shared_redis(tmp_path: Path) -> None:
    result = subprocess.run(
        callgate("worker"), env=clean_env(CALLGATE_DATA_DIR=str(tmp_path)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "CALLGATE_REDIS_URL" in result.stderr


# serve: start, stop, failures, kill -9


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
    tokens = json.loads((data_dir / "tokens.json").read_text())
    assert tokens["admin"] not in err and tokens["api"] not in err  # printed once on stdout, never logged


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


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_started_process_keeps_its_objects_out_of_full_collections() -> None:
    """What the process holds once started is frozen; startup's garbage is collected, not
    kept; young collections run less often."""
    held = [{"kept": True}]
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage
    thresholds = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert not any(candidate is held for candidate in gc.get_objects())  # no full pass walks it
        assert gone() is None
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
