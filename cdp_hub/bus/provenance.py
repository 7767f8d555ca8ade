"""Which records the hub itself wrote: the headers its producers add, the seal on them, and the trust rule.

    producer of events (connector ingest, HTTP edge, callbacks, resolver, triggers, delivery, campaigns, segments)
        ─▶ OutgoingMessage with  cdp-schema: cdp.event/1,  cdp-producer: cdp-hub/<major.minor>
        ─▶ Bus.publish_many ─▶ RecordSeal.seal (raw events topic): cdp-seal = BLAKE2b-MAC(key; schema, producer;
                                                                                         value), 16 bytes
    stage.decode(record) ─▶ RecordTrust.trusts(record, schema)?
        yes ─▶ the trusted fast path (cdp_hub.schema.trusted), falling back to full validation
        no  ─▶ full validation (the model, the same dead letters as ever)

A record is trusted when it names the schema the stage reads and this hub version as its producer, and

- it is on an **internal topic** (``cdp.profile-events``, ``cdp.messages``): only the hub writes those; the
  operator's Kafka ACLs (write access for the hub's principal only) are what guarantees it; or
- it is on the **raw events topic** (``cdp.events``) and carries a valid seal. Connectors, the edge and
  provider callbacks write there from inside the hub, but any system with write access to the topic could put
  the same headers on a record, so headers alone prove nothing there: the seal is a MAC over the record with
  a key only hub processes hold (``record_seal_key``, or a random key per process, which the supervisor of
  ``cdp-hub run --processes`` shares with its workers). A record without a valid seal is validated fully.

A record of another producer version, without the headers (older producers, ``cdp-hub dlq replay``) or failing
the fast path is validated fully. Intents carry no such headers: the delivery stage validates them fully, which
costs what a fast path would (``MessageIntent`` has no Python validators; ``cdp_hub.schema.trusted``).
``docs/architecture.md`` ("Trust boundary") says it for operators.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cdp_hub.bus.base import OutgoingMessage, Record, Seal

__all__ = [
    "EVENT_SCHEMA",
    "PRODUCER",
    "PRODUCER_HEADER",
    "SCHEMA_HEADER",
    "SEAL_HEADER",
    "RecordSeal",
    "RecordTrust",
    "hub_headers",
]

SCHEMA_HEADER = "cdp-schema"
PRODUCER_HEADER = "cdp-producer"
SEAL_HEADER = "cdp-seal"
EVENT_SCHEMA = b"cdp.event/1"
PRODUCER = b"cdp-hub/0.1"
"""This hub's producer version (``cdp-hub/<major.minor>`` of ``cdp_hub.__version__``; a test keeps them in step).
A consumer trusts only its own version's records: another version may write its JSON differently."""

_SEAL_BYTES = 16  # 128 bits: beyond guessing


def hub_headers(schema: bytes, *first: tuple[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    """The headers of a record the hub produced, validated, in the schema ``schema``, after ``first``."""
    return (*first, (SCHEMA_HEADER, schema), (PRODUCER_HEADER, PRODUCER))


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class RecordSeal:
    """The MAC key of this deployment's hub processes: seals what they publish, checks what they read.

    The seal is keyed BLAKE2b (a MAC by design, no HMAC construction needed) of the value, personalized with the
    schema and salted with the producer: half the CPU of HMAC-SHA256 (bench/parse_once.py). Only records for
    ``topics`` are sealed (the raw events topic: internal topics are trusted by their headers), so the other
    records cost nothing more to publish.
    """

    def __init__(self, key: bytes | None = None, *, topics: frozenset[str] | None = None) -> None:
        key = key if key else os.urandom(32)
        self.key = key if len(key) <= 64 else hashlib.sha256(key).digest()  # BLAKE2b takes keys up to 64 bytes
        self.topics = topics
        """The topics whose hub records are sealed; ``None``: every topic."""
        self._keyed: dict[bytes, Any] = {}

    def _digest(self, schema: bytes, value: bytes) -> bytes:
        # A copy of a hasher that has taken the key already: the key block is compressed once per schema, not
        # once per record (the same digest as blake2b(value, key=..., person=..., salt=...)).
        keyed = self._keyed.get(schema)
        if keyed is None:
            keyed = self._keyed[schema] = hashlib.blake2b(digest_size=_SEAL_BYTES, key=self.key,
                                                          person=schema[:16], salt=PRODUCER[:16])
        hasher = keyed.copy()
        hasher.update(value)
        return hasher.digest()

    def seal(self, messages: Sequence[OutgoingMessage]) -> Sequence[OutgoingMessage]:
        """``messages`` with a seal on each one that carries the hub's headers (others unchanged)."""
        out: list[OutgoingMessage] | None = None
        topics = self.topics
        for index, message in enumerate(messages):
            if topics is not None and message.topic not in topics:
                continue
            headers = message.headers
            schema = _header(headers, SCHEMA_HEADER)
            if schema is None or _header(headers, PRODUCER_HEADER) != PRODUCER:
                continue
            if out is None:
                out = list(messages)
            # The constructor, not dataclasses.replace: replace inspects the fields on every call and was most
            # of the seal's cost (9% of the edge's CPU per event).
            out[index] = OutgoingMessage(message.topic, message.value, message.key,
                                         (*headers, (SEAL_HEADER, self._digest(schema, message.value))))
        return messages if out is None else out

    def verify(self, record: Record, schema: bytes) -> bool:
        """Whether ``record`` carries this key's seal for ``schema``."""
        seal = _header(record.headers, SEAL_HEADER)
        return seal is not None and hmac.compare_digest(seal, self._digest(schema, record.value))


@dataclass(frozen=True, slots=True)
class RecordTrust:
    """Which records a stage may decode through the trusted fast path (see the module doc)."""

    internal_topics: frozenset[str]
    """Topics only the hub writes (its Kafka ACLs): the headers are enough."""
    seal: Seal | None = None
    """The key for every other topic: the headers and a valid seal. ``None``: no other topic is trusted."""

    def trusts(self, record: Record, schema: bytes) -> bool:
        headers = record.headers
        if _header(headers, SCHEMA_HEADER) != schema or _header(headers, PRODUCER_HEADER) != PRODUCER:
            return False
        if record.topic in self.internal_topics:
            return True
        return self.seal is not None and self.seal.verify(record, schema)
