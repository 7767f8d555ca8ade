"""Log output of the hub: text for people, JSON lines for log shippers, with the same fields in both.

    configure_logging(level, fmt)     one handler on the root logger, so the hub, httpx, aiokafka and uvicorn
                                      all write the same format; the redaction filter (:mod:`cdp_hub.redact`)
                                      and the client-noise filter on it
    log_context(stage="resolver")     fields added to every record logged inside the block (a contextvar:
                                      each asyncio task keeps its own); stages, syncs and jobs use it
    log.info("...", extra={"event_id": ..., "profile_id": ...})   fields for one record

A JSON line is ``{"time": "2026-11-30T19:53:18.123Z", "level": "INFO", "logger": "cdp_hub.pipeline.runner",
"message": "...", "stage": "resolver", "event_id": "..."}``: the time in ISO 8601 UTC, the fields of
:data:`FIELDS` when a record has them, ``exception`` with the (redacted) traceback. Only ids go into fields,
never personal data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from cdp_hub.errors import ConfigurationError
from cdp_hub.redact import install_redaction

__all__ = ["FIELDS", "LOG_FORMATS", "LOG_LEVELS", "ClientLibraryNoise", "ContextFields", "JsonFormatter",
           "TextFormatter", "configure_logging", "log_context"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")

FIELDS = ("worker", "stage", "instance", "stream", "channel", "job", "event_id", "profile_id", "message_id", "record_id",
          "dlq_id", "topic", "partition", "offset", "dependency", "route", "status")
"""Structured fields a record may carry (from :func:`log_context` or ``extra=``): ids and names, no PII."""

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("cdp_hub_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (names from :data:`FIELDS`) to every record logged in this block, in this task."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFields(logging.Filter):
    """Copies the :func:`log_context` fields onto each record (a field given with ``extra=`` wins), and the
    worker's name in a ``cdp-hub run --processes`` process (``$CDP_HUB_WORKER``, set by the supervisor)."""

    def __init__(self) -> None:
        super().__init__()
        self.worker = os.environ.get("CDP_HUB_WORKER") or None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.worker is not None and not hasattr(record, "worker"):
            record.worker = self.worker
        for name, value in (_CONTEXT.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}


def iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ISO 8601 UTC time, level, logger, message, the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": iso_time(record), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}
        entry.update(_fields(record))
        if record.exc_text:  # the traceback as the redaction filter left it
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [field=value ...]`` with the time in ISO 8601 UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # fields at the end of the first line, before a traceback
        return head + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" + sep + tail


class ClientLibraryNoise(logging.Filter):
    """The Kafka client logs every failed connection attempt and fetch at ERROR: thousands of lines while a
    broker restarts; asyncpg's pool logs a traceback every few seconds while PostgreSQL is away. The hub
    reports the outage itself (one ERROR line, :mod:`cdp_hub.outages`), so the clients' lines become WARNING
    and each distinct one passes at most once per ``window`` seconds."""

    LOGGERS = ("aiokafka", "asyncpg")

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LOGGERS) or record.levelno < logging.WARNING:
            return True
        if record.levelno == logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.window) < self.window:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


def configure_logging(level: str, fmt: str) -> None:
    """One handler on the root logger for every library (httpx, aiokafka, uvicorn, the hub), with the
    client-noise filter, the context fields and the one redaction filter: no line carries a secret."""
    if level.upper() not in LOG_LEVELS:
        raise ConfigurationError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ConfigurationError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(ClientLibraryNoise())
    handler.addFilter(ContextFields())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    install_redaction(root)
    root.setLevel(level.upper())
    # httpx logs every request's URL at INFO: one line per message sent. Below DEBUG only its warnings pass;
    # at DEBUG an operator gets the request lines, scrubbed by the redaction filter (Telegram's /bot<token>/).
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    # uvicorn's own logging config (applied by any uvicorn.Config with the default log_config) gives its loggers
    # a handler of their own and stops them propagating: they go through the root handler again.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_log = logging.getLogger(name)
        server_log.handlers.clear()
        server_log.propagate = True
        server_log.disabled = False
