"""Fuzzy matching's statements: live golden records and identities in, ``merge_suggestions`` out.

A pair keeps one row (``profile_a < profile_b``); an open or auto row takes the new score and evidence, a
decided row (``merged``, ``rejected``) keeps its decision. The writes of one matching run share a
transaction (the caller's ``conn``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from cdp_hub.store.db import Store
from cdp_hub.store.profiles.records import Suggestion

__all__ = ["SuggestionStatements"]

_LIVE_GOLDEN = """
SELECT profile_id, golden FROM profiles WHERE merged_into IS NULL ORDER BY profile_id
"""
_LIVE_GOLDEN_OF = """
SELECT profile_id, golden FROM profiles WHERE profile_id = ANY($1::uuid[]) AND merged_into IS NULL ORDER BY profile_id
"""
# Live profiles created or changed since a time: their golden record (updated_at) or an identity of the kinds the
# matcher reads (seen since: the latest value may have changed).
_CHANGED_SINCE = """
SELECT profile_id FROM profiles WHERE merged_into IS NULL AND updated_at > $1
UNION
SELECT i.profile_id FROM identities i JOIN profiles p ON p.profile_id = i.profile_id
 WHERE p.merged_into IS NULL AND i.kind = ANY($2::text[]) AND i.last_seen > $1
"""
_LAST_MATCHER_RUN = """
SELECT started_at, parameters FROM matcher_runs WHERE matcher = $1 ORDER BY started_at DESC LIMIT 1
"""
_INSERT_MATCHER_RUN = """
INSERT INTO matcher_runs (run_id, matcher, started_at, incremental, profiles, compared, parameters)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
# Blocked values (shared store phones, placeholder e-mails) are no evidence of anything.
_LATEST_IDENTITIES = """
SELECT DISTINCT ON (i.profile_id, i.kind) i.profile_id, i.kind, i.value
  FROM identities i
  JOIN profiles p ON p.profile_id = i.profile_id AND p.merged_into IS NULL
 WHERE i.kind = ANY($1::text[]) AND ($2::uuid[] IS NULL OR i.profile_id = ANY($2::uuid[]))
   AND NOT EXISTS (SELECT 1 FROM blocked_identities b WHERE b.kind = i.kind AND b.value = i.value)
 ORDER BY i.profile_id, i.kind, i.last_seen DESC, i.value
"""
# One statement for the whole batch. `inserted` tells new rows from updated ones (xmax = 0 on insert).
_UPSERT = """
INSERT INTO merge_suggestions AS s (profile_a, profile_b, score, weight, evidence, status, matcher)
SELECT a, b, sc, w, ev::jsonb, st, $7
  FROM unnest($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::text[], $6::text[]) AS x(a, b, sc, w, ev, st)
ON CONFLICT (profile_a, profile_b) DO UPDATE
   SET score = EXCLUDED.score, weight = EXCLUDED.weight, evidence = EXCLUDED.evidence,
       status = EXCLUDED.status, matcher = EXCLUDED.matcher, updated_at = now()
 WHERE s.status IN ('open', 'auto')
   AND (s.score, s.weight, s.evidence, s.status, s.matcher)
       IS DISTINCT FROM (EXCLUDED.score, EXCLUDED.weight, EXCLUDED.evidence, EXCLUDED.status, EXCLUDED.matcher)
RETURNING profile_a, profile_b, status, (xmax = 0) AS inserted
"""
_MARK_STALE = """
UPDATE merge_suggestions s SET status = 'stale', updated_at = now()
 WHERE s.status IN ('open', 'auto')
   AND EXISTS (SELECT 1 FROM profiles p
                WHERE p.profile_id IN (s.profile_a, s.profile_b) AND p.merged_into IS NOT NULL)
"""
_SELECT_AUTO = """
SELECT profile_a, profile_b FROM merge_suggestions
 WHERE status = 'auto' AND profile_a = ANY($1::uuid[]) AND profile_b = ANY($2::uuid[])
"""
_DECIDE = """
UPDATE merge_suggestions SET status = $3, decided_at = now(), decided_by = $4, updated_at = now()
 WHERE profile_a = $1 AND profile_b = $2
"""
_LIST = """
SELECT profile_a, profile_b, score, weight, evidence, status, matcher, created_at, updated_at
  FROM merge_suggestions
 WHERE ($1::text IS NULL OR status = $1)
 ORDER BY score DESC, profile_a, profile_b
 LIMIT $2
"""


