"""The stage runner: commit only after durable output; a failed batch is retried in order; DLQ replay of
raw source records goes back through their connector."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from cdp_hub import Connector, hookimpl
from cdp_hub.bus.base import Consumer, OutgoingMessage, Record, TopicPartition
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.dlq import dead_letter_from_error
from cdp_hub.dlq.replay import replay_dead_letters
from cdp_hub.errors import RecordError, RetriableError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage, stage_context
from cdp_hub.pipeline.runner import StageRunner
from cdp_hub.pipeline.stage import Decoded, Stage, StageOutput
from cdp_hub.plugins import load_plugins


class Flaky(Stage[bytes]):
    """Doubles each value onto an output topic; fails the first two attempts of its first batch."""

    name = "flaky"

    def __init__(self, hub: Hub) -> None:
        super().__init__(stage_context(hub))
        self.attempts = 0
        self.seen: list[bytes] = []

    @property
    def topics(self) -> Sequence[str]:
        return ["in"]

    def decode(self, record: Record) -> bytes:
        return record.value

    async def process(self, batch: Sequence[Decoded[bytes]]) -> StageOutput:
        self.attempts += 1
        if self.attempts <= 2:
            raise ConnectionError("database went away")
        out = StageOutput()
        for item in batch:
            r = item.record
            if r.value == b"bad":
                out.dead.append(dead_letter_from_error(RecordError("bad value", field="value"), stage=self.name,
                                                       payload=r.value, record=r))
                continue
            self.seen.append(r.value)
            out.messages.append(OutgoingMessage("out", r.value * 2, r.key))
        return out


async def test_a_failing_batch_is_retried_and_committed_once(hub: Hub) -> None:
    for v in (b"a", b"bad", b"c"):
        await hub.bus.publish("in", v, key=b"k")
    stage = Flaky(hub)
    runner = StageRunner(stage, hub.bus, poll_timeout_ms=20)
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if runner.processed == 3:
            break
        await asyncio.sleep(0.02)
    runner.stop()
    await task
    assert stage.attempts == 3 and stage.seen == [b"a", b"c"]
    outputs = await hub.bus.read_all("out")
    assert [r.value for r in outputs] == [b"aa", b"cc"]
    dlq = await hub.bus.read_all(hub.topics.dlq)
    assert len(dlq) == 1 and b"bad value" in dlq[0].value
    # Committed: a new member of the group has nothing left to do.
    consumer = hub.bus.consumer(["in"], group=stage.group)
    await consumer.start()
    assert await consumer.getmany(timeout_ms=100) == []
    await consumer.stop()


class _Journal:
    """What a runner did, in order: ``publish`` of a batch's output, ``on_durable``, ``commit`` (with offsets)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []
        self.failing_commits = 0


