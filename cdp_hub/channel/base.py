"""The channel interface: deliver one rendered message, report receipts.

    [cdp.messages] ─▶ delivery stage ─render─▶ OutboundMessage ─▶ Channel.send() ─▶ Receipt
                                                                           provider callback
                                                  Channel.parse_callback() ◀────────┘
    receipts ─▶ message.sent / delivered / failed / opened / clicked events on [cdp.events]
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cdp_hub.config import validate_options
from cdp_hub.errors import RetriableError
from cdp_hub.lifecycle import AsyncLifecycle

__all__ = ["Channel", "ChannelConfig", "ChannelKind", "ChannelLimits", "OutboundMessage", "Receipt", "ReceiptStatus"]

ReceiptStatus = Literal["sent", "delivered", "failed", "opened", "clicked"]
ChannelKind = Literal["email", "sms", "push", "messenger", "webhook", "other"]
"""What a channel delivers; ``messenger`` is a chat app (Telegram, Viber, WhatsApp) with templates and consent
of its own."""


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelLimits(BaseModel):
    """What the provider allows; the delivery stage paces and batches accordingly.

    ``rate_per_second`` feeds a token bucket per channel instance (``None``: unlimited), ``max_concurrency``
    bounds requests in flight, ``max_body_bytes`` is checked before sending (a larger message fails
    permanently instead of being rejected by the provider), ``max_batch`` is for providers with batch APIs.
    """

    rate_per_second: float | None = None
    burst: int | None = Field(default=None, description="bucket size; default: one second of rate")
    max_batch: int = 1
    max_body_bytes: int | None = None
    max_concurrency: int = 32


class OutboundMessage(BaseModel):
    """A rendered message ready for a provider."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(description="idempotency key: the same intent always has the same id")
    channel: str
    profile_id: str | None = None
    to: str = Field(description="recipient address: e-mail, E.164 phone, push token, URL")
    subject: str | None = None
    text: str
    html: str | None = None
    sender: str | None = None
    scenario: str | None = None
    template: str | None = None
    locale: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class Receipt(BaseModel):
    """What a provider said about one message."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(
        default="", description="the message's id; empty when a callback names only provider_message_id"
    )
    status: ReceiptStatus
    provider: str | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    permanent: bool = False
    """For ``failed``: the address is bad for good (hard bounce, invalid number, unregistered token)."""
    url: str | None = None
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Channel(AsyncLifecycle):
    """Base class for channel plugins. Override :meth:`send`; override :meth:`parse_callback` when the
    provider reports back."""

    name: ClassVar[str] = ""
    """The channel type, unique across plugins (``"smtp"``, ``"sms_http"``)."""
    kind: ChannelKind = "other"
    """What kind of message this is: templates (``welcome/sms.j2``) and consent (``golden.consent.sms``) are
    looked up by it. An instance may override it from its config (the outbox does)."""
    address_kind: str = "email"
    """Identity kind of the recipient address (``email``, ``phone``, ``push_token``). An instance may
    override it from its config (the generic webhook does)."""
    config_model: ClassVar[type[ChannelConfig]] = ChannelConfig
    """The pydantic model of this channel's options (``extra="forbid"``, secrets as ``SecretStr``)."""
    limits: ChannelLimits = ChannelLimits()
    """Provider limits; an instance may override them from its config (``rate_per_second``)."""

    def __init__(
        self,
        config: ChannelConfig | Mapping[str, Any] | None = None,
        *,
        instance: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = validate_options(self.config_model, config, where=f"channel {instance or self.name}")
        self.instance = instance or self.name
        self.http = http

    async def start(self) -> None:
        """Open connections (SMTP session, HTTP client, OAuth token)."""

    async def stop(self) -> None:
        """Close them. Idempotent."""

    async def send(self, message: OutboundMessage) -> Receipt:
        """Deliver one message. Raise :class:`cdp_hub.errors.RetriableError` for transient failures; return a
        ``failed`` receipt with ``permanent=True`` for a bad address."""
        raise NotImplementedError(f"{type(self).__name__}.send")

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Receipt | RetriableError]:
        """Deliver several messages in one provider request, for channels whose ``limits.max_batch > 1``.

        Return one result per message, in order: a receipt, or a :class:`RetriableError` for a message the
        provider asked to retry. Raise :class:`RetriableError` when the whole request failed transiently.
        The default sends the messages one by one, concurrently; override it to use a batch API.
        """
        results = await asyncio.gather(*(self.send(m) for m in messages), return_exceptions=True)
        out: list[Receipt | RetriableError] = []
        for result in results:
            if isinstance(result, Receipt | RetriableError):
                out.append(result)
            else:
                raise result
        return out

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        """Turn a provider's callback (delivery report, open, click) into receipts.

        Raise :class:`cdp_hub.errors.RecordError` for a malformed callback (HTTP 400, and a DLQ entry) and
        ``PermissionError`` for a bad or missing signature (HTTP 401). Receipts may name the message by our
        ``message_id`` or only by ``provider_message_id``.
        """
        return []
