"""The tracking API (identify/track/page/screen/group/alias/batch): edge validation, write keys, mapping."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from cdp_hub.config import ConnectorInstance
from cdp_hub.connector.tracking import TrackingConnector
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub


async def _client(hub: Hub, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub.test",
                             auth=auth)


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    hub.settings.connectors["web"] = ConnectorInstance(type="tracking", config={"write_keys": ["wk-web"]})
    async with await _client(hub, ("wk-web", "")) as c:
        yield c


async def published(hub: Hub) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]


async def test_identify_track_page_screen_alias(client: httpx.AsyncClient, hub: Hub) -> None:
    calls = [
        ("identify", {"userId": "7100000042", "anonymousId": "a-1", "messageId": "m1",
                      "timestamp": "2026-11-20T10:00:00Z",
                      "traits": {"email": "Anna@Example.RU", "phone": "8 (916) 123-45-67", "firstName": "Анна",
                                 "birthday": "1990-03-07", "address": {"city": "Казань"}, "plan": "gold"}}),
        ("track", {"userId": "7100000042", "event": "Order Completed", "messageId": "m2",
                   "properties": {"order_id": "5001", "total": 1299.8, "currency": "RUB", "coupon": "BF",
                                  "products": [{"sku": "MLK", "name": "Молоко", "price": 89.9, "quantity": 2}]}}),
        ("page", {"anonymousId": "a-1", "name": "Каталог", "messageId": "m3",
                  "properties": {"url": "https://shop.example.ru/catalog"}}),
        ("screen", {"anonymousId": "a-1", "name": "Cart", "messageId": "m4",
                    "context": {"device": {"id": "DEV-1"}, "app": {"version": "5.2.1"}}}),
        ("alias", {"previousId": "a-1", "userId": "7100000042", "messageId": "m5"}),
    ]
    for kind, body in calls:
        response = await client.post(f"/v1/{kind}", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 1
    events = {e["source_record_id"]: e for e in await published(hub)}
    ident = events["m1"]
    assert ident["type"] == "customer.updated" and ident["source"] == "web"
    assert {(i["kind"], i["value"]) for i in ident["identities"]} == {
        ("ecom_customer_id", "7100000042"), ("anonymous_id", "a-1"), ("email", "anna@example.ru"),
        ("phone", "+79161234567")}
    assert ident["traits"]["first_name"] == "Анна" and ident["traits"]["city"] == "Казань"
    assert ident["traits"]["birth_date"] == "1990-03-07" and ident["traits"]["plan"] == "gold"
    order = events["m2"]
    assert order["type"] == "order.placed" and order["properties"]["order_id"] == "5001"
    assert order["properties"]["items"][0]["sku"] == "MLK" and order["properties"]["coupon"] == "BF"
    assert events["m3"]["type"] == "screen.viewed" and events["m3"]["properties"]["kind"] == "page"
    assert events["m3"]["context"]["page_url"] == "https://shop.example.ru/catalog"
    assert events["m4"]["context"]["app_version"] == "5.2.1"
    assert {(i["kind"], i["value"]) for i in events["m5"]["identities"]} == {
        ("ecom_customer_id", "7100000042"), ("anonymous_id", "a-1")}


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/v1/track", {"userId": "u1"}, "$"),                                   # no event
    ("/v1/track", {"event": "X"}, "$"),                                     # no userId/anonymousId
    ("/v1/track", {"userId": "u1", "event": "X", "properties": [1, 2]}, "$.properties"),
    ("/v1/identify", {"userId": "u1", "traits": "vip"}, "$.traits"),
    ("/v1/alias", {"userId": "u1"}, "$"),
    ("/v1/batch", {"items": []}, "$.batch"),
])
async def test_edge_validation_names_path(client: httpx.AsyncClient, hub: Hub, path: str,
                                          body: dict[str, Any], where: str) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["path"] == where and error["message"].startswith(where) and error["code"]
    assert await published(hub) == []


async def test_a_bad_message_in_a_batch_is_dead_lettered_and_the_rest_stored(client: httpx.AsyncClient,
                                                                            hub: Hub) -> None:
    # One bad message used to reject its whole batch (400, nothing stored, no dead letter).
    body = {"batch": [{"type": "track", "userId": "u", "event": "Application Opened", "messageId": "ok-1"},
                      {"type": "track", "userId": "u", "event": 5, "messageId": "bad-1"},
                      {"type": "fly", "userId": "u", "messageId": "bad-2"},
                      "not an object"]}
    response = await client.post("/v1/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected"]
    assert [r.get("path") for r in results[1:]] == ["$.batch[1].event", "$.batch[2].type", "$.batch[3]"]
    assert [e["source_record_id"] for e in await published(hub)] == ["ok-1"]
    dead = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]
    assert sorted(d["field"] for d in dead) == ["$.batch[1].event", "$.batch[2].type", "$.batch[3]"]
    assert {d["failure_type"] for d in dead} == {"schema_violation"}


async def test_not_json_and_type_mismatch(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/track", content=b"{nope")).status_code == 400
    response = await client.post("/v1/track", json={"type": "identify", "userId": "u"})
    assert response.status_code == 400 and response.json()["path"] == "$.type"


async def test_batch_with_an_unmapped_event_dead_letters_it(client: httpx.AsyncClient, hub: Hub) -> None:
    body = {"context": {"ip": "10.0.0.1"}, "batch": [
        {"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "b1",
         "properties": {"sku": "MLK", "price": "89.90"}},
        {"type": "track", "userId": "u1", "event": "Wishlist Shared", "messageId": "b2"},
        {"type": "track", "userId": "u1", "event": "order.paid", "messageId": "b3",
         "properties": {"order_id": "9"}},
    ]}
    response = await client.post("/v1/batch", json=body)
    data = response.json()
    assert response.status_code == 200 and data["accepted"] == 2 and data["dead_letters"] == 1
    assert data["errors"][0]["field"] == "event"
    events = await published(hub)
    assert {e["type"] for e in events} == {"product.viewed", "order.paid"}
    assert all(e["context"]["ip"] == "10.0.0.1" for e in events)


async def test_write_keys_pick_the_instance(hub: Hub) -> None:
    hub.settings.connectors["web"] = ConnectorInstance(type="tracking", config={"write_keys": ["wk-web"]})
    hub.settings.connectors["ios"] = ConnectorInstance(type="tracking", config={"write_keys": ["wk-ios"],
                                                                                "user_id_kind": "crm_id"})
    async with await _client(hub) as client:
        body = {"userId": "42", "event": "Application Opened", "messageId": "k1"}
        assert (await client.post("/v1/track", json=body)).status_code == 401
        assert (await client.post("/v1/track", json=body, auth=("wrong", ""))).status_code == 401
        ok = await client.post("/v1/track", json=body, auth=("wk-ios", ""))
        assert ok.status_code == 200, ok.text
        basic = base64.b64encode(b"wk-web:").decode()
        assert (await client.post("/v1/track", json={**body, "messageId": "k2"},
                                  headers={"Authorization": f"Basic {basic}"})).status_code == 200
        assert (await client.post("/v1/track", json={**body, "messageId": "k3", "writeKey": "wk-web"})).status_code == 200
    events = {e["source_record_id"]: e for e in await published(hub)}
    assert events["k1"]["source"] == "ios" and events["k1"]["identities"][0]["kind"] == "crm_id"
    assert events["k2"]["source"] == "web" and events["k3"]["source"] == "web"
    assert events["k1"]["type"] == "app.opened"


def test_tracking_connector_is_registered_for_dlq_replay() -> None:
    from cdp_hub.plugins import load_plugins

    assert load_plugins().connector("tracking") is TrackingConnector
