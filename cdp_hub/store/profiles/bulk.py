"""The bulk import's set-wise statements: staging tables, connected components, profiles and golden records.

    COPY ─▶ bulk_rec, bulk_ident, bulk_consent (session temp tables) ─▶ dedupe ─▶ label propagation (rounds)
      ─▶ components the rules must judge (handed back) ─▶ one profile per component ─▶ identities, events,
         trait observations ─▶ golden records

Everything runs on the import's connection ``conn``, inside its one transaction (temporary tables are
dropped on commit). Statements are rendered per dialect (``render_sql``): the ``/*gp: ... */`` markers give
Greenplum the distribution keys, chosen so the big joins are co-located (records by ``rec``, keys by
``(kind, value)``).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import asyncpg

from cdp_hub.store.db import Store
from cdp_hub.store.migrations import render_sql

__all__ = ["BulkStatements"]

_CREATE_STAGING = [
    """CREATE TEMP TABLE bulk_rec (
        rec bigint NOT NULL, event_id uuid NOT NULL, occurred_at timestamptz NOT NULL,
        source_record_id text, traits text NOT NULL, body text NOT NULL
    ) ON COMMIT DROP /*gp: DISTRIBUTED BY (rec) */""",
    """CREATE TEMP TABLE bulk_ident (rec bigint NOT NULL, kind text NOT NULL, value text NOT NULL,
                                    seen_at timestamptz NOT NULL)
       ON COMMIT DROP /*gp: DISTRIBUTED BY (kind, value) */""",
    # Consent statements of the records (consent_* columns); the consent repository moves them to consents.
    """CREATE TEMP TABLE bulk_consent (rec bigint NOT NULL, event_id uuid NOT NULL, channel text NOT NULL,
                                      purpose text NOT NULL, status text NOT NULL, occurred_at timestamptz NOT NULL,
                                      evidence text NOT NULL)
       ON COMMIT DROP /*gp: DISTRIBUTED BY (event_id) */""",
]

# A record listed twice (the same event id: same source record) counts once; records stored by an earlier
# import are not stored or observed again.
_DROP_DUPLICATES = """
WITH dup AS (
    SELECT rec FROM (SELECT rec, row_number() OVER (PARTITION BY event_id ORDER BY rec) AS n FROM bulk_rec) s
     WHERE n > 1
    UNION
    SELECT b.rec FROM bulk_rec b JOIN event_ids e ON e.event_id = b.event_id
)
DELETE FROM bulk_rec b USING dup WHERE b.rec = dup.rec
"""
_DROP_ORPHAN_IDENTS = "DELETE FROM bulk_ident i WHERE NOT EXISTS (SELECT 1 FROM bulk_rec r WHERE r.rec = i.rec)"
_DROP_BLOCKED = """
DELETE FROM bulk_ident i USING blocked_identities b WHERE i.kind = b.kind AND i.value = b.value
"""

# Connected components by label propagation over integer ids: every key and record carries the smallest
# label it can reach; records start with their own number, profiles that exist already with negative
# numbers (so a component that touches an existing profile is labelled by one). Each round builds new
# tables (CREATE TABLE AS) rather than updating rows: no dead tuples, and hash aggregates over integers.
# Only keys shared by several records (or known already) can join records, so the rounds run over those
# edges alone; every other record is a component of its own.
_CREATE_KEYS = """
CREATE TEMP TABLE bulk_keys ON COMMIT DROP AS
SELECT row_number() OVER () AS kid, kind, value, min(rec) AS lbl, count(*) AS n FROM bulk_ident
 GROUP BY kind, value
/*gp: DISTRIBUTED BY (kind, value) */
"""
_CREATE_EDGES = """
CREATE TEMP TABLE bulk_edge ON COMMIT DROP AS
SELECT i.rec, k.kid, i.seen_at FROM bulk_ident i JOIN bulk_keys k ON k.kind = i.kind AND k.value = i.value
/*gp: DISTRIBUTED BY (rec) */
"""
_CREATE_EXISTING = """
CREATE TEMP TABLE bulk_exist ON COMMIT DROP AS
SELECT k.kid, i.profile_id FROM bulk_keys k JOIN identities i ON i.kind = k.kind AND i.value = k.value
/*gp: DISTRIBUTED BY (kid) */
"""
_CREATE_PROFILE_LABELS = """
CREATE TEMP TABLE bulk_plabel ON COMMIT DROP AS
SELECT profile_id, -row_number() OVER (ORDER BY profile_id) AS lbl
  FROM (SELECT DISTINCT profile_id FROM bulk_exist) s
