"""The fuzzy matcher's index in PostgreSQL: ``matcher_profiles`` (prepared values) and ``matcher_keys``.

    full run         ─▶ replace_matcher_index: the whole index of one matcher, by COPY, with its term counts
    incremental run  ─▶ prune_matcher_index (profiles no longer live) ─▶ update_matcher_index (changed ones)
                        ─▶ add_matcher_terms (the counts moved by the rows removed and added)
                     ─▶ matcher_blocks (exact blocks of the changed keys) + matcher_windows (sorted passes:
                        the rows next to each changed key, both sides) ─▶ matcher_prepared (their values)
                     ─▶ matcher_term_counts (the whole set's counts of the values at hand, and its size)

Keys compare in byte order (the column is ``COLLATE "C"``), which is the order the matcher sorts them in; a
profile's rows are ordered by ``profile_id`` as the full run reads them, so ties break the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from cdp_hub.store.db import Store

__all__ = ["MatcherIndexStatements"]

_DELETE_PROFILES = "DELETE FROM matcher_profiles WHERE matcher = $1"
_DELETE_KEYS = "DELETE FROM matcher_keys WHERE matcher = $1"
_DELETE_TERMS = "DELETE FROM matcher_terms WHERE matcher = $1"
_DELETE_SOME_PROFILES = """
DELETE FROM matcher_profiles WHERE matcher = $1 AND profile_id = ANY($2::uuid[]) RETURNING profile_id, prepared
"""
_DELETE_SOME_KEYS = "DELETE FROM matcher_keys WHERE matcher = $1 AND profile_id = ANY($2::uuid[])"
# Profiles merged away or deleted since the index was written.
_GONE = """
SELECT m.profile_id FROM matcher_profiles m
 WHERE m.matcher = $1
   AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.profile_id = m.profile_id AND p.merged_into IS NULL)
"""
# How many profiles each (kind, key) block holds, counted up to `cap` (enough to tell a big block).
_BLOCK_SIZES = """
SELECT c.kind, c.key,
       (SELECT count(*) FROM (SELECT 1 FROM matcher_keys k
                               WHERE k.matcher = $1 AND k.kind = c.kind AND k.key = c.key COLLATE "C"
                               LIMIT c.cap) AS s) AS n
  FROM unnest($2::smallint[], $3::text[], $4::int[]) AS c(kind, key, cap)
"""
_BLOCKS = """
SELECT DISTINCT k.profile_id
  FROM matcher_keys k
  JOIN unnest($2::smallint[], $3::text[]) AS c(kind, key) ON k.kind = c.kind AND k.key = c.key COLLATE "C"
 WHERE k.matcher = $1
"""
# Sorted passes: up to `lim` rows before and after each changed key in (key, name_sort, profile_id) order (name_sort
# is '' in a sorted pass, so that is (key, profile_id)).
_WINDOWS = """
SELECT n.profile_id
  FROM unnest($2::smallint[], $3::text[], $4::uuid[], $5::int[]) AS c(kind, key, profile_id, lim)
 CROSS JOIN LATERAL (
       (SELECT k.profile_id FROM matcher_keys k
         WHERE k.matcher = $1 AND k.kind = c.kind
           AND (k.key, k.name_sort, k.profile_id) < (c.key COLLATE "C", '' COLLATE "C", c.profile_id)
         ORDER BY k.key DESC, k.name_sort DESC, k.profile_id DESC LIMIT c.lim)
       UNION ALL
       (SELECT k.profile_id FROM matcher_keys k
         WHERE k.matcher = $1 AND k.kind = c.kind
           AND (k.key, k.name_sort, k.profile_id) > (c.key COLLATE "C", '' COLLATE "C", c.profile_id)
         ORDER BY k.key, k.name_sort, k.profile_id LIMIT c.lim)
 ) AS n
"""
# Blocks too big to pair all-to-all: up to `lim` rows before and after a profile within its key, in name order.
_BLOCK_WINDOWS = """
SELECT n.profile_id
  FROM unnest($2::smallint[], $3::text[], $4::text[], $5::uuid[], $6::int[]) AS c(kind, key, name_sort, profile_id, lim)
 CROSS JOIN LATERAL (
       (SELECT k.profile_id FROM matcher_keys k
         WHERE k.matcher = $1 AND k.kind = c.kind AND k.key = c.key COLLATE "C"
           AND (k.name_sort, k.profile_id) < (c.name_sort COLLATE "C", c.profile_id)
         ORDER BY k.name_sort DESC, k.profile_id DESC LIMIT c.lim)
       UNION ALL
       (SELECT k.profile_id FROM matcher_keys k
         WHERE k.matcher = $1 AND k.kind = c.kind AND k.key = c.key COLLATE "C"
           AND (k.name_sort, k.profile_id) > (c.name_sort COLLATE "C", c.profile_id)
         ORDER BY k.name_sort, k.profile_id LIMIT c.lim)
 ) AS n
