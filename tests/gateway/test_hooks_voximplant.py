"""The Voximplant webhook: HMAC-signed JSON from callgate's VoxEngine scenario."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import ClientResponse

from tests.conftest import ADMIN, Client
from tests.support import (
    AGENT,
    CUSTOMER,
    LINE,
    add_item,
    add_trigger,
    eventually,
    item,
    stage_of,
    timeline_types,
    voximplant_post,
)

SECRET = "voximplant-shared-secret"
PATH = "/webhooks/voximplant/vox"


async def _configure(client: Client) -> None:
    for path, body in [
        ("/v1/pipelines/sales", {"stages": ["NEW", "CALL_BACK", "WON"]}),
        ("/v1/providers/vox", {"kind": "voximplant", "credentials": {"webhook_secret": SECRET}}),
        (f"/v1/lines/{LINE}", {"provider": "vox", "forward_to": [AGENT]}),
    ]:
        assert (await client.put(path, json=body, headers=ADMIN)).status == 200


def _event(event: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "call_id": "vox-call-1",
        "line": LINE,
        "customer": CUSTOMER,
        "at": time.time(),
        "seq": seq,
        **fields,
    }


async def _post(
    client: Client, payload: dict[str, Any], *, secret: str = SECRET, age: int = 0, path: str = PATH
) -> ClientResponse:
    return await voximplant_post(client, path, payload, secret, age=age)


async def test_incoming_call_answers_agents_and_missed_moves_item(client: Client) -> None:
    await _configure(client)
    await add_item(client)
    await add_trigger(client, event="call.missed", target_stage="CALL_BACK")
    resp = await _post(client, _event("call.incoming", 1, status="ringing"))
    assert resp.status == 200
    assert await resp.json() == {"forward_to": [AGENT], "timeout": 20}
    missed = _event("call.missed", 2, status="busy", code=486)
    for _ in range(2):  # the scenario retries on a lost answer
        assert (await _post(client, missed)).status == 200

    async def moved() -> bool:
        return await stage_of(client) == "CALL_BACK"

    await eventually(moved)
    types = timeline_types(await item(client))
    assert types.count("call.missed") == 1 and types.count("call.incoming") == 1


async def test_refusals_change_nothing(client: Client) -> None:
    await _configure(client)
    await add_item(client)
    await add_trigger(client, event="call.incoming", target_stage="WON")
    incoming = _event("call.incoming", 1)
    cases = [
        (await _post(client, incoming, secret="wrong-secret"), 403, "bad_signature"),
        (await _post(client, incoming, age=301), 403, "bad_signature"),
        (await _post(client, incoming, path="/webhooks/voximplant/other"), 403, "unknown_provider"),
        (await _post(client, {**incoming, "line": "+34910009999"}), 403, "unknown_line"),
        (await _post(client, {**incoming, "event": "call.exploded"}), 400, "malformed_webhook"),
        (await _post(client, {"event": "call.incoming"}), 400, "malformed_webhook"),
    ]
    for resp, status, code in cases:
        assert resp.status == status, await resp.text()
        assert (await resp.json())["error"]["code"] == code
    unsigned = await client.post(PATH, json=incoming)
    assert unsigned.status == 403
    assert (await unsigned.json())["error"]["code"] == "missing_signature"
    data = await item(client)
    assert data["stage"] == "NEW" and "call.incoming" not in timeline_types(data)