/*gp: DISTRIBUTED BY (profile_id) */
"""
_CREATE_KEY_LABELS = """
CREATE TEMP TABLE bulk_kl ON COMMIT DROP AS
SELECT k.kid, coalesce(p.lbl, k.lbl) AS lbl
  FROM bulk_keys k LEFT JOIN bulk_exist e ON e.kid = k.kid LEFT JOIN bulk_plabel p ON p.profile_id = e.profile_id
 WHERE k.n > 1 OR e.kid IS NOT NULL
/*gp: DISTRIBUTED BY (kid) */
"""
_CREATE_SHARED_EDGES = """
CREATE TEMP TABLE bulk_sedge ON COMMIT DROP AS
SELECT e.rec, e.kid FROM bulk_edge e JOIN bulk_kl k ON k.kid = e.kid
/*gp: DISTRIBUTED BY (rec) */
"""
_ROUND_RECORDS = """
CREATE TEMP TABLE bulk_rl_next ON COMMIT DROP AS
SELECT e.rec, min(k.lbl) AS lbl FROM bulk_sedge e JOIN bulk_kl k ON k.kid = e.kid GROUP BY e.rec
/*gp: DISTRIBUTED BY (rec) */
"""
_ROUND_RECORDS_CHANGED = "SELECT count(*) FROM bulk_rl_next n JOIN bulk_rl r ON r.rec = n.rec WHERE n.lbl <> r.lbl"
_ROUND_KEYS = """
CREATE TEMP TABLE bulk_kl_next ON COMMIT DROP AS
SELECT e.kid, min(r.lbl) AS lbl FROM bulk_sedge e JOIN bulk_rl r ON r.rec = e.rec GROUP BY e.kid
/*gp: DISTRIBUTED BY (kid) */
"""
_SWAP_RECORDS = ["DROP TABLE IF EXISTS bulk_rl", "ALTER TABLE bulk_rl_next RENAME TO bulk_rl"]
_SWAP_KEYS = ["DROP TABLE bulk_kl", "ALTER TABLE bulk_kl_next RENAME TO bulk_kl"]
# After the rounds: every record (a record without shared keys is its own component) and every key.
_ALL_RECORDS = """
CREATE TEMP TABLE bulk_rl_next ON COMMIT DROP AS
SELECT rec, lbl FROM bulk_rl
UNION ALL
SELECT r.rec, r.rec FROM bulk_rec r WHERE NOT EXISTS (SELECT 1 FROM bulk_rl l WHERE l.rec = r.rec)
/*gp: DISTRIBUTED BY (rec) */
"""
_ALL_KEYS = """
CREATE TEMP TABLE bulk_kl_next ON COMMIT DROP AS
SELECT e.kid, min(r.lbl) AS lbl FROM bulk_edge e JOIN bulk_rl r ON r.rec = e.rec GROUP BY e.kid
/*gp: DISTRIBUTED BY (kid) */
"""
# Existing profiles per component (a component may join several: they are merged).
_CREATE_COMPONENT_PROFILES = """
CREATE TEMP TABLE bulk_cexist ON COMMIT DROP AS
SELECT DISTINCT k.lbl, e.profile_id, p.created_at
  FROM bulk_kl k JOIN bulk_exist e ON e.kid = k.kid
  JOIN profiles p ON p.profile_id = e.profile_id
