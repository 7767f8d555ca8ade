"""Delivery through real channel plugins against respx-simulated providers, on real PostgreSQL and Redis:
retries (429 Retry-After, 5xx), permanent errors, and provider callbacks turned into receipts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from starlette.applications import Starlette

from cdp_hub.bus.memory import MemoryBus
from cdp_hub.channel.http import sign_callback
from cdp_hub.config import ChannelInstance
from cdp_hub.delivery.callbacks import handle_callback
from cdp_hub.delivery.http import routes
from cdp_hub.delivery.stage import ChannelsUnavailable
from cdp_hub.dlq import DeadLetter
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.schema.events import Event
from tests.conftest import _drop_keys, _test_hotstate, hub_settings
from tests.test_channel_email import API as EMAIL_URL
from tests.test_channel_push import FCM_CONFIG, SEND_URL, TOKEN_URI, fcm_error, token_endpoint
from tests.test_delivery_stage import intent, make_profile, record, row

SMS_URL = "https://sms.gateway.test/api/v1/messages"
CHANNELS = {
    "sms": {"type": "sms_http", "config": {"base_url": "https://sms.gateway.test/api/v1", "api_key": "k",
                                           "sender": "MyShop", "callback_secret": "dlr"}},
    "email": {"type": "email_api", "config": {"base_url": "https://api.mail.test", "api_key": "k",
                                              "sender": "news@shop.example", "callback_secret": "ev"}},
    "push": {"type": "fcm", "config": FCM_CONFIG},
}


@pytest.fixture
def provider() -> Any:
    """The simulated providers: every httpx request of the test goes to these routes."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str, provider: Any) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, channels=CHANNELS,
                            delivery_retry_backoff=0.001, delivery_retry_max_wait=0.01, delivery_retry_attempts=3)
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


def signed(body: bytes) -> dict[str, str]:
    return sign_callback("dlr", body)


def signed_email(body: bytes) -> dict[str, str]:
    return sign_callback("ev", body)


async def events(hub: Hub) -> list[Event]:
    return [Event.from_json(r.value) for r in await hub.bus.read_all(hub.topics.events)]


async def dead(hub: Hub) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]


async def test_429_with_retry_after_then_sent_then_delivery_report(hub: Hub, provider: Any) -> None:
    route = provider.post(SMS_URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(201, json={"id": "g-1"})])
    pid = await make_profile(hub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="sms")
    out = await build_stage(hub, "delivery").handle([record(hub, it)])
    assert route.call_count == 2
    assert [e.type for e in [Event.from_json(m.value) for m in out.messages]] == ["message.sent"]
    assert (await row(hub, it.message_id))["provider_message_id"] == "g-1"

    # The gateway reports by its own id only.
    report = orjson.dumps({"id": "g-1", "status": "DELIVRD"})
    assert await handle_callback(hub, "sms", signed(report), report) == 200
    assert await handle_callback(hub, "sms", signed(report), report) == 200  # a provider retrying
    evs = await events(hub)
    # The retry is one event: published once (its time is the callback's, so a second copy would be a second
    # row downstream).
    assert [e.type for e in evs] == ["message.delivered"]
    assert evs[0].properties["message_id"] == it.message_id and evs[0].profile_id == pid
    assert [(i.kind, i.value) for i in evs[0].identities] == [("phone", "+79161234567")]
    log = await row(hub, it.message_id)
    assert log["status"] == "delivered" and log["delivered_at"] is not None


async def test_5xx_every_time_makes_the_batch_wait_and_its_retry_sends(hub: Hub, provider: Any) -> None:
    route = provider.post(SMS_URL).respond(503)
    pid = await make_profile(hub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="sms")
    stage = build_stage(hub, "delivery")
    with pytest.raises(ChannelsUnavailable, match="sms"):
        await stage.handle([record(hub, it)])
    assert route.call_count == 3  # delivery_retry_attempts
    waiting = await row(hub, it.message_id)
    assert waiting["status"] == "deferred" and "HTTP 503" in waiting["error"]  # waiting, not dead-lettered
    route.respond(201, json={"id": "g-2"})
    out = await stage.handle([record(hub, it)])  # the runner's retry of the same batch
    assert out.dead == []
    assert [Event.from_json(m.value).type for m in out.messages] == ["message.sent"]


