"""The ``events`` table: every resolved event with the profile it belongs to, the history of a profile.

    resolver batch (its transaction) ─▶ insert_resolved ─▶ events   (a replayed event id is not stored twice)
    merge / unmerge (their transaction) ─▶ move_to_survivors / identities_on + reassign
    profile views, dry runs, the demo summary ─▶ reads through the pool

Statements that run inside a caller's transaction take its connection as ``conn`` and need nothing of the
store, so they are static: the identity graph, which holds only a pool, runs them too. No value is ever
formatted into SQL; everything is a bind parameter.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from cdp_hub.store.db import Store

__all__ = ["EventRepository", "ReplayEvent"]

# An event is stored once per event id, whatever its time: `event_ids` is the unique key (`events` is
# partitioned by time and can only hold (event_id, occurred_at) unique), written first in the same statement.
_INSERT_RESOLVED = """
WITH x AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::text[]) AS x(id, o, p, t, s, r, rc, b)
), fresh AS (
    INSERT INTO event_ids (event_id, occurred_at) SELECT id, o FROM x ON CONFLICT DO NOTHING RETURNING event_id
)
INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
SELECT id, o, p, t, s, r, rc, b::jsonb FROM x JOIN fresh ON fresh.event_id = x.id
ON CONFLICT DO NOTHING
RETURNING event_id
"""
# Merges: the losers' events move to the survivor.
_MOVE_TO_SURVIVORS = """
UPDATE events e SET profile_id = m.survivor
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE e.profile_id = m.loser
"""
_IDENTITIES_ON = "SELECT event_id, occurred_at, body -> 'identities' AS ids FROM events WHERE profile_id = $1"
# (event_id, occurred_at) is the table's key: with the partition key the update finds each row's partition.
_REASSIGN = """
UPDATE events e SET profile_id = $1 FROM unnest($2::uuid[], $3::timestamptz[]) AS x(id, o)
 WHERE e.event_id = x.id AND e.occurred_at = x.o
"""
_BODIES_OF = "SELECT profile_id, body FROM events WHERE profile_id = ANY($1::uuid[])"
_RECENT_OF = """
SELECT event_id, type, source, occurred_at, body -> 'properties' AS properties FROM events
 WHERE profile_id = $1 ORDER BY occurred_at DESC, event_id LIMIT $2
"""
_REPLAY = """
SELECT event_id, occurred_at, source, body -> 'identities' AS ids FROM events
 ORDER BY occurred_at, received_at, event_id