/*gp: DISTRIBUTED BY (lbl) */
"""

# Components the set-wise path must not decide: more values of a limited kind than the rules allow
# (counting what the existing profiles hold), more records / existing profiles than the merge cap, or two
# existing profiles kept apart (an operator's split, a resolver's refusal).
# They go through the streaming resolver, event by event, with its conflicts and caps.
_FLAGGED_COMPONENTS = """
WITH lim AS (SELECT * FROM unnest($1::text[], $2::int4[]) AS x(kind, max_n)),
vals AS (
    SELECT l.lbl, k.kind, k.value FROM bulk_keys k JOIN lim ON lim.kind = k.kind JOIN bulk_kl l ON l.kid = k.kid
    UNION
    SELECT c.lbl, i.kind, i.value FROM bulk_cexist c JOIN identities i ON i.profile_id = c.profile_id
      JOIN lim ON lim.kind = i.kind
)
SELECT v.lbl FROM vals v JOIN lim ON lim.kind = v.kind GROUP BY v.lbl, v.kind, lim.max_n
HAVING count(DISTINCT v.value) > lim.max_n
UNION
SELECT lbl FROM bulk_rl GROUP BY lbl HAVING count(*) > $3
UNION
SELECT lbl FROM bulk_cexist GROUP BY lbl HAVING count(*) > $3
UNION
SELECT a.lbl FROM bulk_cexist a JOIN bulk_cexist b ON b.lbl = a.lbl
  JOIN profile_splits s ON s.profile_id = a.profile_id AND s.other_profile_id = b.profile_id
"""
# The household rule's evidence in components with more than one first name or birth date (counting the
# golden records of the existing profiles they join): the importer decides in Python whether the names are
# one person's (Саша / Aleksandr) and flags the component when not, or when the birth dates differ.
_PERSON_EVIDENCE = """
WITH linked AS (  -- components of several records, or joining a profile: a lone record disagrees with nobody
    SELECT lbl FROM bulk_rl GROUP BY lbl HAVING count(*) > 1
    UNION
    SELECT lbl FROM bulk_cexist
), per AS (
    SELECT l.lbl, r.traits::jsonb ->> 'first_name' AS first_name, r.traits::jsonb ->> 'birth_date' AS birth_date
      FROM bulk_rec r JOIN bulk_rl l ON l.rec = r.rec JOIN linked ON linked.lbl = l.lbl
    UNION ALL
    SELECT c.lbl, p.golden ->> 'first_name', p.golden ->> 'birth_date'
      FROM bulk_cexist c JOIN profiles p ON p.profile_id = c.profile_id
), several AS (
    SELECT lbl FROM per GROUP BY lbl HAVING count(DISTINCT lower(first_name)) > 1 OR count(DISTINCT birth_date) > 1
)
SELECT DISTINCT per.lbl, per.first_name, per.birth_date FROM per JOIN several ON several.lbl = per.lbl
"""
# Components holding a value already shared between profiles: the streaming resolver decides (household rule).
_SHARED_COMPONENTS = """
SELECT DISTINCT l.lbl FROM bulk_keys k JOIN shared_identities s ON s.kind = k.kind AND s.value = k.value
  JOIN bulk_kl l ON l.kid = k.kid
"""
_FLAGGED_RECORDS = """
SELECT r.body FROM bulk_rec r JOIN bulk_rl l ON l.rec = r.rec WHERE l.lbl = ANY($1::bigint[])
 ORDER BY r.occurred_at, r.rec
"""
_DROP_FLAGGED = [
    "DELETE FROM bulk_rec r USING bulk_rl l WHERE l.rec = r.rec AND l.lbl = ANY($1::bigint[])",
    "DELETE FROM bulk_rl WHERE lbl = ANY($1::bigint[])",
    "DELETE FROM bulk_kl WHERE lbl = ANY($1::bigint[])",
    "DELETE FROM bulk_cexist WHERE lbl = ANY($1::bigint[])",
]

# One profile per component: the oldest existing profile, or a new one whose id derives from the
# component's first record (deterministic: re-running a failed import creates the same ids).
_CREATE_COMPONENT_TARGET = """
CREATE TEMP TABLE bulk_cprof ON COMMIT DROP AS
SELECT DISTINCT ON (c.lbl) c.lbl, c.profile_id, false AS is_new, NULL::uuid AS created_by_event
  FROM bulk_cexist c ORDER BY c.lbl, c.created_at, c.profile_id
/*gp: DISTRIBUTED BY (lbl) */
"""
# A new component's label is its smallest record number: that record names the profile and created it.
_ADD_NEW_TARGETS = """
INSERT INTO bulk_cprof (lbl, profile_id, is_new, created_by_event)
SELECT c.lbl, md5($1 || ':' || r.event_id::text)::uuid, true, r.event_id
  FROM (SELECT DISTINCT lbl FROM bulk_rl WHERE lbl > 0) c JOIN bulk_rec r ON r.rec = c.lbl
