"""The ``consents`` table: every consent statement per profile, channel and purpose, with its evidence.

    resolver batch ─▶ record(statements)        one row per (event, channel, purpose); a replay adds nothing
    triggers, delivery ─▶ current(profile_ids)  the latest statement per (channel, purpose), opt-out on a tie
    resolver merge ─▶ follow_merges(...)        the losers' rows move to the survivor; where their current
                                                states disagree, an opt-out row (source ``merge``) makes the
                                                most restrictive state the current one
    profile view, CLI ─▶ history(profile_id)

Nothing is updated in place except the profile id a merge moves: the history is the evidence.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["ConsentRepository", "ConsentStatement"]

MERGE_NAMESPACE = uuid.UUID("7d3e1c2a-4b5f-5a6e-9c8d-1f2e3a4b5c6d")

_CURRENT = """
SELECT DISTINCT ON (profile_id, channel, purpose) profile_id, channel, purpose, status, occurred_at
  FROM consents WHERE profile_id = ANY($1::uuid[])
 ORDER BY profile_id, channel, purpose, occurred_at DESC, (status = 'opted_out') DESC
"""


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


class ConsentRepository:
    """Records consent statements and answers what the current consent of profiles is."""

    def __init__(self, store: Store) -> None:
        self.store = store

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

    async def current(self, profile_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[tuple[str, str], str]]:
        """``{profile_id: {(channel, purpose): status}}``; a profile without statements is absent."""
        if not profile_ids:
            return {}
        out: dict[uuid.UUID, dict[tuple[str, str], str]] = {}
        for r in await self.store.fetch(_CURRENT, list(set(profile_ids))):
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
        rows = await self.store.fetch(_CURRENT, involved)
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