class SuggestionStatements:
    """Fuzzy matching's reads and ``merge_suggestions``; part of
    :class:`cdp_hub.store.profiles.ProfileRepository`."""

    store: Store

    async def live_goldens(self, profiles: Sequence[uuid.UUID] | None = None) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """``(profile id, golden record)`` of every live profile (``merged_into IS NULL``), or of those of
        ``profiles`` that are live, by id."""
        rows = await (self.store.fetch(_LIVE_GOLDEN) if profiles is None
                      else self.store.fetch(_LIVE_GOLDEN_OF, list(profiles)))
        return [(r["profile_id"], r["golden"] if isinstance(r["golden"], dict) else {}) for r in rows]

    async def changed_since(self, since: datetime, kinds: Sequence[str]) -> set[uuid.UUID]:
        """Live profiles whose golden record changed after ``since``, or that were seen with an identity of
        ``kinds`` after it (new profiles included)."""
        return {r["profile_id"] for r in await self.store.fetch(_CHANGED_SINCE, since, list(kinds))}

    async def last_matcher_run(self, matcher: str) -> tuple[datetime, dict[str, Any]] | None:
        """``(started_at, parameters)`` of the latest matching run of configuration ``matcher``, or None."""
        row = await self.store.fetchrow(_LAST_MATCHER_RUN, matcher)
        return None if row is None else (row["started_at"], row["parameters"])

    async def record_matcher_run(self, matcher: str, started_at: datetime, *, incremental: bool, profiles: int,
                                 compared: int, parameters: dict[str, Any]) -> None:
        """Remember a matching run: an incremental run starts from the latest one's time and parameters."""
        await self.store.execute(_INSERT_MATCHER_RUN, uuid.uuid4(), matcher, started_at, incremental, profiles,
                                 compared, parameters)

    async def latest_identities(self, kinds: Sequence[str],
                                profiles: Sequence[uuid.UUID] | None = None) -> list[tuple[uuid.UUID, str, str]]:
        """``(profile id, kind, value)``: the most recently seen value of each of ``kinds`` per live profile
        (of ``profiles``, when given); blocked values left out."""
        rows = await self.store.fetch(_LATEST_IDENTITIES, list(kinds), None if profiles is None else list(profiles))
        return [(r["profile_id"], r["kind"], r["value"]) for r in rows]

    @staticmethod
    async def upsert_suggestions(conn: asyncpg.Connection, profile_a: Sequence[uuid.UUID],
                                 profile_b: Sequence[uuid.UUID], scores: Sequence[float], weights: Sequence[float],
                                 evidence: Sequence[str], statuses: Sequence[str], matcher: str) -> tuple[int, int]:
        """Store scored pairs (columns of equal length, ``profile_a[i] < profile_b[i]``, ``evidence`` as JSON
        text) in one statement; ``(inserted, updated)`` rows. Decided and unchanged rows are left alone."""
        rows = await conn.fetch(_UPSERT, profile_a, profile_b, scores, weights, evidence, statuses, matcher)
        inserted = sum(1 for r in rows if r["inserted"])
        return inserted, len(rows) - inserted

    @staticmethod
    async def mark_stale_suggestions(conn: asyncpg.Connection) -> int:
        """Open or auto suggestions naming a profile merged away since become ``stale``; how many did."""
        tag: str = await conn.execute(_MARK_STALE)
        return int(tag.rsplit(" ", 1)[-1])

    @staticmethod
    async def auto_suggestions(conn: asyncpg.Connection, profile_a: Sequence[uuid.UUID],
                               profile_b: Sequence[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """The pairs among ``profile_a`` x ``profile_b`` whose suggestion is in status ``auto``."""
        rows = await conn.fetch(_SELECT_AUTO, profile_a, profile_b)
        return {(r["profile_a"], r["profile_b"]) for r in rows}

    async def decide_suggestion(self, profile_a: uuid.UUID, profile_b: uuid.UUID, status: str,
                                decided_by: str) -> bool:
        """Set the status of the suggestion ``(profile_a, profile_b)`` (in stored order) as decided by
        ``decided_by``; False when there is no such suggestion."""
        tag = await self.store.execute(_DECIDE, profile_a, profile_b, status, decided_by)
        return tag.endswith(" 1")

    async def suggestions(self, status: str | None, limit: int) -> list[Suggestion]:
        """Stored suggestions of ``status`` (None: every status), best first, at most ``limit``."""
        rows = await self.store.fetch(_LIST, status, limit)
        return [
            Suggestion(r["profile_a"], r["profile_b"], r["score"], r["weight"], r["evidence"], r["status"],
                       r["matcher"])
            for r in rows
        ]
