"""/openapi.json says what the server enforces: schemathesis, with a bounded number of
examples per operation, finds no server error and no schema-valid request rejected."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, Client

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_server_error_and_no_valid_request_rejected(client: Client, tmp_path: Path) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        str(client.make_url("/openapi.json")),
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks",
        "not_a_server_error,schema_valid_request_accepted,status_code_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "8",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        cwd=tmp_path,  # its caches and reports go there, not into the repository
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    assert "Tested: " in report
