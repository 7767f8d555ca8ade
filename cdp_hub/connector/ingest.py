"""Ingestion: raw source records -> canonical events on ``cdp.events``; bad records -> ``cdp.dlq``.

Used by pull syncs, file imports, webhooks and the HTTP tracking API alike. A backfill or replay mutes
triggers (``mute_triggers``): its events carry ``context.mute_triggers``, so they update profiles and
segments and no scenario fires for them (the triggers stage decides them ``muted``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.connector.base import Connector
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.errors import RecordError
from cdp_hub.schema.events import Context, Event

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["MAX_KEPT_ERRORS", "IngestResult", "Ingestor", "mute"]

MAX_KEPT_ERRORS = 100


@dataclass
class IngestResult:
    records: int = 0
    events: int = 0
    dead: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    errors: list[DeadLetter] = field(default_factory=list)
    """The first :data:`MAX_KEPT_ERRORS` dead letters (all of them are on cdp.dlq; ``dead`` counts them)."""

    def add(self, other: IngestResult) -> None:
        self.records += other.records
        self.events += other.events
        self.dead += other.dead
        for k, v in other.by_type.items():
            self.by_type[k] = self.by_type.get(k, 0) + v
        self.errors.extend(other.errors[:MAX_KEPT_ERRORS - len(self.errors)])


class Ingestor:
    """Normalizes records with a connector and publishes them in batches; durable when a call returns."""

    def __init__(self, hub: Hub, *, batch_size: int = 1000, mute_triggers: bool = False) -> None:
        self.hub = hub
        self.batch_size = batch_size
        self.mute_triggers = mute_triggers

    def _convert(self, connector: Connector, record: Mapping[str, Any], stream: str | None,
                 out: list[OutgoingMessage], result: IngestResult) -> None:
        for unit in connector.split(record, stream=stream):
            self._convert_one(connector, unit, stream, out, result)

    def _convert_one(self, connector: Connector, record: Mapping[str, Any], stream: str | None,
                     out: list[OutgoingMessage], result: IngestResult) -> None:
        topics = self.hub.topics
        result.records += 1
        try:
            events = connector.to_events(record, stream=stream)
        except RecordError as exc:
            dead = dead_letter_from_error(exc, stage="ingest", payload=dict(record), source=connector.instance,
                                          replay_topic="connector", connector=connector.name, stream=stream)
            out.append(dead.to_message(topics.dlq))
            result.dead += 1
            if len(result.errors) < MAX_KEPT_ERRORS:  # a multi-GB import must not hold every bad record
                result.errors.append(dead)
            self.hub.metrics.dlq.labels("ingest", dead.failure_type).inc()
            return
        for event in events:
            if self.mute_triggers:
                mute(event)
            out.append(event_message(topics.events, event))
            result.events += 1
            result.by_type[event.type] = result.by_type.get(event.type, 0) + 1
            self.hub.metrics.events_ingested.labels(event.source, event.type).inc()

    async def ingest(self, connector: Connector, records: Iterable[Mapping[str, Any]],
                     *, stream: str | None = None) -> IngestResult:
        """Normalize and publish ``records``; bad ones go to the DLQ. Durable when it returns."""

        async def each() -> AsyncIterator[Mapping[str, Any]]:
            for record in records:
                yield record

        return await self.ingest_async(connector, each(), stream=stream)

    async def ingest_async(self, connector: Connector, records: AsyncIterable[Mapping[str, Any]],
                           *, stream: str | None = None) -> IngestResult:
        """:meth:`ingest` for an async source (a pull stream, a file read in a thread)."""
        result = IngestResult()
        batch: list[OutgoingMessage] = []
        async for record in records:
            self._convert(connector, record, stream, batch, result)
            if len(batch) >= self.batch_size:
                await self.hub.bus.publish_many(batch)
                batch = []
        if batch:
            await self.hub.bus.publish_many(batch)
        return result

    async def publish_events(self, events: Iterable[Event]) -> int:
        """Publish already-validated canonical events (HTTP tracking API, receipts)."""
        events = list(events)  # walked twice: a generator would count nothing the second time
        if self.mute_triggers:
            for e in events:
                mute(e)
        msgs = [event_message(self.hub.topics.events, e) for e in events]
        if msgs:
            await self.hub.bus.publish_many(msgs)
        for e in events:
            self.hub.metrics.events_ingested.labels(e.source, e.type).inc()
        return len(msgs)


def mute(event: Event) -> None:
    """Mark ``event`` as part of a replay or backfill: no scenario fires for it."""
    event.context = Context.model_validate({**event.context.model_dump(exclude_none=True), "mute_triggers": True})


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str)
