"""Segment membership tables: ``segments`` (definitions as last run), ``segment_runs`` (one row per batch
recompute), ``segment_changes`` (a run's diff) and ``segment_members`` (the system of record).

A batch run, under ``recompute_lock``, goes ``start_run`` (run row + diff in one transaction) ─▶
``changes_page`` (the caller publishes the events) ─▶ ``apply_run`` (membership, counts, run done: one
transaction). A run left ``pending`` by a crash is found by ``pending_run`` and applied again with the
same id. Real-time changes of trait-only segments go straight to ``segment_members`` (``apply_changes``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from cdp_hub.store.db import Store
from cdp_hub.store.segments.compiler import CompiledSegment

__all__ = ["AppliedRun", "PendingRun", "SegmentChange", "SegmentRepository"]


@dataclass(frozen=True, slots=True)
class PendingRun:
    """A started run whose membership is not applied yet."""

    run_id: uuid.UUID
    as_of: datetime


@dataclass(frozen=True, slots=True)
class AppliedRun:
    """What applying a run did: profiles that entered and left, and the member count after it."""

    entered: int
    exited: int
    members: int


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """One profile entering or leaving in a run, with the Golden Record version the diff saw."""

    profile_id: uuid.UUID
    change: str
    profile_version: int | None
    changed_at: datetime | None


class SegmentRepository:
    """Reads and writes segment definitions, runs, their diffs and the membership."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextlib.asynccontextmanager
    async def recompute_lock(self, segment_id: str) -> AsyncIterator[None]:
        """Hold the segment's recompute lock: one recompute per segment at a time, across processes (a
        session advisory lock, on a connection of its own for as long as it is held)."""
        key = f"cdp-hub.segment:{segment_id}"
        async with self.store.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def pending_run(self, segment_id: str) -> PendingRun | None:
        """The latest unfinished run of the segment, to resume with the same id; None when there is none."""
        row = await self.store.fetchrow(
            "SELECT run_id, as_of FROM segment_runs WHERE segment_id = $1 AND status = 'pending' "
            "ORDER BY started_at DESC LIMIT 1", segment_id)
        return PendingRun(row["run_id"], row["as_of"]) if row is not None else None

    async def start_run(self, compiled: CompiledSegment, definition: str, run_id: uuid.UUID,
                        as_of: datetime) -> None:
        """Store the definition (JSON text), open a pending run and write its diff to ``segment_changes``,
        in one transaction: a run exists only with its whole diff."""
        diff_sql, params = compiled.diff_sql(run_id)
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO segments (segment_id, definition, updated_at) VALUES ($1, $2::text::jsonb, now())
                   ON CONFLICT (segment_id) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()""",
                compiled.segment_id, definition)
            await conn.execute(
                "INSERT INTO segment_runs (segment_id, run_id, status, as_of) VALUES ($1, $2, 'pending', $3)",
                compiled.segment_id, run_id, as_of)
            await conn.execute(diff_sql, *params)

    async def changes_page(self, segment_id: str, run_id: uuid.UUID, after: uuid.UUID,
                           limit: int) -> list[SegmentChange]:
        """Up to ``limit`` changes of a run with a profile id above ``after``, in profile id order."""
        rows = await self.store.fetch(
            """SELECT profile_id, change, profile_version, changed_at FROM segment_changes
                WHERE segment_id = $1 AND run_id = $2 AND profile_id > $3
                ORDER BY profile_id LIMIT $4""", segment_id, run_id, after, limit)
        return [SegmentChange(r["profile_id"], r["change"], r["profile_version"], r["changed_at"]) for r in rows]

    async def apply_run(self, segment_id: str, run_id: uuid.UUID, as_of: datetime) -> AppliedRun:
        """Apply a run's diff to ``segment_members``, mark it done with its counts and drop older diffs, in one
        transaction (a crash before it leaves the run pending, and applying it twice changes nothing)."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO segment_members (profile_id, segment_id, entered_at)
                   SELECT profile_id, segment_id, $3 FROM segment_changes
                    WHERE segment_id = $1 AND run_id = $2 AND change = 'entered'
                   ON CONFLICT DO NOTHING""", segment_id, run_id, as_of)
            await conn.execute(
                """DELETE FROM segment_members sm USING segment_changes c
                    WHERE c.segment_id = $1 AND c.run_id = $2 AND c.change = 'exited'
                      AND sm.profile_id = c.profile_id AND sm.segment_id = c.segment_id""", segment_id, run_id)
            counts = dict(await conn.fetch(
                "SELECT change, count(*) FROM segment_changes WHERE segment_id = $1 AND run_id = $2 GROUP BY change",
                segment_id, run_id))
            await conn.execute(
                """UPDATE segment_runs SET status = 'done', finished_at = now(), entered = $3, exited = $4
                    WHERE segment_id = $1 AND run_id = $2""",
                segment_id, run_id, counts.get("entered", 0), counts.get("exited", 0))
            # The diff of the previous runs is history; the last one stays for `segments members --changes`.
            await conn.execute("DELETE FROM segment_changes WHERE segment_id = $1 AND run_id <> $2", segment_id, run_id)
            members = await conn.fetchval("SELECT count(*) FROM segment_members WHERE segment_id = $1", segment_id)
        return AppliedRun(counts.get("entered", 0), counts.get("exited", 0), int(members))

    async def member_chunks(self, segment_id: str, size: int = 5000) -> AsyncGenerator[list[str], None]:
        """The segment's member ids as text, ``size`` at a time, from one cursor in one transaction (one
        consistent snapshot however large the segment). Close it (``contextlib.aclosing``) if not exhausted."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            cursor = conn.cursor("SELECT profile_id::text FROM segment_members WHERE segment_id = $1", segment_id)
            chunk: list[str] = []
            async for row in cursor:
                chunk.append(row[0])
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    async def members(self, segment_id: str, limit: int) -> list[uuid.UUID]:
        """Up to ``limit`` members, the longest-standing first."""
        rows = await self.store.fetch(
            "SELECT profile_id FROM segment_members WHERE segment_id = $1 ORDER BY entered_at, profile_id LIMIT $2",
            segment_id, limit)
        return [r["profile_id"] for r in rows]

    async def count_members(self, segment_id: str) -> int:
        """How many profiles are in the segment."""
        return int(await self.store.fetchval("SELECT count(*) FROM segment_members WHERE segment_id = $1",
                                             segment_id))

    async def memberships(self, profile_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
        """``(profile_id, segment_id)`` for every segment each of ``profile_ids`` is in."""
        rows = await self.store.fetch(
            "SELECT profile_id, segment_id FROM segment_members WHERE profile_id = ANY($1::uuid[])",
            list(profile_ids))
        return [(r["profile_id"], r["segment_id"]) for r in rows]

    async def apply_changes(self, entered: Sequence[tuple[uuid.UUID, str]], exited: Sequence[tuple[uuid.UUID, str]],
                            at: datetime) -> None:
        """Add ``entered`` and remove ``exited`` ``(profile_id, segment_id)`` memberships in one transaction
        (the real-time path; an existing membership keeps its entry time)."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            if entered:
                await conn.execute(
                    """INSERT INTO segment_members (profile_id, segment_id, entered_at)
                       SELECT p, s, $3 FROM unnest($1::uuid[], $2::text[]) AS x(p, s) ON CONFLICT DO NOTHING""",
                    [e[0] for e in entered], [e[1] for e in entered], at)
            if exited:
                await conn.execute(
                    """DELETE FROM segment_members sm USING unnest($1::uuid[], $2::text[]) AS x(p, s)
                        WHERE sm.profile_id = x.p AND sm.segment_id = x.s""",
                    [e[0] for e in exited], [e[1] for e in exited])
