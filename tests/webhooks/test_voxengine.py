"""Runs voice/voxengine/inbound.js under node against mocked VoxEngine globals.

Every request the scenario makes is checked with the gateway's own verify_voximplant and
parse_voximplant, so the scenario and the gateway cannot drift apart unnoticed.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from config.vocabulary import EventKind
from webhooks.events import Event
from webhooks.signatures import verify_voximplant
from webhooks.voximplant import parse_voximplant

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "voice" / "voxengine"
# A routing rule runs callgate.js, then the scenario.
INBOUND = f"{SCENARIOS / 'callgate.js'},{SCENARIOS / 'inbound.js'}"
HARNESS = Path(__file__).resolve().parent / "voxengine_harness.js"

SECRET = "s3cret-ñ"
URL = "https://gw.example.com/webhooks/voximplant/vox1"
AGENT_1 = "+34600000001"
AGENT_2 = "+34600000002"


def gateway(**answer: Any) -> dict[str, Any]:
    return {"code": 200, "text": json.dumps(answer)}


def records_of(scenario: str = INBOUND, **spec: Any) -> list[dict[str, Any]]:
    """Everything the scenario did, one record per line of the harness."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    spec = {
        "url": URL,
        "secret": SECRET,
        "callId": "inbound-1",
        "destination": "34911234567",
        "callerid": "34600111222",
        **spec,
    }
    done = subprocess.run(
        [node, str(HARNESS), scenario, json.dumps(spec)], capture_output=True, text=True, timeout=30, check=False
    )
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, (done.stderr, records)
    assert records[-1] == {"type": "terminated"}
    return records


def run(**spec: Any) -> tuple[list[Event], list[dict[str, Any]]]:
    records = records_of(**spec)
    events = []
    for request in (r for r in records if r["type"] == "request"):
        assert request["url"] == URL
        assert request["method"] == "POST"
        headers = request["headers"]
        assert headers["Content-Type"] == "application/json"
        raw = request["body"].encode("utf-8")
        assert verify_voximplant(
            SECRET, headers["X-Callgate-Timestamp"], headers["X-Callgate-Signature"], raw, now=time.time()
        )
        events.append(parse_voximplant(raw, "vox1"))
    actions = [r for r in records if r["type"] == "action"]
    return events, actions


def kinds(events: list[Event]) -> list[EventKind]:
    return [event.kind for event in events]


def dialled(actions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["number"], a["callerid"]) for a in actions if a["action"] == "callPSTN"]


def assert_one_call(events: list[Event]) -> None:
    assert {(e.ref, e.line, e.customer) for e in events} == {("inbound-1", "+34911234567", "+34600111222")}
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("digest_encoding", ["hex", "base64", "binary"])
def test_all_agents_busy(digest_encoding: str) -> None:
    events, actions = run(
        crypto=digest_encoding,
        gateway=gateway(forward_to=[AGENT_1, AGENT_2], timeout=20),
        agents={AGENT_1: {"fail": 486, "after": 5}, AGENT_2: {"fail": 486, "after": 15}},
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]
    assert_one_call(events)
    assert events[0].status == "ringing"
    assert (events[1].status, events[1].extra) == ("busy", {"code": "486"})
    # Agents are rung from the line the customer called.
    assert dialled(actions) == [(AGENT_1, "34911234567"), (AGENT_2, "34911234567")]
    assert not [a for a in actions if a["action"] in ("answer", "sendMediaBetween")]
    assert ("hangup", "inbound-1") in [(a["action"], a.get("call")) for a in actions]


def test_last_failure_code_is_reported() -> None:
    events, _ = run(
        gateway=gateway(forward_to=[AGENT_1, AGENT_2]),
        agents={AGENT_1: {"fail": 486, "after": 5}, AGENT_2: {"fail": 480, "after": 20}},
    )
    assert (events[-1].kind, events[-1].status, events[-1].extra) == (
        EventKind.CALL_MISSED,
        "no-answer",
        {"code": "480"},
    )


def test_agent_answers() -> None:
    events, actions = run(
        gateway=gateway(forward_to=[AGENT_1, AGENT_2], timeout=20),
        agents={AGENT_1: {"connect": 20, "hangup": 40, "duration": 42}},
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED]
    assert_one_call(events)
    assert events[1].status == "in-progress"
    assert (events[2].status, events[2].extra) == ("completed", {"duration": "42"})
    order = [(a["action"], a.get("call")) for a in actions if a["action"] != "callPSTN"]
    assert order[:3] == [("answer", "inbound-1"), ("sendMediaBetween", None), ("hangup", "leg-2")]
    assert ("hangup", "inbound-1") in order
    # The agent who hung up is not hung up again.
    assert ("hangup", "leg-1") not in order
    bridged = next(a for a in actions if a["action"] == "sendMediaBetween")
    assert bridged["calls"] == ["inbound-1", "leg-1"]