"""
# Event-time cancels: for each check, whether the profile has an event of one of the types in [from, to).
_ANY_IN_WINDOW = """
SELECT x.i FROM unnest($1::int[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS x(i, p, ts, f, t)
 WHERE EXISTS (SELECT 1 FROM events e WHERE e.profile_id = x.p AND e.occurred_at >= x.f AND e.occurred_at < x.t
                                        AND e.type = ANY(string_to_array(x.ts, ',')))
"""
# Journeys: the events of some types a set of profiles had since a time (waits for an event, exits, goals,
# event counts are judged on them, in event time).
_OF_TYPES_SINCE = """
SELECT profile_id, body FROM events
 WHERE profile_id = ANY($1::uuid[]) AND type = ANY($2::text[]) AND occurred_at >= $3
 ORDER BY occurred_at, event_id
"""
_COUNT_BY_SOURCE_AND_TYPE = "SELECT source, type, count(*) AS n FROM events GROUP BY source, type ORDER BY source, type"


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """A stored event as a replay of the identity graph reads it: id, time, source and its identities
    (``{"kind": ..., "value": ...}`` objects, as stored)."""

    event_id: uuid.UUID
    occurred_at: datetime
    source: str
    identities: list[dict[str, str]]


class EventRepository:
    """Reads and writes of the ``events`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- inside a caller's transaction ---------------------------------------------------------------------

    @staticmethod
    async def insert_resolved(
        conn: asyncpg.Connection,
        event_ids: Sequence[uuid.UUID],
        occurred_at: Sequence[datetime],
        profile_ids: Sequence[uuid.UUID],
        types: Sequence[str],
        sources: Sequence[str],
        source_record_ids: Sequence[str | None],
        received_at: Sequence[datetime],
        bodies: Sequence[str],
    ) -> set[uuid.UUID]:
        """Store a resolved batch (columns of equal length, ``bodies`` as JSON text) in one statement; return
        the ids stored now (an event stored before, a replay, is left as it is and not returned)."""
        rows = await conn.fetch(_INSERT_RESOLVED, event_ids, occurred_at, profile_ids, types, sources,
                                source_record_ids, received_at, bodies)
        return {r["event_id"] for r in rows}

    @staticmethod
    async def move_to_survivors(conn: asyncpg.Connection, losers: Sequence[uuid.UUID],
                                survivors: Sequence[uuid.UUID]) -> None:
        """Give the events of ``losers[i]`` to ``survivors[i]`` (a merge)."""
        await conn.execute(_MOVE_TO_SURVIVORS, losers, survivors)

    @staticmethod
    async def identities_on(conn: asyncpg.Connection,
                            profile_id: uuid.UUID) -> list[tuple[uuid.UUID, datetime, list[dict[str, str]]]]:
        """``(event id, occurred at, identities as stored)`` of every event of ``profile_id`` (an unmerge
        decides by them which events go back)."""
        rows = await conn.fetch(_IDENTITIES_ON, profile_id)
        return [(r["event_id"], r["occurred_at"], r["ids"] or []) for r in rows]

    @staticmethod
    async def reassign(conn: asyncpg.Connection, profile_id: uuid.UUID, event_ids: Sequence[uuid.UUID],
                       occurred_at: Sequence[datetime]) -> None:
        """Give the events ``(event_ids[i], occurred_at[i])`` to ``profile_id``."""
        await conn.execute(_REASSIGN, profile_id, event_ids, occurred_at)

    @staticmethod
    async def bodies_of(conn: asyncpg.Connection,
                        profile_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """``(profile id, stored event body)`` of every event of ``profile_ids`` (to rebuild their traits)."""
        rows = await conn.fetch(_BODIES_OF, list(profile_ids))
        return [(r["profile_id"], r["body"]) for r in rows]

    # -- through the pool ----------------------------------------------------------------------------------

    async def analyze(self) -> None:
        """Fresh planner statistics of ``events`` (and its partitions) and ``event_ids`` after a bulk load."""
        await self.store.execute("ANALYZE event_ids")
        await self.store.execute("ANALYZE events")

    async def recent_of(self, profile_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` events of ``profile_id``, newest first: event_id, type, source, occurred_at and
        properties (``{}`` when the event has none)."""
        rows = await self.store.fetch(_RECENT_OF, profile_id, limit)
        return [{**dict(r), "properties": r["properties"] or {}} for r in rows]

    async def replay(self, *, prefetch: int) -> AsyncGenerator[ReplayEvent, None]:
        """Every stored event in time order (a server-side cursor, ``prefetch`` rows per round trip, in a
        transaction on a connection of its own; close the generator, e.g. with ``contextlib.aclosing``, to
        give the connection back early)."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(_REPLAY, prefetch=prefetch):
                yield ReplayEvent(row["event_id"], row["occurred_at"], row["source"], row["ids"] or [])

    async def any_in_window(self, checks: Sequence[tuple[uuid.UUID, Sequence[str], datetime, datetime]]) -> set[int]:
        """``(profile_id, event types, from, to)`` checks: the indexes of those whose profile has an event of
        one of the types with ``from <= occurred_at < to`` (one statement for the batch)."""
        if not checks:
            return set()
        rows = await self.store.fetch(
            _ANY_IN_WINDOW, list(range(len(checks))), [c[0] for c in checks], [",".join(c[1]) for c in checks],
            [c[2] for c in checks], [c[3] for c in checks])
        return {r["i"] for r in rows}

    async def of_types_since(self, profile_ids: Sequence[uuid.UUID], types: Sequence[str],
                             since: datetime) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """The stored events (their JSON) of ``types`` the profiles had at or after ``since``, in event-time
        order: what a journey's waits, exits, goals and event counts are judged on."""
        if not profile_ids or not types:
            return []
        rows = await self.store.fetch(_OF_TYPES_SINCE, list(profile_ids), list(types), since)
        return [(r["profile_id"], r["body"]) for r in rows]

    async def of_profile(self, profile_id: uuid.UUID, limit: int) -> list[bytes]:
        """The stored events of a profile (their JSON), oldest first: what a scenario simulation replays."""
        rows = await self.store.fetch(
            "SELECT body::text AS body FROM events WHERE profile_id = $1 ORDER BY occurred_at, event_id LIMIT $2",
            profile_id, limit)
        return [r["body"].encode() for r in rows]

    async def count_by_source_and_type(self) -> list[dict[str, Any]]:
        """``{"source", "type", "n"}`` per source and event type, ordered by both."""
        return [dict(r) for r in await self.store.fetch(_COUNT_BY_SOURCE_AND_TYPE)]
