from tests.conftest import ADMIN, API, Client


async def test_admin_and_crm_roundtrip(client: Client) -> None:
    resp = await client.put("/v1/pipelines/sales", json={"stages": ["NEW", "CALL_BACK", "WON"]}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    card = {
        "pipeline": "sales",
        "stage": "NEW",
        "contacts": [{"name": "Ana", "phones": [{"type": "MOBILE", "value": "+34 600 111 222"}]}],
    }
    resp = await client.put("/v1/items/D1", json=card, headers=API)
    assert resp.status == 201, await resp.text()
    resp = await client.get("/v1/items?phone=+34600111222", headers=API)
    body = await resp.json()
    assert [i["id"] for i in body["items"]] == ["D1"]
