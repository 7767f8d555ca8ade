"""What a stage is: a consumer group that decodes records, does its work, and says what it produced.

    records ─▶ Stage.handle ─┬─ decode(record) per record ─ bad ─▶ dead letter (one policy, below)
                             └─ process(decoded batch) ─▶ StageOutput(messages, dead, on_durable)

A stage receives everything it uses in its constructor: a :class:`StageContext` (topics, metrics, clock, a
publisher for work outside a batch) plus its own repositories and hot-state operations. It never sees the
hub. :mod:`cdp_hub.pipeline` builds the stages; :mod:`cdp_hub.pipeline.runner` runs them.

Decoding trusts what the hub itself wrote (parse once): a record the hub produced, by the rule of
:class:`~cdp_hub.bus.provenance.RecordTrust` (``ctx.trust``), is built by :meth:`Stage.decode_trusted` without
validating it again (:mod:`cdp_hub.schema.trusted`); any other record, and one the fast path does not take, is
validated fully. ``cdp_stage_decoded_total{stage, path}`` counts both paths.

The dead-letter policy for decoding is the same for every stage:

- a :class:`~cdp_hub.errors.RecordError` (bad input, typed) becomes a dead letter of its own failure type;
- a value the model rejects (pydantic ``ValidationError``, bad JSON, bad UTF-8: any ``ValueError``) becomes a
  ``schema_violation`` naming the first failing field;
- anything else is a bug: the record is dead-lettered as ``processing_error`` with a traceback summary,
  counted in ``cdp_stage_record_bugs`` and logged at ERROR, and the batch goes on.
"""

from __future__ import annotations

import abc
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import ValidationError

from cdp_hub.bus.base import OutgoingMessage, Record, TopicPartition, Topics
from cdp_hub.bus.provenance import RecordTrust
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.errors import RecordError, SchemaViolation
from cdp_hub.metrics import Metrics
from cdp_hub.outages import Outages

__all__ = ["Decoded", "Stage", "StageContext", "StageOutput", "decode_failure"]

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")


@dataclass
class StageOutput:
    """What a batch produced: records to publish, records that failed, and follow-ups that may run only
    once the published records are durable (e.g. marking a timer fired)."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    on_durable: list[Callable[[], Awaitable[object]]] = field(default_factory=list)


@dataclass(frozen=True)
class StageContext:
    """What every stage is given: where records go, how it counts, what time it is.

    ``publish`` is for output produced outside a batch (timers that come due while the stage is idle); output
    of a batch goes in its :class:`StageOutput`, which the runner publishes before it commits.
    """

    topics: Topics
    metrics: Metrics
    clock: Callable[[], datetime]
    publish: Callable[[Sequence[OutgoingMessage]], Awaitable[None]]
    group_prefix: str = ""
    outages: Outages = field(default_factory=Outages)
    """The process's dependency outages: the runner reports a stage paused on one here (``/readyz``)."""
    trust: RecordTrust | None = None
    """Which records the stage may decode without validating them again; ``None``: validate every record."""
    group_lag: Callable[[str, str], Awaitable[dict[int, int] | None]] | None = None
    """Another consumer group's uncommitted records of a topic (:meth:`Bus.group_lag
    <cdp_hub.bus.base.Bus.group_lag>`): the triggers stage holds its timers while the resolver is behind."""

    def group_of(self, stage: str) -> str:
        """The consumer group of the stage named ``stage`` in this deployment. The topic prefix names a
        deployment (or a test run): its groups must not mix with another's."""
        return f"{self.group_prefix}cdp-hub.{stage}"


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """A record and what :meth:`Stage.decode` made of it."""

    record: Record
    value: T


