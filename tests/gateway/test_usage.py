"""Usage and cost through the sandbox: each job's calls, minutes, TTS characters and SMS
segments are priced from its provider's prices, shown on the job, and totalled by provider
and line at GET /v1/usage, each dial counted once however often its report is processed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from config.vocabulary import EventKind
from gateway.app import create_app
from gateway.appkeys import SETTINGS
from gateway.jobs import JobRunner
from gateway.providers.registry import Providers
from gateway.providers.sandbox import CALL_SECONDS
from gateway.speech import Speech
from gateway.store import Store
from gateway.store.records import Snapshots
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.gateway.test_robocalls import LINE, NO_ANSWER, final, post, put_card, setup
from voice.render import renderer_for
from webhooks.events import Event

PRICES = {"currency": "EUR", "per_minute": 0.013, "per_tts_char": 0.000016, "per_sms_segment": 0.0079}


@pytest.fixture
async def priced(aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]) -> Client:
    client = await aiohttp_client(create_app(make_settings()))
    await setup(client)
    resp = await client.put(
        "/v1/providers/sb", json={"kind": "sandbox", "calls_per_second": 100, "prices": PRICES}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    return client


def say(text: str, **extra: Any) -> dict[str, Any]:
    return {"item_id": "D1", "line": LINE, "say": {"text": text, "engine": "provider"}, **extra}


async def usage(client: Client, **query: str) -> dict[str, Any]:
    resp = await client.get("/v1/usage", params=query, headers=API)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_jobs_are_priced_and_totalled_by_provider_and_line(priced: Client) -> None:
    _, spoken = await post(priced, say("Hola {{name}}"))  # "Hola Ana": 8 characters
    done = await final(priced, spoken["id"], "completed")
    assert done["currency"] == "EUR" and done["cost"] == pytest.approx(0.013 + 8 * 0.000016)
    assert done["usage"] == {"calls": 1, "seconds": CALL_SECONDS, "minutes": 1, "tts_chars": 8, "sms_segments": 0}

    # Two dials, neither answered: two calls, no minutes, and the job counts once.
    await put_card(priced, "D2", [{"type": "MOBILE", "value": NO_ANSWER}])
    _, unanswered = await post(priced, say("Hola", item_id="D2", attempts=2, retry_interval_seconds=1))

    async def redialled() -> dict[str, Any]:
        return await final(priced, unanswered["id"], "no_answer")

    missed = await redialled()
    while missed["attempt"] < 2:
        missed = await redialled()
    assert missed["usage"]["calls"] == 2 and missed["usage"]["minutes"] == 0
    assert missed["cost"] == pytest.approx(4 * 0.000016)

    resp = await priced.post("/v1/sms", json={"item_id": "D1", "text": "Hi {{name}}"}, headers=API)
    assert resp.status == 202, await resp.text()
    sms = await final(priced, (await resp.json())["id"], "delivered")
    assert sms["cost"] == pytest.approx(0.0079) and sms["usage"]["sms_segments"] == 1

    report = await usage(priced)
    expected = {
        "jobs": 3,
        "calls": 3,
        "seconds": CALL_SECONDS,
        "minutes": 1,
        "tts_chars": 12,
        "sms_segments": 1,
        "cost": {"EUR": pytest.approx(0.013 + 12 * 0.000016 + 0.0079)},
    }
    assert report["providers"] == [{"provider": "sb", **expected}]
    assert report["lines"] == [{"provider": "sb", "line": LINE, **expected}]

    # Unix seconds work too; a span before any job has nothing.
    assert (await usage(priced, since="1000000000", until="1000003600"))["providers"] == []
    assert report["since"] < report["until"]


async def test_a_provider_without_prices_counts_usage_but_no_cost(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    await setup(client)
    _, accepted = await post(client, say("Hola"))
    done = await final(client, accepted["id"], "completed")
    assert done["cost"] is None and "currency" not in done and done["usage"]["minutes"] == 1
    [line] = (await usage(client))["lines"]
    assert line["jobs"] == 1 and line["cost"] == {}


@pytest.mark.parametrize(("key", "value"), [("since", "yesterday"), ("until", "2026-13-01T00:00:00Z")])
async def test_a_time_that_is_not_one_is_a_422(priced: Client, key: str, value: str) -> None:
    resp = await priced.get("/v1/usage", params={key: value}, headers=API)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == key


async def test_a_dial_s_end_processed_again_counts_once(priced: Client, redis: Redis) -> None:
    _, accepted = await post(priced, say("Hola"))
    done = await final(priced, accepted["id"], "completed")
    before = await usage(priced)
    # The completed report again (a worker that died before acknowledging it): the job is
    # already completed, and the hour's totals already have this dial.
    settings = priced.app[SETTINGS]
    store = Store.open(redis, settings, Snapshots())
    runner = JobRunner(store, Providers(store, settings.base_url), settings, Speech(renderer_for(settings), 1))
    event = Event(
        kind=EventKind.CALL_COMPLETED,
        provider="sb",
        line=LINE,
        customer=done["to"],
        ref=done["provider_ref"],
        dedup="again",
        at=time.time(),
        status="completed",
        extra={"CallDuration": str(CALL_SECONDS), "job": done["id"], "dial": "1"},
    )
    await runner.on_call_event(done["id"], event)
    assert await usage(priced) == before and before["providers"][0]["jobs"] == 1
    assert (await final(priced, done["id"], "completed"))["usage"] == done["usage"]


async def test_since_after_until_or_a_span_in_the_far_future_counts_nothing(priced: Client) -> None:
    await setup(priced)
    _, accepted = await post(priced, say("Hola"))
    await final(priced, accepted["id"], "completed")
    assert (await usage(priced))["lines"]
    backwards = await usage(priced, since=str(int(time.time()) + 3600), until=str(int(time.time()) - 3600))
    assert backwards["providers"] == [] and backwards["lines"] == []
    far = await usage(priced, since="999999999999", until="999999999999")
    assert far["providers"] == [] and far["lines"] == []
