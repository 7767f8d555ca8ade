"""Pull syncs: read a connector's streams page by page, publish, then checkpoint.

    state = checkpoint(connector, stream)                      (connector_state in PostgreSQL)
    start = state.cursor - lookback        (or start_date; everything on --full-refresh)
    for page in stream.pages(start):
        Ingestor.ingest(page)      ─▶ [cdp.events] / [cdp.dlq]       durable (acks=all) when it returns
        settle()                   (in-process bus: the stages of this process have stored the page)
        save checkpoint(max cursor published so far)                  only now

A sync killed at any point resumes from its last checkpoint: nothing published after it is lost (it is read
again), and what is read again maps to the same deterministic event ids, so downstream stages treat the
repeats as no-ops. Streams whose source does not sort by the cursor (``is_sorted = False``) checkpoint only
once the whole stream has been read.

On the in-process bus a published record is not durable: it lives in this process until a stage stores it.
The caller passes ``settle`` (:func:`cdp_hub.pipeline.embedded.downstream`), which waits until the stages
running in this process have stored everything published, and the checkpoint moves only after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cdp_hub.connector.base import Connector
from cdp_hub.connector.ingest import Ingestor, IngestResult
from cdp_hub.connector.state import PgStateStore, StateStore
from cdp_hub.errors import ConfigurationError, RecordError
from cdp_hub.logs import log_context

if TYPE_CHECKING:
    from cdp_hub.connector.streams import Stream
    from cdp_hub.hub import Hub

__all__ = ["StreamSyncResult", "sync", "sync_stream"]

log = logging.getLogger(__name__)

Settle = Callable[[], Awaitable[None]]


@dataclass
class StreamSyncResult:
    """What one stream's sync did."""

    stream: str
    full_refresh: bool
    started_from: Any = None
    cursor: Any = None
    pages: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    ingest: IngestResult = field(default_factory=IngestResult)

    def summary(self) -> dict[str, Any]:
        return {"stream": self.stream, "full_refresh": self.full_refresh,
                "started_from": _plain(self.started_from), "cursor": _plain(self.cursor), "pages": self.pages,
                "records": self.ingest.records, "events": self.ingest.events, "dead_letters": self.ingest.dead,
                "by_type": self.ingest.by_type, "seconds": round(self.seconds, 3)}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def sync_stream(hub: Hub, connector: Connector, stream: Stream, *, full_refresh: bool = False,
                      state_store: StateStore | None = None, ingestor: Ingestor | None = None,
                      settle: Settle | None = None,
                      progress: Callable[[int, int | None], None] | None = None) -> StreamSyncResult:
    """Sync one stream; see the module docstring for the guarantees. ``settle`` is awaited before every
    checkpoint (the in-process bus: until the stages have stored what was published). ``progress(records
    read, None)`` after every page (a source does not say how many records are left)."""
    labels = (connector.instance, stream.name)
    with log_context(instance=connector.instance, stream=stream.name):
        try:
            result = await _sync_stream(hub, connector, stream, full_refresh=full_refresh,
                                        state_store=state_store, ingestor=ingestor, settle=settle,
                                        progress=progress)
        except Exception:
            hub.metrics.sync_errors.labels(*labels).inc()
            raise
    hub.metrics.sync_records.labels(*labels).inc(result.ingest.records)
    hub.metrics.sync_pages.labels(*labels).inc(result.pages)
    hub.metrics.sync_last_success.labels(*labels).set_to_current_time()
    cursor = stream.cursor_key(result.cursor) if result.cursor is not None else None
    if isinstance(cursor, datetime) and cursor.tzinfo is not None:
        hub.metrics.sync_lag.labels(*labels).set(max(0.0, (datetime.now(UTC) - cursor).total_seconds()))
    return result


async def _sync_stream(hub: Hub, connector: Connector, stream: Stream, *, full_refresh: bool,
                       state_store: StateStore | None, ingestor: Ingestor | None,
                       settle: Settle | None,
                       progress: Callable[[int, int | None], None] | None = None) -> StreamSyncResult:
    states: StateStore = state_store or PgStateStore(hub.store)
    ingestor = ingestor or Ingestor(hub)
    started = time.perf_counter()
    state = None if full_refresh else await states.get(connector.instance, stream.name)
    start = stream.start_from(state, full_refresh=full_refresh)
    result = StreamSyncResult(stream.name, full_refresh, started_from=start)
    best_key: Any = None
    best_raw: Any = None
    if state and not full_refresh and state.get("cursor") is not None:
        # Never move a checkpoint backwards because the lookback window re-read older records.
        best_raw = state["cursor"]
        best_key = stream.cursor_key(best_raw)
    log.info("sync %s/%s from %s%s", connector.instance, stream.name, start, " (full refresh)" * full_refresh)

    async for page in stream.pages(start):
        result.pages += 1
        outcome = await ingestor.ingest(connector, page, stream=stream.name)
        result.ingest.add(outcome)
        if progress is not None:
            progress(result.ingest.records, None)
        for record in page:
            raw = stream.cursor_value(record)
            if raw is None:
                continue
            try:
                key = stream.cursor_key(raw)
            except (RecordError, ValueError):
                continue  # the record itself went to the DLQ (or will): its cursor cannot advance ours
            if best_key is None or key > best_key:
                best_key, best_raw = key, raw
        if stream.is_sorted and best_raw is not None:
            if settle is not None:
                await settle()
            await states.put(connector.instance, stream.name, _state(stream, best_raw))
            result.checkpoints += 1

    if best_raw is not None:
        if settle is not None:
            await settle()
        await states.put(connector.instance, stream.name, _state(stream, best_raw))
        result.checkpoints += 1
    result.cursor = best_raw
    result.seconds = time.perf_counter() - started
    log.info("synced %s/%s: %s", connector.instance, stream.name, result.summary())
    return result


def _state(stream: Stream, raw: Any) -> dict[str, Any]:
    return {**stream.checkpoint(raw), "updated_at": datetime.now(UTC).isoformat()}


async def sync(hub: Hub, connector: Connector, *, stream: str | None = None, full_refresh: bool = False,
               state_store: StateStore | None = None, settle: Settle | None = None,
               mute_triggers: bool = False,
               progress: Callable[[int, int | None], None] | None = None) -> list[StreamSyncResult]:
    """Sync ``stream`` (or every stream) of ``connector`` into the hub's bus; return one result per stream.
    ``settle``: see :func:`sync_stream`. ``mute_triggers``: a backfill; profiles update, no scenario fires for
    these events. ``progress(records read in all streams so far, None)`` after every page."""
    names = [stream] if stream else connector.stream_names()
    if not names:
        raise ConfigurationError(f"connector {connector.instance} ({connector.name}) has no pull streams: it "
                                 "receives webhooks (POST /v1/webhooks/{instance}) or files (cdp-hub ingest-file)")
    ingestor = Ingestor(hub, mute_triggers=mute_triggers)
    results: list[StreamSyncResult] = []
    for name in names:
        before = sum(r.ingest.records for r in results)
        per_stream = None if progress is None else _after(before, progress)
        results.append(await sync_stream(hub, connector, connector.stream(name), full_refresh=full_refresh,
                                         state_store=state_store, ingestor=ingestor, settle=settle,
                                         progress=per_stream))
    return results


def _after(before: int, progress: Callable[[int, int | None], None]) -> Callable[[int, int | None], None]:
    """A stream's progress as the sync's: the records of the streams before it counted too."""

    def report(done: int, total: int | None) -> None:
        progress(before + done, None)

    return report
