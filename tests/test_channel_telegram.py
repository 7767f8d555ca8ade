"""Telegram through the Bot API (respx-simulated): conformance kit, photos, blocked bots, retry_after in the
body, and a message through the delivery stage to a profile's chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from cdp_hub.channel.http import retry_after_seconds
from cdp_hub.config import ChannelInstance
from cdp_hub.errors import ConfigurationError, NormalizationError, RetriableError
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.plugins import load_plugins
from cdp_hub.schema.identities import normalize_identity
from cdp_hub.store import MessageRepository
from cdp_hub.testing.channels import ChannelTests
from channels.telegram import TelegramChannel, normalize_chat_id, retry_after_from_body
from tests.conftest import hub_settings
from tests.test_delivery_stage import intent, make_profile, record

TOKEN = "123456:ABC-secret-token"
API = f"https://api.telegram.test/bot{TOKEN}"
CONFIG = {"bot_token": TOKEN, "base_url": "https://api.telegram.test"}


class TestTelegramConformance(ChannelTests):
    channel_class = TelegramChannel
    config = CONFIG
    recipient = "987654321"

    def simulate(self, provider: Any, outcome: str) -> None:
        route = provider.post(f"{API}/sendMessage")
        if outcome == "sent":
            route.respond(200, json={"ok": True, "result": {"message_id": 42}})
        elif outcome == "transient":
            route.respond(429, json={"ok": False, "error_code": 429, "description": "Too Many Requests: retry "
                                     "after 3", "parameters": {"retry_after": 3}})
        else:
            route.respond(403, json={"ok": False, "error_code": 403,
                                     "description": "Forbidden: bot was blocked by the user"})


def _message(**overrides: Any) -> Any:
    return TestTelegramConformance().message(**overrides)


async def _channel(http: httpx.AsyncClient, **config: Any) -> TelegramChannel:
    channel = TelegramChannel({**CONFIG, **config}, http=http)
    await channel.start()
    return channel


@respx.mock
async def test_a_product_block_goes_as_a_photo_with_its_caption() -> None:
    route = respx.post(f"{API}/sendPhoto").respond(200, json={"ok": True, "result": {"message_id": 7}})
    async with httpx.AsyncClient() as http:
        channel = await _channel(http)
        receipt = await channel.send(_message(to="-1001234567890", text="Диван «Уют», 39 990 ₽",
                                              data={"image_url": "https://cdn.shop.test/sofa.jpg"}))
    assert receipt.status == "sent" and receipt.provider_message_id == "7"
    body = orjson.loads(route.calls.last.request.content)
    assert body == {"chat_id": "-1001234567890", "photo": "https://cdn.shop.test/sofa.jpg",
                    "caption": "Диван «Уют», 39 990 ₽"}


@respx.mock
async def test_the_wait_telegram_asks_for_in_the_body_is_honoured() -> None:
    respx.post(f"{API}/sendMessage").respond(
        429, json={"ok": False, "error_code": 429, "parameters": {"retry_after": 7}})
    async with httpx.AsyncClient() as http:
        channel = await _channel(http)
        with pytest.raises(RetriableError) as caught:
            await channel.send(_message(to="1"))
    assert caught.value.retry_after == 7.0


def test_retry_after_falls_back_to_the_header() -> None:
    answer = httpx.Response(429, headers={"Retry-After": "5"}, content=b"not json")
    assert retry_after_from_body(answer) == 5.0 == retry_after_seconds(answer)
    assert retry_after_from_body(httpx.Response(503, content=b"{}")) is None


@pytest.mark.parametrize(("status", "description", "permanent"), [
    (403, "Forbidden: bot was blocked by the user", True),
    (403, "Forbidden: user is deactivated", True),
    (400, "Bad Request: chat not found", True),
    (400, "Bad Request: can't parse entities: unsupported start tag", False),
])
@respx.mock
async def test_what_a_refusal_means(status: int, description: str, permanent: bool) -> None:
    respx.post(f"{API}/sendMessage").respond(status, json={"ok": False, "error_code": status,
                                                           "description": description})
    async with httpx.AsyncClient() as http:
        receipt = await (await _channel(http)).send(_message(to="1"))
    assert receipt.status == "failed" and receipt.permanent is permanent and receipt.reason == description


@respx.mock
async def test_a_bad_token_is_a_configuration_error_that_does_not_leak_it() -> None:
    respx.post(f"{API}/sendMessage").respond(401, json={"ok": False, "error_code": 401,
                                                        "description": "Unauthorized"})
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigurationError) as caught:
            await (await _channel(http)).send(_message(to="1"))
    assert TOKEN not in str(caught.value) and "bot token" in str(caught.value)


async def test_texts_over_telegrams_limits_fail_instead_of_being_cut() -> None:
    async with httpx.AsyncClient() as http:
        channel = await _channel(http)
        long_text = await channel.send(_message(to="1", text="я" * 4097))
        long_caption = await channel.send(_message(to="1", text="я" * 1025,
                                                   data={"image_url": "https://cdn.shop.test/a.jpg"}))
    assert long_text.status == long_caption.status == "failed"
    assert "4096" in (long_text.reason or "") and "1024" in (long_caption.reason or "")


def test_chat_ids_are_normalized_and_garbage_is_refused() -> None:
    assert normalize_chat_id(" 00123 ") == "123"
    assert normalize_chat_id("-1001234567890") == "-1001234567890"
    for bad in ("@shop_channel", "12a", "", "-"):
        with pytest.raises(NormalizationError):
            normalize_chat_id(bad)


def test_the_plugin_registers_its_identity_kind() -> None:
    registry = load_plugins()
    assert registry.channel("telegram") is TelegramChannel
    assert normalize_identity("telegram_chat_id", " 42 ") == ("telegram_chat_id", "42")


@respx.mock
async def test_a_welcome_reaches_the_customers_chat_and_a_blocked_bot_suppresses_it(
        tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, delivery_retry_backoff=0.001,
                            channels={"tg": ChannelInstance(type="telegram", config=CONFIG)})
    route = respx.post(f"{API}/sendMessage")
    route.side_effect = [
        httpx.Response(200, json={"ok": True, "result": {"message_id": 1}}),
        httpx.Response(403, json={"ok": False, "error_code": 403,
                                  "description": "Forbidden: bot was blocked by the user"}),
    ]
    async with Hub(settings, metrics=Metrics()) as hub:
        load_plugins()  # the identity kind of the plugin
        pid = await make_profile(hub, golden={"first_name": "Анна", "locale": "ru"},
                                 identities=[("telegram_chat_id", "555")])
        stage = build_stage(hub, "delivery")
        first = await stage.handle([record(hub, intent(pid, channel="tg"))])
        second = await stage.handle([record(hub, intent(pid, channel="tg"))])
        third = await stage.handle([record(hub, intent(pid, channel="tg"))])
        suppressed = await MessageRepository(hub.store).suppressed({("telegram_chat_id", "555")})
    sent = orjson.loads(route.calls[0].request.content)
    assert sent["chat_id"] == "555" and "Анна" in sent["text"]  # the welcome template's messenger fallback
    assert [m.headers[0][1] for m in first.messages] == [b"message.sent"]
    assert [m.headers[0][1] for m in second.messages] == [b"message.failed"]
    assert suppressed == {("telegram_chat_id", "555")}
    assert route.call_count == 2  # the third message never reached Telegram: the chat is suppressed
    # A refusal at send time (the chat blocked the bot: suppressed) is a decision, not a receipt.
    assert [m.headers[0][1] for m in third.messages] == [b"message.decided"]
    assert orjson.loads(third.messages[0].value)["properties"]["decision"] == "suppressed"
