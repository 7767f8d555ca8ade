"""Journey positions (``journey_positions``): where each profile is in each journey it entered.

    enter   ─▶ INSERT (profile, journey, entry_id) ... ON CONFLICT DO NOTHING  (entry ids are derived from the
               trigger event; one active entry per profile and journey, by a partial unique index)
    advance ─▶ UPDATE ... WHERE step_seq = the one read: a transition happens once, whoever tries it twice
    due     ─▶ active positions whose wait or wait_for timeout has come (the triggers stage polls them)
    merge   ─▶ the survivor keeps its earlier-entered active entry per journey; every row moves to it

The stage writes positions only after the messages of a transition are durable on the bus (like its timers'
``mark_fired``): a crash in between repeats the transition, whose message ids are deterministic, so delivery's
send log turns the repeat into a no-op. Every statement works on a whole batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["ACTIVE", "JourneyRepository", "Position"]

ACTIVE = "active"


@dataclass(slots=True)
class Position:
    """One entry of a profile into a journey, as stored (and as the engine moves it in memory)."""

    profile_id: uuid.UUID
    journey: str
    entry_id: uuid.UUID
    entered_at: datetime
    status: str
    step: str | None
    step_seq: int
    step_since: datetime
    due_at: datetime | None
    entry_event: dict[str, Any]
    reason: str | None = None
    variant: str | None = None
    """The experiment arm assigned at entry (a variant, ``control``, ``holdout``); None without an experiment."""


_COLUMNS = ("profile_id, journey, entry_id, entered_at, status, step, step_seq, step_since, due_at, entry_event, "
            "reason, variant")
_ENTER = f"""
INSERT INTO journey_positions ({_COLUMNS})
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[], $5::text[], $6::text[], $7::int[],
                     $8::timestamptz[], $9::timestamptz[], $10::jsonb[], $11::text[], $12::text[])
ON CONFLICT DO NOTHING
RETURNING profile_id, journey, entry_id
"""
_ADVANCE = """
UPDATE journey_positions j
   SET status = u.status, step = u.step, step_seq = u.seq, step_since = u.since, due_at = u.due,
       reason = u.reason, updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::int[],
              $8::timestamptz[], $9::timestamptz[], $10::text[])
       AS u(p, journey, entry, expected, status, step, seq, since, due, reason)
 WHERE j.profile_id = u.p AND j.journey = u.journey AND j.entry_id = u.entry AND j.step_seq = u.expected
   AND j.status = 'active'
RETURNING j.profile_id, j.journey, j.entry_id
"""
_ENTRIES_OF = """
SELECT profile_id, journey, entry_id, entered_at, status FROM journey_positions
 WHERE profile_id = ANY($1::uuid[]) AND journey = ANY($2::text[])
"""
_ACTIVE_OF = f"""
SELECT {_COLUMNS} FROM journey_positions WHERE profile_id = ANY($1::uuid[]) AND status = 'active'
"""
_DUE = f"""
SELECT {_COLUMNS} FROM journey_positions WHERE status = 'active' AND due_at <= $1 ORDER BY due_at LIMIT $2
"""
# Merges: of the active entries of one journey among a survivor and the profiles merged into it, the earliest
# entered stays; the others close as 'merged'. Then every row (the finished ones too: they count for the
# re-entry policy) moves to the survivor.
_CLOSE_MERGED = """
UPDATE journey_positions j SET status = 'merged', due_at = NULL, reason = 'profile merged', updated_at = now()
  FROM (SELECT p.profile_id, p.journey, p.entry_id,
               row_number() OVER (PARTITION BY g.survivor, p.journey ORDER BY p.entered_at, p.entry_id) AS rank
          FROM journey_positions p
          JOIN (SELECT DISTINCT member, survivor
                  FROM (SELECT unnest($1::uuid[]) AS member, unnest($2::uuid[]) AS survivor
                        UNION ALL SELECT unnest($2::uuid[]), unnest($2::uuid[])) AS pairs) AS g
            ON g.member = p.profile_id
         WHERE p.status = 'active') AS r
 WHERE r.rank > 1 AND j.profile_id = r.profile_id AND j.journey = r.journey AND j.entry_id = r.entry_id
