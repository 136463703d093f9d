"""Runs voice/voxengine/robocall.js (after callgate.js, as its routing rule does) under node
against mocked VoxEngine globals.

Every request is checked with the gateway's own verify_voximplant, keyed with the dial's
secret (robocall_secret), and parse_robocall, so the scenario and the gateway cannot drift
apart unnoticed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from config.vocabulary import EventKind
from tests.webhooks.test_voxengine import SCENARIOS, records_of
from webhooks.events import Event
from webhooks.signatures import robocall_secret, verify_voximplant
from webhooks.voximplant import parse_robocall

ROBOCALL = f"{SCENARIOS / 'callgate.js'},{SCENARIOS / 'robocall.js'}"
JOB, DIAL = "job_0123456789abcdef", 2
SECRET = robocall_secret("the provider's webhook_secret", JOB, DIAL)
URL = f"https://gw.example.com/webhooks/voximplant/vox1?job={JOB}&dial={DIAL}"
CUSTOMER, LINE = "+34600111222", "+34910000001"
DIALLED = "34600111222"  # callPSTN takes the number without "+"
MP3 = "https://gw.example.com/media/k3y.mp3"
SESSION = 4242


def script(code: int = 200, **fields: Any) -> dict[str, Any]:
    return {"code": code, "text": json.dumps({"to": CUSTOMER, "caller_id": LINE, **fields})}


def run(**spec: Any) -> tuple[list[str | Event], list[dict[str, Any]]]:
    """What the session posted (its robocall.start's session id, then Events) and did."""
    records = records_of(ROBOCALL, url=URL, secret=SECRET, started={"sessionId": SESSION}, **spec)
    posts = []
    for request in (r for r in records if r["type"] == "request"):
        assert request["url"] == URL and request["method"] == "POST"
        headers, raw = request["headers"], request["body"].encode("utf-8")
        stamp, signature = headers["X-Callgate-Timestamp"], headers["X-Callgate-Signature"]
        assert verify_voximplant(SECRET, stamp, signature, raw, now=time.time())
        posts.append(parse_robocall(raw, "vox1"))
    return posts, [r for r in records if r["type"] == "action"]


def progress(posts: list[str | Event]) -> list[tuple[EventKind, str, dict[str, str]]]:
    assert posts[0] == str(SESSION)  # first of all, the session asks for its script
    events = [post for post in posts[1:] if isinstance(post, Event)]
    assert len(events) == len(posts) - 1
    assert {(e.ref, e.line, e.customer) for e in events} == {(str(SESSION), LINE, CUSTOMER)}
    return [(event.kind, event.status, event.extra) for event in events]


def test_an_answered_call_plays_the_mp3_hangs_up_and_reports_each_step() -> None:
    posts, actions = run(script=script(play=MP3), agents={DIALLED: {"ring": 5, "connect": 15, "duration": 42}})
    assert progress(posts) == [
        (EventKind.CALL_OUTGOING, "ringing", {}),
        (EventKind.CALL_ANSWERED, "in-progress", {}),
        (EventKind.CALL_COMPLETED, "completed", {"duration": "42"}),
    ]
    assert [(a["action"], a.get("number"), a.get("callerid"), a.get("url")) for a in actions] == [
        ("callPSTN", DIALLED, "34910000001", None),
        ("startPlayback", None, None, MP3),
        ("hangup", None, None, None),
    ]


@pytest.mark.parametrize(
    ("say", "options"),
    [
        pytest.param(
            {"text": "Hola", "language": "es-ES", "voice": "Amazon.es_ES_Lucia", "ttsOptions": {"rate": "fast"}},
            {"voice": "amazon:es_ES_Lucia", "ttsOptions": {"rate": "fast"}},
            id="named-voice",
        ),
        pytest.param({"text": "Hola", "language": "es-MX"}, {"voice": "amazon:es_MX_Mia"}, id="language-region"),
        pytest.param({"text": "Привет", "language": "ru"}, {"voice": "default:ru_RU_Female"}, id="free-voice"),
        pytest.param({"text": "Hi", "language": "xx"}, {}, id="voxengine-default"),
    ],
)
def test_say_speaks_the_text_with_its_voice_and_tts_options(say: dict[str, Any], options: dict[str, Any]) -> None:
    posts, actions = run(script=script(say=say), agents={DIALLED: {"connect": 10}})
    assert [kind for kind, _, _ in progress(posts)] == [EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED]
    [spoken] = [a for a in actions if a["action"] == "say"]
    assert (spoken["text"], spoken["options"]) == (say["text"], options)


@pytest.mark.parametrize(("code", "status"), [(486, "busy"), (603, "no-answer"), (408, "no-answer"), (404, "failed")])
def test_a_call_that_fails_reports_how_with_the_sip_code(code: int, status: str) -> None:
    posts, actions = run(script=script(play=MP3), agents={DIALLED: {"ring": 5, "fail": code, "after": 10}})
    assert progress(posts) == [
        (EventKind.CALL_OUTGOING, "ringing", {}),
        (EventKind.CALL_COMPLETED, status, {"code": str(code)}),
    ]
    assert [a["action"] for a in actions] == ["callPSTN"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(script(409), id="another-session-has-the-dial"),
        pytest.param(script(play="ftp://x/y.mp3"), id="no-audio"),
        pytest.param({"code": 200, "text": "<html>"}, id="not-json"),
        pytest.param({"code": -4, "text": ""}, id="unreachable"),
    ],
)
def test_without_a_script_the_session_ends_without_dialling(answer: dict[str, Any]) -> None:
    posts, actions = run(script=answer)
    assert posts[-1] == str(SESSION) and actions == []


def test_a_lost_report_is_sent_again_the_same() -> None:
    posts, _ = run(script=script(play=MP3), agents={DIALLED: {"connect": 10}}, failFirst={"call.answered": 503})
    events = [post for post in posts if isinstance(post, Event)]
    assert [e.kind for e in events] == [EventKind.CALL_ANSWERED, EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED]
    assert events[0].dedup == events[1].dedup
