"""Limits: the rate limiter shared by processes (a provider's and a line's rates at once),
redials after no answer or busy, and quiet hours that hold a job until the customer's window
opens."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from config.hours import next_open
from config.lines import DAYS, Hours
from config.settings import Settings
from gateway.app import create_app
from gateway.keys import Keys
from gateway.store.limits import Limits
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_robocalls import (
    CUSTOMER,
    LINE,
    NO_ANSWER,
    final,
    job,
    job_statuses,
    post,
    put_card,
    robocall,
    setup,
)
from tests.support import eventually, item, jobs_due

_RESERVER = """
import asyncio, json, sys
from redis.asyncio import Redis
from gateway.keys import Keys
from gateway.store.limits import Limits

async def main():
    redis = Redis.from_url(sys.argv[1], decode_responses=True)
    limits = Limits(redis, Keys(sys.argv[2]))
    slots = [await limits.reserve({"calls:tw": 20}, 3600) for _ in range(40)]
    print(json.dumps([slot.at for slot in slots]))
    await redis.aclose()

asyncio.run(main())
"""


async def test_two_processes_share_one_rate_exactly(settings: Settings) -> None:
    """Two processes reserving as fast as they can: the slots they get, merged, are one
    interval apart, none closer, so the provider sees 20 calls a second, not 40."""
    args = [sys.executable, "-c", _RESERVER, str(settings.redis_url), settings.key_prefix]
    procs = [await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [json.loads((await proc.communicate())[0]) for proc in procs]
    slots = sorted(outputs[0] + outputs[1])
    assert len(slots) == 80
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 0.05 - 1e-5 and max(gaps) <= 0.05 + 1e-5
    assert (slots[-1] - slots[0]) / 79 == pytest.approx(0.05, rel=0.001)


async def test_a_slot_too_far_away_is_not_taken(redis: Redis, prefix: str) -> None:
    limits = Limits(redis, Keys(prefix))
    first = await limits.reserve({"calls:x": 1}, 2)
    second = await limits.reserve({"calls:x": 1}, 2)
    assert first.granted and first.wait == pytest.approx(0, abs=0.01)
    assert second.granted and second.at == pytest.approx(first.at + 1, abs=1e-5)
    too_far = await limits.reserve({"calls:x": 1}, 0.5)
    assert not too_far.granted and too_far.at == pytest.approx(first.at + 2, abs=1e-5)
    assert (await limits.reserve({"calls:x": 1}, 5)).at == pytest.approx(first.at + 2, abs=1e-5)


async def test_a_send_takes_one_slot_free_in_both_its_limits(redis: Redis, prefix: str) -> None:
    """A provider at 10/s with a line at 2/s: the line's sends go 0.5 s apart, and each takes
    the provider's slot at that moment, so another line of the provider goes right after."""
    limits = Limits(redis, Keys(prefix))
    first = await limits.reserve({"sms:p": 10, "sms-line:a": 2}, 60)
    second = await limits.reserve({"sms:p": 10, "sms-line:a": 2}, 60)
    assert second.at == pytest.approx(first.at + 0.5, abs=1e-5)
    other_line = await limits.reserve({"sms:p": 10, "sms-line:b": 2}, 60)
    assert other_line.at == pytest.approx(second.at + 0.1, abs=1e-5)


async def test_a_slot_not_taken_leaves_every_limit_as_it_was(redis: Redis, prefix: str) -> None:
    limits = Limits(redis, Keys(prefix))
    await limits.reserve({"sms-line:a": 0.01}, 60)  # the line's next slot is 100 s away
    refused = await limits.reserve({"sms:p": 1, "sms-line:a": 0.01}, 2)
    assert not refused.granted and refused.wait == pytest.approx(100, abs=1)
    # The provider's limit lent nothing to the refused send: its slot is free now.
    assert (await limits.reserve({"sms:p": 1}, 0)).granted


async def test_a_pause_holds_the_limit_off_once_however_many_processes_are_told(redis: Redis, prefix: str) -> None:
    limits = Limits(redis, Keys(prefix))
    taken = await limits.reserve({"calls:p": 10}, 2)
    await asyncio.gather(*(limits.pause("calls:p", 30) for _ in range(8)))
    held = await limits.reserve({"calls:p": 10}, 60)
    # 30 s from the pause (taken a moment before it), not 8 x 30 s.
    assert held.granted and taken.at + 30 <= held.at < taken.at + 31
    await limits.pause("calls:p", 1)  # a shorter pause never shortens a longer one
    assert (await limits.reserve({"calls:p": 10}, 60)).at == pytest.approx(held.at + 0.1, abs=1e-5)


