"""The stage runner: consume a batch, do the work, publish the output, then commit.

    getmany ─▶ Stage.handle(batch) ─▶ publish_many(outputs + dead letters) ─▶ on_durable ─▶ commit offsets
                 (durable writes)        (acks=all: durable when it returns)                 (only now)

A crash anywhere before the commit replays the batch; stages are idempotent, so a replay changes nothing.

The commit of a batch is sent once the batch is durable and is not waited for: the next fetch and batch go
on while it travels (a round trip less per batch, which is latency for every record of the next batch).
Commits go in order, one at a time: the commit of batch N+1 is sent only after that of batch N has
finished. One that fails (a rebalance, the coordinator moving) is carried by the next one, or sent again on
the next empty poll; a stop waits for the commit in flight and sends what is left. So the committed offset
never passes a batch before its output is durable, and a crash at most replays batches whose commit had not
come back yet (at least once, as before).
A batch that fails as a whole (database down, broker unreachable) is retried with backoff (tenacity,
exponential with jitter, at most ``MAX_BACKOFF`` seconds apart), in order, until it succeeds or the stage is
stopped; one bad record never fails the batch: it becomes a dead letter, and a dependency being down never
makes a record a dead letter: the batch waits. While it waits the stage is *paused*:

    failure ─▶ unavailable_dependency(exc) ── kafka/postgres/redis ─▶ Outages.down: one ERROR line per outage
                                                                     (not per stage or batch), /readyz fails,
                                                                     cdp_stage_paused{stage,dependency} = 1
                                           └─ anything else (a bug) ─▶ one ERROR line with the traceback
             ─▶ backoff ─▶ the same batch again ... ─▶ success ─▶ commit, Outages.up (one WARNING line)

A stop (SIGTERM) during the wait ends it at once: the batch is left uncommitted, the next owner replays it.

A stage that dead-letters every record of several batches in a row (a broken deployment, a producer writing
the wrong format) stops with :class:`StageHalted` before committing the last of them, instead of silently
draining its topic into the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_not_exception_type, wait_exponential, wait_random

from cdp_hub.bus.base import Bus, Consumer, Record, TopicPartition
from cdp_hub.errors import FatalError
from cdp_hub.logs import log_context
from cdp_hub.outages import unavailable_dependency
from cdp_hub.pipeline.stage import Stage

__all__ = ["StageHalted", "StageRunner"]

log = logging.getLogger(__name__)

LAG_REPORT_SECONDS = 5.0
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 30.0

T = TypeVar("T")


class _Stopped:
    """What a retry loop returns when the stage was stopped while it waited."""


_STOPPED = _Stopped()


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
        self.polls = 0  # every poll, empty or not: Pipeline.drain counts the polls made since it was called
        self._dead_batches = 0
        self._dead_records = 0
        self.last_progress = time.monotonic()
        """When the loop last finished a poll (idle or a committed batch); /healthz reads it."""
        self._lag_labels: set[tuple[str, str, str]] = set()
        self._commit_in_flight: asyncio.Task[None] | None = None
        self._uncommitted: dict[TopicPartition, int] = {}
        """Next offsets of durable batches whose commit has not succeeded yet (one in flight, or failed)."""
        self._commit_failures = 0
        self._consumer: Consumer | None = None
        """The consumer while the loop runs (:meth:`backlog` reads its lag)."""

    def stop(self) -> None:
        self._stopping.set()

    @property
    def reporter(self) -> str:
        """This stage's name on the outage board (``/readyz`` lists paused stages by it)."""
        return f"stage:{self.stage.name}"

    async def run(self) -> None:
        with log_context(stage=self.stage.name):  # every line this stage's task logs names the stage
            await self._run()

    async def _run(self) -> None:
        await self.stage.setup()
        consumer = self.bus.consumer(self.stage.topics, group=self.stage.group,
                                     client_id=f"{self.client_id}.{self.stage.name}")
        await consumer.start()
        self._consumer = consumer
        next_lag_report = 0.0

        # Only a stage that overrides Stage.drained reads which partitions a batch empties (the triggers stage).
        reads_drained = type(self.stage).drained is not Stage.drained

        async def poll() -> list[Record]:  # a coroutine function: tenacity awaits what it returns
            return await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)

        try:
            while not self._stopping.is_set():
                if time.monotonic() >= next_lag_report:
                    next_lag_report = time.monotonic() + LAG_REPORT_SECONDS
                    await self._report_lag(consumer)
                fetched = await self._with_retry(poll)
                if isinstance(fetched, _Stopped):
                    break
                records = fetched
                self.polls += 1
                if not records:
                    self.idle_polls += 1
                    await self._with_retry(self.stage.idle)
                    if self._uncommitted and (self._commit_in_flight is None or self._commit_in_flight.done()):
                        await self._commit_behind(consumer, {})  # a commit that failed goes again
                else:
                    self.idle_polls = 0
                    if reads_drained:
                        self.stage.drained(consumer.drained())
                    await self._process(consumer, records)
                self._progress()
        finally:
            self._consumer = None
            self._resumed()
            await self._settle_commits(consumer)
            await consumer.stop()
            await self.stage.teardown()

    async def backlog(self) -> int | None:
        """Records on this stage's partitions not yet committed by its group (``None``: the stage is not
        running, or the lag could not be read). :meth:`Pipeline.drain` waits for 0."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            return sum((await consumer.lag()).values())
        except Exception:  # a drain asks again; it never stops the stage
            log.debug("backlog read failed", exc_info=True)
            return None

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
                log.info("dead letter from %s: %s", stage.name, d.error,
                         extra={"dlq_id": d.dlq_id, "record_id": d.record_id,
                                **({"topic": d.origin.topic, "partition": d.origin.partition,
                                    "offset": d.origin.offset} if d.origin else {})})

        if isinstance(await self._with_retry(attempt), _Stopped):
            log.warning("stage %s stopped while its batch of %d records waited; left uncommitted (replayed by "
                        "the next owner of the partitions)", stage.name, len(records))
            return
        await self._commit_behind(consumer, _next_offsets(records))  # the batch is durable: only now
        now_ms = time.time() * 1000
        latency = metrics.stage_event_latency.labels(stage.name)
        for rec in records:
            if rec.timestamp_ms:
                latency.observe(max(0.0, now_ms - rec.timestamp_ms) / 1000)
        self.processed += len(records)
        metrics.stage_records.labels(stage.name).inc(len(records))
        metrics.stage_batch_seconds.labels(stage.name).observe(time.perf_counter() - started)

    async def _commit_behind(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (those of a batch whose output is durable) and whatever an earlier commit left,
        without waiting for the answer: the commit before it is waited for first, so commits go in order."""
        await self._wait_commit()
        for tp, offset in offsets.items():
            if offset > self._uncommitted.get(tp, -1):
                self._uncommitted[tp] = offset
        if self._uncommitted:
            self._commit_in_flight = asyncio.create_task(self._commit(consumer, dict(self._uncommitted)),
                                                         name=f"commit:{self.stage.name}")

    async def _commit(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # the offsets stay in _uncommitted: the next commit carries them
            self.stage.ctx.metrics.stage_errors.labels(self.stage.name).inc()
            self._commit_failures += 1
            if self._commit_failures == 1:
                log.warning("stage %s: commit failed (%s: %s); the next commit carries its offsets",
                            self.stage.name, type(exc).__name__, str(exc)[:200])
            return
        self._commit_failures = 0
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    async def _wait_commit(self) -> None:
        task, self._commit_in_flight = self._commit_in_flight, None
        if task is not None:
            await task  # _commit never raises (but a cancellation of this task does reach it)

    async def _settle_commits(self, consumer: Consumer) -> None:
        """At stop: wait for the commit in flight, and send once more what a failed one left."""
        try:
            await self._wait_commit()
            if self._uncommitted:
                await self._commit(consumer, dict(self._uncommitted))
        except Exception:  # pragma: no cover - _commit catches; never let it keep the consumer open
            log.debug("final commit failed", exc_info=True)

    async def _with_retry(self, fn: Callable[[], Awaitable[T]]) -> T | _Stopped:
        """``fn()``, tried again with backoff until it succeeds or the stage is stopped (then ``_STOPPED``).
        ``StageHalted`` and cancellation are never retried. ``fn`` must be a coroutine function (tenacity
        does not await a coroutine returned by a plain function)."""
        retrying = AsyncRetrying(
            retry=retry_if_not_exception_type((asyncio.CancelledError, StageHalted)),
            wait=wait_exponential(multiplier=FIRST_BACKOFF, max=MAX_BACKOFF) + wait_random(0, FIRST_BACKOFF),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._sleep,
            before_sleep=self._failed,
            retry_error_callback=lambda _state: _STOPPED,
            reraise=True,
        )
        result: T | _Stopped = await retrying(fn)
        if not isinstance(result, _Stopped):
            self._resumed()
        return result

    async def _sleep(self, seconds: float) -> None:
        """The backoff wait; a stop ends it at once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _failed(self, state: RetryCallState) -> None:
        """A try failed and another follows: count it, and log the first failure of a streak (one ERROR line
        per dependency outage for the whole process; a bug with its traceback)."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:  # pragma: no cover - tenacity only sleeps after a failed try here
            return
        stage, metrics = self.stage, self.stage.ctx.metrics
        metrics.stage_errors.labels(stage.name).inc()
        wait = state.upcoming_sleep
        dependency = unavailable_dependency(exc)
        outages = stage.ctx.outages
        if dependency is not None:
            waiting = outages.waiting(self.reporter)
            if waiting != dependency:
                if waiting is not None:
                    metrics.stage_paused.labels(stage.name, waiting).set(0)
                metrics.stage_paused.labels(stage.name, dependency).set(1)
                if not outages.down(self.reporter, dependency, exc):
                    log.info("stage %s paused: %s unavailable; retrying with backoff", stage.name, dependency)
            else:
                log.debug("stage %s: %s still unavailable (%s); next try in %.1fs", stage.name, dependency,
                          type(exc).__name__, wait)
            return
        if state.attempt_number == 1:
            log.error("stage %s: batch failed (%s: %s); retrying it with backoff, nothing is committed until it "
                      "succeeds", stage.name, type(exc).__name__, exc, exc_info=exc)
        else:
            log.warning("stage %s: batch failed again (try %d, %s: %s); next try in %.1fs", stage.name,
                        state.attempt_number, type(exc).__name__, str(exc)[:200], wait)

    def _resumed(self) -> None:
        """The stage works again: clear its paused state (the outage's WARNING line comes from the board)."""
        outages = self.stage.ctx.outages
        waiting = outages.waiting(self.reporter)
        if waiting is not None:
            self.stage.ctx.metrics.stage_paused.labels(self.stage.name, waiting).set(0)
            log.info("stage %s resumed: %s is back", self.stage.name, waiting)
            outages.up(self.reporter)
