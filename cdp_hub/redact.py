"""Secrets out of everything the hub logs or shows: log lines, error messages, ``config show``, ``/readyz``.

Two layers, because neither alone is enough:

    redact(text)          patterns that carry a credential wherever it appears: the password of a URL
                          (``postgresql://user:***@``, ``redis://:***@``), a Telegram bot token in a path
                          (``/bot***/sendMessage``), query parameters named like keys (``apiKey=***``) and the
                          value of an ``Authorization`` header
    register_secrets(...) the literal values of the configured secrets (every ``SecretStr``, the passwords of
                          the DSNs, connector and channel options named like credentials): replaced wherever
                          they appear, whatever a library wrote around them

    RedactingFilter       the logging filter that applies both to the message, its arguments and the formatted
                          traceback; ``cdp_hub.cli.configure_logging`` installs it on the root handler, so
                          every logger (httpx, httpcore, aiokafka, uvicorn, the hub's own) passes through it

Redaction replaces with ``***``; it never shortens a line otherwise, so the rest stays useful for debugging.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

__all__ = ["MASK", "RedactingFilter", "collect_secrets", "install_redaction", "public_view", "redact",
           "redact_url", "register_secrets", "registered_secrets"]

MASK = "***"

# Names of options, query parameters and mapping keys that hold credentials.
SECRET_NAME = re.compile(
    r"(?:^|[_\-.])(?:api[_-]?key|apikey|key|keys|secret|token|password|passwd|passphrase|pwd|credentials?|"
    r"signature|authorization|cookie|service_account_json)$", re.IGNORECASE)

# scheme://user:password@host  and  scheme://:password@host  (Redis): the password goes, the user stays.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)(?P<secret>[^\s@/'\"]+)(?=@)")
# Telegram's bot API carries the token in the path: /bot123456:AA.../sendMessage
_BOT_TOKEN = re.compile(r"(?P<head>/bot)(?P<secret>\d+:[A-Za-z0-9_\-]+)")
# ?apiKey=...&token=...  (any parameter whose name looks like a credential)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.\-]*?(?:key|token|secret|password|passwd|pass|pwd|auth|signature|sig|"
    r"session|code))=)(?P<secret>[^&#\s'\"]+)", re.IGNORECASE)
# Authorization: Bearer xyz / (b'Authorization', b'Basic xyz') / "authorization": "Token xyz"
_AUTH_HEADER = re.compile(
    r"(?P<head>(?:proxy-)?authorization['\"]?\s*[:=,]\s*(?-i:b)?['\"]?\s*(?:bearer|basic|token|digest|apikey)?\s*)"
    r"(?P<secret>[^\s'\",)]+)", re.IGNORECASE)
# X-Api-Key: xyz and friends
_KEY_HEADER = re.compile(
    r"(?P<head>x-(?:api-)?(?:key|token|auth[a-z\-]*)['\"]?\s*[:=,]\s*(?-i:b)?['\"]?\s*)(?P<secret>[^\s'\",)]+)",
    re.IGNORECASE)

_PATTERNS = (_URL_PASSWORD, _BOT_TOKEN, _QUERY_SECRET, _AUTH_HEADER, _KEY_HEADER)

# Shorter values are too likely to be ordinary words or numbers ("1", "yes") to replace everywhere.
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def _mask(match: re.Match[str]) -> str:
    return match.group("head") + MASK


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``***`` (patterns and registered values)."""
    if not text:
        return text
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for known in _PATTERNS:
        text = known.sub(_mask, text)
    return text


def redact_url(url: object) -> str:
    """A URL or DSN fit to show: no password, no credential in the query or the path."""
    return redact(str(url))


def register_secrets(values: Iterable[str]) -> None:
    """Add literal secret values that :func:`redact` replaces wherever they appear (idempotent)."""
    global _secrets, _secret_pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH}
    with _lock:
        merged = _secrets | fresh
        if merged == _secrets:
            return
        _secrets = frozenset(merged)
        # Longest first: a secret that contains another is replaced whole.
        _secret_pattern = re.compile("|".join(re.escape(v) for v in sorted(_secrets, key=len, reverse=True)))


def registered_secrets() -> frozenset[str]:
    return _secrets


def collect_secrets(value: Any, *, name: str = "") -> set[str]:
    """The secret values inside settings: every ``SecretStr``, the password (and whole query credentials) of
    every URL-valued field, and strings under a key named like a credential, recursively through models,
    mappings and lists."""
    found: set[str] = set()
    if isinstance(value, SecretStr):
        found.add(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            found |= collect_secrets(getattr(value, field), name=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found |= collect_secrets(item, name=str(key))
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            found |= collect_secrets(item, name=name)
    elif isinstance(value, str):
        if name and SECRET_NAME.search(name) and not value.startswith(("env:", "$")):
            found.add(value)
        if "://" in value:
            found |= _url_secrets(value)
    return {s for s in found if s}


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found = {parts.password} if parts.password else set()
    for match in _QUERY_SECRET.finditer(url):
        found.add(match.group("secret"))
    return {s for s in found if s}


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its message (with the arguments merged in) and its formatted traceback.

    Installed on a *handler*, it sees every record that handler writes, whichever logger made it (a filter on
    a logger sees only that logger's own records, not its children's).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: show both, redacted
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def public_view(value: Any, *, name: str = "") -> Any:
    """``value`` (settings, a mapping of options) as plain JSON-able data fit to show: secrets as ``***``,
    URLs without their passwords. ``cdp-hub config show`` prints this."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return {field: public_view(getattr(value, field), name=field) for field in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(key): public_view(item, name=str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [public_view(item, name=name) for item in value]
    if isinstance(value, str):
        if name and SECRET_NAME.search(name) and value:
            return MASK
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    found = next((f for h in target.handlers for f in h.filters if isinstance(f, RedactingFilter)), None)
    redacting = found or RedactingFilter()
    for handler in target.handlers:
        if redacting not in handler.filters:
            handler.addFilter(redacting)
    return redacting