async def test_invalid_number_suppresses_and_a_late_bounce_does_too(hub: Hub, provider: Any) -> None:
    provider.post(SMS_URL).mock(side_effect=[
        httpx.Response(400, json={"error": {"code": "invalid_number", "message": "bad"}}),
        httpx.Response(201, json={"id": "g-7"}),
    ])
    pid = await make_profile(hub, identities=[("phone", "+79160000001"), ("phone", "+79160000002")])
    first = intent(pid, channel="sms")
    out = await build_stage(hub, "delivery").handle([record(hub, first)])
    assert out.dead == [] and Event.from_json(out.messages[0].value).type == "message.failed"
    second = intent(pid, channel="sms")
    out = await build_stage(hub, "delivery").handle([record(hub, second)])
    assert (await row(hub, second.message_id))["address"] == "+79160000001"  # the suppressed one is skipped

    report = orjson.dumps([{"id": "g-7", "client_ref": second.message_id, "status": "undelivered",
                            "error_code": "unknown_subscriber"}])
    assert await handle_callback(hub, "sms", signed(report), report) == 200
    suppressed = {r["value"] for r in await hub.store.fetch("SELECT value FROM suppressions")}
    assert suppressed == {"+79160000001", "+79160000002"}
    [ev] = await events(hub)
    assert ev.type == "message.failed" and ev.properties["permanent"] is True
    assert (await row(hub, second.message_id))["status"] == "failed"


async def test_email_events_move_forward_only(hub: Hub, provider: Any) -> None:
    provider.post(EMAIL_URL).respond(202, json={"id": "e-1"})
    pid = await make_profile(hub, identities=[("email", "anna@example.com")])
    it = intent(pid, channel="email")
    await build_stage(hub, "delivery").handle([record(hub, it)])
    body = orjson.dumps([{"event": "open", "custom_id": it.message_id},
                         {"event": "click", "custom_id": it.message_id, "url": "https://shop.example/x"},
                         {"event": "delivered", "custom_id": it.message_id}])
    assert await handle_callback(hub, "email", signed_email(body), body) == 200
    log = await row(hub, it.message_id)
    assert log["status"] == "clicked"  # the late "delivered" did not move it back
    assert log["opened_at"] and log["clicked_at"] and log["delivered_at"]
    evs = await events(hub)
    assert [e.type for e in evs] == ["message.opened", "message.clicked", "message.delivered"]
    assert evs[1].properties["url"] == "https://shop.example/x"


async def test_fcm_unregistered_token_is_removed_from_the_profile(hub: Hub, provider: Any) -> None:
    provider.post(TOKEN_URI).mock(side_effect=token_endpoint)
    provider.post(SEND_URL).mock(return_value=fcm_error(404, "NOT_FOUND", "UNREGISTERED"))
    pid = await make_profile(hub, identities=[("push_token", "tok-old"), ("push_token", "tok-new")])
    out = await build_stage(hub, "delivery").handle([record(hub, intent(pid, channel="push"))])
    [ev] = [Event.from_json(m.value) for m in out.messages]
    assert ev.type == "message.failed" and ev.identities[0].value == "tok-new"
    left = await hub.store.fetch("SELECT value FROM identities WHERE profile_id = $1", pid)
    assert [r["value"] for r in left] == ["tok-old"]


async def test_callback_errors(hub: Hub) -> None:
    body = orjson.dumps({"id": "nope", "status": "delivered"})
    assert await handle_callback(hub, "sms", signed(body), body) == 200  # unknown message: ignored
    assert await events(hub) == []
    assert await handle_callback(hub, "sms", {"X-Signature": "bad"}, body) == 401
    assert await handle_callback(hub, "no_such_channel", {}, body) == 404
    garbage = b"{not json"
    assert await handle_callback(hub, "sms", signed(garbage), garbage) == 400
    [letter] = await dead(hub)
    assert letter.stage == "delivery.callback" and letter.source == "sms" and letter.payload == "{not json"


async def test_callback_route(hub: Hub, provider: Any) -> None:
    provider.post(SMS_URL).respond(201, json={"id": "g-9"})
    pid = await make_profile(hub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="sms")
    await build_stage(hub, "delivery").handle([record(hub, it)])
    app = Starlette(routes=routes(hub))
    report = json.dumps({"id": "g-9", "client_ref": it.message_id, "status": "delivered"}).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        ok = await client.post("/v1/callbacks/sms", content=report, headers=signed(report))
        bad = await client.post("/v1/callbacks/sms", content=report, headers={"X-Signature": "x"})
        missing = await client.post(f"/v1/callbacks/{uuid.uuid4().hex}", content=report)
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    assert bad.status_code == 401 and missing.status_code == 404
    assert (await row(hub, it.message_id))["status"] == "delivered"