"""
_MOVE = """
UPDATE journey_positions j SET profile_id = m.survivor, updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE j.profile_id = m.loser
"""
_COUNT_BY_STATUS = """
SELECT journey, status, step, count(*) AS n FROM journey_positions GROUP BY journey, status, step
 ORDER BY journey, status, step
"""


def _position(row: Any) -> Position:
    return Position(row["profile_id"], row["journey"], row["entry_id"], row["entered_at"], row["status"],
                    row["step"], row["step_seq"], row["step_since"], row["due_at"], row["entry_event"] or {},
                    row["reason"], row["variant"])


class JourneyRepository:
    """Enters, advances, polls and merges journey positions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def enter(self, positions: Sequence[Position]) -> set[tuple[uuid.UUID, str, uuid.UUID]]:
        """Store new entries (in the state their first transitions left them); an entry already there, or a
        second active one of a profile and journey, is left out. Returns the keys stored."""
        if not positions:
            return set()
        rows = await self.store.fetch(
            _ENTER, [p.profile_id for p in positions], [p.journey for p in positions],
            [p.entry_id for p in positions], [p.entered_at for p in positions], [p.status for p in positions],
            [p.step for p in positions], [p.step_seq for p in positions], [p.step_since for p in positions],
            [p.due_at for p in positions], [p.entry_event for p in positions], [p.reason for p in positions],
            [p.variant for p in positions])
        return {(r["profile_id"], r["journey"], r["entry_id"]) for r in rows}

    async def advance(self, moves: Sequence[tuple[int, Position]]) -> set[tuple[uuid.UUID, str, uuid.UUID]]:
        """``(expected step_seq, new state)`` pairs: each row moves only if it is still active at the step
        sequence number it was read with. Returns the keys that moved."""
        if not moves:
            return set()
        rows = await self.store.fetch(
            _ADVANCE, [p.profile_id for _, p in moves], [p.journey for _, p in moves],
            [p.entry_id for _, p in moves], [seq for seq, _ in moves], [p.status for _, p in moves],
            [p.step for _, p in moves], [p.step_seq for _, p in moves], [p.step_since for _, p in moves],
            [p.due_at for _, p in moves], [p.reason for _, p in moves])
        return {(r["profile_id"], r["journey"], r["entry_id"]) for r in rows}

    async def entries_of(self, profile_ids: Sequence[uuid.UUID],
                         journeys: Sequence[str]) -> list[tuple[uuid.UUID, str, uuid.UUID, datetime, str]]:
        """Every entry (active or finished) of the profiles into the journeys: ``(profile, journey, entry id,
        entered at, status)``, for the re-entry policy."""
        if not profile_ids or not journeys:
            return []
        rows = await self.store.fetch(_ENTRIES_OF, list(profile_ids), list(journeys))
        return [(r["profile_id"], r["journey"], r["entry_id"], r["entered_at"], r["status"]) for r in rows]

    async def active_of(self, profile_ids: Sequence[uuid.UUID]) -> list[Position]:
        """The active positions of the profiles (an event may end or move them)."""
        if not profile_ids:
            return []
        return [_position(r) for r in await self.store.fetch(_ACTIVE_OF, list(profile_ids))]

    async def due(self, cutoff: datetime, limit: int) -> list[Position]:
        """Up to ``limit`` active positions whose wait or timeout ended by ``cutoff``, the earliest first."""
        return [_position(r) for r in await self.store.fetch(_DUE, cutoff, limit)]

    async def follow_merges(self, moves: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """``(loser, survivor)`` pairs: one active entry per journey stays (the earliest entered), every row
        moves to the survivor. One transaction: nobody sees two active entries of one profile."""
        if not moves:
            return
        losers, survivors = [m[0] for m in moves], [m[1] for m in moves]
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLOSE_MERGED, losers, survivors)
            await conn.execute(_MOVE, losers, survivors)

    async def counts(self) -> list[dict[str, Any]]:
        """Entries by journey, status and step (``cdp-hub scenarios positions``)."""
        return [dict(r) for r in await self.store.fetch(_COUNT_BY_STATUS)]
