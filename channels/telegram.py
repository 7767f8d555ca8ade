"""Telegram through the Bot API: text messages, photos for product blocks, blocked bots as opt-outs.

    send:   POST {base_url}/bot<token>/sendMessage  {"chat_id", "text", "parse_mode"?, "disable_web_page_preview"}
            POST {base_url}/bot<token>/sendPhoto    {"chat_id", "photo": <image URL>, "caption"}
                 (when the rendered message carries ``data.image_url``: a product block)
            200 {"ok": true, "result": {"message_id": 42}}                    ─▶ sent
            403 "Forbidden: bot was blocked by the user" / "user is deactivated"
                400 "chat not found"                                           ─▶ failed, permanent: the chat
                                                                                  is suppressed (an opt-out)
            429 {"parameters": {"retry_after": 7}} (no Retry-After header)     ─▶ retried after 7 s
            5xx                                                                ─▶ retried with backoff
            401 "Unauthorized"                                                 ─▶ configuration error (token)

The recipient is a ``telegram_chat_id`` identity (the chat id a bot learns when the customer starts it; the
mobile or web connector sends it as an identity). The plugin registers that identity kind. Telegram delivers
no receipts by callback: a sent message is final. Texts longer than Telegram's limits (4096 characters, 1024
for a photo caption) fail instead of being cut. The bot token is part of the URL path, as the Bot API wants:
the hub's request logging must not print paths of this channel (see docs/channels.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, SecretStr

import cdp_hub
from cdp_hub.channel.base import OutboundMessage, Receipt
from cdp_hub.channel.http import HttpChannel, HttpChannelConfig, json_object, request, retry_after_seconds
from cdp_hub.errors import ConfigurationError, NormalizationError
from cdp_hub.schema.identities import NormalizationOptions

__all__ = ["TelegramChannel", "TelegramConfig", "normalize_chat_id", "retry_after_from_body"]

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024

# Bot API answers (description texts) that mean the chat will never take a message from this bot again.
_GONE = ("bot was blocked by the user", "user is deactivated", "chat not found", "bot was kicked",
         "bot can't initiate conversation", "group chat was deleted", "have no rights to send")


class TelegramConfig(HttpChannelConfig):
    bot_token: SecretStr = Field(description="the bot's token from @BotFather")
    base_url: str = Field("https://api.telegram.org", description="Bot API root (a local Bot API server works)")
    parse_mode: Literal["HTML", "MarkdownV2"] | None = Field(
        None, description="how Telegram formats the text: plain by default, because a customer's name with a "
        "'<' would make an HTML text unparseable; set it only with templates that escape for it")
    photos: bool = Field(True, description="send a product block (data.image_url) as a photo with a caption")
    disable_web_page_preview: bool = Field(True, description="no link previews under marketing texts")
    rate_per_second: float | None = Field(25.0, gt=0,
                                          description="Telegram allows about 30 messages/s per bot; keep a margin")


def retry_after_from_body(response: httpx.Response) -> float | None:
    """The wait the Bot API asks for: ``parameters.retry_after`` in the JSON body, else ``Retry-After``."""
    params = json_object(response.content).get("parameters")
    if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
        return max(0.0, float(params["retry_after"]))
    return retry_after_seconds(response)


class TelegramChannel(HttpChannel[TelegramConfig]):
    """Messages to Telegram chats through a bot."""

    name: ClassVar[str] = "telegram"
    kind = "messenger"
    address_kind = "telegram_chat_id"
    config_model = TelegramConfig
    max_body_bytes = TEXT_LIMIT * 4

    def _url(self, method: str) -> str:
        return f"{self.cfg.base_url.rstrip('/')}/bot{self.cfg.bot_token.get_secret_value()}/{method}"

    def _payload(self, message: OutboundMessage) -> tuple[str, dict[str, Any]] | Receipt:
        image = message.data.get("image_url") if self.cfg.photos else None
        if isinstance(image, str) and image.startswith(("https://", "http://")):
            if len(message.text) > CAPTION_LIMIT:
                return self._failed(message, f"caption is {len(message.text)} characters; Telegram takes "
                                             f"at most {CAPTION_LIMIT} under a photo")
            body: dict[str, Any] = {"chat_id": message.to, "photo": image, "caption": message.text}
            method = "sendPhoto"
        else:
            if not message.text.strip():
                return self._failed(message, "empty text: Telegram refuses an empty message")
            if len(message.text) > TEXT_LIMIT:
                return self._failed(message, f"text is {len(message.text)} characters; Telegram takes at "
                                             f"most {TEXT_LIMIT}")
            body = {"chat_id": message.to, "text": message.text,
                    "disable_web_page_preview": self.cfg.disable_web_page_preview}
            method = "sendMessage"
        if self.cfg.parse_mode is not None:
            body["parse_mode"] = self.cfg.parse_mode
        return method, body

    def _failed(self, message: OutboundMessage, reason: str, *, permanent: bool = False) -> Receipt:
        return Receipt(message_id=message.message_id, status="failed", provider=self.name, reason=reason,
                       permanent=permanent)

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.http is not None
        payload = self._payload(message)
        if isinstance(payload, Receipt):
            return payload
        method, body = payload
        response = await request(self.http, "POST", self._url(method), provider=self.instance,
                                 auth_errors=False, retry_after=retry_after_from_body,
                                 content=orjson.dumps(body), headers={"Content-Type": "application/json"})
        data = json_object(response.content)
        if response.is_success and data.get("ok") is True:
            result = data.get("result")
            mid = result.get("message_id") if isinstance(result, dict) else None
            return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                           provider_message_id=str(mid) if mid is not None else None)
        description = str(data.get("description") or f"HTTP {response.status_code}")
        if response.status_code == 401:
            raise ConfigurationError(f"{self.instance}: Telegram refused the bot token ({description})")
        gone = any(marker in description.lower() for marker in _GONE)
        return self._failed(message, description[:300], permanent=gone)



def normalize_chat_id(value: str, options: NormalizationOptions | None = None) -> str:
    """A Telegram chat id: an integer, negative for groups (``-1001234567890``)."""
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdigit() or len(digits) > 20:
        raise NormalizationError(f"not a Telegram chat id: {value[:40]!r}", field="value", value=value)
    return str(int(text))


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(TelegramChannel)


@cdp_hub.hookimpl
def cdp_hub_register_identity_kinds(register: Callable[..., None]) -> None:
    register("telegram_chat_id", normalize_chat_id)