async def test_batched_gateway_gets_one_request_for_many_messages(hub: Hub, provider: Any) -> None:
    hub.settings.channels["sms_batch"] = ChannelInstance(
        type="sms_http", config={**CHANNELS["sms"]["config"], "max_batch": 50})
    refs: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        messages = orjson.loads(request.content)["messages"]
        refs.extend(m["client_ref"] for m in messages)
        results = [{"client_ref": m["client_ref"], "id": f"g-{m['client_ref']}"} for m in messages]
        if len(refs) == len(messages):  # the first request throttles one message: it is retried alone
            results[0] = {"client_ref": messages[0]["client_ref"], "error": {"code": "throttled"}}
        return httpx.Response(200, json={"results": results})

    route = provider.post("https://sms.gateway.test/api/v1/messages/batch").mock(side_effect=gateway)
    intents = []
    for n in range(30):
        pid = await make_profile(hub, identities=[("phone", f"+791600000{n:02d}")])
        intents.append(intent(pid, channel="sms_batch"))
    out = await build_stage(hub, "delivery").handle([record(hub, it) for it in intents])
    assert out.dead == []
    assert sorted(Event.from_json(m.value).properties["message_id"] for m in out.messages) == \
        sorted(i.message_id for i in intents)
    assert route.call_count == 2 and len(refs) == 31  # 30 in one request, the throttled one again
    rows = await hub.store.fetch("SELECT status, provider_message_id FROM messages")
    assert {r["status"] for r in rows} == {"sent"} and all(r["provider_message_id"] for r in rows)


async def test_one_click_unsubscribe_becomes_a_consent_event(hub: Hub, provider: Any) -> None:
    provider.post(EMAIL_URL).respond(202, json={"id": "e-1"})
    pid = await make_profile(hub, identities=[("email", "anna@example.com")])
    it = intent(pid, channel="email")
    await build_stage(hub, "delivery").handle([record(hub, it)])
    app = Starlette(routes=routes(hub))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        page = await client.get(f"/v1/unsubscribe/{it.message_id}")
        assert page.status_code == 200 and 'method=post' in page.text
        assert await events(hub) == []  # a GET (a mail scanner following the link) changes nothing
        for _ in range(3):
            done = await client.post(f"/v1/unsubscribe/{it.message_id}", content=b"List-Unsubscribe=One-Click",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert done.status_code == 200
        missing = await client.post(f"/v1/unsubscribe/{uuid.uuid4()}")
    assert missing.status_code == 404
    [first] = await events(hub)  # clicked three times: one consent change (it used to be three events)
    assert first.event_id == Event.model_validate({
        "type": "consent.changed", "source": "cdp-hub.delivery", "source_record_id": f"{it.message_id}:unsubscribe",
        "occurred_at": first.occurred_at, "identities": [{"kind": "email", "value": "anna@example.com"}],
        "properties": {"channel": "email", "status": "opted_out"}}).event_id  # derived from the click's cause
    assert first.type == "consent.changed" and first.profile_id == pid
    assert first.properties == {"channel": "email", "status": "opted_out", "purpose": "marketing"}
    assert [(i.kind, i.value) for i in first.identities] == [("email", "anna@example.com")]


async def test_replay_after_callbacks_reemits_the_sent_receipt(hub: Hub, provider: Any) -> None:
    provider.post(EMAIL_URL).respond(202, json={"id": "e-1"})
    pid = await make_profile(hub, identities=[("email", "anna@example.com")])
    it = intent(pid, channel="email")
    first = await build_stage(hub, "delivery").handle([record(hub, it)])
    body = orjson.dumps([{"event": "open", "custom_id": it.message_id}])
    assert await handle_callback(hub, "email", signed_email(body), body) == 200
    # The intent comes again (the first batch's output was lost in a crash): not sent, same receipt.
    again = await build_stage(hub, "delivery").handle([record(hub, it)])
    assert provider.routes[0].call_count == 1
    assert [Event.from_json(m.value).event_id for m in again.messages] == \
        [Event.from_json(m.value).event_id for m in first.messages]
