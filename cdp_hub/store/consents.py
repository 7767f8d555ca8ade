"""The ``consents`` table: every consent statement per profile, channel and purpose, with its evidence.

    resolver batch ─▶ record(statements)        one row per (event, channel, purpose); a replay adds nothing
    triggers, delivery ─▶ current(profile_ids)  the latest statement per (channel, purpose), opt-out on a tie
    resolver merge ─▶ follow_merges(...)        the losers' rows move to the survivor; where their current
                                                states disagree, an opt-out row (source ``merge``) makes the
                                                most restrictive state the current one
    profile view, CLI ─▶ history(profile_id)
    bulk import ─▶ record_staged(conn)            the import's staged statements (bulk_consent, its session
                                                temp table), each to the profile its record's event went to
               ─▶ staged_of(conn, event_ids) ─▶ record_for_events(...)   records the streaming resolver
                                                judged: their statements, once their events are stored

Nothing is updated in place except the profile id a merge moves: the history is the evidence.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from cdp_hub.store.db import Store

__all__ = ["ConsentRepository", "ConsentStatement", "StagedConsent"]

MERGE_NAMESPACE = uuid.UUID("7d3e1c2a-4b5f-5a6e-9c8d-1f2e3a4b5c6d")

_CURRENT = """
SELECT DISTINCT ON (c.profile_id, c.channel, c.purpose) c.profile_id, c.channel, c.purpose, c.status, c.occurred_at
  FROM consents c JOIN unnest($1::uuid[]) AS u(profile_id) ON u.profile_id = c.profile_id
 WHERE c.profile_id BETWEEN $2 AND $3
 ORDER BY c.profile_id, c.channel, c.purpose, c.occurred_at DESC, (c.status = 'opted_out') DESC
"""
"""``$2``/``$3``: the smallest and largest of the ids. A campaign chunk is a range of ids: with the range the
planner scans that part of the index; with ``= ANY`` of 2,000 ids alone it read the whole table per chunk."""


@dataclass(frozen=True, slots=True)
class ConsentStatement:
    """One statement: ``status`` for ``(channel, purpose)`` of a profile, when, from where, on what evidence."""

    profile_id: uuid.UUID
    channel: str
    purpose: str
    status: str
    occurred_at: datetime
    source: str
    event_id: uuid.UUID
    evidence: dict[str, Any] = field(default_factory=dict)


# An imported statement goes to the profile its record's event was stored under (set-wise in the import's
# transaction; a record imported before, found again, has its event already: its consent is added once).
_RECORD_STAGED = """
INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id, evidence)
SELECT e.profile_id, c.channel, c.purpose, c.status, c.occurred_at, $1, c.event_id, c.evidence::jsonb
  FROM bulk_consent c JOIN events e ON e.event_id = c.event_id
 WHERE e.profile_id IS NOT NULL
ON CONFLICT DO NOTHING
"""
_RECORD_FOR_EVENTS = """
INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id, evidence)
SELECT e.profile_id, u.channel, u.purpose, u.status, u.occurred_at, $1, u.event_id, u.evidence
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])
       AS u(event_id, channel, purpose, status, occurred_at, evidence)
  JOIN events e ON e.event_id = u.event_id
 WHERE e.profile_id IS NOT NULL
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class StagedConsent:
    """An imported statement whose profile is not known yet: that of the event ``event_id`` once stored."""

    event_id: uuid.UUID
    channel: str
    purpose: str
    status: str
    occurred_at: datetime
    evidence: dict[str, Any]


