"""The generic webhook channel: a signed JSON POST per message to a URL you own (your push service, a
partner's messenger bridge, a CRM task queue).

    POST <url>   {"message_id", "to", "title", "subject", "text", "html", "data", "profile_id", "scenario", ...}
    X-CDP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the shared secret>
    Idempotency-Key: <message_id>
      2xx ─▶ sent (``{"id": ...}`` in the answer becomes provider_message_id)
      410 ─▶ failed, permanent: the address is gone (suppressed; a push token is removed from the profile)
      429 / 5xx ─▶ retried; other 4xx ─▶ failed

The receiver may report back receipts to ``POST /v1/callbacks/<instance>`` with the same signature scheme:
``{"message_id": ..., "status": "delivered"|"opened"|"clicked"|"failed", "reason": ..., "permanent": ...}``.
The timestamp in the signature lets the receiver refuse replays older than a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, get_args

import orjson
from pydantic import Field, SecretStr

import cdp_hub
from cdp_hub.channel.base import (
    OutboundMessage,
    Receipt,
    ReceiptStatus,
)
from cdp_hub.channel.http import HttpChannel, HttpChannelConfig, header, hmac_sha256_hex, request, verify_hmac
from cdp_hub.errors import RecordError

__all__ = ["WebhookChannel", "WebhookConfig", "sign", "verify"]

SIGNATURE_HEADER = "X-CDP-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-CDP-Signature`` value for ``body``: ``t=<ts>,v1=<hmac>``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={hmac_sha256_hex(secret, f'{ts}.'.encode() + body)}"


def verify(secret: str, body: bytes, signature: str | None, *, tolerance: float | None = 300.0) -> bool:
    """Check an ``X-CDP-Signature`` value; ``tolerance`` seconds of clock skew/replay window (None: any age)."""
    if not signature:
        return False
    parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
    ts, sig = parts.get("t"), parts.get("v1")
    if ts is None or sig is None or not ts.isdigit():
        return False
    if tolerance is not None and abs(time.time() - int(ts)) > tolerance:
        return False
    return verify_hmac(secret, f"{ts}.".encode() + body, sig)


class WebhookConfig(HttpChannelConfig):
    url: str = Field(description="where each message is POSTed")
    secret: SecretStr = Field(description="shared HMAC key: messages are signed, callbacks are verified with it")
    address_kind: str = Field("push_token", description="identity kind used as the recipient address")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout: float = Field(10.0, gt=0)


class WebhookChannel(HttpChannel[WebhookConfig]):
    """Signed JSON POST of each message to your own endpoint."""

    name: ClassVar[str] = "webhook"
    kind = "webhook"
    address_kind = "push_token"
    config_model = WebhookConfig

    def __init__(self, config: Any = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.address_kind = self.cfg.address_kind


    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.http is not None
        cfg = self.cfg
        body = orjson.dumps({
            "message_id": message.message_id, "channel": message.channel, "to": message.to,
            "address_kind": self.address_kind, "profile_id": message.profile_id,
            "title": message.data.get("title"), "subject": message.subject, "text": message.text,
            "html": message.html, "data": message.data, "scenario": message.scenario,
            "template": message.template, "locale": message.locale,
        })
        headers = {**cfg.headers, "Content-Type": "application/json", "Idempotency-Key": message.message_id,
                   SIGNATURE_HEADER: sign(cfg.secret.get_secret_value(), body)}
        response = await request(self.http, "POST", cfg.url, provider=self.instance, content=body,
                                 headers=headers, timeout=cfg.timeout)
        if response.is_success:
            pmid = None
            try:
                data = orjson.loads(response.content) if response.content else None
                if isinstance(data, dict) and data.get("id") is not None:
                    pmid = str(data["id"])
            except orjson.JSONDecodeError:
                pass
            return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                           provider_message_id=pmid)
        reason = f"HTTP {response.status_code}: {response.text[:200]}".rstrip(": ")
        return Receipt(message_id=message.message_id, status="failed", provider=self.name, reason=reason,
                       permanent=response.status_code == 410)

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        if not verify(self.cfg.secret.get_secret_value(), body, header(headers, SIGNATURE_HEADER)):
            raise PermissionError(f"bad, stale or missing {SIGNATURE_HEADER}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"callback is not JSON: {exc}", field="<record>") from None
        out: list[Receipt] = []
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise RecordError("a receipt must be a JSON object", field="<record>", value=item)
            status = item.get("status")
            if status not in get_args(ReceiptStatus):
                raise RecordError(f"unknown receipt status {status!r}", field="status", value=status)
            out.append(Receipt(
                message_id=str(item.get("message_id") or ""), status=status, provider=self.name,
                provider_message_id=str(item["id"]) if item.get("id") is not None else None,
                reason=item.get("reason"), permanent=bool(item.get("permanent", False)), url=item.get("url"),
            ))
        return out


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(WebhookChannel)
