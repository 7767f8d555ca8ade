"""SMS over the HTTP gateway (respx-simulated): conformance kit, segment counting, delivery reports."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
import respx

from cdp_hub.channel.http import hmac_sha256_hex, sign_callback
from cdp_hub.errors import ConfigurationError, RecordError, RetriableError
from cdp_hub.testing.channels import CallbackSample, ChannelTests
from channels.sms import HttpSmsChannel, count_segments

URL = "https://sms.gateway.test/api/v1/messages"
CONFIG = {"base_url": "https://sms.gateway.test/api/v1", "api_key": "sms-key", "sender": "MyShop",
          "callback_url": "https://hub.test/v1/callbacks/sms"}
DLR = orjson.dumps([
    {"id": "g-1", "client_ref": "m-1", "status": "DELIVRD"},
    {"id": "g-2", "client_ref": "m-2", "status": "undelivered", "error_code": "invalid_number"},
    {"id": "g-3", "client_ref": "m-3", "status": "enroute"},
    {"id": "g-4", "status": "failed", "error_code": "network_timeout"},
])


class TestHttpSmsConformance(ChannelTests):
    channel_class = HttpSmsChannel
    config = {**CONFIG, "callback_signing": "none"}  # a gateway that cannot sign: said explicitly
    recipient = "+79161234567"
    callback_samples = [
        CallbackSample(DLR, ("delivered", "failed", "failed"), message_ids=("m-1", "m-2", ""),
                       permanent=(False, True, False)),
        CallbackSample(orjson.dumps({"id": "g-9", "client_ref": "m-9", "status": "delivered"}), ("delivered",)),
    ]

    def simulate(self, provider: Any, outcome: str) -> None:
        if outcome == "sent":
            provider.post(URL).respond(201, json={"id": "g-100", "segments": 1})
        elif outcome == "transient":
            provider.post(URL).respond(503, text="maintenance")
        else:
            provider.post(URL).respond(400, json={"error": {"code": "invalid_number", "message": "no such number"}})


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("", "gsm7", 0),
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),          # 160 septets: extension characters count double
        ("{" * 81, "gsm7", 2),
        ("a" * 152 + "€", "gsm7", 1),  # 154 septets: still one SMS
        ("Привет" * 11 + "Прив", "ucs2", 1),  # 70 characters
        ("Привет" * 11 + "Приве", "ucs2", 2),  # 71
        ("Я" * 134, "ucs2", 2),
        ("Я" * 135, "ucs2", 3),
        ("Hello, мир", "ucs2", 1),      # one Cyrillic letter makes the whole text UCS-2
        ("😀" * 35, "ucs2", 1),           # surrogate pairs: two units each
        ("😀" * 36, "ucs2", 2),
    ],
)
def test_segment_counting(text: str, encoding: str, segments: int) -> None:
    seg = count_segments(text)
    assert (seg.encoding, seg.segments) == (encoding, segments)


def test_gsm7_parts_do_not_split_an_escape_sequence() -> None:
    # 152 plain + one extension character: 154 septets in a long message -> the escape pair moves to part 2.
    seg = count_segments("a" * 152 + "€" + "b" * 10)
    assert seg.units == 164 and seg.segments == 2
    assert count_segments("a" * 306 + "€").segments == 3


def test_sender_name_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="sender"):
        HttpSmsChannel({**CONFIG, "sender": "A very long sender name"})
    assert HttpSmsChannel({**CONFIG, "sender": "+79160000001"}).cfg.sender == "+79160000001"


@respx.mock
async def test_request_carries_sender_idempotency_key_and_encoding() -> None:
    route = respx.post(URL).respond(201, json={"id": "g-1"})
    async with httpx.AsyncClient() as http:
        ch = HttpSmsChannel(CONFIG, http=http)
        await ch.start()
        message = TestHttpSmsConformance().message(text="Ваш код 1234")
        receipt = await ch.send(message)
    assert receipt.provider_message_id == "g-1"
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sms-key"
    assert sent.headers["idempotency-key"] == message.message_id
    body = orjson.loads(sent.content)
    assert body == {"to": "+79161234567", "from": "MyShop", "text": "Ваш код 1234", "client_ref": message.message_id,
                    "encoding": "ucs2", "callback_url": "https://hub.test/v1/callbacks/sms"}


@respx.mock
async def test_too_many_segments_fail_before_any_request() -> None:
    route = respx.post(URL).respond(201, json={"id": "g-1"})
    async with httpx.AsyncClient() as http:
        ch = HttpSmsChannel({**CONFIG, "max_segments": 2}, http=http)
        receipt = await ch.send(TestHttpSmsConformance().message(text="Я" * 135))
    assert receipt.status == "failed" and not receipt.permanent
    assert "3 ucs2 segments" in (receipt.reason or "")
    assert not route.called


@respx.mock
async def test_429_carries_retry_after_and_401_is_a_configuration_error() -> None:
    respx.post(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "7"}),
                                      httpx.Response(401, text="bad key")])
    async with httpx.AsyncClient() as http:
        ch = HttpSmsChannel(CONFIG, http=http)
        msg = TestHttpSmsConformance().message()
        with pytest.raises(RetriableError) as info:
            await ch.send(msg)
        assert info.value.retry_after == 7.0
        with pytest.raises(ConfigurationError, match="credentials"):
            await ch.send(msg)


@respx.mock
async def test_network_error_is_retriable() -> None:
    respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as http:
        with pytest.raises(RetriableError, match="ConnectError"):
            await HttpSmsChannel(CONFIG, http=http).send(TestHttpSmsConformance().message())


async def test_signed_delivery_reports() -> None:
    ch = HttpSmsChannel({**CONFIG, "callback_secret": "dlr-secret"})
    body = orjson.dumps({"id": "g-1", "client_ref": "m-1", "status": "delivered"})
    good = sign_callback("dlr-secret", body)
    assert [r.status for r in await ch.parse_callback(good, body)] == ["delivered"]
    refused = [
        {**good, "X-Signature": "00" * 32},                                   # forged
        {},                                                                    # unsigned
        {"X-Signature": hmac_sha256_hex("dlr-secret", body)},                 # no timestamp: replayable
        sign_callback("dlr-secret", body, timestamp=int(time.time()) - 3600),  # stale: a replay
        {**good, "X-Signature": "подпись"},                                     # not ASCII: refused, no crash
        {**good, "X-Timestamp": "１２３"},
    ]
    for headers in refused:
        with pytest.raises(PermissionError):
            await ch.parse_callback(headers, body)
    with pytest.raises(PermissionError, match="no callback_secret"):  # unsigned unless the channel says so
        await HttpSmsChannel(CONFIG).parse_callback({}, body)
    body_only = HttpSmsChannel({**CONFIG, "callback_secret": "k", "callback_signing": "body"})
    assert len(await body_only.parse_callback({"X-Signature": hmac_sha256_hex("k", body)}, body)) == 1
    with pytest.raises(RecordError):
        await HttpSmsChannel({**CONFIG, "callback_signing": "none"}).parse_callback({}, b"[1, 2]")


BATCH_URL = "https://sms.gateway.test/api/v1/messages/batch"


@respx.mock
async def test_batch_endpoint_maps_results_by_client_ref() -> None:
    kit = TestHttpSmsConformance()
    msgs = [kit.message(to=f"+7916123456{i}") for i in range(5)]
    msgs[4] = msgs[4].model_copy(update={"text": "Я" * 500})  # too long: never sent
    route = respx.post(BATCH_URL).respond(200, json={"results": [
        {"client_ref": msgs[1].message_id, "error": {"code": "invalid_number"}},
        {"client_ref": msgs[0].message_id, "id": "g-0"},
        {"client_ref": msgs[2].message_id, "error": {"code": "throttled", "message": "slow down"}},
    ]})
    async with httpx.AsyncClient() as http:
        ch = HttpSmsChannel({**CONFIG, "max_batch": 50}, http=http)
        assert ch.limits.max_batch == 50
        results = await ch.send_batch(msgs)
    sent = orjson.loads(route.calls.last.request.content)["messages"]
    assert [m["client_ref"] for m in sent] == [m.message_id for m in msgs[:4]]
    r0, r1, r2, r3, r4 = results
    assert not isinstance(r0, Exception) and r0.status == "sent" and r0.provider_message_id == "g-0"
    assert not isinstance(r1, Exception) and r1.status == "failed" and r1.permanent
    assert isinstance(r2, RetriableError) and "throttled" in str(r2)
    assert isinstance(r3, RetriableError) and "no result" in str(r3)
    assert not isinstance(r4, Exception) and r4.status == "failed" and "segments" in (r4.reason or "")


@respx.mock
async def test_batch_request_refused_as_a_whole() -> None:
    respx.post(BATCH_URL).mock(side_effect=[httpx.Response(503),
                                            httpx.Response(400, json={"error": {"code": "bad_request"}})])
    kit = TestHttpSmsConformance()
    async with httpx.AsyncClient() as http:
        ch = HttpSmsChannel({**CONFIG, "max_batch": 10}, http=http)
        with pytest.raises(RetriableError):
            await ch.send_batch([kit.message(), kit.message()])
        results = await ch.send_batch([kit.message(), kit.message()])
    assert all(not isinstance(r, Exception) and r.status == "failed" and not r.permanent for r in results)
