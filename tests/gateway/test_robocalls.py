"""Robocalls end to end through the sandbox: POST /v1/robocalls with an MP3 link, the job
placed once and moved by the call's progress, idempotency, phone selection and the SSRF
guard on play.url."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from config.jobs import RANK, JobStatus
from config.settings import Settings
from gateway.app import create_app
from gateway.keys import JOBS_STREAM, Keys
from tests.conftest import ADMIN, API, Client, ClientFactory
from tests.media import media_server
from tests.support import eventually, item, jobs_due

LINE = "+34910000001"
CUSTOMER = "+34600111222"
NO_ANSWER = "+34600111220"
BUSY = "+34600111221"


@pytest.fixture
async def media() -> AsyncIterator[str]:
    server = await media_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def setup(client: Client, phone: str = CUSTOMER) -> None:
    for path, body in [
        ("/v1/pipelines/sales", {"stages": ["NEW", "WON"]}),
        # Fast enough that pacing never slows a test; test_limits covers the limiter.
        ("/v1/providers/sb", {"kind": "sandbox", "calls_per_second": 100}),
        (f"/v1/lines/{LINE}", {"provider": "sb"}),
    ]:
        resp = await client.put(path, json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    await put_card(client, "D1", [{"type": "MOBILE", "value": phone}])


async def put_card(client: Client, item_id: str, phones: list[dict[str, str]], **extra: Any) -> None:
    card = {
        "pipeline": "sales",
        "stage": "NEW",
        "fields": {"name": "Ana", "order": "A-17"},
        "contacts": [{"name": "Ana", "phones": phones}],
        **extra,
    }
    resp = await client.put(f"/v1/items/{item_id}", json=card, headers=API)
    assert resp.status in (200, 201), await resp.text()


def robocall(url: str, **extra: Any) -> dict[str, Any]:
    return {"item_id": "D1", "line": LINE, "play": {"url": url}, **extra}


async def post(client: Client, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {**API, **({"Idempotency-Key": key} if key else {})}
    resp = await client.post("/v1/robocalls", json=body, headers=headers)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def job(client: Client, job_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/jobs/{job_id}", headers=API)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def final(client: Client, job_id: str, status: str) -> dict[str, Any]:
    async def reached() -> bool:
        return bool((await job(client, job_id))["status"] == status)

    await eventually(reached)
    return await job(client, job_id)


def job_statuses(timeline: list[dict[str, Any]], job_id: str) -> list[str]:
    return [e["data"]["status"] for e in timeline if e["type"] == "job.updated" and e["data"]["job_id"] == job_id]


async def test_an_mp3_robocall_through_the_sandbox_ends_completed(robo: Client, media: str) -> None:
    status, accepted = await post(robo, robocall(f"{media}/ok.mp3"))
    assert status == 202 and accepted["status"] == "queued" and accepted["id"].startswith("job_")

    done = await final(robo, accepted["id"], "completed")
    assert done["kind"] == "robocall" and done["to"] == CUSTOMER and done["line"] == LINE
    assert done["provider"] == "sb" and done["provider_ref"].startswith("SB") and done["test"] is False
    assert done["reason"] is None and done["cost"] is None
    assert done["audio_url"].startswith("https://gw.example.com/media/")

    # The audio is served where the provider fetches it, as audio/mpeg with Range support.
    path = done["audio_url"].removeprefix("https://gw.example.com")
    whole = await robo.get(path)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/mpeg"
    body = await whole.read()
    part = await robo.get(path, headers={"Range": "bytes=0-99"})
    assert part.status == 206 and await part.read() == body[:100]
    tail = await robo.get(path, headers={"Range": "bytes=-100"})
    assert tail.status == 206 and await tail.read() == body[-100:]
    head = await robo.head(path)  # what a player asks first
    assert head.status == 200 and head.headers["Content-Length"] == str(len(body)) and await head.read() == b""
    for unsatisfiable in (f"bytes={len(body)}-", "bytes=x-y", "bytes=-0"):
        past = await robo.get(path, headers={"Range": unsatisfiable})
        assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{len(body)}"
        assert (await past.json())["error"]["code"] == "range_not_satisfiable"
        assert "immutable" not in past.headers.get("Cache-Control", "")
    # An If-Range as old as the file keeps the Range (and so its 416); an older one voids it.
    kept = await robo.get(path, headers={"Range": f"bytes={len(body)}-", "If-Range": whole.headers["Last-Modified"]})
    assert kept.status == 416 and (await kept.json())["error"]["code"] == "range_not_satisfiable"
    stale = "Thu, 01 Jan 2015 00:00:00 GMT"
    voided = await robo.get(path, headers={"Range": f"bytes={len(body)}-", "If-Range": stale})
    assert voided.status == 200 and await voided.read() == body
    assert (await robo.get("/media/" + "x" * 32 + ".mp3")).status == 404

    timeline = (await item(robo, "D1"))["timeline"]
    statuses = job_statuses(timeline, accepted["id"])
    assert statuses[:2] == ["queued", "sending"] and statuses[-1] == "completed"
    # Reports processed out of order are skipped, never applied backwards.
    ranks = [RANK[JobStatus(status)] for status in statuses]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    # The sandbox's call progress moved the job, and no call.outgoing was recorded for it.
    assert not [e for e in timeline if e["type"].startswith("call.")]


@pytest.mark.parametrize(("number", "outcome"), [(NO_ANSWER, "no_answer"), (BUSY, "busy")])
async def test_sandbox_numbers_ending_in_0_and_1_are_not_reached(
    robo: Client, media: str, number: str, outcome: str
) -> None:
    await put_card(robo, "D2", [{"type": "MOBILE", "value": number}])
    status, accepted = await post(robo, robocall(f"{media}/ok.mp3", item_id="D2"))
    assert status == 202
    done = await final(robo, accepted["id"], outcome)
    assert done["reason"] == f"the call ended {outcome.replace('_', '-')}"


async def test_the_same_idempotency_key_is_one_job_and_a_different_body_a_409(
    robo: Client, media: str, redis: Redis, prefix: str
) -> None:
    body = robocall(f"{media}/ok.mp3")
    results = await asyncio.gather(*(post(robo, body, key="order-17") for _ in range(8)))
    assert {status for status, _ in results} == {202}
    assert len({data["id"] for _, data in results}) == 1
    jobs = (await (await robo.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    assert len(jobs) == 1

    status, error = await post(robo, robocall(f"{media}/ok.mp3", phone_type="HOME"), key="order-17")
    assert status == 409 and error["error"]["code"] == "idempotency_conflict"
    status, again = await post(robo, body, key="order-17")
    assert status == 202 and again["id"] == results[0][1]["id"]


async def test_a_key_claimed_by_a_request_that_died_before_its_job_makes_the_job_on_retry(
    robo: Client, media: str, redis: Redis, prefix: str
) -> None:
    body = robocall(f"{media}/ok.mp3")
    status, first = await post(robo, body, key="order-18")
    assert status == 202
    # The key is claimed in a step of its own, before the job's: drop the job to stand for
    # a request that died between the two.
    assert await redis.delete(Keys(prefix).job(first["id"])) == 1
    status, again = await post(robo, body, key="order-18")
    assert status == 202 and again == {"id": first["id"], "status": "queued"}
    assert (await robo.get(f"/v1/jobs/{first['id']}", headers=API)).status == 200


async def test_jobs_of_an_item_newest_first(robo: Client, media: str) -> None:
    first = (await post(robo, robocall(f"{media}/ok.mp3")))[1]["id"]
    second = (await post(robo, robocall(f"{media}/redirect.mp3")))[1]["id"]
    resp = await robo.get("/v1/jobs", params={"item_id": "D1"}, headers=API)
    assert [j["id"] for j in (await resp.json())["jobs"]] == [second, first]
    assert (await robo.get("/v1/jobs", headers=API)).status == 422
    assert (await robo.get("/v1/jobs/job_nope", headers=API)).status == 404


async def test_a_type_the_contact_lacks_is_skipped_with_the_reason(robo: Client, media: str) -> None:
    await put_card(
        robo,
        "D3",
        [{"type": "HOME", "value": "+34600222333"}],
        company={"name": "Acme", "phones": [{"type": "WORK", "value": "+34910000009"}]},
    )
    _, accepted = await post(robo, robocall(f"{media}/ok.mp3", item_id="D3", phone_type="WORK"))
    done = await final(robo, accepted["id"], "skipped")
    assert done["reason"] == "the first contact has no WORK phone number" and done["to"] is None


async def test_a_test_call_goes_to_the_given_number(robo: Client, media: str) -> None:
    _, accepted = await post(robo, robocall(f"{media}/ok.mp3", test=True, to="+34 600 999 888"))
    done = await final(robo, accepted["id"], "completed")
    assert done["to"] == "+34600999888" and done["test"] is True
    status, error = await post(robo, robocall(f"{media}/ok.mp3", test=True))
    assert (status, error["error"]["field"]) == (422, "to")
    assert error["error"]["message"].startswith("to is required for a test call")


async def test_a_delayed_job_waits_in_the_due_set(robo: Client, media: str, redis: Redis, prefix: str) -> None:
    _, accepted = await post(robo, robocall(f"{media}/ok.mp3", delay_seconds=1))
    assert await redis.zscore(jobs_due(prefix, accepted["id"]), accepted["id"]) is not None
    assert (await job(robo, accepted["id"]))["status"] == "queued"
    await final(robo, accepted["id"], "completed")
    assert await redis.zscore(jobs_due(prefix, accepted["id"]), accepted["id"]) is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("notmp3.mp3", "not an MP3"),
        ("huge.mp3", "larger than 10 MB"),
        ("missing.mp3", "HTTP 404"),
    ],
)
async def test_unusable_files_are_422(robo: Client, media: str, path: str, message: str) -> None:
    status, error = await post(robo, robocall(f"{media}/{path}"))
    assert status == 422 and error["error"]["field"] == "play.url"
    assert message in error["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.mp3",
        "http://10.1.2.3/x.mp3",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.mp3",
        "http://[::ffff:192.168.0.1]/x.mp3",
        "http://localhost/x.mp3",
        "ftp://example.com/x.mp3",
        "file:///etc/passwd",
    ],
)
async def test_private_and_non_http_links_are_422(client: Client, url: str) -> None:
    await setup(client)
    status, error = await post(client, robocall(url))
    assert status == 422, error
    assert error["error"]["field"] == "play.url"


async def test_a_link_fetched_while_private_addresses_were_allowed_is_refused_once_they_are_not(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], media: str
) -> None:
    allowed = await aiohttp_client(create_app(make_settings(media_allow_private=True), workers=False))
    await setup(allowed)
    assert (await post(allowed, robocall(f"{media}/ok.mp3")))[0] == 202
    refused = await aiohttp_client(create_app(make_settings(), workers=False))  # the same Redis, data
    status, error = await post(refused, robocall(f"{media}/ok.mp3"))
    assert (status, error["error"]["field"]) == (422, "play.url"), error


async def test_requests_that_cannot_run_are_422_and_store_nothing(robo: Client, media: str) -> None:
    url = f"{media}/ok.mp3"
    cases = [
        (robocall(url, item_id="nope"), "item_id"),
        (robocall(url, line="+34910000099"), "line"),
        ({"item_id": "D1", "line": LINE}, "say"),
        ({**robocall(url), "say": {"text": "Hola"}}, "say"),
        ({"item_id": "D1", "line": LINE, "say": {"text": "Hola {{nombre}}"}}, "say.text"),
    ]
    for body, field in cases:
        status, error = await post(robo, body)
        assert status == 422, body
        assert error["error"].get("field") == field, error
    jobs = (await (await robo.get("/v1/jobs?item_id=D1", headers=API)).json())["jobs"]
    assert jobs == []


async def test_jobs_are_in_the_jobs_stream_until_a_worker_runs_them(
    aiohttp_client: ClientFactory, make_settings: Callable[..., Settings], media: str, redis: Redis, prefix: str
) -> None:
    settings = make_settings(media_allow_private=True)
    api_only = await aiohttp_client(create_app(settings, workers=False))
    await setup(api_only)
    _, accepted = await post(api_only, robocall(f"{media}/ok.mp3"))
    keys = Keys(prefix)
    assert await redis.xlen(keys.stream(JOBS_STREAM, keys.partition_of(accepted["id"]))) == 1
    worker = await aiohttp_client(create_app(settings))
    await final(worker, accepted["id"], "completed")
