"""E-mail: over SMTP (aiosmtplib, pooled connections) and over an HTTP e-mail API.

Both build the same message: ``multipart/alternative`` with a text part and, when the template has one, an
HTML part; ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers (RFC 2369, RFC 8058 one-click) for
marketing mail; ``Message-ID: <message_id@sender-domain>`` so a bounce names the message.

SMTP (type ``smtp``)::

    pool of N connections (lazy; STARTTLS or implicit TLS; AUTH) ─▶ MAIL/RCPT/DATA per message, reused
      250             ─▶ sent
      550/551/553 RCPT ─▶ failed, permanent (hard bounce: the address is suppressed)
      other 5xx        ─▶ failed
      4xx, dropped connection, timeout ─▶ retried (a dropped pooled connection is reopened once at once)
      535 AUTH         ─▶ configuration error

HTTP API (type ``email_api``)::

    POST {base_url}{path}  {"from", "to", "subject", "text", "html", "headers", "custom_id"}
      Authorization: Bearer <api_key>, Idempotency-Key: <message_id>
      2xx {"id"} ─▶ sent;  4xx {"error": {"code"}} ─▶ failed (permanent for invalid/suppressed recipients)
    events webhook: [{"event": "delivered"|"bounced"|"opened"|"clicked"|"dropped"|"complained",
                      "custom_id", "id", "bounce_type", "reason", "url"}]  signed with X-Signature
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, ClassVar

import aiosmtplib
import orjson
from pydantic import Field, SecretStr, model_validator

import cdp_hub
from cdp_hub.channel.base import (
    Channel,
    ChannelConfig,
    ChannelLimits,
    OutboundMessage,
    Receipt,
    ReceiptStatus,
)
from cdp_hub.channel.http import (
    HttpChannel,
    HttpChannelConfig,
    SignedCallbacks,
    json_object,
    request,
    verify_callback,
)
from cdp_hub.errors import ConfigurationError, RecordError, RetriableError

__all__ = ["EmailApiChannel", "EmailApiConfig", "SmtpChannel", "SmtpConfig", "build_email"]

HARD_BOUNCE_CODES = frozenset({550, 551, 553})


def _address(email: str, name: str | None = None) -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)


def build_email(message: OutboundMessage, *, sender: str, sender_name: str | None = None,
                reply_to: str | None = None) -> EmailMessage:
    """The MIME message: text part, optional HTML part, the message's headers, a Message-ID naming it."""
    msg = EmailMessage()
    msg["From"] = _address(message.sender or sender, sender_name)
    msg["To"] = _address(message.to)
    msg["Subject"] = message.subject or ""
    msg["Date"] = formatdate(usegmt=True)
    domain = (message.sender or sender).rpartition("@")[2] or "cdp-hub.local"
    msg["Message-ID"] = f"<{message.message_id}@{domain}>"
    msg["X-CDP-Message-Id"] = message.message_id
    if reply_to:
        msg["Reply-To"] = reply_to
    for name, value in message.headers.items():
        msg[name] = value
    msg.set_content(message.text or "")
    if message.html:
        msg.add_alternative(message.html, subtype="html")
    return msg


class SmtpConfig(ChannelConfig):
    host: str = Field(description="SMTP server")
    port: int | None = Field(None, description="default: 465 with use_tls, else 587")
    username: str | None = None
    password: SecretStr | None = None
    use_tls: bool = Field(False, description="implicit TLS from the first byte (port 465)")
    start_tls: bool | None = Field(None, description="STARTTLS: True requires it, False never, None if offered")
    validate_certs: bool = True
    ca_file: Path | None = Field(None, description="CA bundle for a private certificate authority")
    sender: str = Field(description="envelope and From address")
    sender_name: str | None = Field(None, description="display name in From")
    reply_to: str | None = None
    pool_size: int = Field(4, ge=1, description="SMTP connections kept open and reused")
    messages_per_connection: int = Field(100, ge=1, description="reconnect after this many messages")
    timeout: float = Field(30.0, gt=0)
    rate_per_second: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _tls(self) -> SmtpConfig:
        if self.use_tls and self.start_tls:
            raise ValueError("use_tls (implicit TLS) and start_tls exclude each other")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self


