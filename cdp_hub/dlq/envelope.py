"""The dead-letter queue: bad records with their reason, on ``cdp.dlq``, and their replay.

A DLQ entry is a typed envelope in the spirit of Snowplow's bad rows and Kafka Connect's DLQ headers:
what failed (``failure_type``), where (``stage``, ``source``, origin topic/partition/offset), why
(``error``, ``field``), and the original payload, byte for byte, so a fixed record can be replayed.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.errors import RecordError
from cdp_hub.redact import redact

__all__ = ["DeadLetter", "FailureType", "Origin", "dead_letter_from_error"]

FailureType = Literal[
    "schema_violation",
    "normalization_error",
    "policy_violation",
    "resolution_error",
    "identity_rejected",
    "delivery_error",
    "template_error",
    "record_error",
    "processing_error",
]


class Origin(BaseModel):
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """One record that could not be processed, and why."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cdp.dlq/1"] = "cdp.dlq/1"
    dlq_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    failure_type: FailureType
    stage: str
    source: str | None = None
    record_id: str | None = None
    error: str
    field: str | None = None
    value: str | None = Field(default=None, description="the offending value, shortened")
    payload: str = Field(description="the original record: UTF-8 text, or base64 when not text")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    origin: Origin | None = None
    replay_topic: str | None = Field(default=None, description="where `dlq replay` puts the fixed record")
    connector: str | None = Field(default=None, description="for raw source records: the connector type")
    stream: str | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def payload_bytes(self) -> bytes:
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")

    def to_message(self, topic: str) -> OutgoingMessage:
        headers = (
            ("cdp.dlq.failure_type", self.failure_type.encode()),
            ("cdp.dlq.stage", self.stage.encode()),
        )
        key = (self.source or self.stage).encode()
        return OutgoingMessage(topic, self.model_dump_json(exclude_none=True).encode(), key, headers)


def _payload_text(raw: bytes | str | Any) -> tuple[str, Literal["utf-8", "base64"]]:
    if isinstance(raw, str):
        return raw, "utf-8"
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"
    return orjson.dumps(raw, default=str).decode("utf-8"), "utf-8"


def dead_letter_from_error(
    exc: BaseException,
    *,
    stage: str,
    payload: bytes | str | Any,
    record: Record | None = None,
    failure_type: FailureType | None = None,
    source: str | None = None,
    replay_topic: str | None = None,
    connector: str | None = None,
    stream: str | None = None,
) -> DeadLetter:
    """Build the DLQ envelope for ``exc`` raised while processing ``payload``."""
    text, encoding = _payload_text(payload)
    field = value = record_id = None
    if isinstance(exc, RecordError):
        field, record_id = exc.field, exc.record_id
        value = None if exc.value is None else repr(exc.value)[:200]
        source = source or exc.source
        failure_type = failure_type or exc.failure_type  # type: ignore[assignment]
    return DeadLetter(
        failure_type=failure_type or "processing_error",
        stage=stage,
        source=source,
        record_id=record_id,
        error=str(exc) if isinstance(exc, RecordError) else redact(f"{type(exc).__name__}: {exc}"),
        field=field,
        value=value,
        payload=text,
        payload_encoding=encoding,
        origin=Origin(topic=record.topic, partition=record.partition, offset=record.offset) if record else None,
        replay_topic=replay_topic or (record.topic if record else None),
        connector=connector,
        stream=stream,
    )
