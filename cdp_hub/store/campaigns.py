"""Campaign runs and their audiences (``campaign_runs``, ``campaign_audience``): every statement on them.

    launch(...)        one transaction: the run row (one per schedule slot) and the audience snapshot, set-wise:
                       INSERT ... SELECT the segment's members minus the exclusion segments' members (live
                       profiles only), then the planned count
    claim / heartbeat  the sender's lease on a run; heartbeat also answers the run's status (pause and cancel
                       are read between chunks)
    pending_chunk      the next undecided profiles in profile-id order (keyset), deferred ones when due,
                       with the three fields of their golden records the sender uses (one statement)
    decide             a chunk's outcomes in one UPDATE
    counts             planned, sent, skipped by reason: what ``campaigns status`` shows

Greenplum: the audience is distributed by profile_id like segment_members, so the snapshot joins on the
segment hosts; the runs table by campaign_id (its slot index must contain the distribution key).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["ACTIVE_STATUSES", "CampaignRepository", "CampaignRun", "Launched", "PendingProfile"]

ACTIVE_STATUSES = ("sending", "paused")
"""A run in one of these may still send; 'cancelled' and 'done' are final."""

_AUDIENCE = """
  FROM segment_members m
  JOIN profiles p ON p.profile_id = m.profile_id AND p.merged_into IS NULL
 WHERE m.segment_id = $1
   AND NOT EXISTS (SELECT 1 FROM segment_members x
                    WHERE x.profile_id = m.profile_id AND x.segment_id = ANY($2::text[]))
