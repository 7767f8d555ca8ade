"""The Kafka bus (aiokafka): the production backend of :class:`~cdp_hub.bus.base.Bus`.

- Producer: idempotent, ``acks="all"``, ``linger_ms=5``, compressed with ``compression`` (default zstd,
  ``kafka_compression`` in the settings; :data:`COMPRESSIONS`); :meth:`KafkaBus.publish_many` hands every
  record to the producer first and only then waits for all acknowledgements, so the batch is pipelined; from
  64 records on it builds one record batch per partition itself (a third of the CPU per record).
  Consumers read every codec whatever the producer's setting (the codecs come with the package).
  Keys go through the Java client's murmur2 partitioner (:mod:`cdp_hub.bus.partitioner`: aiokafka's default
  partitioner's hash, in half its time).
- Topics: :meth:`KafkaBus.ensure_topics` creates the missing ones through the admin client; a topic that a
  publish or a consumer meets first is created the same way with ``default_partitions`` (rather than the
  broker's ``num.partitions``), as the in-process bus does.
- Consumers: one ``AIOKafkaConsumer`` per group member, auto-commit off, ``auto_offset_reset="earliest"``;
  :class:`KafkaConsumer` tracks the next offset of everything it returned, so ``commit(None)`` commits
  exactly that. When partitions are revoked in a rebalance their tracked positions are dropped: the new
  owner reads them again from the committed offset (at least once).

aiokafka's errors are turned into :mod:`cdp_hub.errors` where they leave this module: ``RetriableError``
for what aiokafka marks ``retriable`` (and timeouts), ``FatalError`` for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, codec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from cdp_hub.bus.base import Bus, Consumer, OutgoingMessage, Record, TopicPartition
from cdp_hub.bus.partitioner import partition_for
from cdp_hub.errors import CdpHubError, ConfigurationError, FatalError, RetriableError

__all__ = ["COMPRESSIONS", "DEFAULT_COMPRESSION", "KafkaBus", "KafkaConsumer", "kafka_error"]

log = logging.getLogger(__name__)

_MAX_BATCH_SIZE = 256 * 1024
_BATCHED_FROM = 64
"""``publish_many`` of this many records or more builds its record batches itself (one per partition)."""
# The producer's codecs. gzip is built into aiokafka; lz4, zstd and snappy come through cramjam (the package
# depends on aiokafka[lz4,snappy,zstd]), which every consumer needs too: one without it cannot read such
# batches at all. zstd is the default by measurement (bench/compression.py, the hub's own ~580-byte events in
# batches of 250 through the broker, two runs): gzip's bytes on the wire (1.02x) for 0.56-0.62x its CPU per
# event, producer and consumer together; lz4 0.74-0.81x the CPU for 1.36x the bytes, none 0.59-0.61x the CPU
# for 5.3x the bytes. docs/operations.md ("Kafka compression") has the figures.
COMPRESSIONS = ("zstd", "lz4", "snappy", "gzip", "none")
DEFAULT_COMPRESSION = "zstd"
_READ_ALL_STALL_S = 30.0


def _check_codec(compression: str) -> None:
    """Refuse an unknown codec, or one whose library is missing here (aiokafka would fail later, at start)."""
    if compression not in COMPRESSIONS:
        raise ConfigurationError(f"unknown Kafka compression {compression!r}; expected one of "
                                 f"{', '.join(COMPRESSIONS)}")
    available = {"gzip": codec.has_gzip, "lz4": codec.has_lz4, "snappy": codec.has_snappy,
                 "zstd": codec.has_zstd, "none": lambda: True}[compression]
    if not available():
        raise ConfigurationError(f"Kafka compression {compression!r} needs the cramjam package, which "
                                 f"cdp-hub depends on: pip install 'aiokafka[{compression}]'")


def kafka_error(exc: KafkaError, action: str) -> CdpHubError:
    """The :mod:`cdp_hub.errors` counterpart of an aiokafka error: retry it or not."""
    message = f"Kafka: {action} failed: {exc}"
    if getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError):
        return RetriableError(message, dependency="kafka")
    return FatalError(message)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except KafkaError as exc:
        raise kafka_error(exc, action) from exc


def _send_now(producer: Any) -> None:
    """Close the producer's open batches and wake its sender, so they leave now rather than after
    ``linger_ms``. aiokafka has no public call for it (``flush()`` only waits): this does what its
    transactional commit does (``flush_for_commit``) without waiting. With another aiokafka whose internals
    differ it does nothing, and batches linger as configured."""
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    waiter = getattr(accumulator, "_waiter_future", None)
    if not isinstance(batches, dict) or not isinstance(waiter, asyncio.Future):
        return
    for queued in batches.values():
        for batch in queued:
            builder = getattr(batch, "_builder", None)
            close = getattr(builder, "close", None)
            if callable(close):
                close()  # a closed batch is ready to send; a later record starts a new one
    if not waiter.done():
        waiter.set_result(None)


def _to_kafka(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


def _from_kafka(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _record(message: Any) -> Record:
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers=tuple((name, value) for name, value in message.headers),
        timestamp_ms=message.timestamp,
    )


class KafkaBus(Bus):
    """Kafka through aiokafka. ``compression`` is the producer's codec (one of :data:`COMPRESSIONS`).
    ``producer_options``/``consumer_options`` override the aiokafka keyword arguments this class sets
    (e.g. ``{"linger_ms": 20}``, ``{"heartbeat_interval_ms": 500}``)."""

    backend = "kafka"
    send_at_once = True
    """:meth:`publish_many` hands its records to the sender at once instead of after ``linger_ms``: its caller
    waits for the acks anyway (a stage before it commits, the edge before it answers), so lingering only adds
    latency to the batch. Records other tasks publish meanwhile still share requests (``linger_ms`` for them)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "cdp-hub",
        replication_factor: int = 1,
        default_partitions: int = 4,
        compression: str = DEFAULT_COMPRESSION,
        producer_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        _check_codec(compression)
        self.bootstrap = bootstrap
        self.compression = compression
        self.client_id = client_id
        self.replication_factor = replication_factor
        self.default_partitions = default_partitions
        self.producer_options = dict(producer_options or {})
        self.consumer_options = dict(consumer_options or {})
        self._producer: Any = None
        self._admin: Any = None
        self._offsets_reader: Any = None  # a group-less consumer for end offsets
        self._lazy_lock = asyncio.Lock()
        self._known_topics: set[str] = set()

    def __repr__(self) -> str:
        return f"<KafkaBus {self.bootstrap} client_id={self.client_id!r}>"

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "enable_idempotence": True,
            "acks": "all",
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": 5,
            "max_batch_size": _MAX_BATCH_SIZE,
            "partitioner": partition_for,
            **self.producer_options,
        }
        producer = AIOKafkaProducer(**options)
        try:
            with _translated(f"starting the producer ({self.bootstrap})"):
                await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, admin, reader = self._producer, self._admin, self._offsets_reader
        self._producer = self._admin = self._offsets_reader = None
        try:
            if producer is not None:
                with _translated("flushing the producer"):
                    await producer.stop()
        finally:
            if reader is not None:
                await reader.stop()
            if admin is not None:
                await admin.close()

    def _started_producer(self) -> Any:
        if self._producer is None:
            raise FatalError(f"{self!r} is not started: call start() or use `async with`")
        return self._producer

    async def _admin_client(self) -> Any:
        async with self._lazy_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
                try:
                    with _translated(f"connecting the admin client ({self.bootstrap})"):
                        await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def _reader(self) -> Any:
        async with self._lazy_lock:
            if self._offsets_reader is None:
                reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                          enable_auto_commit=False)
                try:
                    with _translated(f"connecting a consumer ({self.bootstrap})"):
                        await reader.start()
                except BaseException:
                    await reader.stop()
                    raise
                self._offsets_reader = reader
            return self._offsets_reader

    # -- topics ------------------------------------------------------------------------------------------

    async def ensure_topics(self, topics: Sequence[str], *, partitions: int = 4) -> None:
        admin = await self._admin_client()
        with _translated(f"creating topics {list(topics)}"):
            existing = set(await admin.list_topics())
            missing = [name for name in dict.fromkeys(topics) if name not in existing]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(name, partitions, self.replication_factor) for name in missing])
                for entry in response.topic_errors:
                    name, code = entry[0], entry[1]
                    if code not in (0, TopicAlreadyExistsError.errno):
                        detail = entry[2] if len(entry) > 2 and entry[2] else ""
                        raise for_code(code)(f"topic {name!r}: {detail}")
                log.info("created topics %s (%d partitions, replication %d)", missing, partitions,
                         self.replication_factor)
        self._known_topics.update(topics)

    async def _ensure_known(self, topics: Sequence[str]) -> None:
        unknown = [name for name in topics if name not in self._known_topics]
        if unknown:
            await self.ensure_topics(unknown, partitions=self.default_partitions)

    async def _partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``, or ``[]`` when it does not exist."""
        admin = await self._admin_client()
        with _translated(f"describing topic {topic!r}"):
            (described,) = await admin.describe_topics([topic])
        if described["error_code"] != 0:
            return []
        return sorted(p["partition"] for p in described["partitions"])

    async def end_offsets(self, topic: str) -> dict[int, int]:
        partitions = await self._partitions(topic)
        if not partitions:
            return {}
        reader = await self._reader()
        with _translated(f"reading the end offsets of {topic!r}"):
            ends = await reader.end_offsets([KafkaTopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in sorted(ends.items())}

    async def group_lag(self, group: str, topic: str) -> dict[int, int] | None:
        admin = await self._admin_client()
        with _translated(f"reading the committed offsets of group {group!r}"):
            offsets = await admin.list_consumer_group_offsets(group)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items()
                     if tp.topic == topic and meta.offset >= 0}
        if not committed:
            return None
        tps = [KafkaTopicPartition(topic, p) for p in await self._partitions(topic)]
        if not tps:
            return {}
        behind = await self._uncommitted(tps, [committed.get(tp.partition) for tp in tps], group)
        return {tp.partition: count for tp, count in behind.items()}

    async def _uncommitted(self, tps: Sequence[Any], committed: Sequence[int | None],
                           group: str) -> dict[Any, int]:
        """End offset minus ``committed[i]`` for each of ``tps`` (aiokafka partitions); a partition never
        committed (``None``) counts from its oldest record kept, where a new group starts. The offsets are
        listed through the bus's own reader: on a member's connection the request would wait behind its
        long-poll fetch in flight (the broker answers a connection's requests in order)."""
        reader = await self._reader()
        with _translated(f"reading the lag of group {group!r}"):
            ends = await reader.end_offsets(list(tps))
            starts: dict[Any, int] = {}
            if any(offset is None for offset in committed):
                starts = await reader.beginning_offsets(list(tps))
        return {tp: max(0, ends[tp] - (offset if offset is not None else starts[tp]))
                for tp, offset in zip(tps, committed, strict=True)}

    async def read_all(self, topic: str, *, limit: int | None = None) -> list[Record]:
        """Partition by partition, each from its beginning to the end offset it had when reading began."""
        partitions = await self._partitions(topic)
        records: list[Record] = []
        if not partitions or limit == 0:
            return records
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-browser",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            with _translated(f"reading topic {topic!r}"):
                await consumer.start()
                tps = [KafkaTopicPartition(topic, p) for p in partitions]
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    await self._read_partition(consumer, tp, ends[tp], records, limit)
                    if limit is not None and len(records) >= limit:
                        return records[:limit]
        finally:
            await consumer.stop()
        return records

    @staticmethod
    async def _read_partition(consumer: Any, tp: KafkaTopicPartition, end: int, into: list[Record],
                              limit: int | None) -> None:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        loop = asyncio.get_running_loop()
        stall_deadline = loop.time() + _READ_ALL_STALL_S
        # Compare positions, not counts: transaction markers take offsets without being records.
        while await consumer.position(tp) < end:
            if limit is not None and len(into) >= limit:
                return
            batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            into.extend(_record(m) for m in batch if m.offset < end)
            if batch:
                stall_deadline = loop.time() + _READ_ALL_STALL_S
            elif loop.time() > stall_deadline:
                raise RetriableError(f"Kafka: no progress reading {tp.topic}[{tp.partition}] for "
                                     f"{_READ_ALL_STALL_S:.0f}s (position below end offset {end})")

    # -- producing ---------------------------------------------------------------------------------------

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        if headers and self.seal is not None:
            await self.publish_many([OutgoingMessage(topic, value, key, tuple(headers))])
            return
        producer = self._started_producer()
        await self._ensure_known([topic])
        with _translated(f"publishing to {topic!r}"):
            await producer.send_and_wait(topic, value, key=key, headers=list(headers) or None)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        producer = self._started_producer()
        messages = self.sealed(messages)
        await self._ensure_known(list(dict.fromkeys(m.topic for m in messages)))
        if len(messages) >= _BATCHED_FROM:
            with _translated(f"publishing {len(messages)} records"):
                await self._publish_batched(producer, messages, at_once=self.send_at_once)
            return
        with _translated(f"publishing {len(messages)} records"):
            # send() only queues the record (it waits only when the buffer is full); the broker's acks
            # come back on the futures, so every batch is in flight before we wait for the first ack.
            acks: list[Any] = []
            try:
                for m in messages:
                    acks.append(await producer.send(m.topic, m.value, key=m.key,
                                                    headers=list(m.headers) or None))
                if self.send_at_once:
                    _send_now(producer)
            finally:
                # Even when a send() failed, wait for what was queued, so that no ack goes unobserved.
                outcomes = await asyncio.gather(*acks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    @staticmethod
    async def _publish_batched(producer: Any, messages: Sequence[OutgoingMessage], *, at_once: bool) -> None:
        """Many records at once: one record batch per partition, built by aiokafka's batch builder (C) and
        handed over whole, with one future per batch instead of one per record. A third of the CPU of
        ``send()`` per record (bench/campaign.py: the campaign sender publishes thousands at a time). The same
        partition per key (:func:`partition_for`), the records of a partition in the order given, every batch
        acknowledged (``acks=all``, idempotent) before this returns.

        ``at_once`` (:attr:`send_at_once`): each batch is closed before it is handed over, so it is ready to
        leave at once. An open one lingers ``linger_ms`` first, and aiokafka queues a partition's next handed-over
        batch behind it until it has left: concurrent callers (the HTTP edge's requests) then took turns of at
        least ``linger_ms`` per partition, which capped one edge process at ~150 requests/s with a quarter of
        its CPU idle (bench/ingest_http.py)."""
        by_partition: dict[tuple[str, int], list[OutgoingMessage]] = {}
        partitions: dict[str, list[int]] = {}
        for m in messages:
            known = partitions.get(m.topic)
            if known is None:
                known = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
            by_partition.setdefault((m.topic, partition_for(m.key, known, known)), []).append(m)
        acks: list[Any] = []
        try:
            for (topic, partition), records in by_partition.items():
                batch = producer.create_batch()
                for m in records:
                    headers = list(m.headers)
                    if batch.append(timestamp=None, key=m.key, value=m.value, headers=headers) is not None:
                        continue
                    if batch.record_count():  # full (append closed it): hand it over, go on in a new one
                        acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=m.key, value=m.value, headers=headers) is not None:
                        continue
                    # Larger than a batch on its own: send() says why (the size limits) or sends it alone.
                    acks.append(await producer.send(topic, m.value, key=m.key, partition=partition,
                                                    headers=headers or None))
                    batch = producer.create_batch()
                if batch.record_count():
                    if at_once:
                        batch.close()
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
        finally:
            # Even when a hand-over failed, wait for what was queued, so that no ack goes unobserved.
            outcomes = await asyncio.gather(*acks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    # -- consuming ---------------------------------------------------------------------------------------

    def consumer(self, topics: Sequence[str], *, group: str, client_id: str | None = None) -> KafkaConsumer:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        return KafkaConsumer(self, tuple(topics), group=group, client_id=client_id or self.client_id)


class _DropRevokedPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions are read again by their new owner from the committed offset, so what this member
    returned from them but did not commit must not be committed later by ``commit(None)``."""

    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._owner._consumed.pop(_from_kafka(tp), None)
            self._owner._next.pop(tp, None)  # assigned again, it is read from the committed offset

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.debug("%r: assigned %s", self._owner, sorted(assigned))


class KafkaConsumer(Consumer):
    """A consumer-group member on Kafka (wraps an ``AIOKafkaConsumer``)."""

    def __init__(self, bus: KafkaBus, topics: tuple[str, ...], *, group: str, client_id: str) -> None:
        self.topics = topics
        self.group = group
        self.client_id = client_id
        self._bus = bus
        self._consumer: Any = None
        self._stopped = False
        self._consumed: dict[TopicPartition, int] = {}  # next offset after what getmany returned
        self._next: dict[Any, int] = {}  # the same per aiokafka partition, kept across commits (drained())

    def __repr__(self) -> str:
        return f"<KafkaConsumer group={self.group!r} topics={list(self.topics)}>"

    async def start(self) -> None:
        if self._consumer is not None:
            return
        if self._stopped:
            raise FatalError("a stopped consumer cannot be started again; create a new one")
        await self._bus._ensure_known(self.topics)
        options: dict[str, Any] = {
            "bootstrap_servers": self._bus.bootstrap,
            "client_id": self.client_id,
            "group_id": self.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **self._bus.consumer_options,
        }
        consumer = AIOKafkaConsumer(**options)
        consumer.subscribe(list(self.topics), listener=_DropRevokedPositions(self))
        try:
            with _translated(f"joining group {self.group!r}"):
                await consumer.start()  # returns once the group gave this member its partitions
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._stopped = True
        self._consumed.clear()
        self._next.clear()
        if consumer is not None:
            await consumer.stop()  # leaves the group: its partitions go to the other members at once

    def _started(self) -> Any:
        if self._consumer is None:
            raise FatalError(f"{self!r} is not started")
        return self._consumer

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns now."""
        return {_from_kafka(tp) for tp in self._started().assignment()}

    async def getmany(self, *, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        consumer = self._started()
        try:
            with _translated(f"fetching for group {self.group!r}"):
                batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except ConsumerStoppedError:
            return []  # stop() was called while we waited
        records: list[Record] = []
        for tp in sorted(batches):
            messages = batches[tp]
            if messages:
                records.extend(_record(m) for m in messages)
                self._consumed[_from_kafka(tp)] = self._next[tp] = messages[-1].offset + 1
        return records

    def drained(self) -> dict[TopicPartition, float]:
        consumer = self._consumer
        if consumer is None:
            return {}
        now_ms = time.time() * 1000
        out: dict[TopicPartition, float] = {}
        assigned = consumer.assignment()
        for tp in list(self._next):
            if tp not in assigned:  # lost in a rebalance: its next owner reads it
                del self._next[tp]
                continue
            # The high watermark and its time come with every fetch response (aiokafka keeps the last).
            highwater, answered_ms = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            if highwater is not None and answered_ms is not None and self._next[tp] >= highwater:
                out[_from_kafka(tp)] = max(0.0, now_ms - answered_ms) / 1000
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        consumer = self._started()
        wanted = dict(self._consumed) if offsets is None else dict(offsets)
        assigned = {_from_kafka(tp) for tp in consumer.assignment()}
        to_commit = {tp: offset for tp, offset in wanted.items() if tp in assigned}
        if len(to_commit) < len(wanted):
            log.warning("%r: commit dropped for partitions it no longer owns: %s", self,
                        sorted((tp.topic, tp.partition) for tp in wanted.keys() - to_commit.keys()))
        if not to_commit:
            return
        with _translated(f"committing offsets of group {self.group!r}"):
            try:
                await consumer.commit({_to_kafka(tp): offset for tp, offset in to_commit.items()})
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced under us: whoever owns these partitions now reads them again from
                # the last committed offset, so nothing is lost (at least once).
                log.warning("%r: commit dropped, the group rebalanced: %s", self, exc)
                return
        for tp, offset in to_commit.items():
            if self._consumed.get(tp, -1) <= offset:
                self._consumed.pop(tp, None)

    async def lag(self) -> dict[TopicPartition, int]:
        consumer = self._started()
        tps = sorted(consumer.assignment())
        if not tps:
            return {}
        with _translated(f"reading the committed offsets of group {self.group!r}"):
            committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        behind = await self._bus._uncommitted(tps, committed, self.group)
        return {_from_kafka(tp): count for tp, count in behind.items()}
