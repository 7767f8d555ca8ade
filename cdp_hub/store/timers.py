"""Durable timers (``scheduled_triggers``): delayed scenarios and quiet-hour postponements.

    pending ─fire_at passed, intent published────────────────────▶ fired
       ├────cancel_on event in [occurred_at, fire_at)─────────────▶ cancelled
       └────a later trigger with the same hold-until key before fire_at ─▶ superseded

A timer is keyed by ``(profile_id, trigger_id)``; trigger ids are deterministic (scenario + event, or the
postponed message), so scheduling the same timer twice is a no-op. ``occurred_at`` is the trigger's event
time and ``dedupe_key`` its hold-until key: both rules are judged in event time (cdp_hub/triggers/timeline.py),
so the order events arrive in does not change the outcome. Every statement works on a whole batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from cdp_hub.store.db import Store

__all__ = ["CancelledTimer", "DueTimer", "Timer", "TimerRepository"]


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer to schedule: what fires (``payload``: the trigger event, or ``{"intent": ...}``) and when."""

    profile_id: uuid.UUID
    trigger_id: uuid.UUID
    scenario: str
    fire_at: datetime
    event_id: uuid.UUID | None
    payload: dict[str, Any]
    occurred_at: datetime | None = None
    dedupe_key: str | None = None


class DueTimer(TypedDict):
    """A pending timer whose time has come (a plain dict: the stage reads it as it read the row).
    ``superseded``: a later trigger with the same hold-until key happened before this one's fire time."""

    profile_id: uuid.UUID
    trigger_id: uuid.UUID
    scenario: str
    payload: dict[str, Any] | None
    occurred_at: datetime | None
    fire_at: datetime
    superseded: bool


class CancelledTimer(TypedDict):
    """A timer a cancelling event stopped."""

    profile_id: uuid.UUID
    trigger_id: uuid.UUID
    scenario: str
    payload: dict[str, Any] | None


_CANCEL_PENDING = """
UPDATE scheduled_triggers t SET status = 'cancelled', updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS c(profile_id, scenario, at)
 WHERE t.profile_id = c.profile_id AND t.scenario = c.scenario AND t.status = 'pending'
   AND NOT (t.payload ? 'intent')
   AND COALESCE(t.occurred_at, (t.payload->>'occurred_at')::timestamptz) <= c.at
   AND c.at < t.fire_at
RETURNING t.profile_id, t.trigger_id, t.scenario, t.payload
"""
_SCHEDULE = """
INSERT INTO scheduled_triggers (profile_id, trigger_id, scenario, fire_at, event_id, payload,
                                occurred_at, dedupe_key)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[],
                     $6::jsonb[], $7::timestamptz[], $8::text[])
ON CONFLICT DO NOTHING
"""
_POSTPONE = """
INSERT INTO scheduled_triggers (profile_id, trigger_id, scenario, fire_at, event_id, payload,
                                status)
SELECT p, t, s, f, e, j, 'pending'
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[], $6::jsonb[])
     AS x(p, t, s, f, e, j)
ON CONFLICT DO NOTHING
"""
_MOVE_PENDING = """
UPDATE scheduled_triggers t SET profile_id = m.survivor, updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE t.profile_id = m.loser AND t.status = 'pending'
"""
_DUE = """
SELECT t.profile_id, t.trigger_id, t.scenario, t.payload, t.occurred_at, t.fire_at,
       (t.dedupe_key IS NOT NULL AND EXISTS (
           SELECT 1 FROM scheduled_triggers o
            WHERE o.profile_id = t.profile_id AND o.scenario = t.scenario
              AND o.dedupe_key = t.dedupe_key
              AND (o.occurred_at, o.event_id) > (t.occurred_at, t.event_id)
              AND o.occurred_at < t.fire_at)) AS superseded
  FROM scheduled_triggers t
 WHERE t.status = 'pending' AND t.fire_at <= $1 AND (t.fire_at <= $2 OR t.payload ? 'intent')
 ORDER BY t.fire_at LIMIT $3
"""
_SETTLE = """
UPDATE scheduled_triggers t SET status = $3, updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[]) AS f(profile_id, trigger_id)
 WHERE t.profile_id = f.profile_id AND t.trigger_id = f.trigger_id AND t.status = 'pending'
"""
_MARK_FIRED = """
UPDATE scheduled_triggers t SET status = 'fired', updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[]) AS f(profile_id, trigger_id)
 WHERE t.profile_id = f.profile_id AND t.trigger_id = f.trigger_id AND t.status = 'pending'
"""


