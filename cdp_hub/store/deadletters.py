"""The dead-letter archive (``dead_letters``): every record a stage could not process, with its envelope,
until it is replayed and purged. Rows are keyed by the envelope's ``dlq_id``, so archiving is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["ArchivedDeadLetter", "DeadLetterRepository", "DeadLetterRow"]


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A dead letter to archive: the envelope (JSON object) and the columns it is searched by."""

    dlq_id: str
    failure_type: str
    stage: str
    source: str | None
    record_id: str | None
    error: str
    field: str | None
    envelope: dict[str, Any]
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class ArchivedDeadLetter:
    """An archived envelope and what became of its replay."""

    envelope: dict[str, Any]
    replayed_at: datetime | None
    replay_result: str | None


class DeadLetterRepository:
    """Archives, lists, marks and purges dead letters."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def archive(self, rows: Sequence[DeadLetterRow]) -> None:
        """Store dead letters; one already archived (same ``dlq_id``) is left as it is."""
        await self.store.pool.executemany(
            """INSERT INTO dead_letters (dlq_id, failure_type, stage, source, record_id, error, field, envelope,
                                         failed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dlq_id) DO NOTHING""",
            [(r.dlq_id, r.failure_type, r.stage, r.source, r.record_id, r.error, r.field, r.envelope, r.failed_at)
             for r in rows])

    async def recent(self, *, limit: int, failure_type: str | None, source: str | None,
                     include_replayed: bool) -> list[ArchivedDeadLetter]:
        """The newest dead letters first, optionally of one failure type or source; replayed ones only with
        ``include_replayed``."""
        rows = await self.store.fetch(
            """SELECT envelope, replayed_at, replay_result FROM dead_letters
               WHERE ($1::text IS NULL OR failure_type = $1) AND ($2::text IS NULL OR source = $2)
                 AND ($3 OR replayed_at IS NULL)
               ORDER BY failed_at DESC LIMIT $4""", failure_type, source, include_replayed, limit)
        return [ArchivedDeadLetter(r["envelope"], r["replayed_at"], r["replay_result"]) for r in rows]

    async def to_replay(self, *, ids: Sequence[str], failure_type: str | None, source: str | None,
                        again: bool) -> list[tuple[str, dict[str, Any]]]:
        """``(dlq_id, envelope)`` of the dead letters to replay, oldest first: the given ids (all when none),
        optionally of one failure type or source; ones already replayed only with ``again``."""
        rows = await self.store.fetch(
            """SELECT dlq_id, envelope FROM dead_letters
               WHERE (cardinality($1::text[]) = 0 OR dlq_id = ANY($1::text[]))
                 AND ($2::text IS NULL OR failure_type = $2) AND ($3::text IS NULL OR source = $3)
                 AND ($4 OR replayed_at IS NULL)
               ORDER BY failed_at""", list(ids), failure_type, source, again)
        return [(r["dlq_id"], r["envelope"]) for r in rows]

    async def mark_replayed(self, dlq_id: str, result: str) -> None:
        """Record that a dead letter was replayed, and how it went."""
        await self.store.execute(
            "UPDATE dead_letters SET replayed_at = now(), replay_result = $2 WHERE dlq_id = $1", dlq_id, result)

    async def purge(self, older_than: timedelta, *, replayed_only: bool) -> int:
        """Delete dead letters that failed more than ``older_than`` ago (only replayed ones with
        ``replayed_only``); returns how many."""
        status = await self.store.execute(
            """DELETE FROM dead_letters WHERE failed_at < now() - $1::interval
               AND (NOT $2 OR replayed_at IS NOT NULL)""", older_than, replayed_only)
        return int(status.split()[-1])

    async def counts(self) -> list[dict[str, Any]]:
        """``{"stage", "failure_type", "n"}`` for every stage and failure type (the demo's summary)."""
        rows = await self.store.fetch(
            "SELECT stage, failure_type, count(*) AS n FROM dead_letters GROUP BY stage, failure_type ORDER BY 1, 2")
        return [dict(r) for r in rows]

    async def first_error(self) -> str | None:
        """The error of the oldest dead letter (an example for the demo's summary); None when there is none."""
        row = await self.store.fetchrow("SELECT error FROM dead_letters ORDER BY failed_at LIMIT 1")
        return row["error"] if row is not None else None
