"""The HTTP edge under hostile requests: every write and admin route without, with wrong, forged or stale
credentials; profile_id injection; internal event types and consent grants from a public key; size, gzip
and depth bombs; protocol details (clock skew, CORS, deduplication) that an attacker or a broken client hits.

Nothing refused may be stored: each test checks the events topic (and the DLQ where it must stay empty).
"""

from __future__ import annotations

import base64
import gzip
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from cdp_hub.channel.http import hmac_sha256_hex, sign_callback
from cdp_hub.config import ChannelInstance, ConnectorInstance, EventSource
from cdp_hub.connector.webhooks import WebhookSpec, sign_webhook
from cdp_hub.daemon import check_listen_address, create_app
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub

WEB_KEY, SERVER_KEY, SHOP_KEY, KIOSK_KEY, ADMIN = "wk-public-web", "wk-server", "sk-shop", "sk-kiosk", "adm-1"
NOW = datetime.now(UTC)


def configure(hub: Hub) -> None:
    s = hub.settings
    s.admin_token = SecretStr(ADMIN)
    s.connectors["web"] = ConnectorInstance(type="tracking", config={"write_keys": [WEB_KEY]})
    s.connectors["backend"] = ConnectorInstance(type="tracking", config={"write_keys": [SERVER_KEY],
                                                                         "trust": "trusted"})
    s.connectors["app"] = ConnectorInstance(type="mobile", config={"webhook_secret": "app-secret"})
    s.event_sources["shop"] = EventSource(keys=[SecretStr(SHOP_KEY)])
    s.event_sources["kiosk"] = EventSource(keys=[SecretStr(KIOSK_KEY)], trust="public",
                                           allowed_types=["consent.changed", "product.viewed"])
    s.channels["sms"] = ChannelInstance(type="sms_http", config={
        "base_url": "https://sms.gateway.test/api/v1", "api_key": "k", "sender": "MyShop", "callback_secret": "dlr"})
    s.edge.cors_origins = ["https://shop.example.ru"]


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    configure(hub)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub") as c:
        yield c


async def stored(hub: Hub) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]