async def test_a_lines_sms_per_second_spaces_its_messages(client: Client) -> None:
    """Through the API: a line at 4 messages a second (its provider allows 1000) sends its
    third message at least 0.5 s after the first was queued, whatever the load."""
    await setup(client)
    assert (
        await client.put("/v1/providers/sb", json={"kind": "sandbox", "sms_per_second": 1000}, headers=ADMIN)
    ).status == 200
    line = {"provider": "sb", "sms_per_second": 4}
    resp = await client.put(f"/v1/lines/{LINE}", json=line, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["sms_per_second"] == 4
    ids = []
    for _ in range(3):
        resp = await client.post("/v1/sms", json={"item_id": "D1", "text": "hi"}, headers=API)
        assert resp.status == 202
        ids.append((await resp.json())["id"])
    for job_id in ids:
        await final(client, job_id, "delivered")
    timeline = (await item(client, "D1"))["timeline"]
    updates = [e for e in timeline if e["type"] == "job.updated"]
    queued = min(_at(e) for e in updates if e["data"]["status"] == "queued")
    sending = sorted(_at(e) for e in updates if e["data"]["status"] == "sending")
    assert len(sending) == 3 and sending[-1] - queued >= 0.5 - 0.002  # timeline times are in ms


def _at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


async def test_no_answer_is_redialled_until_the_attempts_run_out(robo: Client, mp3: str) -> None:
    await put_card(robo, "D1", [{"type": "MOBILE", "value": NO_ANSWER}])
    _, accepted = await post(robo, robocall(mp3, attempts=2, retry_interval_seconds=1))

    async def second_dial_ended() -> bool:
        data = await job(robo, accepted["id"])
        return bool(data["attempt"] == 2 and data["status"] == "no_answer")

    await eventually(second_dial_ended)
    statuses = job_statuses((await item(robo, "D1"))["timeline"], accepted["id"])
    assert statuses.count("no_answer") == 2 and statuses.count("sending") == 2
    assert statuses[statuses.index("no_answer") + 1] == "queued"  # the redial waited its interval


def closed_hours() -> Hours:
    """Open one hour, two days from now: closed at this moment in every time zone."""
    day = DAYS[(datetime.now(UTC).weekday() + 2) % 7]
    return Hours.model_validate({"tz": "Europe/Madrid", day: ["09:00", "10:00"]})


async def test_a_job_whose_line_is_gone_fails_instead_of_going_without_its_hours(robo: Client, mp3: str) -> None:
    hours = closed_hours()
    resp = await robo.put(f"/v1/lines/{LINE}", json={"provider": "sb", "hours": hours.model_dump()}, headers=ADMIN)
    assert resp.status == 200
    _, accepted = await post(robo, robocall(mp3, delay_seconds=2))
    assert (await robo.delete(f"/v1/lines/{LINE}", headers=ADMIN)).status == 204
    failed = await final(robo, accepted["id"], "failed")
    assert failed["reason"] == f"line {LINE} is no longer configured"


async def test_a_line_just_made_through_another_process_keeps_its_hours(
    robo: Client, aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], mp3: str
) -> None:
    """The worker's snapshot of the lines may predate the line (another process made it
    within SNAPSHOT_SECONDS): it reads them afresh rather than take the line for gone."""
    api = await aiohttp_client(create_app(make_settings(media_allow_private=True), workers=False))
    other = "+34910000002"
    assert (await robo.get("/v1/lines", headers=ADMIN)).status == 200  # the worker's snapshot, without it
    body = {"provider": "sb", "hours": closed_hours().model_dump()}
    assert (await api.put(f"/v1/lines/{other}", json=body, headers=ADMIN)).status == 200
    _, accepted = await post(api, robocall(mp3, line=other))

    async def deferred() -> bool:
        return (await job(api, accepted["id"]))["reason"] is not None

    await eventually(deferred)
    waiting = await job(api, accepted["id"])
    assert waiting["status"] == "queued" and waiting["reason"].startswith("quiet hours: waiting until ")


async def test_quiet_hours_hold_the_job_until_the_customers_window(
    robo: Client, mp3: str, redis: Redis, prefix: str
) -> None:
    hours = closed_hours()
    resp = await robo.put(f"/v1/lines/{LINE}", json={"provider": "sb", "hours": hours.model_dump()}, headers=ADMIN)
    assert resp.status == 200
    _, accepted = await post(robo, robocall(mp3))
    opening = next_open(hours, CUSTOMER, datetime.now(UTC))
    assert opening - datetime.now(UTC) > timedelta(hours=1)

    async def deferred() -> bool:
        return (await job(robo, accepted["id"]))["reason"] is not None

    await eventually(deferred)
    waiting = await job(robo, accepted["id"])
    assert waiting["status"] == "queued" and waiting["reason"] == f"quiet hours: waiting until {opening.isoformat()}"
    assert await redis.zscore(jobs_due(prefix, accepted["id"]), accepted["id"]) == opening.timestamp()

    # A test call is the admin's own: it goes now.
    _, test_call = await post(robo, robocall(mp3, test=True, to="+34600999888"))
    await final(robo, test_call["id"], "completed")
