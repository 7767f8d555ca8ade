"""Webhook signatures: HMAC-SHA256 over the raw body (and a timestamp), constant-time compare, replay window.

    source system ──POST body + X-Cdp-Timestamp + X-Cdp-Signature──▶ /v1/webhooks/{instance}
                                                                         │ verify_webhook(spec, secret, ...)
        signature = HMAC-SHA256(secret, "{timestamp}.{body}")  ◀─────────┘ hmac.compare_digest
        |now - timestamp| <= tolerance, else rejected as a replay

The signed text, header names and encoding differ between systems, so a connector class describes its
source's scheme in a :class:`WebhookSpec`; the defaults (``X-Cdp-*``, hex, ``sha256=`` prefix) serve systems
that let you choose. The body is verified exactly as received: never re-serialized JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cdp_hub.connector.mapping import parse_datetime
from cdp_hub.errors import CdpHubError, RecordError

__all__ = ["WebhookRejected", "WebhookSpec", "sign_webhook", "verify_webhook"]


class WebhookRejected(CdpHubError):
    """A webhook request failed verification; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebhookSpec:
    """How a source signs its webhooks, and how its topic header maps to the connector's streams.

    ``signed_payload`` is a template over ``{timestamp}``, ``{body}``, ``{method}`` and ``{url}``.
    """

    signature_header: str = "X-Cdp-Signature"
    timestamp_header: str | None = "X-Cdp-Timestamp"
    signed_payload: str = "{timestamp}.{body}"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = "sha256="
    topic_header: str | None = None
    topics: Mapping[str, str] = field(default_factory=dict)
    """Topic header value -> stream name (``orders/create`` -> ``orders``)."""


def _payload(spec: WebhookSpec, body: bytes, timestamp: str, method: str, url: str) -> bytes:
    out = spec.signed_payload.encode()
    for name, value in ((b"{timestamp}", timestamp.encode()), (b"{method}", method.upper().encode()),
                        (b"{url}", url.encode())):
        out = out.replace(name, value)
    return out.replace(b"{body}", body)  # last: the body may itself contain "{timestamp}"


def _digest(spec: WebhookSpec, secret: str, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii") if spec.encoding == "base64" else mac.hex()


def sign_webhook(spec: WebhookSpec, secret: str, body: bytes, *, timestamp: str | None = None,
                 method: str = "POST", url: str = "") -> dict[str, str]:
    """The headers a sender adds (for tests, and for systems that let you write the sender)."""
    ts = timestamp if timestamp is not None else str(int(datetime.now(UTC).timestamp()))
    headers = {spec.signature_header: spec.prefix + _digest(spec, secret, _payload(spec, body, ts, method, url))}
    if spec.timestamp_header:
        headers[spec.timestamp_header] = ts
    return headers


def verify_webhook(spec: WebhookSpec, secret: str, headers: Mapping[str, str], body: bytes, *,
                   tolerance_seconds: float = 300.0, now: datetime | None = None, method: str = "POST",
                   url: str = "") -> None:
    """Raise :class:`WebhookRejected` unless the signature matches and the timestamp is fresh.

    ``headers`` may be any case (HTTP header names are case-insensitive).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    given = lower.get(spec.signature_header.lower())
    if not given:
        raise WebhookRejected(f"missing signature header {spec.signature_header}")
    timestamp = ""
    if spec.timestamp_header:
        timestamp = lower.get(spec.timestamp_header.lower(), "")
        if not timestamp:
            raise WebhookRejected(f"missing timestamp header {spec.timestamp_header}")
        try:
            sent = parse_datetime(timestamp, field=spec.timestamp_header)
        except RecordError:
            raise WebhookRejected(f"unreadable timestamp in {spec.timestamp_header}") from None
        skew = abs(((now or datetime.now(UTC)) - sent).total_seconds())
        if skew > tolerance_seconds:
            raise WebhookRejected(f"timestamp outside the {tolerance_seconds:.0f}s tolerance (a replay, or a "
                                  "clock off by that much)")
    expected = spec.prefix + _digest(spec, secret, _payload(spec, body, timestamp, method, url))
    # Several signatures may be sent during a secret rotation: "sha256=a,sha256=b" or space separated.
    candidates = [c.strip() for c in given.replace(" ", ",").split(",") if c.strip()]
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(candidate.encode(), expected.encode())
    if not ok:
        raise WebhookRejected("signature mismatch")