class ConsentRepository:
    """Records consent statements and answers what the current consent of profiles is."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def analyze(self) -> None:
        """Fresh planner statistics of ``consents`` after a bulk load."""
        await self.store.execute("ANALYZE consents")

    async def record(self, statements: Sequence[ConsentStatement]) -> None:
        """Store statements; one already stored (same event, channel, purpose) is left as it is."""
        if not statements:
            return
        await self.store.execute(
            """INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id, evidence)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                    $6::text[], $7::uuid[], $8::jsonb[])
               ON CONFLICT DO NOTHING""",
            [s.profile_id for s in statements], [s.channel for s in statements], [s.purpose for s in statements],
            [s.status for s in statements], [s.occurred_at for s in statements], [s.source for s in statements],
            [s.event_id for s in statements], [s.evidence for s in statements])

    @staticmethod
    async def record_staged(conn: asyncpg.Connection, source: str) -> int:
        """The bulk import's staged statements (``bulk_consent``), on the import's connection; how many were
        new. Run after the import stored its events."""
        return _row_count(await conn.execute(_RECORD_STAGED, source))

    @staticmethod
    async def staged_of(conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]) -> list[StagedConsent]:
        """The staged statements of records the import hands to the streaming resolver (not stored yet)."""
        if not event_ids:
            return []
        rows = await conn.fetch("SELECT event_id, channel, purpose, status, occurred_at, evidence FROM bulk_consent "
                                "WHERE event_id = ANY($1::uuid[])", list(event_ids))
        return [StagedConsent(r["event_id"], r["channel"], r["purpose"], r["status"], r["occurred_at"],
                              json.loads(r["evidence"])) for r in rows]

    async def record_for_events(self, source: str, staged: Sequence[StagedConsent]) -> int:
        """Statements to the profiles their events were stored under; how many were new."""
        if not staged:
            return 0
        return _row_count(await self.store.execute(
            _RECORD_FOR_EVENTS, source, [s.event_id for s in staged], [s.channel for s in staged],
            [s.purpose for s in staged], [s.status for s in staged], [s.occurred_at for s in staged],
            [s.evidence for s in staged]))

    async def current(self, profile_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[tuple[str, str], str]]:
        """``{profile_id: {(channel, purpose): status}}``; a profile without statements is absent."""
        if not profile_ids:
            return {}
        out: dict[uuid.UUID, dict[tuple[str, str], str]] = {}
        ids = list(set(profile_ids))
        for r in await self.store.fetch(_CURRENT, ids, min(ids), max(ids)):
            out.setdefault(r["profile_id"], {})[(r["channel"], r["purpose"])] = r["status"]
        return out

    async def history(self, profile_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every statement of a profile, the latest first (for the profile view and audits)."""
        rows = await self.store.fetch(
            """SELECT channel, purpose, status, occurred_at, source, evidence, event_id FROM consents
                WHERE profile_id = $1 ORDER BY occurred_at DESC, channel, purpose""", profile_id)
        return [dict(r) for r in rows]

    async def follow_merges(self, merges: Sequence[tuple[uuid.UUID, Sequence[uuid.UUID], datetime]]) -> None:
        """``(survivor, losers, at)``: the losers' statements move to the survivor; where the current states
        of the merged profiles disagree, the most restrictive wins: an opt-out statement is added at the
        latest of their times (source ``merge``, the merged profiles as evidence)."""
        if not merges:
            return
        involved = [p for survivor, losers, _ in merges for p in (survivor, *losers)]
        rows = await self.store.fetch(_CURRENT, involved, min(involved), max(involved))
        latest: dict[uuid.UUID, list[Any]] = {}
        for r in rows:
            latest.setdefault(r["profile_id"], []).append(r)
        resolve: list[ConsentStatement] = []
        for survivor, losers, at in merges:
            seen: dict[tuple[str, str], list[Any]] = {}
            for pid in (survivor, *losers):
                for r in latest.get(pid, ()):
                    seen.setdefault((r["channel"], r["purpose"]), []).append(r)
            for (channel, purpose), states in seen.items():
                if len({s["status"] for s in states}) < 2:
                    continue
                when = max(max(s["occurred_at"] for s in states), at)
                merged = sorted(str(p) for p in losers)
                resolve.append(ConsentStatement(
                    survivor, channel, purpose, "opted_out", when, "merge",
                    uuid.uuid5(MERGE_NAMESPACE, f"{survivor}:{','.join(merged)}:{channel}:{purpose}"),
                    {"method": "merge", "merged_profile_ids": merged,
                     "reason": "the merged profiles disagreed; the most restrictive consent wins"}))
        pairs = [(loser, survivor) for survivor, losers, _ in merges for loser in losers]
        await self.store.execute(
            """UPDATE consents c SET profile_id = m.survivor
                 FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
                WHERE c.profile_id = m.loser""",
            [p[0] for p in pairs], [p[1] for p in pairs])
        await self.record(resolve)


def _row_count(status: str) -> int:
    """Rows a statement wrote, from its status tag (``INSERT 0 42``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