"""
_COMPONENT_LOSERS = """
SELECT c.profile_id AS loser, t.profile_id AS survivor FROM bulk_cexist c JOIN bulk_cprof t ON t.lbl = c.lbl
 WHERE c.profile_id <> t.profile_id
"""
# Trait observations per component, aggregated once: stored as provenance, and the golden record of a new
# profile is computed from them before the profile is written (no second pass over profile_traits).
_CREATE_OBSERVATIONS = """
CREATE TEMP TABLE bulk_obs ON COMMIT DROP AS
SELECT l.lbl, kv.key AS trait, kv.value, max(r.occurred_at) AS observed_at, min(r.occurred_at) AS first_seen,
       count(*) AS seen_count
  FROM bulk_rec r JOIN bulk_rl l ON l.rec = r.rec, jsonb_each(r.traits::jsonb) AS kv
 GROUP BY l.lbl, kv.key, kv.value
/*gp: DISTRIBUTED BY (lbl) */
"""
# One source, so survivorship among its values: most frequent, first seen, or most recent ($1 traits,
# $2 their strategies, $3 the default strategy).
_NEW_GOLDEN = """
CREATE TEMP TABLE bulk_golden ON COMMIT DROP AS
WITH rules AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x(trait, strategy)),
best AS (
    SELECT DISTINCT ON (o.lbl, o.trait) o.lbl, o.trait, o.value
      FROM bulk_obs o LEFT JOIN rules r ON r.trait = o.trait
     ORDER BY o.lbl, o.trait,
              CASE WHEN coalesce(r.strategy, $3) = 'most_frequent' THEN o.seen_count END DESC NULLS LAST,
              CASE WHEN coalesce(r.strategy, $3) = 'first_non_empty' THEN o.first_seen END ASC NULLS LAST,
              o.observed_at DESC, o.value::text COLLATE "C" DESC
)
SELECT lbl, jsonb_object_agg(trait, value) AS golden FROM best GROUP BY lbl
/*gp: DISTRIBUTED BY (lbl) */
"""
_INSERT_NEW_PROFILES = """
INSERT INTO profiles (profile_id, created_by_event, created_at, updated_at, golden)
SELECT t.profile_id, t.created_by_event, now(), now(), coalesce(g.golden, '{}'::jsonb)
  FROM bulk_cprof t LEFT JOIN bulk_golden g ON g.lbl = t.lbl WHERE t.is_new
ON CONFLICT DO NOTHING
"""
_INSERT_IDENTITIES = """
INSERT INTO identities (kind, value, profile_id, source, first_seen, last_seen)
SELECT k.kind, k.value, t.profile_id, $1, f.first_seen, f.last_seen
  FROM (SELECT kid, min(seen_at) AS first_seen, max(seen_at) AS last_seen FROM bulk_edge GROUP BY kid) f
  JOIN bulk_keys k ON k.kid = f.kid JOIN bulk_kl l ON l.kid = f.kid JOIN bulk_cprof t ON t.lbl = l.lbl
 ORDER BY k.kind, k.value
ON CONFLICT (kind, value) DO NOTHING
"""
_INSERT_EVENT_IDS = """
INSERT INTO event_ids (event_id, occurred_at)
SELECT r.event_id, r.occurred_at FROM bulk_rec r JOIN bulk_rl l ON l.rec = r.rec
ON CONFLICT DO NOTHING
"""
_INSERT_EVENTS = """
INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
SELECT r.event_id, r.occurred_at, t.profile_id, $1, $2, r.source_record_id, now(), r.body::jsonb
  FROM bulk_rec r JOIN bulk_rl l ON l.rec = r.rec JOIN bulk_cprof t ON t.lbl = l.lbl
 ORDER BY r.event_id
ON CONFLICT DO NOTHING
"""
_INSERT_TRAITS = """
INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)
SELECT t.profile_id, o.trait, $1, o.value, o.observed_at, o.first_seen, o.seen_count
  FROM bulk_obs o JOIN bulk_cprof t ON t.lbl = o.lbl
 ORDER BY t.profile_id
ON CONFLICT (profile_id, trait, source, value) DO UPDATE
   SET observed_at = greatest(profile_traits.observed_at, excluded.observed_at),
       first_seen = least(profile_traits.first_seen, excluded.first_seen),
       seen_count = profile_traits.seen_count + excluded.seen_count