class _JournalConsumer(Consumer):
    def __init__(self, inner: Consumer, journal: _Journal) -> None:
        self.inner, self.journal = inner, journal

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def getmany(self, *, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        return await self.inner.getmany(timeout_ms=timeout_ms, max_records=max_records)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        await asyncio.sleep(0.01)  # the answer takes a while: the runner goes on meanwhile
        if self.journal.failing_commits:
            self.journal.failing_commits -= 1
            self.journal.steps.append(("commit failed", dict(offsets or {})))
            raise RetriableError("Kafka: committing offsets failed: coordinator moved", dependency="kafka")
        self.journal.steps.append(("commit", dict(offsets or {})))
        await self.inner.commit(offsets)

    async def lag(self) -> dict[TopicPartition, int]:
        return await self.inner.lag()


class Forward(Stage[bytes]):
    """Forwards each value; its on_durable follow-up is journaled."""

    name = "forward"

    def __init__(self, hub: Hub, journal: _Journal) -> None:
        super().__init__(stage_context(hub))
        self.journal = journal

    @property
    def topics(self) -> Sequence[str]:
        return ["in"]

    def decode(self, record: Record) -> bytes:
        return record.value

    async def process(self, batch: Sequence[Decoded[bytes]]) -> StageOutput:
        values = [item.value for item in batch]

        async def durable() -> None:
            self.journal.steps.append(("on_durable", values))

        return StageOutput(messages=[OutgoingMessage("out", v) for v in values], on_durable=[durable])


async def test_a_batch_is_committed_after_its_output_is_durable_without_holding_up_the_next(hub: Hub) -> None:
    journal = _Journal()
    journal.failing_commits = 1  # the first batch's commit fails: the next commit carries its offsets
    bus = hub.bus
    original_publish = bus.publish_many

    async def publish_many(messages: Sequence[OutgoingMessage]) -> None:
        await original_publish(messages)
        journal.steps.append(("publish", [m.value for m in messages]))

    make_consumer = bus.consumer
    bus.publish_many = publish_many  # type: ignore[method-assign]
    bus.consumer = lambda topics, **kw: _JournalConsumer(make_consumer(topics, **kw), journal)  # type: ignore[method-assign]
    stage = Forward(hub, journal)
    runner = StageRunner(stage, bus, batch_size=2, poll_timeout_ms=20)
    for v in (b"a", b"b", b"c", b"d", b"e"):
        await original_publish([OutgoingMessage("in", v, b"k")])
    task = asyncio.create_task(runner.run())
    for _ in range(300):
        if runner.processed == 5 and any(step == "commit" for step, _ in journal.steps):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    runner.stop()
    await task
    batches = [values for step, values in journal.steps if step == "publish"]
    assert batches == [[b"a", b"b"], [b"c", b"d"], [b"e"]]
    # Every commit comes after the publish and the on_durable of the batches it covers, never before.
    for index, (step, offsets) in enumerate(journal.steps):
        if step.startswith("commit"):
            (covered,) = offsets.values()  # one key: one partition
            durable = sum(len(v) for s, v in journal.steps[:index] if s == "on_durable")
            published = sum(len(v) for s, v in journal.steps[:index] if s == "publish")
            assert covered <= durable and covered <= published, journal.steps
    # The failed commit did not hold the batches up: the second batch was published while it was in flight.
    first_commit = next(i for i, (step, _) in enumerate(journal.steps) if step.startswith("commit"))
    second_publish = [i for i, (step, _) in enumerate(journal.steps) if step == "publish"][1]
    assert second_publish < first_commit
    assert journal.steps[first_commit][0] == "commit failed"
    assert list(journal.steps[first_commit][1].values()) == [2]
    assert [list(offsets.values()) for step, offsets in journal.steps if step == "commit"][-1] == [5]
    # Everything is committed once the runner has stopped: a new member of the group has nothing to do.
    consumer = make_consumer(["in"], group=stage.group)
    await consumer.start()
    assert await consumer.getmany(timeout_ms=100) == []
    await consumer.stop()


class Till(Connector):
    """A shop till: {id, phone}."""

    name = "till"

    def normalize(self, record: Any, *, stream: str | None = None) -> list[dict[str, Any]]:
        return [{"type": "customer.updated", "occurred_at": "2026-06-01T09:00:00Z",
                 "identities": [{"kind": "phone", "value": record["phone"]}]}]


class TillPlugin:
    __name__ = "till"

    @hookimpl
    def cdp_hub_register_connectors(self, register: Any) -> None:
        register(Till)


async def test_a_fixed_raw_record_is_replayed_through_its_connector(hub: Hub) -> None:
    hub.registry = load_plugins(extra=[TillPlugin()])
    result = await Ingestor(hub).ingest(Till(instance="till"), [{"id": "t1", "phone": "nope"}])
    assert result.dead == 1
    dlq_id = result.errors[0].dlq_id
    runner = StageRunner(build_stage(hub, "dlq"), hub.bus, poll_timeout_ms=20)
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if await hub.store.fetchval("SELECT count(*) FROM dead_letters") == 1:
            break
        await asyncio.sleep(0.02)
    res = await replay_dead_letters(hub, ids=[dlq_id], fixes={dlq_id: {"id": "t1", "phone": "+7 916 555-44-33"}})
    assert (res.replayed, res.failed_again) == (1, 0)
    events = [r for r in await hub.bus.read_all(hub.topics.events) if b"+79165554433" in r.value]
    assert len(events) == 1
    again = await replay_dead_letters(hub, ids=[dlq_id])
    assert again.replayed == 0  # replayed once; --again would do it again
    runner.stop()
    await task