async def dead(hub: Hub) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def track(event: str, **over: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u-1", "event": event, "messageId": f"m-{uuid.uuid4().hex[:12]}", **over}


def canonical(**over: Any) -> dict[str, Any]:
    return {"type": "customer.updated", "source_record_id": f"r-{uuid.uuid4().hex[:8]}",
            "occurred_at": NOW.isoformat(), "identities": [{"kind": "email", "value": "anna@example.ru"}], **over}


TRACKING_BODY = {"batch": [track("Application Opened")]}
WRITE_ROUTES: list[tuple[str, dict[str, Any]]] = [
    *[(f"/v1/{p}", {"userId": "u", "event": "Application Opened", "name": "x", "previousId": "p", "groupId": "g"})
      for p in ("identify", "track", "page", "screen", "group", "alias", "i", "t", "p", "s", "g", "a")],
    ("/v1/batch", TRACKING_BODY), ("/v1/b", TRACKING_BODY),
    ("/v1/events", canonical()),
    ("/v1/webhooks/app", {"events": []}),
    ("/v1/callbacks/sms", {"id": "g-1", "status": "delivered"}),
    ("/v1/dlq/replay", {"ids": []}),
]
ADMIN_GETS = ["/v1/dlq", "/v1/profiles?kind=email&value=anna@example.ru", f"/v1/profiles/{uuid.uuid4()}"]


@pytest.mark.parametrize("headers", [
    {},                                                          # no credential
    basic("wrong-key"), bearer("wrong-key"),                     # wrong ones
    {"Authorization": "Basic !!!not-base64"},                     # garbage
    {"Authorization": b"Bearer \xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"},  # not ASCII: a 401, never a 500
    {"Authorization": b"Basic " + base64.b64encode("ключ:".encode())},
], ids=["none", "wrong-basic", "wrong-bearer", "garbage", "non-ascii-bearer", "non-ascii-basic"])
async def test_every_write_and_admin_route_refuses_without_valid_credentials(
        client: httpx.AsyncClient, hub: Hub, headers: dict[str, Any]) -> None:
    for path, body in WRITE_ROUTES:
        response = await client.post(path, content=orjson.dumps(body), headers=headers)
        assert response.status_code == 401, (path, response.status_code, response.text)
        error = response.json()
        if path != "/v1/callbacks/sms":  # the delivery route answers in its own (older) shape
            assert error["success"] is False and error["code"] and error["message"], path
    for path in ADMIN_GETS:
        assert (await client.get(path, headers=headers)).status_code == 401, path
    assert await stored(hub) == [] and await dead(hub) == []


async def test_a_key_of_one_kind_opens_no_other_door(client: httpx.AsyncClient, hub: Hub) -> None:
    body = orjson.dumps(canonical())
    assert (await client.post("/v1/events", content=body, headers=bearer(WEB_KEY))).status_code == 401
    assert (await client.post("/v1/events", content=body, headers=bearer(ADMIN))).status_code == 401
    assert (await client.post("/v1/batch", json=TRACKING_BODY, headers=basic(SHOP_KEY))).status_code == 401
    assert (await client.get("/v1/dlq", headers=bearer(SHOP_KEY))).status_code == 401
    assert (await client.get("/v1/dlq", headers=basic(ADMIN))).status_code == 401  # only as a bearer token
    assert await stored(hub) == []
    assert (await client.get("/v1/dlq", headers={"Authorization": f"BEARER {ADMIN}"})).status_code == 200


async def test_forged_and_stale_signatures_are_refused(client: httpx.AsyncClient, hub: Hub) -> None:
    body = orjson.dumps({"batch_id": "b1", "device": {"id": "D1"}, "events": [
        {"id": "e1", "name": "app_open", "ts": 1763000000000}]})
    spec = WebhookSpec()
    stale = sign_webhook(spec, "app-secret", body, timestamp=str(int(time.time()) - 3600))
    forged = sign_webhook(spec, "not-the-secret", body)
    for headers in (stale, forged, {**sign_webhook(spec, "app-secret", body), "X-Cdp-Signature": "sha256=подпись".encode()}):
        assert (await client.post("/v1/webhooks/app", content=body, headers=headers)).status_code == 401
    report = orjson.dumps({"id": "g-1", "client_ref": "m-1", "status": "delivered"})
    for headers in ({"X-Signature": hmac_sha256_hex("dlr", report)},               # untimed: replayable
                    sign_callback("dlr", report, timestamp=int(time.time()) - 3600),  # stale
                    sign_callback("forged", report),
                    {**sign_callback("dlr", report), "X-Signature": "подпись".encode()}):
        assert (await client.post("/v1/callbacks/sms", content=report, headers=headers)).status_code == 401
    assert await stored(hub) == [] and await dead(hub) == []
    fresh = sign_webhook(spec, "app-secret", body)
    assert (await client.post("/v1/webhooks/app", content=body, headers=fresh)).status_code == 200


async def test_profile_id_from_outside_is_dropped(client: httpx.AsyncClient, hub: Hub,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    victim = str(uuid.uuid4())
    message = {"userId": "attacker", "traits": {"email": "evil@example.ru", "firstName": "Pwned"},
               "profile_id": victim, "messageId": "inj-1"}
    assert (await client.post("/v1/identify", json=message, headers=basic(WEB_KEY))).status_code == 200
    response = await client.post("/v1/events", json=canonical(profile_id=victim), headers=bearer(SHOP_KEY))
    assert response.status_code == 200
    events = await stored(hub)
    assert len(events) == 2 and all("profile_id" not in e for e in events)
    assert "dropped a profile_id" in caplog.text and victim not in caplog.text


@pytest.mark.parametrize("event", ["profile.birthday", "profile.merged", "message.sent", "segment.entered",
                                   "experiment.assigned"])
async def test_internal_event_types_are_refused_from_any_key(client: httpx.AsyncClient, hub: Hub,
                                                            event: str) -> None:
    response = await client.post("/v1/track", json=track(event, properties={"message_id": "x"}),
                                 headers=basic(WEB_KEY))
    assert response.status_code == 400 and response.json()["code"] in ("policy_violation", "schema_violation")
    batch = {"batch": [track(event, properties={"message_id": "x"}), track("Application Opened")]}
    response = await client.post("/v1/batch", json=batch, headers=basic(SERVER_KEY))  # trusted: still not
    assert [r["status"] for r in response.json()["results"]] == ["rejected", "accepted"]
    answer = await client.post("/v1/events", json=canonical(type=event, properties={}), headers=bearer(SHOP_KEY))
    assert answer.status_code == 400
    assert {e["type"] for e in await stored(hub)} == {"app.opened"}
    assert len(await dead(hub)) == 3


async def test_a_public_key_can_opt_out_but_never_grant_consent(client: httpx.AsyncClient, hub: Hub) -> None:
    opt_in = {"channel": "email", "status": "opted_in", "purpose": "marketing"}
    response = await client.post("/v1/track", json=track("consent.changed", properties=opt_in,
                                                         userId=None, anonymousId="a-1",
                                                         context={"traits": {"email": "victim@example.ru"}}),
                                 headers=basic(WEB_KEY))
    assert response.status_code == 400 and response.json()["code"] == "policy_violation"
    assert "double opt-in" in response.json()["message"]
    kiosk = await client.post("/v1/events", json=canonical(type="consent.changed", properties=opt_in),
                              headers=bearer(KIOSK_KEY))
    assert kiosk.status_code == 400 and kiosk.json()["results"][0]["code"] == "policy_violation"
    assert await stored(hub) == []
    opt_out = {**opt_in, "status": "opted_out"}
    assert (await client.post("/v1/track", json=track("consent.changed", properties=opt_out),
                              headers=basic(WEB_KEY))).status_code == 200
    assert (await client.post("/v1/events", json=canonical(type="consent.changed", properties=opt_in),
                              headers=bearer(SHOP_KEY))).status_code == 200  # trusted: recorded
    assert [e["properties"]["status"] for e in await stored(hub)] == ["opted_out", "opted_in"]
    assert [d["failure_type"] for d in await dead(hub)] == ["policy_violation", "policy_violation"]


async def test_allow_lists_and_source_binding(client: httpx.AsyncClient, hub: Hub) -> None:
    not_allowed = await client.post("/v1/events", json=canonical(), headers=bearer(KIOSK_KEY))
    assert not_allowed.status_code == 400 and "allowed_types" in not_allowed.json()["results"][0]["error"]
    other = await client.post("/v1/events", json=[canonical(source="erp"), canonical(source=["x"] * 50),
                                                  canonical(source="shop")], headers=bearer(SHOP_KEY))
    assert other.status_code == 207
    assert [r["status"] for r in other.json()["results"]] == ["rejected", "rejected", "accepted"]
    assert [e["source"] for e in await stored(hub)] == ["shop"]


async def test_size_depth_and_count_limits_never_echo_the_input(client: httpx.AsyncClient, hub: Hub) -> None:
    huge = b'{"batch": [' + b",".join([orjson.dumps(track("Application Opened"))] * 240_000) + b"]}"
    assert len(huge) > 20_000_000
    response = await client.post("/v1/batch", content=huge, headers=basic(WEB_KEY))
    assert response.status_code == 413 and len(response.content) < 1000
    big_event = orjson.dumps(canonical(traits={"note": "x" * 20_000_000}))
    response = await client.post("/v1/events", content=big_event, headers=bearer(SHOP_KEY))
    assert response.status_code == 413 and len(response.content) < 1000
    many = {"batch": [track("Application Opened") for _ in range(10_000)]}
    response = await client.post("/v1/batch", json=many, headers=basic(WEB_KEY))
    assert response.status_code == 413 and len(response.content) < 1000
    deep: Any = "bottom"
    for _ in range(256):
        deep = {"nested": deep}
    for path, headers, body in (("/v1/track", basic(WEB_KEY), track("Application Opened", properties=deep)),
                                ("/v1/events", bearer(SHOP_KEY), canonical(traits=deep))):
        response = await client.post(path, content=_dumps(body), headers=headers)
        assert response.status_code == 400 and response.json()["code"] == "too_deep", path
    assert (await client.get("/v1/dlq?limit=abc", headers=bearer(ADMIN))).status_code == 400
    # PostgreSQL stores no NUL character: refused at the door rather than failing a stage's every retry.
    nul = await client.post("/v1/track", json=track("Application Opened", properties={"x": "a\u0000b"}),
                            headers=basic(WEB_KEY))
    assert nul.status_code == 400 and nul.json()["code"] == "nul_character"
    for path in ("/v1/dlq?source=%00", "/v1/profiles?kind=email&value=a%00@x.ru"):
        assert (await client.get(path, headers=bearer(ADMIN))).status_code == 400, path
    replay = await client.post("/v1/dlq/replay", json={"failure_type": "\u0000"}, headers=bearer(ADMIN))
    assert replay.status_code == 400
    for bad in (b"not json", b"[1, 2]", b'{"ids": "all"}', b'{"fixes": [1]}'):
        assert (await client.post("/v1/dlq/replay", content=bad, headers=bearer(ADMIN))).status_code == 400
    assert await stored(hub) == [] and await dead(hub) == []


def _dumps(value: Any) -> bytes:
    """JSON of a value nested deeper than orjson writes (it stops at 254 levels)."""
    import json

    return json.dumps(value).encode()


async def test_a_gzip_bomb_is_a_413_with_flat_memory(client: httpx.AsyncClient, hub: Hub) -> None:
    inflated = 1024 * 1024 * 1024  # 1 GiB of zeros in about 1 MB
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=9) * (inflated // (64 * 1024 * 1024))
    assert len(bomb) < hub.settings.edge.max_body_bytes
    tracemalloc.start()
    try:
        response = await client.post("/v1/batch", content=bomb,
                                      headers={**basic(WEB_KEY), "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert peak < 4 * hub.settings.edge.max_body_bytes + 8 * 1024 * 1024  # the cap, not the gigabyte
    assert (await client.post("/v1/batch", content=b"\x1f\x8b garbage",
                              headers={**basic(WEB_KEY), "Content-Encoding": "gzip"})).status_code == 400
    assert (await client.post("/v1/batch", content=b"{}",
                              headers={**basic(WEB_KEY), "Content-Encoding": "br"})).status_code == 415
    assert await stored(hub) == []


async def test_gzip_and_error_bodies_are_what_the_sdks_expect(client: httpx.AsyncClient, hub: Hub) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track("Application Opened")], "sentAt": NOW.isoformat()}))
    response = await client.post("/v1/batch", content=body, headers={**basic(WEB_KEY), "Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["accepted"] == 1
    refused = await client.post("/v1/batch", content=b"{nope", headers=basic(WEB_KEY))
    assert refused.status_code == 400 and {"code", "message"} <= refused.json().keys()


async def test_clock_skew_is_corrected_and_absurd_times_replaced(client: httpx.AsyncClient, hub: Hub) -> None:
    now = datetime.now(UTC)
    ahead = now + timedelta(hours=1)  # a client clock an hour fast
    batch = {"sentAt": ahead.isoformat(), "batch": [
        track("Application Opened", messageId="skew", timestamp=(ahead - timedelta(minutes=5)).isoformat()),
        track("Application Opened", messageId="y9999", timestamp="9999-12-31T23:59:59Z"),
        track("Application Opened", messageId="y1", timestamp="0001-01-01T00:00:00Z"),
        track("Application Opened", messageId="none")]}
    assert (await client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))).status_code == 200
    events = {e["source_record_id"]: e for e in await stored(hub)}
    skew = datetime.fromisoformat(events["skew"]["occurred_at"])
    assert abs((skew - (now - timedelta(minutes=5))).total_seconds()) < 30  # five minutes ago, not in 55
    for rid in ("y9999", "y1"):
        when = datetime.fromisoformat(events[rid]["occurred_at"])
        assert abs((when - now).total_seconds()) < 30 and events[rid]["context"]["timestamp_flag"] == "outside_window"
    assert abs((datetime.fromisoformat(events["none"]["occurred_at"]) - now).total_seconds()) < 30
    assert "timestamp_flag" not in events["none"]["context"]


