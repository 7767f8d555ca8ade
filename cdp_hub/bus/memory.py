"""The in-process bus: Kafka's semantics without a broker, for the embedded mode and fast tests.

What it keeps from Kafka, so that code written against :class:`~cdp_hub.bus.base.Bus` behaves the same on both
backends:

- topics of N partitions, created by :meth:`MemoryBus.ensure_topics` or on first use with
  ``default_partitions``; a record's offset is its index in its partition's log;
- keyed partitioning (``crc32(key) % n``, stable across processes), records without a key round-robin;
- consumer groups: committed offsets per (group, topic, partition); members split the partitions
  (round-robin over the sorted partitions) and the group rebalances when a member joins or leaves;
  a partition that changes hands is read again from the group's committed offset, so a leaving member's
  uncommitted records are delivered again (at least once); a new group starts at the earliest offset;
- a commit for a partition that the member no longer owns is dropped, as Kafka refuses it.

Retention: a record is dropped once every consumer group that reads its topic has committed past it, so
a long-running process (``cdp-hub run``) holds only what some stage has not finished yet. A topic that no
group reads keeps everything (``read_all`` browses it); a group that joins later starts at the oldest
record still kept (Kafka's ``auto_offset_reset=earliest`` after retention). Offsets keep counting from where
they were: a partition's first kept offset is its ``start``.

    publish ──> _Partition (start, list of Record) <── MemoryConsumer.getmany (position per partition)
                       │ wake                            │ commit
                       └──> waiting members of its topic └──> _Group.committed[(topic, p)] ──> trim: drop
                                                              what every group reading the topic committed
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from collections.abc import Mapping, Sequence

from cdp_hub.bus.base import Bus, Consumer, OutgoingMessage, Record, TopicPartition
from cdp_hub.errors import FatalError

__all__ = ["MemoryBus", "MemoryConsumer"]

log = logging.getLogger(__name__)


class _Partition:
    """The kept part of one partition's log: ``records[i]`` has offset ``start + i``."""

    __slots__ = ("records", "start")

    def __init__(self) -> None:
        self.start = 0
        self.records: list[Record] = []

    @property
    def end(self) -> int:
        """The next offset to be written."""
        return self.start + len(self.records)

    def read(self, position: int, max_records: int) -> list[Record]:
        index = max(position - self.start, 0)
        return self.records[index:index + max_records]

    def drop_before(self, offset: int) -> None:
        """Forget the records before ``offset`` (every group has committed past them)."""
        count = min(offset, self.end) - self.start
        if count > 0:
            del self.records[:count]
            self.start += count


class _Topic:
    __slots__ = ("name", "next_unkeyed", "partitions")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions: list[_Partition] = [_Partition() for _ in range(partitions)]
        self.next_unkeyed = 0

    def partition_for(self, key: bytes | None) -> int:
        n = len(self.partitions)
        if key is None:
            self.next_unkeyed = (self.next_unkeyed + 1) % n
            return self.next_unkeyed
        return zlib.crc32(key) % n