class Stage(abc.ABC, Generic[T]):
    """One consumer-group stage of the pipeline. Subclasses implement :meth:`decode` and :meth:`process`."""

    name: ClassVar[str]

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._decoded = {"trusted": 0, "validated": 0}  # since the last batch: cdp_stage_decoded_total

    @property
    def group(self) -> str:
        return self.ctx.group_of(self.name)

    @property
    @abc.abstractmethod
    def topics(self) -> Sequence[str]: ...

    async def setup(self) -> None:
        """Called once before the first batch."""

    async def teardown(self) -> None:
        """Called once after the last batch."""

    async def idle(self) -> None:
        """Called when a poll returned nothing (timers, flushes). Must be idempotent."""

    def drained(self, partitions: Mapping[TopicPartition, float]) -> None:
        """Called by the runner before :meth:`handle` of a batch with the partitions that batch empties, each
        with how long ago (seconds) the broker showed it had nothing more (:meth:`Consumer.drained
        <cdp_hub.bus.base.Consumer.drained>`). A stage with event-time timers takes such a partition's
        watermark to that moment, as it does for every partition on an empty poll. Default: ignored."""

    @abc.abstractmethod
    def decode(self, record: Record) -> T:
        """One record's value as this stage works with it. Raise :class:`~cdp_hub.errors.RecordError` (or let
        the model raise ``ValueError``) for a record that is not valid: it is dead-lettered, the batch goes on."""

    @abc.abstractmethod
    async def process(self, batch: Sequence[Decoded[T]]) -> StageOutput:
        """Do the work for the decoded records; make its effects durable (database writes) before returning."""

    def decode_trusted(self, record: Record, schema: bytes, build: Callable[[bytes], U]) -> U | None:
        """``build`` applied to the record's value when the record is the hub's own in ``schema`` (``ctx.trust``),
        else ``None``: the caller then validates the record fully. A record the fast path does not take (any
        exception of ``build``: :class:`~cdp_hub.schema.trusted.TrustedDecodeError` for a shape it does not
        expect) is validated fully too, so the fast path never makes a dead letter of its own."""
        trust = self.ctx.trust
        if trust is not None and trust.trusts(record, schema):
            try:
                value = build(record.value)
            except Exception:  # the full validation decides, and names the field
                pass
            else:
                self._decoded["trusted"] += 1
                return value
        self._decoded["validated"] += 1
        return None

    async def handle(self, records: Sequence[Record]) -> StageOutput:
        """Decode every record under the one dead-letter policy, then :meth:`process` the good ones."""
        batch: list[Decoded[T]] = []
        dead: list[DeadLetter] = []
        for rec in records:
            try:
                batch.append(Decoded(rec, self.decode(rec)))
            except Exception as exc:
                dead.append(decode_failure(self, rec, exc))
        for path, count in self._decoded.items():
            if count:
                self.ctx.metrics.stage_decoded.labels(self.name, path).inc(count)
                self._decoded[path] = 0
        out = await self.process(batch) if batch else StageOutput()
        if dead:
            out.dead[:0] = dead
        return out


def decode_failure(stage: Stage[Any], record: Record, exc: Exception) -> DeadLetter:
    """The dead letter of a record that ``stage`` could not decode (see the policy in the module doc)."""
    if isinstance(exc, RecordError):
        return dead_letter_from_error(exc, stage=stage.name, payload=record.value, record=record)
    if isinstance(exc, ValueError):
        return dead_letter_from_error(_as_violation(exc), stage=stage.name, payload=record.value, record=record)
    stage.ctx.metrics.stage_record_bugs.labels(stage.name).inc()
    log.error("stage %s: unexpected %s decoding %s[%d]@%d; dead-lettered", stage.name, type(exc).__name__,
              record.topic, record.partition, record.offset, exc_info=exc)
    err = RuntimeError(f"unexpected {type(exc).__name__}: {exc} ({_where(exc)})")
    return dead_letter_from_error(err, stage=stage.name, payload=record.value, record=record,
                                  failure_type="processing_error")


def _as_violation(exc: ValueError) -> SchemaViolation:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "<record>"
        return SchemaViolation(f"{path}: {first['msg']} ({exc.error_count()} error(s) in {exc.title})"[:500],
                               field=path)
    return SchemaViolation(f"not decodable: {type(exc).__name__}: {exc}".splitlines()[0][:500], field="<record>")


def _where(exc: BaseException) -> str:
    """The innermost frame of ``exc``'s traceback, as ``file:line in function``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"{PurePath(last.filename).name}:{last.lineno} in {last.name}"