async def test_the_same_messages_twice_are_stored_once(client: httpx.AsyncClient, hub: Hub) -> None:
    batch = {"batch": [track("Application Opened", messageId="d-1"), track("Application Opened", messageId="d-2"),
                       track("Application Opened", messageId="d-1")]}  # and once more inside the batch
    first = (await client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))).json()
    again = (await client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "accepted", "duplicate"]
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 3
    assert sorted(e["source_record_id"] for e in await stored(hub)) == ["d-1", "d-2"]
    # Another source may use the same messageId: it is another message.
    assert (await client.post("/v1/batch", json=batch, headers=basic(SERVER_KEY))).json()["accepted"] == 2


async def test_cors_preflight_and_headers(client: httpx.AsyncClient) -> None:
    preflight = {"Origin": "https://shop.example.ru", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"}
    ok = await client.options("/v1/batch", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example.ru"
    assert "POST" in ok.headers["access-control-allow-methods"]
    evil = await client.options("/v1/t", headers={**preflight, "Origin": "https://evil.example"})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    plain = await client.options("/v1/batch")
    assert plain.status_code == 204 and plain.headers["allow"] == "POST, OPTIONS"
    posted = await client.post("/v1/t", json={**track("Application Opened"), "writeKey": WEB_KEY},
                               headers={"Origin": "https://shop.example.ru", "Content-Type": "text/plain"})
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "https://shop.example.ru"
    admin = await client.options("/v1/dlq", headers=preflight)
    assert "access-control-allow-origin" not in admin.headers  # the admin API is not for browsers


def test_run_refuses_to_listen_beyond_loopback_without_an_admin_token(hub: Hub) -> None:
    hub.settings.admin_token = None
    check_listen_address(hub.settings, "127.0.0.1")
    check_listen_address(hub.settings, "::1")
    for host in ("0.0.0.0", "10.0.0.5", "hub.example.ru"):
        with pytest.raises(ConfigurationError, match="admin token"):
            check_listen_address(hub.settings, host)
    hub.settings.admin_token = SecretStr("t")
    check_listen_address(hub.settings, "0.0.0.0")