class _Group:
    __slots__ = ("committed", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.committed: dict[TopicPartition, int] = {}
        self.members: list[MemoryConsumer] = []


class MemoryBus(Bus):
    """An in-process bus. Safe for any number of producers and consumers in one event loop (not threads)."""

    backend = "memory"

    def __init__(self, *, default_partitions: int = 4) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be at least 1")
        self.default_partitions = default_partitions
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._members_by_topic: dict[str, set[MemoryConsumer]] = {}
        self._member_ids = itertools.count(1)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    # -- topics ------------------------------------------------------------------------------------------

    async def ensure_topics(self, topics: Sequence[str], *, partitions: int = 4) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        for name in topics:
            self._topic(name, partitions)

    def _topic(self, name: str, partitions: int | None = None) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, partitions or self.default_partitions)
        return topic

    async def end_offsets(self, topic: str) -> dict[int, int]:
        existing = self._topics.get(topic)
        if existing is None:
            return {}
        return {p: part.end for p, part in enumerate(existing.partitions)}

    async def group_lag(self, group: str, topic: str) -> dict[int, int] | None:
        existing, known = self._topics.get(topic), self._groups.get(group)
        if existing is None or known is None or not any(tp.topic == topic for tp in known.committed):
            return None
        return {p: part.end - self._committed(group, TopicPartition(topic, p))
                for p, part in enumerate(existing.partitions)}

    async def read_all(self, topic: str, *, limit: int | None = None) -> list[Record]:
        """Every record still kept (see retention in the module docstring)."""
        existing = self._topics.get(topic)
        if existing is None:
            return []
        records = [record for part in existing.partitions for record in part.records]
        return records if limit is None else records[:limit]

    # -- producing ---------------------------------------------------------------------------------------

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self._check_started()
        if headers and self.seal is not None:
            await self.publish_many([OutgoingMessage(topic, value, key, tuple(headers))])
            return
        self._append(topic, value, key, tuple(headers), _now_ms())
        self._wake(topic)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self._check_started()
        now = _now_ms()
        touched: set[str] = set()
        for message in self.sealed(messages):
            self._append(message.topic, message.value, message.key, tuple(message.headers), now)
            touched.add(message.topic)
        for topic in touched:
            self._wake(topic)

    def _check_started(self) -> None:
        if not self._started:
            raise FatalError("MemoryBus is not started: call start() or use `async with`")

    def _append(self, topic_name: str, value: bytes, key: bytes | None,
                headers: tuple[tuple[str, bytes], ...], timestamp_ms: int) -> None:
        topic = self._topic(topic_name)
        partition = topic.partition_for(key)
        part = topic.partitions[partition]
        part.records.append(Record(topic_name, partition, part.end, key, value, headers, timestamp_ms))

    def _wake(self, topic: str) -> None:
        for member in self._members_by_topic.get(topic, ()):
            member._wakeup.set()

    # -- consuming ---------------------------------------------------------------------------------------

    def backlog(self, topic: str) -> int | None:
        """Records of ``topic`` still kept: not yet committed by every group that reads it (O(partitions))."""
        found = self._topics.get(topic)
        return sum(len(p.records) for p in found.partitions) if found is not None else 0

    def consumer(self, topics: Sequence[str], *, group: str, client_id: str | None = None) -> MemoryConsumer:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        member_id = f"{client_id or 'consumer'}-{next(self._member_ids)}"
        return MemoryConsumer(self, tuple(topics), group=group, member_id=member_id)

    def _join(self, member: MemoryConsumer) -> None:
        for name in member.topics:
            self._topic(name)  # Kafka auto-creates subscribed topics too
            self._members_by_topic.setdefault(name, set()).add(member)
        group = self._groups.get(member.group)
        if group is None:
            group = self._groups[member.group] = _Group(member.group)
        group.members.append(member)
        self._rebalance(group)

    def _leave(self, member: MemoryConsumer) -> None:
        for name in member.topics:
            self._members_by_topic.get(name, set()).discard(member)
        group = self._groups[member.group]
        group.members.remove(member)
        member._assign({})
        self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        """Round-robin over the sorted partitions of every subscribed topic, each partition to the next
        member that subscribes to its topic (what aiokafka's default assignor does)."""
        members = sorted(group.members, key=lambda m: m.member_id)
        assignment: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
        subscribed = sorted({name for m in members for name in m.topics})
        cursor = 0
        for name in subscribed:
            candidates = [m for m in members if name in m.topics]
            for p in range(len(self._topics[name].partitions)):
                owner = candidates[cursor % len(candidates)]
                cursor += 1
                assignment[owner.member_id].add(TopicPartition(name, p))
        for member in members:
            member._assign({tp: self._committed(group.name, tp) for tp in assignment[member.member_id]})

    def _partition(self, tp: TopicPartition) -> _Partition:
        return self._topics[tp.topic].partitions[tp.partition]

    def _fetch(self, tp: TopicPartition, position: int, max_records: int) -> list[Record]:
        return self._partition(tp).read(position, max_records)

    def _end_offset(self, tp: TopicPartition) -> int:
        return self._partition(tp).end

    def _commit(self, group_name: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._groups[group_name].committed.update(offsets)
        for tp in offsets:
            self._trim(tp)

    def _committed(self, group_name: str, tp: TopicPartition) -> int:
        """The group's committed offset, or the oldest kept record when it has none (earliest)."""
        committed = self._groups[group_name].committed.get(tp)
        start = self._partition(tp).start
        return start if committed is None else max(committed, start)

    def _readers(self, topic: str) -> list[_Group]:
        """The groups that read ``topic``: any with a member subscribed to it or an offset committed in it."""
        return [g for g in self._groups.values()
                if any(topic in m.topics for m in g.members) or any(tp.topic == topic for tp in g.committed)]

    def _trim(self, tp: TopicPartition) -> None:
        """Drop the records of ``tp`` that every group reading its topic has committed."""
        readers = self._readers(tp.topic)
        if not readers:
            return
        self._partition(tp).drop_before(min(g.committed.get(tp, 0) for g in readers))

    def uncommitted(self, group: str, topics: Sequence[str]) -> int:
        """How many records of ``topics`` the consumer group ``group`` has not committed yet (all of the
        kept ones when the group does not exist yet). The embedded mode waits for this to reach zero."""
        total = 0
        for name in topics:
            topic = self._topics.get(name)
            if topic is None:
                continue
            for p, part in enumerate(topic.partitions):
                tp = TopicPartition(name, p)
                committed = self._groups[group].committed.get(tp) if group in self._groups else None
                total += part.end - max(committed if committed is not None else part.start, part.start)
        return total


class MemoryConsumer(Consumer):
    """A member of a :class:`MemoryBus` consumer group."""

    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], *, group: str, member_id: str) -> None:
        self.topics = topics
        self.group = group
        self.member_id = member_id
        self._bus = bus
        self._state = "new"  # new -> started -> stopped
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, per assigned partition
        self._returned: set[TopicPartition] = set()  # partitions read from since the last commit(None)
        self._rotation = 0
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MemoryConsumer {self.member_id} group={self.group!r} topics={list(self.topics)}>"

    async def start(self) -> None:
        if self._state == "started":
            return
        if self._state == "stopped":
            raise FatalError("a stopped consumer cannot be started again; create a new one")
        self._state = "started"
        self._bus._join(self)

    async def stop(self) -> None:
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopped"
        self._bus._leave(self)
        self._wakeup.set()  # a getmany() in flight returns at once

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns now."""
        return set(self._positions)

    def _assign(self, partitions: Mapping[TopicPartition, int]) -> None:
        """Own ``partitions`` (each with the group's committed offset). Partitions kept keep their position;
        gained ones start at the committed offset."""
        self._positions = {tp: self._positions.get(tp, committed) for tp, committed in partitions.items()}
        self._returned &= set(partitions)
        self._wakeup.set()

    async def getmany(self, *, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        if self._state != "started":
            raise FatalError(f"{self!r} is not started")
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_ms, 0) / 1000
        while True:
            self._wakeup.clear()
            records = self._poll(max_records)
            if records or self._state != "started":
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return []

    def _poll(self, max_records: int) -> list[Record]:
        if not self._positions:
            return []
        tps = sorted(self._positions, key=lambda tp: (tp.topic, tp.partition))
        # Start at a rotating partition so that one busy partition cannot starve the others.
        self._rotation = (self._rotation + 1) % len(tps)
        records: list[Record] = []
        for tp in tps[self._rotation:] + tps[:self._rotation]:
            batch = self._bus._fetch(tp, self._positions[tp], max_records - len(records))
            if batch:
                records.extend(batch)
                self._positions[tp] = batch[-1].offset + 1
                self._returned.add(tp)
                if len(records) >= max_records:
                    break
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records

    def drained(self) -> dict[TopicPartition, float]:
        return {tp: 0.0 for tp, position in self._positions.items() if position >= self._bus._end_offset(tp)}

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        if self._state != "started":
            raise FatalError(f"{self!r} is not started")
        if offsets is None:
            to_commit = {tp: self._positions[tp] for tp in self._returned}
            self._returned.clear()
        else:
            to_commit = {tp: offset for tp, offset in offsets.items() if tp in self._positions}
            dropped = set(offsets) - set(to_commit)
            if dropped:
                # The partition moved to another member, which reads it again from the committed offset.
                log.warning("%r: commit dropped for partitions it no longer owns: %s", self, sorted(
                    (tp.topic, tp.partition) for tp in dropped))
        self._bus._commit(self.group, to_commit)

    async def lag(self) -> dict[TopicPartition, int]:
        if self._state != "started":
            raise FatalError(f"{self!r} is not started")
        return {tp: self._bus._end_offset(tp) - self._bus._committed(self.group, tp) for tp in self._positions}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