def test_caller_hangs_up_while_bridged() -> None:
    events, actions = run(
        gateway=gateway(forward_to=[AGENT_1]),
        agents={AGENT_1: {"connect": 10}},
        callerHangup=80,
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED]
    assert ("hangup", "leg-1") in [(a["action"], a.get("call")) for a in actions]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(gateway(forward_to=[]), id="empty-list"),
        pytest.param(gateway(), id="no-forward-to"),
        pytest.param(gateway(forward_to="+34600000001"), id="not-a-list"),
        pytest.param({"code": 200, "text": "<html>"}, id="not-json"),
        pytest.param({"code": 403, "text": '{"error": {"code": "forbidden"}}'}, id="refused"),
        pytest.param({"code": -4, "text": ""}, id="unreachable"),
    ],
)
def test_no_agents(answer: dict[str, Any]) -> None:
    events, actions = run(gateway=answer)
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]
    assert (events[1].status, events[1].extra) == ("failed", {})
    assert dialled(actions) == []


def test_caller_gives_up_while_ringing() -> None:
    events, actions = run(
        gateway=gateway(forward_to=[AGENT_1, AGENT_2]),
        agents={AGENT_1: {"connect": 5000}},
        callerHangup=60,
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]
    assert (events[1].status, events[1].extra) == ("canceled", {"code": "487"})
    hung_up = {a["call"] for a in actions if a["action"] == "hangup"}
    assert {"leg-1", "leg-2"} <= hung_up


def test_ring_timeout() -> None:
    events, actions = run(
        gateway=gateway(forward_to=[AGENT_1], timeout=2),
        agents={AGENT_1: {"connect": 5000}},
        timeScale=100,
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]
    assert (events[1].status, events[1].extra) == ("no-answer", {"code": "408"})
    assert "leg-1" in {a["call"] for a in actions if a["action"] == "hangup"}


def test_transient_failure_is_retried_with_same_event() -> None:
    events, _ = run(
        gateway=gateway(forward_to=[AGENT_1]),
        agents={AGENT_1: {"connect": 10, "hangup": 30, "duration": 7}},
        failFirst={"call.answered": 503},
    )
    assert kinds(events) == [
        EventKind.CALL_INCOMING,
        EventKind.CALL_ANSWERED,
        EventKind.CALL_ANSWERED,
        EventKind.CALL_COMPLETED,
    ]
    # Same dedup: the gateway records the retried delivery once.
    assert events[1].dedup == events[2].dedup
    assert events[3].sequence == 3


def test_incoming_is_not_retried() -> None:
    events, _ = run(gateway=gateway(forward_to=[AGENT_1]), failFirst={"call.incoming": 502})
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]


def test_non_ascii_identities_survive_signing() -> None:
    events, _ = run(callerid="José Pérez", gateway=gateway(forward_to=[]))
    assert {event.customer for event in events} == {"José Pérez"}


def test_gateway_url_and_secret_come_from_the_custom_data() -> None:
    """Nothing in the scenario's source: the routing rule's (or StartScenarios') custom data."""
    custom = json.dumps({"url": URL, "secret": SECRET})
    assert len(custom.encode()) <= 200  # VoxEngine's limit for the session's custom data
    # The spec's own url/secret are decoys: only the custom data can have made these requests
    # go to URL signed with SECRET (run() checks both).
    events, _ = run(url="https://decoy.example/x", secret="decoy", customData=custom, gateway=gateway(forward_to=[]))
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]


@pytest.mark.parametrize(
    "custom",
    [
        "",
        "not json",
        json.dumps({"url": URL}),
        json.dumps({"secret": SECRET}),
        json.dumps({"url": "ftp://x", "secret": "s"}),
    ],
)
def test_without_custom_data_the_scenario_says_why_and_hangs_up(custom: str) -> None:
    records = records_of(customData=custom)
    assert [r for r in records if r["type"] == "request"] == []
    assert {"type": "action", "action": "hangup", "call": "inbound-1", "ended": False} in records
    assert any("custom data" in r["message"] for r in records if r["type"] == "log")


def test_config_from_a_companion_scenario() -> None:
    """A rule without custom data: CALLGATE_CONFIG from a scenario the rule runs first."""
    events, _ = run(
        url="https://decoy.example/x",
        secret="decoy",
        customData="",
        globalConfig={"url": URL, "secret": SECRET},
        gateway=gateway(forward_to=[]),
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_MISSED]


def test_code_zero_is_not_retried() -> None:
    """HTTP result code 0: VoxEngine's own limits were hit; retrying would hit them again."""
    events, _ = run(
        gateway=gateway(forward_to=[AGENT_1]),
        agents={AGENT_1: {"connect": 10, "hangup": 30, "duration": 7}},
        failFirst={"call.answered": 0},
    )
    assert kinds(events) == [EventKind.CALL_INCOMING, EventKind.CALL_ANSWERED, EventKind.CALL_COMPLETED]


def test_network_errors_are_retried() -> None:
    events, _ = run(
        gateway=gateway(forward_to=[AGENT_1]),
        agents={AGENT_1: {"connect": 10, "hangup": 30, "duration": 7}},
        failFirst={"call.answered": -4},
    )
    assert kinds(events).count(EventKind.CALL_ANSWERED) == 2
