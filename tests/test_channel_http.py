"""Every built-in HTTP channel maps provider answers the same way (respx): 429 with Retry-After and 5xx are
retriable, a network failure is retriable, 401 is a configuration error (FCM first renews its token)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from cdp_hub.channel.base import Channel, OutboundMessage
from cdp_hub.channel.http import retry_after_seconds
from cdp_hub.errors import ConfigurationError, RetriableError
from channels.email import EmailApiChannel
from channels.push import FcmChannel
from channels.sms import HttpSmsChannel
from channels.webhook import WebhookChannel
from tests.test_channel_push import FCM_CONFIG, SEND_URL, TOKEN_URI, token_endpoint

CASES: list[tuple[type[Channel], dict[str, Any], str, str]] = [
    (HttpSmsChannel, {"base_url": "https://sms.test", "api_key": "k", "sender": "Shop"}, "https://sms.test/messages",
     "+79161234567"),
    (EmailApiChannel, {"base_url": "https://mail.test", "api_key": "k", "sender": "a@shop.test"},
     "https://mail.test/v1/messages", "anna@example.com"),
    (WebhookChannel, {"url": "https://hook.test/in", "secret": "s"}, "https://hook.test/in", "token-1"),
    (FcmChannel, FCM_CONFIG, SEND_URL, "token-1"),
]
IDS = [c[0].name for c in CASES]


async def _send(cls: type[Channel], config: dict[str, Any], to: str) -> None:
    async with httpx.AsyncClient() as http:
        channel = cls(config, http=http)
        await channel.start()
        await channel.send(OutboundMessage(message_id="m-1", channel=cls.name, to=to, subject="Hi", text="Hello",
                                           data={"title": "Hi"}))


@pytest.mark.parametrize(("cls", "config", "url", "to"), CASES, ids=IDS)
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@respx.mock
async def test_transient_statuses_are_retriable_with_retry_after(cls: type[Channel], config: dict[str, Any],
                                                                  url: str, to: str, status: int) -> None:
    respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    respx.post(url).respond(status, headers={"Retry-After": "12"})
    with pytest.raises(RetriableError) as info:
        await _send(cls, config, to)
    assert info.value.retry_after == 12.0
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize(("cls", "config", "url", "to"), CASES, ids=IDS)
@respx.mock
async def test_network_failures_are_retriable(cls: type[Channel], config: dict[str, Any], url: str, to: str) -> None:
    respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    respx.post(url).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetriableError, match="timed out"):
        await _send(cls, config, to)


@pytest.mark.parametrize(("cls", "config", "url", "to"), CASES, ids=IDS)
@respx.mock
async def test_refused_credentials_are_a_configuration_error(cls: type[Channel], config: dict[str, Any], url: str,
                                                             to: str) -> None:
    token = respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    route = respx.post(url).respond(401, text="invalid key")
    with pytest.raises(ConfigurationError) as info:
        await _send(cls, config, to)
    assert "k" not in str(info.value).split() and "secret" not in str(info.value)
    if cls is FcmChannel:  # it renewed its token once before believing the 401
        assert route.call_count == 2 and token.call_count == 2


def test_retry_after_as_an_http_date() -> None:
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(response) == 0.0  # in the past: retry now
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Response(429)) is None
