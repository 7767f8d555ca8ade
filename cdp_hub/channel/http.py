"""HTTP helpers for channel plugins: one table from a provider's answer to what delivery does next.

    transport error, 408, 425, 429, 5xx  ─▶ RetriableError (retry_after from Retry-After, or  retried, backoff
                                            from the body where the provider puts it there)
    401, 403                              ─▶ ConfigurationError                               fix credentials
    other 4xx                             ─▶ the channel decides: a bad address (permanent) or a bad message
    2xx                                   ─▶ sent

Callback signatures: :func:`hmac_sha256_hex` and :func:`verify_hmac` (constant-time) for providers that sign
their delivery reports with a shared secret; :class:`SignedCallbacks` is the config block (secret, scheme,
tolerance) and :func:`verify_callback` the check a channel's ``parse_callback`` starts with:

    callback_signing = "timestamped"  X-Timestamp: <unix seconds>, X-Signature: hex HMAC-SHA256 of
                                      "<timestamp>.<body>"; refused outside callback_tolerance_seconds (replays)
    callback_signing = "body"         X-Signature: hex HMAC-SHA256 of the body (providers that cannot send a
                                      timestamp; a replay is harmless: receipts have deterministic ids)
    callback_signing = "none"         the provider cannot sign at all: accepted unsigned, by explicit choice
    no callback_secret (and not "none") ─▶ every callback is refused
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import httpx
import orjson
from pydantic import BaseModel, Field, SecretStr

from cdp_hub.channel.base import Channel, ChannelConfig, ChannelLimits
from cdp_hub.errors import ConfigurationError, RetriableError

__all__ = [
    "RETRY_STATUSES",
    "HttpChannel",
    "HttpChannelConfig",
    "RetryAfterReader",
    "SignedCallbacks",
    "header",
    "hmac_sha256_hex",
    "json_object",
    "raise_for_transient",
    "request",
    "retry_after_seconds",
    "sign_callback",
    "verify_callback",
    "verify_hmac",
]

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpChannelConfig(ChannelConfig):
    """Options every HTTP provider has: its rate limit and how many requests may be in flight."""

    rate_per_second: float | None = Field(None, gt=0, description="the provider's request rate limit")
    max_concurrency: int = Field(128, ge=1, description="requests in flight (see docs/channels.md, Throughput)")


C = TypeVar("C", bound=HttpChannelConfig)


class HttpChannel(Channel, Generic[C]):
    """Base of channels that talk to an HTTP API through the hub's shared client.

    ``class AcmeSms(HttpChannel[AcmeSmsConfig])`` with ``config_model = AcmeSmsConfig``: ``self.cfg`` is the
    typed config. Limits come from it (``rate_per_second``, ``max_concurrency``, and ``max_batch`` when the
    config has it); ``start()`` insists on the client the hub injects.
    """

    config_model: ClassVar[type[ChannelConfig]] = HttpChannelConfig
    max_body_bytes: ClassVar[int | None] = None

    def __init__(self, config: Any = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        cfg = self.config
        assert isinstance(cfg, HttpChannelConfig)
        self.limits = ChannelLimits(rate_per_second=cfg.rate_per_second, max_concurrency=cfg.max_concurrency,
                                    max_batch=getattr(cfg, "max_batch", 1),
                                    max_body_bytes=self.max_body_bytes)

    @property
    def cfg(self) -> C:
        """The validated config, typed as the subclass's config model."""
        return cast(C, self.config)

    async def start(self) -> None:
        if self.http is None:
            raise ConfigurationError(f"channel {self.instance}: needs an HTTP client (the hub passes one)")


def json_object(raw: bytes) -> dict[str, Any]:
    """A provider's JSON answer as an object; ``{}`` for an empty body, bad JSON or a JSON that is not an
    object (the caller then falls back on the HTTP status)."""
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or ``None``."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


RetryAfterReader = Callable[[httpx.Response], float | None]
"""Reads how long a provider asks us to wait from its answer, in seconds (None: it did not say)."""