"""
_PREPARED = """
SELECT profile_id, prepared FROM matcher_profiles WHERE matcher = $1 AND profile_id = ANY($2::uuid[])
 ORDER BY profile_id
"""
_TERM_COUNTS = """
SELECT t.kind, t.key, t.n
  FROM matcher_terms t
  JOIN unnest($2::smallint[], $3::text[]) AS c(kind, key) ON t.kind = c.kind AND t.key = c.key COLLATE "C"
 WHERE t.matcher = $1
"""
_ADD_TERMS = """
INSERT INTO matcher_terms AS t (matcher, kind, key, n)
SELECT $1, kind, key, n FROM unnest($2::smallint[], $3::text[], $4::bigint[]) AS c(kind, key, n)
ON CONFLICT (matcher, kind, key) DO UPDATE SET n = t.n + EXCLUDED.n
"""
_DROP_ZERO_TERMS = """
DELETE FROM matcher_terms WHERE matcher = $1 AND n <= 0 AND (kind, key) IN (
    SELECT kind, key COLLATE "C" FROM unnest($2::smallint[], $3::text[]) AS c(kind, key))
"""
# (kind 0, key ''): the number of profiles in the index.
_POPULATION = "SELECT n FROM matcher_terms WHERE matcher = $1 AND kind = 0 AND key = ''"

_PROFILE_COLUMNS = ("matcher", "profile_id", "prepared")
_KEY_COLUMNS = ("matcher", "kind", "key", "name_sort", "profile_id")
_TERM_COLUMNS = ("matcher", "kind", "key", "n")

PreparedRow = tuple[uuid.UUID, list[str | None]]
KeyRow = tuple[int, str, str, uuid.UUID]  # (pass, key, name order, profile)
TermRow = tuple[int, str, int]  # (kind, value, profiles): kind < 0 a term-frequency field, (0, '') all profiles


class MatcherIndexStatements:
    """The fuzzy matcher's index; part of :class:`cdp_hub.store.profiles.ProfileRepository`."""

    store: Store

    @staticmethod
    async def replace_matcher_index(conn: asyncpg.Connection, matcher: str, profiles: Sequence[PreparedRow],
                                    keys: Sequence[KeyRow], terms: Sequence[TermRow]) -> None:
        """The whole index of ``matcher``, replaced (a full run); in the caller's transaction."""
        await conn.execute(_DELETE_PROFILES, matcher)
        await conn.execute(_DELETE_KEYS, matcher)
        await conn.execute(_DELETE_TERMS, matcher)
        await _copy(conn, matcher, profiles, keys)
        if terms:
            await conn.copy_records_to_table("matcher_terms", columns=_TERM_COLUMNS,
                                             records=[(matcher, kind, key, n) for kind, key, n in terms])
        # Planner statistics for the tables just rewritten: an incremental run's lookups are index scans only
        # when the planner knows the tables are large (a fresh COPY looks empty to it until autovacuum).
        for table in ("matcher_profiles", "matcher_keys", "matcher_terms"):
            await conn.execute(f"ANALYZE {table}")

    @staticmethod
    async def update_matcher_index(conn: asyncpg.Connection, matcher: str, profiles: Sequence[PreparedRow],
                                   keys: Sequence[KeyRow]) -> list[PreparedRow]:
        """Replace the rows of ``profiles`` (changed or new) in the index of ``matcher``; the rows replaced (the
        caller moves the term counts by them, :meth:`add_matcher_terms`)."""
        if not profiles:
            return []
        replaced = await _delete(conn, matcher, [p for p, _ in profiles])
        await _copy(conn, matcher, profiles, keys)
        return replaced

    @staticmethod
    async def prune_matcher_index(conn: asyncpg.Connection, matcher: str) -> list[PreparedRow]:
        """Drop the rows of profiles that are no longer live (merged away, deleted); the rows dropped."""
        gone = [r["profile_id"] for r in await conn.fetch(_GONE, matcher)]
        return await _delete(conn, matcher, gone) if gone else []

    @staticmethod
    async def add_matcher_terms(conn: asyncpg.Connection, matcher: str, deltas: Sequence[TermRow]) -> None:
        """Move the term counts of ``matcher`` by ``deltas`` (rows added: +1, rows removed: -1)."""
        if not deltas:
            return
        kinds, keys, counts = [d[0] for d in deltas], [d[1] for d in deltas], [d[2] for d in deltas]
        await conn.execute(_ADD_TERMS, matcher, kinds, keys, counts)
        await conn.execute(_DROP_ZERO_TERMS, matcher, kinds, keys)

    async def matcher_population(self, matcher: str) -> int:
        """Profiles in the index of ``matcher`` (0: there is none)."""
        return int(await self.store.fetchval(_POPULATION, matcher) or 0)

    async def matcher_block_sizes(self, matcher: str, kinds: Sequence[int], keys: Sequence[str],
                                  caps: Sequence[int]) -> dict[tuple[int, str], int]:
        """How many profiles hold each ``(kind, key)``, counted up to its ``cap``."""
        rows = await self.store.fetch(_BLOCK_SIZES, matcher, kinds, keys, caps)
        return {(r["kind"], r["key"]): r["n"] for r in rows}

    async def matcher_block_windows(self, matcher: str, kinds: Sequence[int], keys: Sequence[str],
                                    names: Sequence[str], profiles: Sequence[uuid.UUID],
                                    limits: Sequence[int]) -> set[uuid.UUID]:
        """For each ``(kind, key, name order, profile)``: the ``limit`` profiles before and after it in
        ``(name order, profile_id)`` order among the rows of that kind and key."""
        rows = await self.store.fetch(_BLOCK_WINDOWS, matcher, kinds, keys, names, profiles, limits)
        return {r["profile_id"] for r in rows}

    async def matcher_blocks(self, matcher: str, kinds: Sequence[int], keys: Sequence[str]) -> set[uuid.UUID]:
        """Every profile holding one of the ``(kind, key)`` pairs."""
        return {r["profile_id"] for r in await self.store.fetch(_BLOCKS, matcher, kinds, keys)}

    async def matcher_windows(self, matcher: str, kinds: Sequence[int], keys: Sequence[str],
                              profiles: Sequence[uuid.UUID], limits: Sequence[int]) -> set[uuid.UUID]:
        """For each ``(kind, key, profile)``: the ``limit`` profiles before and after it in ``(key, profile_id)``
        order among that kind's rows."""
        rows = await self.store.fetch(_WINDOWS, matcher, kinds, keys, profiles, limits)
        return {r["profile_id"] for r in rows}

    async def matcher_prepared(self, matcher: str, profiles: Sequence[uuid.UUID]) -> list[PreparedRow]:
        """``(profile id, prepared values)`` of ``profiles``, by profile id."""
        rows = await self.store.fetch(_PREPARED, matcher, profiles)
        return [(r["profile_id"], list(r["prepared"])) for r in rows]

    async def matcher_term_counts(self, matcher: str, kinds: Sequence[int],
                                  keys: Sequence[str]) -> dict[tuple[int, str], int]:
        """The stored counts of the ``(kind, key)`` pairs (absent: none)."""
        return {(r["kind"], r["key"]): r["n"] for r in await self.store.fetch(_TERM_COUNTS, matcher, kinds, keys)}


async def _delete(conn: asyncpg.Connection, matcher: str, profiles: Sequence[uuid.UUID]) -> list[PreparedRow]:
    rows = await conn.fetch(_DELETE_SOME_PROFILES, matcher, profiles)
    await conn.execute(_DELETE_SOME_KEYS, matcher, profiles)
    return [(r["profile_id"], list(r["prepared"])) for r in rows]


async def _copy(conn: asyncpg.Connection, matcher: str, profiles: Sequence[PreparedRow],
                keys: Sequence[KeyRow]) -> None:
    if profiles:
        await conn.copy_records_to_table("matcher_profiles", columns=_PROFILE_COLUMNS,
                                         records=[(matcher, p, prepared) for p, prepared in profiles])
    if keys:
        await conn.copy_records_to_table("matcher_keys", columns=_KEY_COLUMNS,
                                         records=[(matcher, kind, key, name, p) for kind, key, name, p in keys])
