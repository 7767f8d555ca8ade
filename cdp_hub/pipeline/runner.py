"""The stage runner: consume a batch, do the work, publish the output, then commit.

    getmany ─▶ Stage.handle(batch) ─▶ publish_many(outputs + dead letters) ─▶ commit offsets
                 (durable writes)        (acks=all: durable when it returns)    (only now)

A crash anywhere before the commit replays the batch; stages are idempotent, so a replay changes nothing.
A batch that fails as a whole (database down, broker unreachable) is retried with backoff, in order, until
it succeeds or the stage is stopped; one bad record never fails the batch: it becomes a dead letter.

A stage that dead-letters every record of several batches in a row (a broken deployment, a producer writing
the wrong format) stops with :class:`StageHalted` before committing the last of them, instead of silently
draining its topic into the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cdp_hub.bus.base import Bus, Consumer, Record, TopicPartition
from cdp_hub.errors import FatalError
from cdp_hub.pipeline.stage import Stage

__all__ = ["StageHalted", "StageRunner"]

log = logging.getLogger(__name__)

LAG_REPORT_SECONDS = 5.0


class StageHalted(FatalError):
    """A stage dead-lettered every record of too many batches in a row; its offsets were not moved past them."""


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for rec in records:
        tp = rec.tp
        if rec.offset + 1 > out.get(tp, -1):
            out[tp] = rec.offset + 1
    return out


class StageRunner:
    """Runs one stage until ``stop()``; several runners may share the process (``cdp-hub run``)."""

    def __init__(self, stage: Stage[Any], bus: Bus, *, batch_size: int = 500, poll_timeout_ms: int = 200,
                 client_id: str = "cdp-hub", halt_dead_batches: int = 5, halt_dead_records: int = 100) -> None:
        self.stage = stage
        self.bus = bus
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self.client_id = client_id
        self.halt_dead_batches = halt_dead_batches
        self.halt_dead_records = halt_dead_records
        self._stopping = asyncio.Event()
        self.processed = 0
        self.idle_polls = 0
        self._dead_batches = 0
        self._dead_records = 0
        self.last_progress = time.monotonic()
        """When the loop last finished a poll (idle or a committed batch); /healthz reads it."""
        self._lag_labels: set[tuple[str, str, str]] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.stage.setup()
        consumer = self.bus.consumer(self.stage.topics, group=self.stage.group,
                                     client_id=f"{self.client_id}.{self.stage.name}")
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
        gauge = self.stage.ctx.metrics.consumer_lag
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
        self.stage.ctx.metrics.stage_last_progress.labels(self.stage.name).set_to_current_time()

    def stuck_for(self) -> float:
        """Seconds since the loop last made progress (a batch retrying forever shows up here)."""
        return time.monotonic() - self.last_progress

    def _check_dead_streak(self, records: int, dead: int) -> None:
        """Count batches in which every record was dead-lettered; too many in a row halt the stage."""
        if dead < records:
            self._dead_batches = self._dead_records = 0
            return
        self._dead_batches += 1
        self._dead_records += records
        if (self.halt_dead_batches and self._dead_batches >= self.halt_dead_batches
                and self._dead_records >= self.halt_dead_records):
            raise StageHalted(
                f"stage {self.stage.name}: every record of the last {self._dead_batches} batches "
                f"({self._dead_records} records) was dead-lettered; stopping instead of draining "
                f"{', '.join(self.stage.topics)} into the DLQ. See the dead letters (cdp-hub dlq list), fix "
                "the cause and start the stage again: the last batch was not committed")

    async def _process(self, consumer: Consumer, records: Sequence[Record]) -> None:
        stage, metrics = self.stage, self.stage.ctx.metrics
        started = time.perf_counter()

        async def attempt() -> None:
            out = await stage.handle(records)
            self._check_dead_streak(len(records), len(out.dead))
            dlq_topic = stage.ctx.topics.dlq
            msgs = list(out.messages)
            msgs.extend(d.to_message(dlq_topic) for d in out.dead)
            if msgs:
                await self.bus.publish_many(msgs)
            for callback in out.on_durable:
                await callback()
            for d in out.dead:
                metrics.dlq.labels(stage.name, d.failure_type).inc()
                log.info("dead letter from %s: %s", stage.name, d.error)
            await consumer.commit(_next_offsets(records))

        await self._with_retry(attempt)
        now_ms = time.time() * 1000
        latency = metrics.stage_event_latency.labels(stage.name)
        for rec in records:
            if rec.timestamp_ms:
                latency.observe(max(0.0, now_ms - rec.timestamp_ms) / 1000)
        self.processed += len(records)
        metrics.stage_records.labels(stage.name).inc(len(records))
        metrics.stage_batch_seconds.labels(stage.name).observe(time.perf_counter() - started)

    async def _with_retry(self, fn: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while True:
            try:
                await fn()
                return
            except (asyncio.CancelledError, StageHalted):
                raise
            except Exception:
                if self._stopping.is_set():
                    raise
                self.stage.ctx.metrics.stage_errors.labels(self.stage.name).inc()
                log.exception("stage %s: batch failed; retrying in %.1fs", self.stage.name, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)