class TimerRepository:
    """Schedules, cancels, moves and fires durable timers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def cancel_pending(self, cancels: Sequence[tuple[uuid.UUID, str, datetime]]) -> list[CancelledTimer]:
        """Cancel the pending timers of ``(profile_id, scenario)`` whose wait the cancelling event at the given
        time falls in (``occurred_at <= at < fire_at``): a timer started after the cancelling event (a cart
        updated after the order) stays, and so does one whose fire time came before it. Returns them."""
        if not cancels:
            return []
        rows = await self.store.fetch(
            _CANCEL_PENDING,
            [c[0] for c in cancels], [c[1] for c in cancels], [c[2] for c in cancels])
        seen: dict[tuple[uuid.UUID, uuid.UUID], CancelledTimer] = {}
        for r in rows:
            seen[(r["profile_id"], r["trigger_id"])] = CancelledTimer(
                profile_id=r["profile_id"], trigger_id=r["trigger_id"], scenario=r["scenario"], payload=r["payload"])
        return list(seen.values())

    async def schedule(self, timers: Sequence[Timer]) -> None:
        """Start the timers of delayed scenarios; one already scheduled is left as it is."""
        if not timers:
            return
        await self.store.execute(
            _SCHEDULE,
            [t.profile_id for t in timers], [t.trigger_id for t in timers], [t.scenario for t in timers],
            [t.fire_at for t in timers], [t.event_id for t in timers], [t.payload for t in timers],
            [t.occurred_at for t in timers], [t.dedupe_key for t in timers])

    async def postpone(self, timers: Sequence[Timer]) -> None:
        """Hold gated intents until their quiet hours end (``payload`` is ``{"intent": ...}``)."""
        if not timers:
            return
        await self.store.execute(
            _POSTPONE,
            [t.profile_id for t in timers], [t.trigger_id for t in timers], [t.scenario for t in timers],
            [t.fire_at for t in timers], [t.event_id for t in timers], [t.payload for t in timers])

    async def move_pending(self, moves: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Move the pending timers of merged-away profiles to their survivors (``(loser, survivor)`` pairs)."""
        if not moves:
            return
        await self.store.execute(
            _MOVE_PENDING,
            [m[0] for m in moves], [m[1] for m in moves])

    async def due(self, now: datetime, cutoff: datetime, limit: int) -> list[DueTimer]:
        """Up to ``limit`` due pending timers, the earliest first: delayed triggers with ``fire_at <= cutoff``
        (the watermark less the allowed lateness), quiet-hours postponements with ``fire_at <= now``. Each says
        whether a later trigger with the same hold-until key (event time, then event id) happened before its
        fire time."""
        rows = await self.store.fetch(
            _DUE, now, cutoff, limit)
        return [DueTimer(profile_id=r["profile_id"], trigger_id=r["trigger_id"], scenario=r["scenario"],
                         payload=r["payload"], occurred_at=r["occurred_at"], fire_at=r["fire_at"],
                         superseded=r["superseded"]) for r in rows]

    async def settle(self, ids: Sequence[tuple[uuid.UUID, uuid.UUID]], status: str) -> None:
        """Close pending ``(profile_id, trigger_id)`` timers as ``cancelled`` or ``superseded`` (decided at
        fire time, in event time)."""
        if not ids:
            return
        await self.store.execute(
            _SETTLE,
            [i[0] for i in ids], [i[1] for i in ids], status)

    async def mark_fired(self, ids: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Mark ``(profile_id, trigger_id)`` timers fired, once their intents are durable on the bus."""
        if not ids:
            return
        await self.store.execute(
            _MARK_FIRED,
            [i[0] for i in ids], [i[1] for i in ids])