class _Conn:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.sent = 0


class SmtpChannel(Channel):
    """E-mail over SMTP with STARTTLS/TLS and a pool of reused connections."""

    name: ClassVar[str] = "smtp"
    kind = "email"
    address_kind = "email"
    config_model = SmtpConfig

    def __init__(self, config: Any = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        cfg = self.cfg
        self.limits = ChannelLimits(rate_per_second=cfg.rate_per_second, max_concurrency=cfg.pool_size)
        self._pool: asyncio.Queue[_Conn] | None = None
        self._conns: list[_Conn] = []
        self.connections_opened = 0

    @property
    def cfg(self) -> SmtpConfig:
        assert isinstance(self.config, SmtpConfig)
        return self.config

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.cfg
        tls_context = None
        if cfg.ca_file is not None:
            tls_context = ssl.create_default_context(cafile=str(cfg.ca_file))
        return aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port or (465 if cfg.use_tls else 587), use_tls=cfg.use_tls,
            start_tls=cfg.start_tls, validate_certs=cfg.validate_certs, tls_context=tls_context,
            username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
            timeout=cfg.timeout,
        )

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = asyncio.Queue()
        for _ in range(self.cfg.pool_size):
            conn = _Conn(self._client())
            self._conns.append(conn)
            self._pool.put_nowait(conn)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        conns, self._conns = self._conns, []
        if pool is None:
            return
        for conn in conns:
            if conn.client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await conn.client.quit()
            conn.client.close()

    async def _connect(self, conn: _Conn) -> None:
        try:
            await conn.client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            conn.client.close()
            raise ConfigurationError(f"{self.instance}: SMTP login refused ({exc.code} {exc.message}); "
                                     "check username/password") from None
        except aiosmtplib.SMTPNotSupported as exc:
            conn.client.close()
            raise ConfigurationError(f"{self.instance}: {exc}; check start_tls/use_tls") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            conn.client.close()
            raise RetriableError(f"{self.instance}: cannot connect to {self.cfg.host}: {exc}") from exc
        conn.sent = 0
        self.connections_opened += 1

    async def send(self, message: OutboundMessage) -> Receipt:
        if self._pool is None:
            raise RuntimeError("start() the channel first")
        cfg = self.cfg
        email = build_email(message, sender=cfg.sender, sender_name=cfg.sender_name, reply_to=cfg.reply_to)
        conn = await self._pool.get()
        try:
            for attempt in (1, 2):
                if not conn.client.is_connected:
                    await self._connect(conn)
                try:
                    await conn.client.send_message(email, sender=cfg.sender, recipients=[message.to])
                except aiosmtplib.SMTPServerDisconnected as exc:
                    conn.client.close()
                    if attempt == 1 and conn.sent > 0:  # a pooled connection the server closed while idle
                        continue
                    raise RetriableError(f"{self.instance}: server disconnected: {exc}") from exc
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients[0] if exc.recipients else None
                    code = refused.code if refused else 550
                    text = refused.message if refused else str(exc)
                    return self._refused(message, code, text, recipient=True)
                except aiosmtplib.SMTPResponseException as exc:
                    await self._reset(conn)
                    return self._refused(message, exc.code, exc.message, recipient=False)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    conn.client.close()
                    raise RetriableError(f"{self.instance}: {type(exc).__name__}: {exc}") from exc
                conn.sent += 1
                if conn.sent >= cfg.messages_per_connection:
                    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                        await conn.client.quit()
                    conn.client.close()
                domain = cfg.sender.rpartition("@")[2] or "cdp-hub.local"
                return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                               provider_message_id=f"<{message.message_id}@{domain}>")
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._pool.put_nowait(conn)

    async def _reset(self, conn: _Conn) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await conn.client.rset()

    def _refused(self, message: OutboundMessage, code: int, text: str, *, recipient: bool) -> Receipt:
        if 400 <= code < 500:
            raise RetriableError(f"{self.instance}: {code} {text}")
        return Receipt(message_id=message.message_id, status="failed", provider=self.name,
                       reason=f"{code} {text}".strip(), permanent=recipient and code in HARD_BOUNCE_CODES)


