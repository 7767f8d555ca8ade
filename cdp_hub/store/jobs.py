"""Periodic jobs: ``scheduler_runs`` (one row per job: the last finished run and the claim that keeps two
processes from running it at once), ``scheduler_emitted`` (what a job already published, per profile
and period, so that a second run in the same period publishes nothing again) and ``job_runs`` (every run
of a scheduled job, with status, duration and error: the ``[jobs]`` scheduler, ``cdp-hub jobs``, Airflow).

A run of a ``[jobs]`` job is claimed in one transaction under an advisory lock on the job's name: it
succeeds when no live run of the job exists (a ``running`` row whose heartbeat is younger than the lease)
and, for a scheduled run, when no process has claimed the same cron slot (a unique index). So any number
of schedulers, ``jobs run`` and Airflow tasks run a job one at a time, and each slot once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from cdp_hub.store.db import Store

__all__ = ["JobRepository", "JobRun"]

# Two processes claiming the same job serialize on this lock (the namespace keeps it apart from other
# advisory locks, such as the migrations' one).
_JOB_LOCK_NAMESPACE = 0x0CD9_0002

_ABANDON_SQL = """
UPDATE job_runs SET status = 'abandoned', finished_at = $2::timestamptz,
       error = 'the process running it stopped sending heartbeats'
 WHERE job = $1 AND status = 'running' AND heartbeat_at <= $2::timestamptz - $3::interval
"""

_LIVE_SQL = "SELECT run_id FROM job_runs WHERE job = $1 AND status = 'running' LIMIT 1"

_START_SQL = """
INSERT INTO job_runs (job, run_id, kind, trigger, scheduled_for, started_at, heartbeat_at, status, host)
VALUES ($1, $2, $3, $4, $5, $6, $6, 'running', $7)
ON CONFLICT (job, scheduled_for) DO NOTHING
RETURNING run_id
"""

_FINISH_SQL = """
UPDATE job_runs SET status = $3, finished_at = $4, seconds = EXTRACT(EPOCH FROM ($4 - started_at)),
       result = $5::text::jsonb, error = $6
 WHERE job = $1 AND run_id = $2
"""

_HISTORY_COLUMNS = ("job, run_id, kind, trigger, scheduled_for, started_at, finished_at, status, seconds, "
                    "result::text AS result, error, host")


@dataclass(frozen=True)
class JobRun:
    """One row of ``job_runs``."""

    job: str
    run_id: uuid.UUID
    kind: str
    trigger: str
    scheduled_for: datetime | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    seconds: float | None
    result: dict[str, Any]
    error: str | None
    host: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobRun:
        return cls(**{**dict(row), "result": json.loads(row["result"] or "{}")})

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("scheduled_for", "started_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["run_id"] = str(self.run_id)
        return out

_EMITTED_SQL = """
INSERT INTO scheduler_emitted (profile_id, job, period, emitted_at)
SELECT p, $2, y, $4 FROM unnest($1::uuid[], $3::text[]) AS x(p, y)
ON CONFLICT DO NOTHING
"""

# The claim succeeds when the last run is older than the interval and no live claim (younger than the
# lease, and newer than the last run) is held: a crashed run's claim expires with its lease.
_CLAIM_SQL = """
INSERT INTO scheduler_runs AS r (job, claimed_at) VALUES ($1, $2)
ON CONFLICT (job) DO UPDATE SET claimed_at = EXCLUDED.claimed_at
 WHERE (r.last_run_at IS NULL OR r.last_run_at <= $2 - $3::interval)
   AND (r.claimed_at IS NULL OR r.claimed_at <= r.last_run_at OR r.claimed_at <= $2 - $4::interval)
RETURNING job
"""


class JobRepository:
    """Claims and records runs of periodic jobs, and what they published."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def claim_run(self, job: str, now: datetime, interval: timedelta, lease: timedelta) -> bool:
        """Claim the job's next run: True when the last run is older than ``interval`` and no other process
        holds a claim younger than ``lease``."""
        return await self.store.fetchval(_CLAIM_SQL, job, now, interval, lease) is not None

    async def record_run(self, job: str, at: datetime, summary: Mapping[str, Any]) -> None:
        """Record a finished run (its time and a JSON summary) as the job's last one."""
        await self.store.execute(
            """INSERT INTO scheduler_runs AS r (job, last_run_at, last_result) VALUES ($1, $2, $3::text::jsonb)
               ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, last_result = EXCLUDED.last_result""",
            job, at, json.dumps(summary))

    async def mark_emitted(self, job: str, emitted: Sequence[tuple[uuid.UUID, str]], at: datetime) -> None:
        """Remember ``(profile_id, period)`` pairs the job published (only once they are durable)."""
        if not emitted:
            return
        await self.store.execute(_EMITTED_SQL, [e[0] for e in emitted], job, [e[1] for e in emitted], at)

    async def forget_emitted_before(self, job: str, period: str) -> None:
        """Drop what the job emitted in periods before ``period`` (history nothing checks any more)."""
        await self.store.execute("DELETE FROM scheduler_emitted WHERE job = $1 AND period < $2", job, period)

    # -- job_runs: the [jobs] schedule -------------------------------------------------------------------

    async def start_job_run(self, job: str, kind: str, *, trigger: str, now: datetime, lease: timedelta,
                            scheduled_for: datetime | None = None, host: str = "") -> uuid.UUID | None:
        """Claim a run of ``job``: its id, or None when a live run of the job exists or another process
        claimed the cron slot ``scheduled_for``. Runs whose heartbeat is older than ``lease`` are marked
        ``abandoned`` first (their process died)."""
        run_id = uuid.uuid4()
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _JOB_LOCK_NAMESPACE, job)
            await conn.execute(_ABANDON_SQL, job, now, lease)
            if await conn.fetchval(_LIVE_SQL, job) is not None:
                return None
            claimed: uuid.UUID | None = await conn.fetchval(_START_SQL, job, run_id, kind, trigger,
                                                             scheduled_for, now, host)
            return claimed

    async def heartbeat_job_run(self, job: str, run_id: uuid.UUID, now: datetime) -> None:
        """The run is alive: keep other processes from taking it for abandoned."""
        await self.store.execute(
            "UPDATE job_runs SET heartbeat_at = $3 WHERE job = $1 AND run_id = $2 AND status = 'running'",
            job, run_id, now)

    async def finish_job_run(self, job: str, run_id: uuid.UUID, *, status: str, now: datetime,
                             result: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        """Record how the run ended (``succeeded`` or ``failed``), its duration, result and error."""
        await self.store.execute(_FINISH_SQL, job, run_id, status, now, json.dumps(result or {}, default=str),
                                 error)

    async def job_history(self, job: str | None = None, *, limit: int = 20) -> list[JobRun]:
        """Runs, newest first (of ``job``, or of every job)."""
        if job is None:
            rows = await self.store.fetch(
                f"SELECT {_HISTORY_COLUMNS} FROM job_runs ORDER BY started_at DESC LIMIT $1", limit)
        else:
            rows = await self.store.fetch(
                f"SELECT {_HISTORY_COLUMNS} FROM job_runs WHERE job = $1 ORDER BY started_at DESC LIMIT $2",
                job, limit)
        return [JobRun.from_row(r) for r in rows]

    async def last_job_runs(self) -> dict[str, JobRun]:
        """The newest run of every job that has one."""
        rows = await self.store.fetch(
            f"SELECT DISTINCT ON (job) {_HISTORY_COLUMNS} FROM job_runs ORDER BY job, started_at DESC")
        return {r["job"]: JobRun.from_row(r) for r in rows}
