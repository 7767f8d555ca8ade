"""Periodic jobs: ``scheduler_runs`` (one row per job: the last finished run and the claim that keeps two
processes from running it at once) and ``scheduler_emitted`` (what a job already published, per profile
and period, so that a second run in the same period publishes nothing again).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["JobRepository"]

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