"""
"""The members of segment $1 that are live profiles and in none of the segments $2."""

_RUN_COLUMNS = ("campaign_id, run_id, status, scheduled_for, launched_at, finished_at, updated_at, planned, "
                "rate_limit, snapshot_seconds, definition, owner, heartbeat_at")


@dataclass(frozen=True, slots=True)
class CampaignRun:
    """One run of a campaign as stored."""

    campaign_id: str
    run_id: uuid.UUID
    status: str
    scheduled_for: datetime | None
    launched_at: datetime
    finished_at: datetime | None
    updated_at: datetime
    planned: int
    rate_limit: float
    snapshot_seconds: float | None
    definition: dict[str, Any]
    owner: str | None
    heartbeat_at: datetime | None

    @classmethod
    def from_record(cls, r: Any) -> CampaignRun:
        definition = r["definition"] or {}
        return cls(r["campaign_id"], r["run_id"], r["status"], r["scheduled_for"], r["launched_at"],
                   r["finished_at"], r["updated_at"], r["planned"], r["rate_limit"], r["snapshot_seconds"],
                   definition, r["owner"], r["heartbeat_at"])


@dataclass(frozen=True, slots=True)
class PendingProfile:
    """A profile of a chunk and the fields of its golden record the sender uses (``locale``, ``timezone``,
    ``consent``, those present); ``golden`` is None when the profile was merged away or deleted."""

    profile_id: uuid.UUID
    golden: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Launched:
    """A launch that took place: the run, how many profiles it plans to reach, how long the snapshot took."""

    run_id: uuid.UUID
    planned: int
    snapshot_seconds: float


class CampaignRepository:
    """Campaign runs and their audience snapshots."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def launch(self, campaign_id: str, run_id: uuid.UUID, *, slot: datetime | None, rate_limit: float,
                     definition: dict[str, Any], segment: str, exclude: Sequence[str]) -> Launched | None:
        """Create the run and snapshot its audience, in one transaction (a crash leaves neither). None when
        the schedule slot already has its run (another process launched it)."""
        started = time.perf_counter()
        async with self.store.pool.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                """INSERT INTO campaign_runs (campaign_id, run_id, status, scheduled_for, rate_limit, definition)
                   VALUES ($1, $2, 'sending', $3, $4, $5::jsonb)
                   ON CONFLICT DO NOTHING RETURNING run_id""",
                campaign_id, run_id, slot, rate_limit, definition)
            if created is None:
                return None
            status = await conn.execute(
                "INSERT INTO campaign_audience (run_id, profile_id) SELECT $3::uuid, m.profile_id" + _AUDIENCE,
                segment, list(exclude), run_id)
            planned = int(status.rsplit(" ", 1)[1])
            seconds = time.perf_counter() - started
            await conn.execute(
                "UPDATE campaign_runs SET planned = $3, snapshot_seconds = $4 WHERE campaign_id = $1 AND run_id = $2",
                campaign_id, run_id, planned, seconds)
        # A million new rows: the sender's keyset reads need the planner to know them before autovacuum does.
        await self.store.execute("ANALYZE campaign_audience")
        return Launched(run_id, planned, seconds)

    async def audience_size(self, segment: str, exclude: Sequence[str]) -> int:
        """How many profiles a launch now would snapshot."""
        return int(await self.store.fetchval("SELECT count(*)" + _AUDIENCE, segment, list(exclude)))

    async def audience_sample(self, segment: str, exclude: Sequence[str], limit: int) -> list[uuid.UUID]:
        """Up to ``limit`` profiles a launch now would snapshot (the lowest ids: a stable sample)."""
        rows = await self.store.fetch("SELECT m.profile_id" + _AUDIENCE + " ORDER BY m.profile_id LIMIT $3",
                                      segment, list(exclude), limit)
        return [r["profile_id"] for r in rows]

    async def run(self, run_id: uuid.UUID) -> CampaignRun | None:
        row = await self.store.fetchrow(f"SELECT {_RUN_COLUMNS} FROM campaign_runs WHERE run_id = $1", run_id)
        return CampaignRun.from_record(row) if row is not None else None

    async def runs(self, campaign_id: str | None = None, *, limit: int = 20) -> list[CampaignRun]:
        """The latest runs (of one campaign, or of all), newest first."""
        rows = await self.store.fetch(
            f"""SELECT {_RUN_COLUMNS} FROM campaign_runs WHERE $1::text IS NULL OR campaign_id = $1
                ORDER BY launched_at DESC LIMIT $2""", campaign_id, limit)
        return [CampaignRun.from_record(r) for r in rows]

    async def runnable(self, lease_seconds: float) -> list[uuid.UUID]:
        """Runs that are sending and have no live sender (never claimed, released, or its heartbeat is stale)."""
        rows = await self.store.fetch(
            """SELECT run_id FROM campaign_runs
                WHERE status = 'sending'
                  AND (owner IS NULL OR heartbeat_at < now() - make_interval(secs => $1))
                ORDER BY launched_at""", lease_seconds)
        return [r["run_id"] for r in rows]

    async def claim(self, run_id: uuid.UUID, owner: str, lease_seconds: float) -> CampaignRun | None:
        """Take the sender's lease on a sending run; None when it is not sending or another sender is alive."""
        row = await self.store.fetchrow(
            f"""UPDATE campaign_runs SET owner = $2, heartbeat_at = now(), updated_at = now()
                 WHERE run_id = $1 AND status = 'sending'
                   AND (owner IS NULL OR owner = $2 OR heartbeat_at < now() - make_interval(secs => $3))
                RETURNING {_RUN_COLUMNS}""", run_id, owner, lease_seconds)
        return CampaignRun.from_record(row) if row is not None else None

    async def heartbeat(self, run_id: uuid.UUID, owner: str) -> str | None:
        """Renew the lease; the run's status, or None when this sender no longer holds the run."""
        status: str | None = await self.store.fetchval(
            """UPDATE campaign_runs SET heartbeat_at = now() WHERE run_id = $1 AND owner = $2
               RETURNING status""", run_id, owner)
        return status

    async def release(self, run_id: uuid.UUID, owner: str) -> None:
        await self.store.execute(
            "UPDATE campaign_runs SET owner = NULL, heartbeat_at = NULL WHERE run_id = $1 AND owner = $2",
            run_id, owner)

    async def set_status(self, run_id: uuid.UUID, to: str, *, allowed_from: Sequence[str]) -> bool:
        """Move a run to ``to`` when it is in one of ``allowed_from``; whether it moved."""
        status = await self.store.execute(
            """UPDATE campaign_runs SET status = $2, updated_at = now(),
                      finished_at = CASE WHEN $2 IN ('cancelled', 'done') THEN now() ELSE finished_at END
                WHERE run_id = $1 AND status = ANY($3::text[])""", run_id, to, list(allowed_from))
        return status.endswith(" 1")

    async def finish_if_decided(self, run_id: uuid.UUID) -> bool:
        """Mark a sending run done when no audience row is pending; whether it is done now."""
        status = await self.store.execute(
            """UPDATE campaign_runs SET status = 'done', finished_at = now(), updated_at = now(),
                      owner = NULL, heartbeat_at = NULL
                WHERE run_id = $1 AND status = 'sending'
                  AND NOT EXISTS (SELECT 1 FROM campaign_audience a WHERE a.run_id = $1 AND a.status = 'pending')""",
            run_id)
        return status.endswith(" 1")

    async def pending_chunk(self, run_id: uuid.UUID, after: uuid.UUID, limit: int,
                            now: datetime) -> list[PendingProfile]:
        """The next ``limit`` undecided profiles after ``after`` (profile-id order; a deferred one only when due),
        each with what the sender needs of its golden record (None: merged away or deleted since launch): one
        statement, and only three fields of the golden record, not all of it.

        The chunk is a range of profile ids, and the join to ``profiles`` says so (after ``after``, up to the
        chunk's last id): without the range the planner hashed the whole profiles table for every chunk, a
        cost that grows with the audience (seen at 100,000 profiles: three times the database CPU per
        message)."""
        rows = await self.store.fetch(
            """WITH a AS (SELECT profile_id FROM campaign_audience
                           WHERE run_id = $1 AND profile_id > $2 AND status = 'pending'
                             AND (not_before IS NULL OR not_before <= $4)
                           ORDER BY profile_id LIMIT $3)
               SELECT a.profile_id, p.profile_id IS NOT NULL AND p.merged_into IS NULL AS live,
                      CASE WHEN jsonb_typeof(p.golden->'locale') = 'string' THEN p.golden->>'locale' END AS locale,
                      CASE WHEN jsonb_typeof(p.golden->'timezone') = 'string'
                           THEN p.golden->>'timezone' END AS timezone,
                      p.golden->'consent' AS consent
                 FROM a
                 LEFT JOIN profiles p ON p.profile_id = a.profile_id AND p.profile_id > $2
                      AND p.profile_id <= (SELECT profile_id FROM a ORDER BY profile_id DESC LIMIT 1)
                ORDER BY a.profile_id""", run_id, after, limit, now)
        out = []
        for r in rows:
            golden: dict[str, Any] | None = None
            if r["live"]:
                golden = {}
                for name in ("locale", "timezone", "consent"):
                    if r[name] is not None:
                        golden[name] = r[name]
            out.append(PendingProfile(r["profile_id"], golden))
        return out

    async def next_deferred(self, run_id: uuid.UUID) -> datetime | None:
        """When the earliest deferred profile of the run is due (None: nothing pending is deferred)."""
        at: datetime | None = await self.store.fetchval(
            "SELECT min(not_before) FROM campaign_audience WHERE run_id = $1 AND status = 'pending'", run_id)
        return at

    async def decide(self, run_id: uuid.UUID,
                     rows: Sequence[tuple[uuid.UUID, str, str | None, datetime | None]]) -> None:
        """Outcomes ``(profile_id, status, reason, not_before)`` of a chunk; ``pending`` with a time defers.
        The rows' id range bounds the scan (a chunk is a range of ids): the planner otherwise read the whole
        audience for every chunk."""
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        await self.store.execute(
            """UPDATE campaign_audience AS a
                  SET status = u.status, reason = u.reason, not_before = u.not_before,
                      decided_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END
                 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
                      AS u(profile_id, status, reason, not_before)
                WHERE a.run_id = $1 AND a.profile_id = u.profile_id AND a.status = 'pending'
                  AND a.profile_id BETWEEN $6 AND $7""",
            run_id, *(list(c) for c in cols), min(cols[0]), max(cols[0]))

    async def counts(self, run_id: uuid.UUID) -> list[tuple[str, str | None, bool, int]]:
        """``(status, reason, deferred, count)`` of the run's audience."""
        rows = await self.store.fetch(
            """SELECT status, reason, (not_before IS NOT NULL) AS deferred, count(*) AS n
                 FROM campaign_audience WHERE run_id = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", run_id)
        return [(r["status"], r["reason"], r["deferred"], r["n"]) for r in rows]

    async def audience_of(self, run_id: uuid.UUID) -> dict[uuid.UUID, tuple[str, str | None]]:
        """Every profile of a run's audience -> (status, reason) (tests and small audits)."""
        rows = await self.store.fetch(
            "SELECT profile_id, status, reason FROM campaign_audience WHERE run_id = $1", run_id)
        return {r["profile_id"]: (r["status"], r["reason"]) for r in rows}
