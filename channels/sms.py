"""SMS over an HTTP gateway, with GSM-7/UCS-2 segment counting and delivery-report callbacks.

    send:      POST {base_url}{path}  {"to", "from", "text", "client_ref", "callback_url"}
               Authorization: Bearer <api_key>, Idempotency-Key: <message_id>
               200/201 {"id": "...", "segments": n}         ─▶ sent
               4xx {"error": {"code": "invalid_number"}}    ─▶ failed, permanent (the number is suppressed)
               429 / 5xx                                    ─▶ retried (Retry-After)
    batch:     with ``max_batch > 1``: POST {base_url}{batch_path} {"messages": [...]} ─▶ {"results": [...]}
               matched by client_ref; a per-message "throttled" is retried alone
    callback:  POST /v1/callbacks/<instance>  {"id", "client_ref", "status": "delivered"|"failed"|..., "error_code"}
               (one object or a list; signed as `callback_signing` says: X-Timestamp + X-Signature by default)

Segments: a text that fits the GSM 03.38 alphabet is GSM-7 (160 characters in one SMS, 153 per part of a long
one; ``^{}\\[~]|€`` take two septets); anything else, Cyrillic included, is UCS-2 (70 UTF-16 units in one
SMS, 67 per part). The gateway charges per segment, so the count is checked against ``max_segments`` before
sending.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

import cdp_hub
from cdp_hub.channel.base import (
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
from cdp_hub.errors import RecordError, RetriableError

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "HttpSmsChannel", "HttpSmsConfig", "SmsSegments", "count_segments"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """How a text travels: ``encoding``, its length in ``units`` (septets or UTF-16 units), ``segments``."""

    encoding: Literal["gsm7", "ucs2"]
    units: int
    segments: int
    chars: int


def _fill(costs: list[int], single: int, part: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1 if total else 0
    # A long message is split into parts; a two-unit character (escape + char, surrogate pair) never straddles.
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts += 1
            used = 0
        used += cost
    return parts


def count_segments(text: str) -> SmsSegments:
    """The SMS segments ``text`` needs (see the module docstring for the rules)."""
    chars = set(text)
    if chars <= _GSM7_ALL:
        extension = chars & GSM7_EXTENSION
        units = len(text) + sum(text.count(c) for c in extension)
        if units <= 160:
            return SmsSegments("gsm7", units, 1 if units else 0, len(text))
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SmsSegments("gsm7", units, _fill(costs, 160, 153), len(text))
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return SmsSegments("ucs2", units, 1, len(text))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsSegments("ucs2", units, _fill(costs, 70, 67), len(text))


_SENDER_RE = re.compile(r"^(?:[A-Za-z0-9 .\-_&]{1,11}|\+?[0-9]{3,15})$")

DEFAULT_PERMANENT_ERRORS = ("invalid_number", "unknown_subscriber", "number_blocked", "not_mobile",
                            "landline", "blacklisted", "unsubscribed")
_STATUS_MAP: dict[str, ReceiptStatus] = {
    "delivered": "delivered", "delivrd": "delivered", "failed": "failed", "undelivered": "failed",
    "undeliv": "failed", "rejected": "failed", "expired": "failed", "sent": "sent", "accepted": "sent",
}


class HttpSmsConfig(SignedCallbacks, HttpChannelConfig):
    base_url: str = Field(description="the gateway's API root, e.g. https://sms.example.com/api/v1")
    path: str = Field("/messages", description="path of the send endpoint")
    api_key: SecretStr = Field(description="bearer token of the gateway account")
    sender: str = Field(description="sender name (alphanumeric, up to 11 characters) or a phone number")
    callback_url: str | None = Field(None, description="where the gateway posts delivery reports")
    max_segments: int = Field(6, ge=1, description="longer texts fail instead of costing a fortune")
    permanent_errors: list[str] = Field(default_factory=lambda: list(DEFAULT_PERMANENT_ERRORS),
                                        description="gateway error codes that mean the number is bad for good")
    retry_errors: list[str] = Field(default_factory=lambda: ["throttled", "temporarily_unavailable"],
                                    description="per-message error codes worth a retry")
    max_batch: int = Field(1, ge=1, le=1000,
                           description="messages per request; above 1 the gateway's batch endpoint is used")
    batch_path: str = Field("/messages/batch", description="path of the batch endpoint")

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not _SENDER_RE.match(value):
            raise ValueError("an alphanumeric sender has 1-11 latin letters/digits; a numeric one is a phone")
        return value


class HttpSmsChannel(HttpChannel[HttpSmsConfig]):
    """SMS through an HTTP gateway (JSON API, bearer key), with delivery reports."""

    name: ClassVar[str] = "sms_http"
    kind = "sms"
    address_kind = "phone"
    config_model = HttpSmsConfig


    def _too_long(self, message: OutboundMessage, seg: SmsSegments) -> Receipt | None:
        if seg.segments <= self.cfg.max_segments:
            return None
        return Receipt(message_id=message.message_id, status="failed", provider=self.name,
                       reason=f"text needs {seg.segments} {seg.encoding} segments; at most {self.cfg.max_segments}")

    def _body(self, message: OutboundMessage, seg: SmsSegments) -> dict[str, Any]:
        body: dict[str, Any] = {"to": message.to, "from": message.sender or self.cfg.sender, "text": message.text,
                                "client_ref": message.message_id, "encoding": seg.encoding}
        if self.cfg.callback_url:
            body["callback_url"] = self.cfg.callback_url
        return body

    def _headers(self, idempotency_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cfg.api_key.get_secret_value()}",
                "Idempotency-Key": idempotency_key, "Content-Type": "application/json"}

    def _result(self, message: OutboundMessage, data: dict[str, Any], status: int) -> Receipt | RetriableError:
        raw_error = data.get("error")
        if 200 <= status < 300 and not raw_error:
            return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                           provider_message_id=_str(data.get("id")))
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        code = str(error.get("code") or data.get("code") or f"http_{status}")
        text = str(error.get("message") or data.get("message") or "")
        reason = f"{code}: {text}" if text else code
        if code in self.cfg.retry_errors:
            return RetriableError(f"{self.instance}: {reason}")
        return Receipt(message_id=message.message_id, status="failed", provider=self.name,
                       permanent=code in self.cfg.permanent_errors, reason=reason)

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.http is not None
        seg = count_segments(message.text)
        if (too_long := self._too_long(message, seg)) is not None:
            return too_long
        response = await request(
            self.http, "POST", self.cfg.base_url.rstrip("/") + self.cfg.path, provider=self.instance,
            content=orjson.dumps(self._body(message, seg)), headers=self._headers(message.message_id),
        )
        result = self._result(message, json_object(response.content), response.status_code)
        if isinstance(result, RetriableError):
            raise result
        return result

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Receipt | RetriableError]:
        """One request for up to ``max_batch`` messages: ``{"messages": [...]}`` to ``batch_path``; the
        answer ``{"results": [...]}`` is matched to the messages by ``client_ref``."""
        assert self.http is not None
        results: dict[str, Receipt | RetriableError] = {}
        send = []
        bodies = []
        for message in messages:
            seg = count_segments(message.text)
            too_long = self._too_long(message, seg)
            if too_long is not None:
                results[message.message_id] = too_long
            else:
                send.append(message)
                bodies.append(self._body(message, seg))
        if send:
            key = hashlib.sha256("\x1f".join(m.message_id for m in send).encode()).hexdigest()
            response = await request(
                self.http, "POST", self.cfg.base_url.rstrip("/") + self.cfg.batch_path, provider=self.instance,
                content=orjson.dumps({"messages": bodies}), headers=self._headers(key),
            )
            data = json_object(response.content)
            items = data.get("results")
            by_ref = {str(item.get("client_ref")): item for item in items or [] if isinstance(item, dict)}
            for message in send:
                item = by_ref.get(message.message_id)
                if item is not None:
                    results[message.message_id] = self._result(message, item, response.status_code)
                elif response.is_success:
                    results[message.message_id] = RetriableError(f"{self.instance}: no result for this message")
                else:  # the whole request was refused (a 4xx): every message fails the same way
                    results[message.message_id] = self._result(message, data, response.status_code)
        return [results[m.message_id] for m in messages]

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        cfg = self.cfg
        verify_callback(cfg, headers, body)
        data = _parse(body)
        reports = data if isinstance(data, list) else [data]
        out: list[Receipt] = []
        for report in reports:
            if not isinstance(report, dict):
                raise RecordError("a delivery report must be a JSON object", field="<record>", value=report)
            status = _STATUS_MAP.get(str(report.get("status", "")).lower())
            if status is None or status == "sent":
                continue  # intermediate states (queued, enroute) say nothing new
            code = _str(report.get("error_code"))
            out.append(Receipt(
                message_id=_str(report.get("client_ref")) or "", status=status, provider=self.name,
                provider_message_id=_str(report.get("id")), reason=code,
                permanent=status == "failed" and code in cfg.permanent_errors,
            ))
        return out


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None



def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"delivery report is not JSON: {exc}", field="<record>") from None


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(HttpSmsChannel)
