"""A worker SIGKILLed while the provider is placing a robocall or sending an SMS, so that the
call or message exists but the worker never heard so: the process that takes the job over
asks the provider first, and the job ends with exactly one call or message, through each
provider's real SDK and its local emulator."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from gateway.app import create_app
from tests.conftest import API, Client, ClientFactory
from tests.gateway.test_crash import workers
from tests.gateway.test_robocalls import final, job, post, robocall
from tests.gateway.test_robocalls_twilio import setup_twilio
from tests.gateway.test_robocalls_voximplant import setup_voximplant
from tests.gateway.test_sms_twilio import send
from tests.support import PUBLIC_URL, eventually
from tests.twilio_api import HANG as TWILIO_HANG
from tests.twilio_api import TwilioApi
from tests.voximplant_api import HANG as VOXIMPLANT_HANG
from tests.voximplant_api import VoximplantApi

# What places a robocall and what sends an SMS, per provider.
VOXIMPLANT_METHODS = {"robocall": "StartScenarios", "sms": "SendSmsMessage"}


@dataclass
class Emulated:
    """A provider's emulator as this test needs it, for one kind of job."""

    setup: Callable[[Client], Awaitable[None]]
    hang_next: Callable[[], None]  # the next placement happens but is never answered
    placements: Callable[[], int]  # placement requests received
    made: Callable[[], list[str]]  # the references of the calls or messages made


@pytest.fixture(params=["twilio", "voximplant"])
def emulated(request: pytest.FixtureRequest, kind: str) -> Emulated:
    if request.param == "twilio":
        tw: TwilioApi = request.getfixturevalue("api")
        return Emulated(
            setup=lambda client: setup_twilio(client, tw),
            hang_next=lambda: tw.script.append(TWILIO_HANG),
            placements=lambda: len(tw.requests),
            made=lambda: [made["sid"] for made in (tw.calls if kind == "robocall" else tw.messages)],
        )
    vox: VoximplantApi = request.getfixturevalue("vox")

    def made() -> list[str]:
        if kind == "robocall":
            return [str(session["call_session_history_id"]) for session in vox.sessions]
        return [str(message["message_id"]) for message in vox.messages]

    return Emulated(
        setup=lambda client: setup_voximplant(client, vox),
        hang_next=lambda: vox.script.append(VOXIMPLANT_HANG),
        placements=lambda: sum(1 for r in vox.requests if r["cmd"] == VOXIMPLANT_METHODS[kind]),
        made=made,
    )


@pytest.fixture(params=["robocall", "sms"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_worker_killed_mid_placement_ends_with_exactly_one_call_or_message(
    aiohttp_client: ClientFactory,
    make_settings: Callable[..., Settings],
    emulated: Emulated,
    kind: str,
    mp3: str,
    tmp_path: Path,
) -> None:
    settings = make_settings(media_allow_private=True, job_retry_seconds=0.05)
    emulated.hang_next()
    client = await aiohttp_client(create_app(settings, workers=False))
    await emulated.setup(client)
    accepted: dict[str, Any] = (await post(client, robocall(mp3)))[1] if kind == "robocall" else await send(client)
    with workers(settings, tmp_path, 1) as [worker]:
        worker.env["CALLGATE_PUBLIC_URL"] = PUBLIC_URL
        worker.start()

        async def placing() -> bool:
            return emulated.placements() == 1

        await eventually(placing, timeout=20)
        assert (await job(client, accepted["id"]))["status"] == "sending"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    # Another process takes over the pending entry and asks the provider before placing.
    takeover = await aiohttp_client(create_app(settings))
    sent = await final(takeover, accepted["id"], "sent")
    assert emulated.made() == [sent["provider_ref"]]
    assert emulated.placements() == 1
    assert (await takeover.get(f"/v1/jobs/{accepted['id']}", headers=API)).status == 200
