"""Webhook signatures and the POST /v1/webhooks/{instance} route (real PostgreSQL/Redis hub, memory bus)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from cdp_hub.config import ConnectorInstance
from cdp_hub.connector.webhooks import WebhookRejected, WebhookSpec, sign_webhook, verify_webhook
from cdp_hub.edge.webhooks import routes
from cdp_hub.hub import Hub
from connectors.crm import CrmConnector
from connectors.ecommerce import EcommerceConnector

SPEC = WebhookSpec()
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp()))


def test_signature_is_hmac_sha256_over_timestamp_and_raw_body() -> None:
    body = b'{"id": 1, "name": "\xd0\x90\xd0\xbd\xd0\xbd\xd0\xb0"}'
    headers = sign_webhook(SPEC, "s3cret", body, timestamp=TS)
    expected = hmac.new(b"s3cret", TS.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers == {"X-Cdp-Signature": f"sha256={expected}", "X-Cdp-Timestamp": TS}
    verify_webhook(SPEC, "s3cret", {k.lower(): v for k, v in headers.items()}, body, now=NOW)


@pytest.mark.parametrize(("change", "reason"), [
    ({"body": b'{"id": 2}'}, "signature mismatch"),
    ({"secret": "other"}, "signature mismatch"),
    ({"now": NOW + timedelta(minutes=6)}, "tolerance"),
    ({"now": NOW - timedelta(minutes=6)}, "tolerance"),
    ({"drop": "X-Cdp-Signature"}, "missing signature"),
    ({"drop": "X-Cdp-Timestamp"}, "missing timestamp"),
])
def test_tampered_stale_or_unsigned_webhooks_are_rejected(change: dict, reason: str) -> None:  # type: ignore[type-arg]
    body = b'{"id": 1}'
    headers = sign_webhook(SPEC, "s3cret", body, timestamp=TS)
    headers.pop(change.get("drop", ""), None)
    with pytest.raises(WebhookRejected, match=reason):
        verify_webhook(SPEC, change.get("secret", "s3cret"), headers, change.get("body", body),
                       now=change.get("now", NOW))


def test_rotated_secrets_and_other_schemes() -> None:
    body = b"[]"
    old = sign_webhook(SPEC, "old", body, timestamp=TS)["X-Cdp-Signature"]
    new = sign_webhook(SPEC, "new", body, timestamp=TS)["X-Cdp-Signature"]
    verify_webhook(SPEC, "new", {"X-Cdp-Signature": f"{old},{new}", "X-Cdp-Timestamp": TS}, body, now=NOW)
    shop = EcommerceConnector.webhook  # base64, no prefix, Shopify-like headers
    mac = base64.b64encode(hmac.new(b"k", TS.encode() + b"." + body, hashlib.sha256).digest()).decode()
    verify_webhook(shop, "k", {"X-Shop-Hmac-Sha256": mac, "X-Shop-Triggered-At": TS}, body, now=NOW)
    crm = CrmConnector.webhook  # method + URL + body + timestamp (ms)
    ms = str(int(NOW.timestamp() * 1000))
    signed = sign_webhook(crm, "k", body, timestamp=ms, method="POST", url="https://hub.test/v1/webhooks/crm")
    verify_webhook(crm, "k", signed, body, now=NOW, method="POST", url="https://hub.test/v1/webhooks/crm")
    with pytest.raises(WebhookRejected):  # the URL is part of what is signed
        verify_webhook(crm, "k", signed, body, now=NOW, method="POST", url="https://hub.test/v1/webhooks/x")


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    hub.settings.connectors["shop"] = ConnectorInstance(type="ecommerce", config={"webhook_secret": "shop-secret"})
    hub.settings.connectors["app"] = ConnectorInstance(type="mobile", config={"webhook_secret": "app-secret"})
    hub.settings.connectors["nosecret"] = ConnectorInstance(type="loyalty", config={})
    app = Starlette(routes=routes(hub))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as c:
        yield c


ORDER = {"id": 77, "email": "guest@example.ru", "created_at": "2026-11-20T10:00:00Z", "financial_status": "paid",
         "total_price": "10.00", "currency": "RUB", "line_items": [{"sku": "A", "quantity": 1, "price": "10.00"}]}


async def test_signed_order_webhook_is_ingested(client: httpx.AsyncClient, hub: Hub) -> None:
    body = orjson.dumps(ORDER)
    headers = {**sign_webhook(EcommerceConnector.webhook, "shop-secret", body), "X-Shop-Topic": "orders/paid"}
    response = await client.post("/v1/webhooks/shop", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2  # order.placed + order.paid
    published = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
    assert {e["type"] for e in published} == {"order.placed", "order.paid"}
    assert all(e["source"] == "shop" for e in published)
    # the same delivery again (providers retry) yields the same event ids
    again = await client.post("/v1/webhooks/shop", content=body,
                              headers={**sign_webhook(EcommerceConnector.webhook, "shop-secret", body),
                                       "X-Shop-Topic": "orders/paid"})
    assert again.status_code == 200
    ids = [orjson.loads(r.value)["event_id"] for r in await hub.bus.read_all(hub.topics.events)]
    assert len(ids) == 4 and len(set(ids)) == 2


async def test_webhook_rejections(client: httpx.AsyncClient, hub: Hub) -> None:
    body = orjson.dumps(ORDER)
    good = {**sign_webhook(EcommerceConnector.webhook, "shop-secret", body), "X-Shop-Topic": "orders/paid"}
    bad_sig = await client.post("/v1/webhooks/shop", content=body + b" ", headers=good)
    assert bad_sig.status_code == 401 and "signature" in bad_sig.json()["error"]
    topic = await client.post("/v1/webhooks/shop", content=body, headers={**good, "X-Shop-Topic": "app/uninstalled"})
    assert topic.status_code == 422
    assert (await client.post("/v1/webhooks/nope", content=body)).status_code == 404
    unconfigured = await client.post("/v1/webhooks/nosecret", content=body)
    assert unconfigured.status_code == 403 and "webhook_secret" in unconfigured.json()["error"]
    not_json = b"not json"
    signed = sign_webhook(EcommerceConnector.webhook, "shop-secret", not_json)
    assert (await client.post("/v1/webhooks/shop", content=not_json, headers=signed)).status_code == 400
    assert await hub.bus.read_all(hub.topics.events) == []


async def test_mobile_batch_webhook_dead_letters_one_bad_event(client: httpx.AsyncClient, hub: Hub) -> None:
    batch = {"batch_id": "b1", "device": {"id": "D1", "platform": "android"}, "events": [
        {"id": "e1", "name": "app_open", "ts": 1763000000000},
        {"id": "e2", "name": "screen_view", "ts": 1763000000000, "params": {}},
        {"id": "e3", "name": "push_token", "ts": 1763000000000, "params": {"token": "fcm:1"}}]}
    body = orjson.dumps(batch)
    response = await client.post("/v1/webhooks/app", content=body, headers=sign_webhook(SPEC, "app-secret", body))
    data = response.json()
    assert response.status_code == 200 and data["accepted"] == 2 and data["dead_letters"] == 1
    assert data["errors"][0]["field"] == "params.screen"
    assert len(await hub.bus.read_all(hub.topics.dlq)) == 1
