"""Errors that say what to do next.

    CdpHubError
     ├── ConfigurationError     fix the configuration or credentials; retrying will not help
     ├── RetriableError         transient (network, 5xx, 429): retry, after ``retry_after`` seconds if given
     ├── FatalError             stop this sync/stage; a human has to look
     └── RecordError            one record is bad: send it to the dead-letter queue, go on with the batch
          ├── SchemaViolation      the record does not fit the canonical schema
          ├── NormalizationError   a value could not be normalized (phone, email, date, ...)
          └── PolicyViolation      the sender may not send this (an internal event type, a consent grant
                                   from a public key, a type outside the source's allow-list)

Only :class:`RetriableError` is retried (tenacity); every other error is final for the call that raised it.

Every message passes through :func:`cdp_hub.redact.redact` when the error is made: an error that quotes a URL,
a DSN or a provider's answer never carries the credential in it to a log line, the DLQ or the CLI.
"""

from __future__ import annotations

from typing import Any

from cdp_hub.redact import redact

__all__ = [
    "CdpHubError",
    "ConfigurationError",
    "FatalError",
    "NormalizationError",
    "PolicyViolation",
    "RecordError",
    "RetriableError",
    "SchemaViolation",
]


class CdpHubError(Exception):
    """Root of every error cdp-hub raises on purpose; its message is redacted (no credentials)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(CdpHubError):
    """The configuration (or a credential) is wrong. Fix it; retrying will not help."""


class FatalError(CdpHubError):
    """The operation cannot go on. Stop and report."""


class RetriableError(CdpHubError):
    """A transient failure. ``retry_after`` (seconds) is the server's hint, when it gave one; ``dependency``
    names the service that is down when it is one of the hub's own (``kafka``, ``postgres``, ``redis``)."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, dependency: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.dependency = dependency


class RecordError(CdpHubError):
    """One record is bad. It goes to the dead-letter queue with this reason; the batch goes on.

    ``field`` is the dotted path of the offending field (``identities.0.value``), ``value`` the offending
    value, ``record_id`` the source's id for the record when known.
    """

    failure_type = "record_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        record_id: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = redact(message)
        self.field = field
        self.value = value
        self.record_id = record_id
        self.source = source

    def __str__(self) -> str:
        parts = [self.reason]
        if self.source:
            parts.append(f"source={self.source}")
        if self.record_id:
            parts.append(f"record={self.record_id}")
        return " | ".join(parts)


class SchemaViolation(RecordError):
    """The record does not fit the canonical event schema."""

    failure_type = "schema_violation"


class NormalizationError(RecordError, ValueError):
    """A value could not be normalized (an unparseable phone, an e-mail without a domain, ...).

    It is also a ``ValueError`` so that pydantic reports it with the field's full path.
    """

    failure_type = "normalization_error"


class PolicyViolation(RecordError):
    """The record is well formed, but its sender may not send it (see docs/http-api.md, "Trust levels")."""

    failure_type = "policy_violation"