# -- HTTP e-mail API ------------------------------------------------------------------------------------

DEFAULT_PERMANENT_API_ERRORS = ("invalid_recipient", "suppressed", "hard_bounce", "unsubscribed")
_API_EVENTS: dict[str, ReceiptStatus] = {
    "delivered": "delivered", "opened": "opened", "open": "opened", "clicked": "clicked", "click": "clicked",
    "bounced": "failed", "bounce": "failed", "dropped": "failed", "complained": "failed", "spamreport": "failed",
}


class EmailApiConfig(SignedCallbacks, HttpChannelConfig):
    base_url: str = Field(description="the API root, e.g. https://api.mail.example.com")
    path: str = Field("/v1/messages", description="path of the send endpoint")
    api_key: SecretStr
    sender: str
    sender_name: str | None = None
    reply_to: str | None = None
    permanent_errors: list[str] = Field(default_factory=lambda: list(DEFAULT_PERMANENT_API_ERRORS))


class EmailApiChannel(HttpChannel[EmailApiConfig]):
    """E-mail through an HTTP e-mail API (JSON, bearer key), with delivery/open/click events."""

    name: ClassVar[str] = "email_api"
    kind = "email"
    address_kind = "email"
    config_model = EmailApiConfig

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.http is not None
        cfg = self.cfg
        sender = message.sender or cfg.sender
        headers = dict(message.headers)
        domain = sender.rpartition("@")[2] or "cdp-hub.local"
        headers.setdefault("Message-ID", f"<{message.message_id}@{domain}>")
        body: dict[str, Any] = {
            "from": {"email": sender, "name": cfg.sender_name}, "to": [{"email": message.to}],
            "subject": message.subject or "", "text": message.text, "html": message.html, "headers": headers,
            "custom_id": message.message_id,
        }
        if cfg.reply_to:
            body["reply_to"] = cfg.reply_to
        response = await request(
            self.http, "POST", cfg.base_url.rstrip("/") + cfg.path, provider=self.instance,
            content=orjson.dumps(body),
            headers={"Authorization": f"Bearer {cfg.api_key.get_secret_value()}",
                     "Idempotency-Key": message.message_id, "Content-Type": "application/json"},
        )
        data = json_object(response.content)
        if response.is_success:
            pmid = data.get("id")
            return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                           provider_message_id=str(pmid) if pmid is not None else None)
        raw_error = data.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        code = str(error.get("code") or f"http_{response.status_code}")
        text = str(error.get("message") or "")
        return Receipt(message_id=message.message_id, status="failed", provider=self.name,
                       permanent=code in cfg.permanent_errors, reason=f"{code}: {text}" if text else code)

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        cfg = self.cfg
        verify_callback(cfg, headers, body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"event webhook body is not JSON: {exc}", field="<record>") from None
        out: list[Receipt] = []
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise RecordError("an event must be a JSON object", field="<record>", value=item)
            event = str(item.get("event", "")).lower()
            status = _API_EVENTS.get(event)
            if status is None or (event in ("bounced", "bounce") and item.get("bounce_type") == "soft"):
                continue  # processed/deferred/soft bounces: the provider is still trying
            reason = item.get("reason")
            permanent = event in ("bounced", "bounce", "complained", "spamreport") or (
                event == "dropped" and str(reason) in cfg.permanent_errors
            )
            out.append(Receipt(
                message_id=str(item.get("custom_id") or ""), status=status, provider=self.name,
                provider_message_id=str(item["id"]) if item.get("id") is not None else None,
                reason=f"{event}: {reason}" if reason else (event if status == "failed" else None),
                permanent=status == "failed" and permanent, url=item.get("url"),
            ))
        return out



@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(SmtpChannel)
    register(EmailApiChannel)