"""
# Existing profiles the import touched: their golden records are recomputed from all their observations.
_TARGET_PROFILES = "SELECT profile_id FROM bulk_cprof WHERE NOT is_new"

# Statistics for the planner once staging is loaded, and counts for the summary.
_ANALYZE_STAGING = ["ANALYZE bulk_rec", "ANALYZE bulk_ident"]
_COUNT_RECORDS = "SELECT count(*) FROM bulk_rec"
_COUNT_TARGETS = "SELECT count(*) FROM bulk_cprof"
_COUNT_NEW_TARGETS = "SELECT count(*) FROM bulk_cprof WHERE is_new"


def _row_count(status: str) -> int:
    """Rows a statement wrote, from its status tag (``INSERT 0 42``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class BulkStatements:
    """The bulk import's statements; part of :class:`cdp_hub.store.profiles.ProfileRepository`."""

    store: Store

    def _sql(self, stmt: str) -> str:
        return render_sql(stmt, self.store.dialect)

    async def bulk_begin(self, conn: asyncpg.Connection, *, temp_buffers_mb: int, work_mem_mb: int) -> None:
        """Session settings for one import transaction, then the staging tables ``bulk_rec`` and ``bulk_ident``."""
        # Staging lives in temporary tables: give them memory (only possible before this session's first
        # temporary table; a reused session keeps what it had).
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('temp_buffers', $1, true)", f"{int(temp_buffers_mb)}MB")
        except asyncpg.PostgresError:
            pass
        await conn.execute("SET LOCAL synchronous_commit = off")  # one commit at the end; it is waited on
        # Big hash aggregates and sorts in memory rather than spilled to disk; bounded by the setting.
        await conn.execute("SELECT set_config('work_mem', $1, true)", f"{int(work_mem_mb)}MB")
        for stmt in _CREATE_STAGING:
            await conn.execute(self._sql(stmt))

    async def bulk_copy(self, conn: asyncpg.Connection, records: bytes, identities: bytes,
                        consents: bytes = b"") -> None:
        """COPY a chunk of staging rows (CSV: records, their identities, their consent statements)."""
        await conn.copy_to_table("bulk_rec", source=io.BytesIO(records), format="csv")
        await conn.copy_to_table("bulk_ident", source=io.BytesIO(identities), format="csv")
        if consents:
            await conn.copy_to_table("bulk_consent", source=io.BytesIO(consents), format="csv")

    async def bulk_dedupe(self, conn: asyncpg.Connection) -> tuple[int, int]:
        """Drop duplicate and already imported records and blocked identities; ``(staged, left)`` records."""
        for stmt in _ANALYZE_STAGING:
            await conn.execute(stmt)
        staged = int(await conn.fetchval(_COUNT_RECORDS))
        await conn.execute(_DROP_DUPLICATES)
        await conn.execute(_DROP_ORPHAN_IDENTS)
        await conn.execute(_DROP_BLOCKED)
        return staged, int(await conn.fetchval(_COUNT_RECORDS))

    async def bulk_link(self, conn: asyncpg.Connection) -> None:
        """Keys, edges, existing profiles and the starting labels of the label propagation."""
        for stmt in (_CREATE_KEYS, _CREATE_EDGES, _CREATE_EXISTING, _CREATE_PROFILE_LABELS, _CREATE_KEY_LABELS,
                     _CREATE_SHARED_EDGES):
            await conn.execute(self._sql(stmt))
        await conn.execute("ANALYZE bulk_sedge")

    async def bulk_round_records(self, conn: asyncpg.Connection, *, first: bool) -> int:
        """One round, records <- keys; how many record labels moved (-1 in the first round: not counted)."""
        await conn.execute(self._sql(_ROUND_RECORDS))
        changed = -1 if first else int(await conn.fetchval(_ROUND_RECORDS_CHANGED))
        for stmt in _SWAP_RECORDS:
            await conn.execute(stmt)
        return changed

    async def bulk_round_keys(self, conn: asyncpg.Connection) -> None:
        """One round, keys <- records."""
        await conn.execute(self._sql(_ROUND_KEYS))
        for stmt in _SWAP_KEYS:
            await conn.execute(stmt)

    async def bulk_components(self, conn: asyncpg.Connection) -> None:
        """After the rounds: the label of every record and key, and the existing profiles per component."""
        await conn.execute(self._sql(_ALL_RECORDS))
        for stmt in _SWAP_RECORDS:
            await conn.execute(stmt)
        await conn.execute(self._sql(_ALL_KEYS))
        for stmt in _SWAP_KEYS:
            await conn.execute(stmt)
        await conn.execute(self._sql(_CREATE_COMPONENT_PROFILES))

    async def bulk_flagged(self, conn: asyncpg.Connection, kinds: Sequence[str], limits: Sequence[int],
                           max_merge_size: int) -> list[int]:
        """Labels of the components the set-wise path must not decide: more values of a limited kind
        (``kinds[i]``: at most ``limits[i]``) or more records / existing profiles than ``max_merge_size``."""
        rows = await conn.fetch(_FLAGGED_COMPONENTS, list(kinds), list(limits), max_merge_size)
        return [r["lbl"] for r in rows]

    async def bulk_person_evidence(self, conn: asyncpg.Connection) -> list[tuple[int, str | None, str | None]]:
        """``(component, first name, birth date)`` of components with several first names or birth dates
        (records and the existing profiles they join), for the household rule."""
        rows = await conn.fetch(_PERSON_EVIDENCE)
        return [(r["lbl"], r["first_name"], r["birth_date"]) for r in rows]

    async def bulk_shared_components(self, conn: asyncpg.Connection) -> list[int]:
        """Components holding a value that is shared between profiles already."""
        return [r["lbl"] for r in await conn.fetch(_SHARED_COMPONENTS)]

    async def bulk_take_flagged(self, conn: asyncpg.Connection, labels: Sequence[int]) -> list[str]:
        """The records of components ``labels`` (event bodies, JSON text, in time order), taken out of the
        set-wise import."""
        bodies = [r["body"] for r in await conn.fetch(_FLAGGED_RECORDS, labels)]
        for stmt in _DROP_FLAGGED:
            await conn.execute(stmt, labels)
        return bodies

    async def bulk_targets(self, conn: asyncpg.Connection, source: str) -> tuple[int, int]:
        """One profile per component (profile ids of new ones derive from ``source``); ``(components, new)``."""
        await conn.execute(self._sql(_CREATE_COMPONENT_TARGET))
        await conn.execute(_ADD_NEW_TARGETS, source)
        return int(await conn.fetchval(_COUNT_TARGETS)), int(await conn.fetchval(_COUNT_NEW_TARGETS))

    async def bulk_new_profiles(self, conn: asyncpg.Connection, traits: Sequence[str], strategies: Sequence[str],
                                default_strategy: str) -> None:
        """Trait observations per component, then the new profiles with their golden records (``traits[i]``
        decided by ``strategies[i]``, others by ``default_strategy``)."""
        await conn.execute(self._sql(_CREATE_OBSERVATIONS))
        await conn.execute(self._sql(_NEW_GOLDEN), list(traits), list(strategies), default_strategy)
        await conn.execute(_INSERT_NEW_PROFILES)

    async def bulk_component_losers(self, conn: asyncpg.Connection) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """``(loser, survivor)``: existing profiles a component merges into its target."""
        return [(r["loser"], r["survivor"]) for r in await conn.fetch(_COMPONENT_LOSERS)]

    async def bulk_insert_identities(self, conn: asyncpg.Connection, source: str) -> int:
        """Attach the staged identities to their components' profiles, ``source`` as provenance; how many."""
        return _row_count(await conn.execute(_INSERT_IDENTITIES, source))

    async def bulk_insert_events(self, conn: asyncpg.Connection, event_type: str, source: str) -> int:
        """Store the staged records as events of ``event_type`` from ``source``; how many."""
        await conn.execute(_INSERT_EVENT_IDS)  # staged ids are new: duplicates were dropped before
        return _row_count(await conn.execute(_INSERT_EVENTS, event_type, source))

    async def bulk_insert_traits(self, conn: asyncpg.Connection, source: str) -> None:
        """Store the components' trait observations as provenance of ``source``."""
        await conn.execute(_INSERT_TRAITS, source)

    async def bulk_existing_targets(self, conn: asyncpg.Connection) -> list[uuid.UUID]:
        """Existing profiles the import touched (their golden records need recomputing)."""
        return [r["profile_id"] for r in await conn.fetch(_TARGET_PROFILES)]
