"""Durable timers (``scheduled_triggers``): delayed scenarios and quiet-hour postponements.

    pending ─fire_at passed, intent published─▶ fired
       └────cancel_on event after the start───▶ cancelled

A timer is keyed by ``(profile_id, trigger_id)``; trigger ids are deterministic (scenario + event, or the
postponed message), so scheduling the same timer twice is a no-op. Every statement works on a whole batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from cdp_hub.store.db import Store

__all__ = ["DueTimer", "Timer", "TimerRepository"]


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer to schedule: what fires (``payload``: the trigger event, or ``{"intent": ...}``) and when."""

    profile_id: uuid.UUID
    trigger_id: uuid.UUID
    scenario: str
    fire_at: datetime
    event_id: uuid.UUID | None
    payload: dict[str, Any]


class DueTimer(TypedDict):
    """A pending timer whose time has come (a plain dict: the stage reads it as it read the row)."""

    profile_id: uuid.UUID
    trigger_id: uuid.UUID
    scenario: str
    payload: dict[str, Any] | None


class TimerRepository:
    """Schedules, cancels, moves and fires durable timers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def cancel_pending(self, cancels: Sequence[tuple[uuid.UUID, str, datetime]]) -> None:
        """Cancel the pending timers of ``(profile_id, scenario)`` started by an event at or before the given
        time: a timer started after the cancelling event (a cart updated after the order) stays."""
        if not cancels:
            return
        await self.store.execute(
            """UPDATE scheduled_triggers t SET status = 'cancelled', updated_at = now()
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS c(profile_id, scenario, at)
               WHERE t.profile_id = c.profile_id AND t.scenario = c.scenario AND t.status = 'pending'
                 AND (t.payload->>'occurred_at')::timestamptz <= c.at""",
            [c[0] for c in cancels], [c[1] for c in cancels], [c[2] for c in cancels])

    async def schedule(self, timers: Sequence[Timer]) -> None:
        """Start the timers of delayed scenarios; one already scheduled is left as it is."""
        if not timers:
            return
        await self.store.execute(
            """INSERT INTO scheduled_triggers (profile_id, trigger_id, scenario, fire_at, event_id, payload)
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[],
                                    $6::jsonb[])
               ON CONFLICT DO NOTHING""",
            [t.profile_id for t in timers], [t.trigger_id for t in timers], [t.scenario for t in timers],
            [t.fire_at for t in timers], [t.event_id for t in timers], [t.payload for t in timers])

    async def postpone(self, timers: Sequence[Timer]) -> None:
        """Hold gated intents until their quiet hours end (``payload`` is ``{"intent": ...}``)."""
        if not timers:
            return
        await self.store.execute(
            """INSERT INTO scheduled_triggers (profile_id, trigger_id, scenario, fire_at, event_id, payload,
                                               status)
               SELECT p, t, s, f, e, j, 'pending'
               FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[], $6::jsonb[])
                    AS x(p, t, s, f, e, j)
               ON CONFLICT DO NOTHING""",
            [t.profile_id for t in timers], [t.trigger_id for t in timers], [t.scenario for t in timers],
            [t.fire_at for t in timers], [t.event_id for t in timers], [t.payload for t in timers])

    async def move_pending(self, moves: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Move the pending timers of merged-away profiles to their survivors (``(loser, survivor)`` pairs)."""
        if not moves:
            return
        await self.store.execute(
            """UPDATE scheduled_triggers t SET profile_id = m.survivor, updated_at = now()
               FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
               WHERE t.profile_id = m.loser AND t.status = 'pending'""",
            [m[0] for m in moves], [m[1] for m in moves])

    async def due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Up to ``limit`` pending timers due at ``now``, the earliest first."""
        rows = await self.store.fetch(
            """SELECT profile_id, trigger_id, scenario, payload FROM scheduled_triggers
               WHERE status = 'pending' AND fire_at <= $1 ORDER BY fire_at LIMIT $2""", now, limit)
        return [DueTimer(profile_id=r["profile_id"], trigger_id=r["trigger_id"], scenario=r["scenario"],
                         payload=r["payload"]) for r in rows]

    async def mark_fired(self, ids: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Mark ``(profile_id, trigger_id)`` timers fired, once their intents are durable on the bus."""
        if not ids:
            return
        await self.store.execute(
            """UPDATE scheduled_triggers t SET status = 'fired', updated_at = now()
               FROM unnest($1::uuid[], $2::uuid[]) AS f(profile_id, trigger_id)
               WHERE t.profile_id = f.profile_id AND t.trigger_id = f.trigger_id AND t.status = 'pending'""",
            [i[0] for i in ids], [i[1] for i in ids])
