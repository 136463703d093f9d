"""``callgate say`` and ``callgate voices`` as an admin runs them: real processes, a fresh data dir."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from tests.test_cli import callgate, clean_env
from tests.voice.support import GoogleEmulator, seconds


async def run(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *callgate(*args),
        env=clean_env(CALLGATE_DATA_DIR=str(data_dir), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_say_writes_the_audio_a_call_would_play(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out, err = await run(
        data, "say", "Hola Ana, su pedido está listo.", "--language", "es", "-o", str(tmp_path / "a.mp3")
    )
    assert code == 0, err
    found = re.search(r"engine=espeak-ng voice=roa/es \(rendered, key ([0-9a-f]{64})\)", out)
    assert found, out
    assert (tmp_path / "a.mp3").read_bytes() == (data / "media" / f"{found[1]}.mp3").read_bytes()
    assert seconds(tmp_path / "a.mp3") > 1.0

    code, out, _ = await run(
        data, "say", "Hola Ana, su pedido está listo.", "--language", "es", "-o", str(tmp_path / "b.mp3")
    )
    assert code == 0 and f"(from the cache, key {found[1]})" in out

    args = ["say", "Hola Ana, su pedido está listo.", "--language", "es", "--speed", "2", "--volume", "-6"]
    code, out, _ = await run(data, *args, "-o", str(tmp_path / "fast.mp3"))
    assert code == 0 and "(rendered" in out
    assert seconds(tmp_path / "fast.mp3") < seconds(tmp_path / "a.mp3") * 0.6


async def test_say_in_english_uses_the_bundled_neural_voice(tmp_path: Path) -> None:
    code, out, err = await run(tmp_path / "data", "say", "Your order is ready.", "-o", str(tmp_path / "en.mp3"))
    assert code == 0, err
    assert "engine=piper voice=en_US-joe-medium" in out
    assert seconds(tmp_path / "en.mp3") > 0.5


async def test_say_with_gtts_reports_the_endpoint_and_the_fallback(tmp_path: Path, google: GoogleEmulator) -> None:
    args = ["say", "Guten Tag", "--engine", "gtts", "--language", "de", "-o", str(tmp_path / "de.mp3")]
    code, out, _ = await run(tmp_path / "data", *args, CALLGATE_GTTS_URL=google.url)
    assert code == 0 and "engine=gtts voice=de" in out
    assert google.spoken == [("Guten Tag", "de")]

    google.fail_with = 503
    args[1] = "Guten Abend"
    code, out, _ = await run(tmp_path / "data", *args, CALLGATE_GTTS_URL=google.url)
    assert code == 0 and "engine=espeak-ng voice=gmw/de" in out
    assert "note: gtts: Google answered HTTP 503; spoken by espeak-ng voice gmw/de instead" in out


async def test_say_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    code, _, err = await run(tmp_path / "data", "say", "hi", "--speed", "3", "-o", str(tmp_path / "x.mp3"))
    assert (code, err.strip()) == (2, "callgate: speed must be between 0.5 and 2.0")
    code, _, err = await run(tmp_path / "data", "say", "hi", "--language", "tlh", "-o", str(tmp_path / "x.mp3"))
    assert code == 2 and "piper" not in err and "espeak-ng has no voice for language 'tlh'" in err
    assert not (tmp_path / "x.mp3").exists()


async def test_voices_lists_engines_languages_and_voices(tmp_path: Path) -> None:
    code, out, _ = await run(tmp_path / "data", "voices")
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert ["piper", "en_US-joe-medium"] in rows
    assert {"roa/es", "roa/pt-BR", "gmw/de"} <= {voice for engine, voice in rows if engine == "espeak-ng"}
    assert ["gtts", "es"] in rows
    assert out.startswith("default engine: piper where it has a voice for the language, else espeak-ng")

    code, out, _ = await run(tmp_path / "data", "voices", "--language", "pt-BR")
    assert code == 0
    assert {line.split()[1] for line in out.splitlines()[1:]} == {"roa/pt", "roa/pt-BR", "pt", "pt-PT"}