def raise_for_transient(response: httpx.Response, provider: str, *, auth_errors: bool = True,
                        retry_after: RetryAfterReader = retry_after_seconds) -> None:
    """Raise :class:`RetriableError` for a status worth retrying, :class:`ConfigurationError` for refused
    credentials (unless ``auth_errors=False``: the channel reads 401/403 itself); return for anything else
    (2xx, or a 4xx the channel interprets). ``retry_after`` reads the wait from the answer: the
    ``Retry-After`` header by default; a provider that puts it in the body passes its own reader."""
    status = response.status_code
    if status in RETRY_STATUSES or status >= 500:
        raise RetriableError(f"{provider}: HTTP {status}{_detail(response)}", retry_after=retry_after(response))
    if auth_errors and status in (401, 403):
        raise ConfigurationError(
            f"{provider} refused the credentials (HTTP {status}){_detail(response)}; check the channel's "
            "api key / service account"
        )


def _detail(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f": {text[:200]}" if text else ""


async def request(http: httpx.AsyncClient, method: str, url: str, *, provider: str, auth_errors: bool = True,
                  retry_after: RetryAfterReader = retry_after_seconds, **kw: Any) -> httpx.Response:
    """One HTTP call; network failures and transient statuses become :class:`RetriableError`, refused
    credentials :class:`ConfigurationError` (see :func:`raise_for_transient`)."""
    try:
        response = await http.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        raise RetriableError(f"{provider}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RetriableError(f"{provider}: {type(exc).__name__}: {exc}") from exc
    raise_for_transient(response, provider, auth_errors=auth_errors, retry_after=retry_after)
    return response


def hmac_sha256_hex(secret: str | bytes, payload: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify_hmac(secret: str | bytes, payload: bytes, signature: str | None) -> bool:
    """Constant-time check of a hex HMAC-SHA256 signature (an optional ``sha256=`` prefix is accepted)."""
    if not signature:
        return False
    sig = signature.strip()
    if sig.startswith("sha256="):
        sig = sig[len("sha256="):]
    # As bytes: compare_digest refuses str with non-ASCII characters, and a header may carry any.
    return hmac.compare_digest(hmac_sha256_hex(secret, payload).encode(), sig.lower().encode("utf-8", "replace"))


class SignedCallbacks(BaseModel):
    """Config fields of a channel whose provider posts signed callbacks (mix into the channel's config)."""

    callback_secret: SecretStr | None = Field(None, description="HMAC key the provider signs callbacks with; "
                                              "without it callbacks are refused (unless callback_signing='none')")
    callback_signing: Literal["timestamped", "body", "none"] = Field(
        "timestamped", description="timestamped: X-Timestamp + X-Signature over '<timestamp>.<body>'; body: "
        "X-Signature over the body only; none: the provider cannot sign (callbacks accepted unsigned)")
    callback_tolerance_seconds: float = Field(300.0, gt=0, description="timestamped: the largest accepted "
                                              "difference between X-Timestamp and the hub's clock")


def sign_callback(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a timestamped callback signature (for tests and provider simulators)."""
    ts = str(int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp)
    return {"X-Timestamp": ts, "X-Signature": hmac_sha256_hex(secret, ts.encode() + b"." + body)}


def verify_callback(cfg: SignedCallbacks, headers: Mapping[str, str], body: bytes, *,
                    now: datetime | None = None) -> None:
    """Raise ``PermissionError`` (HTTP 401) unless the callback is signed as ``cfg`` says."""
    if cfg.callback_signing == "none":
        return
    if cfg.callback_secret is None:
        raise PermissionError("callbacks are refused: no callback_secret is configured (set it, or "
                              "callback_signing = 'none' for a provider that cannot sign)")
    secret = cfg.callback_secret.get_secret_value()
    signature = header(headers, "X-Signature")
    if cfg.callback_signing == "body":
        if not verify_hmac(secret, body, signature):
            raise PermissionError("bad or missing X-Signature")
        return
    stamp = (header(headers, "X-Timestamp") or "").strip()
    if not stamp.isdigit() or len(stamp) > 12:
        raise PermissionError("missing or unreadable X-Timestamp (unix seconds)")
    skew = abs((now or datetime.now(UTC)).timestamp() - int(stamp))
    if skew > cfg.callback_tolerance_seconds:
        raise PermissionError(f"X-Timestamp outside the {cfg.callback_tolerance_seconds:.0f}s tolerance (a replay, "
                              "or a clock off by that much)")
    if not verify_hmac(secret, stamp.encode() + b"." + body, signature):
        raise PermissionError("bad or missing X-Signature")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name from any mapping (Starlette, httpx, a plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None
