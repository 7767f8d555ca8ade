"""The bus interface: topics, keyed partitions, consumer groups, explicit commits.

Two backends implement it with the same semantics:
- :class:`cdp_hub.bus.kafka.KafkaBus` (aiokafka; idempotent producer, ``acks="all"``), production;
- :class:`cdp_hub.bus.memory.MemoryBus` (in-process), the embedded default and fast tests.

Delivery is at least once: a consumer commits offsets only after its output is durable, so a crash replays
uncommitted records; every stage is idempotent so a replay changes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cdp_hub.lifecycle import AsyncLifecycle

__all__ = [
    "TOPICS",
    "Bus",
    "Consumer",
    "OutgoingMessage",
    "Record",
    "Seal",
    "TopicPartition",
]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; a deployment may add a prefix (``CDP_HUB_TOPIC_PREFIX``)."""

    events: str = "cdp.events"
    profile_events: str = "cdp.profile-events"
    messages: str = "cdp.messages"
    dlq: str = "cdp.dlq"

    def with_prefix(self, prefix: str) -> Topics:
        return Topics(*(prefix + name for name in (self.events, self.profile_events, self.messages, self.dlq)))

    def all(self) -> tuple[str, ...]:
        return (self.events, self.profile_events, self.messages, self.dlq)


TOPICS = Topics()


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One record to publish. Records with the same key land in the same partition, in order."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Seal(Protocol):
    """What a bus needs of :class:`cdp_hub.bus.provenance.RecordSeal`."""

    def seal(self, messages: Sequence[OutgoingMessage]) -> Sequence[OutgoingMessage]: ...

    def verify(self, record: Record, schema: bytes) -> bool: ...


class Consumer(AsyncLifecycle, abc.ABC):
    """A member of a consumer group. Offsets are committed explicitly, never automatically."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group. Idempotent. Uncommitted records will be delivered again to the group."""

    @abc.abstractmethod
    async def getmany(self, *, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        """The next records of the partitions assigned to this member (possibly none after the timeout)."""

    def drained(self) -> dict[TopicPartition, float]:
        """The partitions whose every record the broker held at this member's last fetch of them has been
        returned by :meth:`getmany`, each with how long ago (seconds) that fetch was answered: nothing
        written before that moment is still to come. A stage holding event-time timers reads it (see
        :meth:`cdp_hub.pipeline.stage.Stage.drained`). Default: none known (a consumer that cannot tell)."""
        return {}

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read, per partition), or the position of every record returned
        so far when ``None``."""

    @abc.abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus committed offset, per assigned partition."""


class Bus(AsyncLifecycle, abc.ABC):
    """Producer side plus a factory for consumers."""

    backend: str = "abstract"
    seal: Seal | None = None
    """Seals the records the hub's own producers made (:class:`cdp_hub.bus.provenance.RecordSeal`, set by the
    hub), so that stages can tell them from records anyone with write access to a topic could forge."""

    def sealed(self, messages: Sequence[OutgoingMessage]) -> Sequence[OutgoingMessage]:
        """``messages`` as the backends write them: sealed when the hub gave this bus a seal."""
        return messages if self.seal is None else self.seal.seal(messages)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush and close. Idempotent."""

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[str], *, partitions: int = 4) -> None:
        """Create the topics when missing (existing topics are left as they are)."""

    @abc.abstractmethod
    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Publish one record and wait until the bus has it durably (acks=all)."""

    @abc.abstractmethod
    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish a batch (pipelined) and wait until every record is durable. Order per key is kept."""

    def backlog(self, topic: str) -> int | None:
        """Records of ``topic`` this process holds in memory that some consumer group has not committed yet,
        or ``None`` when the bus keeps them elsewhere (Kafka: on the brokers' disks). The HTTP edge stops
        accepting events beyond a limit of it (``edge.max_backlog``)."""
        return None

    @abc.abstractmethod
    def consumer(self, topics: Sequence[str], *, group: str, client_id: str | None = None) -> Consumer:
        """A new consumer-group member (call ``start()``, or use ``async with``). New groups start at the
        earliest offset."""

    @abc.abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written, per partition of ``topic``."""

    async def group_lag(self, group: str, topic: str) -> dict[int, int] | None:
        """The records of ``topic`` that consumer group ``group`` has not committed yet, per partition (a
        partition it never committed counts from the oldest record kept); ``None`` when the group has committed
        nothing on ``topic`` (no such stage runs here, or it has not finished a batch yet), or when the bus
        cannot tell. The triggers stage reads the resolver's with it (docs/scenarios.md)."""
        return None

    @abc.abstractmethod
    async def read_all(self, topic: str, *, limit: int | None = None) -> list[Record]:
        """Every record currently in ``topic`` from the beginning, outside any group (for browsing)."""
