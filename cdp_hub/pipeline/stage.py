"""The stage runner: consume a batch, do the work, publish the output, then commit.

    getmany ─▶ Stage.handle(batch) ─▶ publish_many(outputs + dead letters) ─▶ commit offsets
                 (durable writes)        (acks=all: durable when it returns)    (only now)

A crash anywhere before the commit replays the batch; stages are idempotent, so a replay changes nothing.
A batch that fails as a whole (database down, broker unreachable) is retried with backoff, in order, until
it succeeds or the stage is stopped; one bad record never fails the batch: it becomes a dead letter.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from cdp_hub.bus.base import Consumer, OutgoingMessage, Record, TopicPartition
from cdp_hub.dlq import DeadLetter

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["Stage", "StageOutput", "StageRunner"]

log = logging.getLogger(__name__)

LAG_REPORT_SECONDS = 5.0


@dataclass
class StageOutput:
    """What a batch produced: records to publish, records that failed, and follow-ups that may run only
    once the published records are durable (e.g. marking a timer fired)."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    on_durable: list[Callable[[], Awaitable[object]]] = field(default_factory=list)


class Stage(abc.ABC):
    """One consumer-group stage of the pipeline."""

    name: ClassVar[str]

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @property
    def group(self) -> str:
        # The topic prefix names a deployment (or a test run): its groups must not mix with another's.
        return f"{self.hub.settings.topic_prefix}cdp-hub.{self.name}"

    @property
    @abc.abstractmethod
    def topics(self) -> Sequence[str]: ...

    async def setup(self) -> None:
        """Called once before the first batch."""

    async def teardown(self) -> None:
        """Called once after the last batch."""

    async def idle(self) -> None:
        """Called when a poll returned nothing (timers, flushes). Must be idempotent."""

    @abc.abstractmethod
    async def handle(self, records: Sequence[Record]) -> StageOutput:
        """Process a batch; make its effects durable (database writes) before returning."""


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for rec in records:
        tp = rec.tp
        if rec.offset + 1 > out.get(tp, -1):
            out[tp] = rec.offset + 1
    return out


class StageRunner:
    """Runs one stage until ``stop()``; several runners may share the process (``cdp-hub run``)."""

    def __init__(self, stage: Stage, *, batch_size: int = 500, poll_timeout_ms: int = 200) -> None:
        self.stage = stage
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self._stopping = asyncio.Event()
        self.processed = 0
        self.idle_polls = 0
        self.last_progress = time.monotonic()
        """When the loop last finished a poll (idle or a committed batch); /healthz reads it."""
        self._lag_labels: set[tuple[str, str, str]] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        hub = self.stage.hub
        await self.stage.setup()
        consumer = hub.bus.consumer(self.stage.topics, group=self.stage.group,
                                    client_id=f"{hub.settings.kafka_client_id}.{self.stage.name}")
        await consumer.start()
        next_lag_report = 0.0
        try:
            while not self._stopping.is_set():
                if time.monotonic() >= next_lag_report:
                    next_lag_report = time.monotonic() + LAG_REPORT_SECONDS
                    await self._report_lag(consumer)
                records = await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)
                if not records:
                    self.idle_polls += 1
                    await self._with_retry(self.stage.idle)
                else:
                    self.idle_polls = 0
                    await self._process(consumer, records)
                self._progress()
        finally:
            await consumer.stop()
            await self.stage.teardown()

    async def _report_lag(self, consumer: Consumer) -> None:
        try:
            lag = await consumer.lag()
        except Exception:  # lag is for dashboards; never let it stop the stage
            log.debug("lag report failed", exc_info=True)
            return
        gauge = self.stage.hub.metrics.consumer_lag
        labels = set()
        for tp, behind in lag.items():
            key = (self.stage.name, tp.topic, str(tp.partition))
            labels.add(key)
            gauge.labels(*key).set(behind)
        # Partitions this member lost in a rebalance are another member's to report now.
        for key in self._lag_labels - labels:
            try:
                gauge.remove(*key)
            except KeyError:
                pass
        self._lag_labels = labels

    def _progress(self) -> None:
        self.last_progress = time.monotonic()
        self.stage.hub.metrics.stage_last_progress.labels(self.stage.name).set_to_current_time()

    def stuck_for(self) -> float:
        """Seconds since the loop last made progress (a batch retrying forever shows up here)."""
        return time.monotonic() - self.last_progress

    async def _process(self, consumer: Consumer, records: Sequence[Record]) -> None:
        hub, stage = self.stage.hub, self.stage
        started = time.perf_counter()

        async def attempt() -> None:
            out = await stage.handle(records)
            dlq_topic = hub.topics.dlq
            msgs = list(out.messages)
            msgs.extend(d.to_message(dlq_topic) for d in out.dead)
            if msgs:
                await hub.bus.publish_many(msgs)
            for callback in out.on_durable:
                await callback()
            for d in out.dead:
                hub.metrics.dlq.labels(stage.name, d.failure_type).inc()
                log.info("dead letter from %s: %s", stage.name, d.error)
            await consumer.commit(_next_offsets(records))

        await self._with_retry(attempt)
        now_ms = time.time() * 1000
        latency = hub.metrics.stage_event_latency.labels(stage.name)
        for rec in records:
            if rec.timestamp_ms:
                latency.observe(max(0.0, now_ms - rec.timestamp_ms) / 1000)
        self.processed += len(records)
        hub.metrics.stage_records.labels(stage.name).inc(len(records))
        hub.metrics.stage_batch_seconds.labels(stage.name).observe(time.perf_counter() - started)

    async def _with_retry(self, fn: object) -> None:
        delay = 0.2
        while True:
            try:
                await fn()  # type: ignore[operator]
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping.is_set():
                    raise
                self.stage.hub.metrics.stage_errors.labels(self.stage.name).inc()
                log.exception("stage %s: batch failed; retrying in %.1fs", self.stage.name, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)
