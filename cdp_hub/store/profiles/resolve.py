"""The streaming resolver's statements, and the merge/unmerge statements that share its locks.

Every statement takes arrays (``unnest``), so a micro-batch of hundreds of events costs a handful of round
trips, set-wise, which both PostgreSQL and Greenplum do well. They run inside the caller's transaction (the
identity graph's batch, an operator's merge or unmerge, the bulk import), on its connection ``conn``; they
need nothing of the store, so they are static (the identity graph holds only a pool).

No value is ever formatted into SQL; everything is a bind parameter.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from cdp_hub.store.events import EventRepository
from cdp_hub.store.profiles.records import IdentityLookup, Key, LastMerge, LockedProfile, ProfileConstraints

__all__ = ["LOCK_NS_IDENTITY", "ResolveStatements"]

# Advisory-lock namespaces (the first key of the two-key form), so resolver locks never collide with others.
LOCK_NS_IDENTITY = 0x0CD9_0010

# Lock the batch's identity keys in ascending order (the array is sorted by the caller; a function scan
# yields in array order). Every writer of an identity key takes its lock first, so two workers never
# insert the same key or decide about it on stale data; the global order keeps them deadlock-free.
_LOCK_IDENTITY_KEYS = """
SELECT count(pg_advisory_xact_lock($1::int4, k)) FROM unnest($2::int4[]) AS k
"""

# Where the batch's identities point, which of them are blocked, and where explicit profile ids lead now.
_LOOKUP = """
SELECT 'i' AS src, i.kind, i.value, i.profile_id, i.last_seen
  FROM unnest($1::text[], $2::text[]) AS k(kind, value)
  JOIN identities i ON i.kind = k.kind AND i.value = k.value
UNION ALL
SELECT 'b', b.kind, b.value, NULL, NULL
  FROM unnest($1::text[], $2::text[]) AS k(kind, value)
  JOIN blocked_identities b ON b.kind = k.kind AND b.value = k.value
UNION ALL
SELECT 's', s.kind, s.value, s.profile_id, NULL
  FROM unnest($1::text[], $2::text[]) AS k(kind, value)
  JOIN shared_identities s ON s.kind = k.kind AND s.value = k.value
UNION ALL
SELECT 'p', p.profile_id::text, NULL, coalesce(p.merged_into, p.profile_id), NULL
  FROM profiles p WHERE p.profile_id = ANY($3::uuid[])
"""

# Row locks on the profiles the batch touches, in id order. FOR UPDATE re-reads the latest committed row
# after waiting, so a profile merged away meanwhile shows up with merged_into set (and the batch retries).
_LOCK_PROFILES = """
SELECT profile_id, merged_into, created_at, created_by_event,
       golden ->> 'first_name' AS first_name, golden ->> 'birth_date' AS birth_date
  FROM profiles WHERE profile_id = ANY($1::uuid[])
 ORDER BY profile_id
   FOR UPDATE
"""

# What the rules need to know about the locked profiles: their values of limited kinds, and the profiles an
# operator split them from (kind NULL; never merged automatically again). One probe of (profile_id, kind) per
# profile: as a plain join or `profile_id = ANY AND kind = ANY` the planner may walk the primary key through
# every value of a kind its statistics think rare (a frequent ecom_customer_id, analyzed while it was new):
# 10 ms per batch instead of 2-3 (migration 0089). OFFSET 0 keeps the subquery from being flattened into a join.
_PROFILE_CONSTRAINTS = """
SELECT i.profile_id, i.kind, i.value
  FROM unnest($1::uuid[]) AS p(id)
 CROSS JOIN LATERAL (SELECT profile_id, kind, value FROM identities
                      WHERE profile_id = p.id AND kind = ANY($2::text[]) OFFSET 0) AS i
UNION ALL
SELECT profile_id, NULL, other_profile_id::text FROM profile_splits WHERE profile_id = ANY($1::uuid[])
"""

_IDENTITIES_OF = """
SELECT profile_id, kind, value FROM identities WHERE profile_id = ANY($1::uuid[]) ORDER BY kind, value
"""

_INSERT_PROFILES = """
INSERT INTO profiles (profile_id, created_by_event, created_at, updated_at, merged_into)
SELECT p, e, c, c, m FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[]) AS t(p, e, c, m)
"""

# Merges: losers point at the survivor (flattened, so merged_into is always one hop), and their identities,
# events and trait observations move to it.
_MERGE_PROFILES = """
UPDATE profiles p SET merged_into = m.survivor, updated_at = now(), version = p.version + 1
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE p.profile_id = m.loser OR p.merged_into = m.loser
"""
_MERGE_IDENTITIES = """
UPDATE identities i SET profile_id = m.survivor
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE i.profile_id = m.loser
"""
_MERGE_TRAITS = """
INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)
SELECT m.survivor, t.trait, t.source, t.value, max(t.observed_at), min(t.first_seen), sum(t.seen_count)
  FROM profile_traits t JOIN unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor) ON t.profile_id = m.loser
 GROUP BY m.survivor, t.trait, t.source, t.value
ON CONFLICT (profile_id, trait, source, value) DO UPDATE
   SET observed_at = greatest(profile_traits.observed_at, excluded.observed_at),
       first_seen = least(profile_traits.first_seen, excluded.first_seen),
       seen_count = profile_traits.seen_count + excluded.seen_count
"""
# Shared values a loser held as a contact point go with it (the survivor may hold the value already).
_MERGE_SHARED = """
WITH moved AS (
    DELETE FROM shared_identities s USING unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
     WHERE s.profile_id = m.loser
 RETURNING s.kind, s.value, m.survivor, s.event_id, s.first_seen
)
INSERT INTO shared_identities (kind, value, profile_id, event_id, first_seen)
SELECT DISTINCT ON (kind, value, survivor) kind, value, survivor, event_id, first_seen FROM moved
 ORDER BY kind, value, survivor, first_seen
ON CONFLICT DO NOTHING
"""
# Pairs kept apart (an operator's split, a resolver's refusal) stay apart when one of them is merged into a
# third profile: the survivor inherits the loser's rows (the loser's own rows stay for an unmerge).
_MERGE_SPLITS = """
INSERT INTO profile_splits (profile_id, other_profile_id, merge_id, reason)
SELECT m.survivor, s.other_profile_id, s.merge_id, s.reason
  FROM profile_splits s JOIN unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor) ON s.profile_id = m.loser
 WHERE s.other_profile_id <> m.survivor
UNION ALL
SELECT s.profile_id, m.survivor, s.merge_id, s.reason
  FROM profile_splits s JOIN unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor) ON s.other_profile_id = m.loser
 WHERE s.profile_id <> m.survivor
ON CONFLICT DO NOTHING
"""
_INSERT_KEPT_APART = """
INSERT INTO profile_splits (profile_id, other_profile_id, merge_id, reason)
SELECT a, b, NULL, r FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS x(a, b, r) WHERE a <> b
ON CONFLICT DO NOTHING
"""
_INSERT_SHARED = """
INSERT INTO shared_identities (kind, value, profile_id, event_id, first_seen)
SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[])
ON CONFLICT DO NOTHING
"""
_DELETE_LOSER_TRAITS = """
DELETE FROM profile_traits t USING unnest($1::uuid[]) AS m(loser) WHERE t.profile_id = m.loser
"""
_INSERT_MERGES = """
INSERT INTO merges (surviving_profile_id, merge_id, merged_profile_id, event_id, identities, reason)
SELECT s, id, l, e, i::jsonb, r
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[]) AS t(s, id, l, e, i, r)
ON CONFLICT DO NOTHING
"""

_INSERT_IDENTITIES = """
INSERT INTO identities (kind, value, profile_id, source, first_seen, last_seen)
SELECT k, v, p, s, t, t FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[])
    AS x(k, v, p, s, t)
ON CONFLICT (kind, value) DO NOTHING
"""

_TOUCH_IDENTITIES = """
UPDATE identities i SET last_seen = greatest(i.last_seen, x.t)
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS x(k, v, t)
 WHERE i.kind = x.k AND i.value = x.v
"""

_UPSERT_TRAITS = """
INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)
SELECT p, t, s, v::jsonb, o, f, n
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::int4[])
    AS x(p, t, s, v, o, f, n)
ON CONFLICT (profile_id, trait, source, value) DO UPDATE
   SET observed_at = greatest(profile_traits.observed_at, excluded.observed_at),
       first_seen = least(profile_traits.first_seen, excluded.first_seen),
       seen_count = profile_traits.seen_count + excluded.seen_count
"""

_INSERT_CONFLICTS = """
INSERT INTO identity_conflicts (profile_id, conflict_id, rule, kind, value, profile_ids, event_id, detail)
SELECT p, c, r, k, v, ARRAY(SELECT jsonb_array_elements_text(ps::jsonb)::uuid), e, d
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[])
    AS x(p, c, r, k, v, ps, e, d)
ON CONFLICT DO NOTHING
"""

# Values seen on too many profiles: how many distinct profiles the open conflicts over each value name.
_CONFLICT_SPREAD = """
SELECT c.kind, c.value, count(DISTINCT p) AS profiles
  FROM identity_conflicts c CROSS JOIN LATERAL unnest(c.profile_ids) AS p
 WHERE (c.kind, c.value) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND c.resolved_at IS NULL
 GROUP BY c.kind, c.value
"""
_BLOCK_VALUES = """
INSERT INTO blocked_identities (kind, value, reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING
"""
_UNLINK_VALUES = """
DELETE FROM identities i USING unnest($1::text[], $2::text[]) AS x(k, v) WHERE i.kind = x.k AND i.value = x.v
"""

# Survivorship in SQL, the rules of cdp_hub.resolver.survivorship (a test holds them equal): per trait a strategy
# ($1 traits, $2 strategies; $4 the default strategy), source ranks ($3 trait, $6 source, $7 rank: higher
# wins), consent by the latest statement with an opt-out winning a tie. $5: the profiles to refresh.
# Without a most_frequent rule the /*freq*/ windows are replaced by NULL (they cost a sort). A profile whose
# golden record comes out the same is not written (no new row version, version unchanged).
# The observations are read by `profile_id = ANY($5)`, not by a join with the unnested ids: the planner then
# probes the primary key for the batch's profiles whatever it believes of the join, where the join was planned
# as a scan of all of profile_traits when its statistics were behind its size (tests/test_sql_plans.py).
_GOLDEN = """
WITH rules AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x(trait, strategy)),
ranks AS (SELECT * FROM unnest($3::text[], $6::text[], $7::int4[]) AS x(trait, source, src_rank)),
todo AS (SELECT DISTINCT profile_id FROM unnest($5::uuid[]) AS x(profile_id)),
obs AS (
    SELECT t.profile_id, t.trait, t.value, t.observed_at, t.first_seen,
           coalesce(r.strategy, $4) AS strategy, coalesce(k.src_rank, 0) AS src_rank,
           /*freq*/sum(t.seen_count) OVER (PARTITION BY t.profile_id, t.trait, t.value)/*end*/ AS value_count,
           /*freq*/max(t.observed_at) OVER (PARTITION BY t.profile_id, t.trait, t.value)/*end*/ AS value_last
      FROM profile_traits t LEFT JOIN rules r ON r.trait = t.trait
      LEFT JOIN ranks k ON k.trait = t.trait AND k.source = t.source
     WHERE t.profile_id = ANY($5::uuid[]) AND t.trait NOT LIKE 'consent.%'
),
ranked AS (
    SELECT profile_id, trait, value, row_number() OVER (
             PARTITION BY profile_id, trait ORDER BY
               CASE WHEN strategy = 'source_priority' THEN src_rank END DESC NULLS LAST,
               CASE WHEN strategy = 'most_frequent' THEN value_count END DESC NULLS LAST,
               CASE WHEN strategy = 'most_frequent' THEN value_last END DESC NULLS LAST,
               CASE WHEN strategy = 'first_non_empty' THEN first_seen END ASC NULLS LAST,
               CASE WHEN strategy = 'first_non_empty' THEN src_rank END DESC NULLS LAST,
               observed_at DESC, src_rank DESC, value::text COLLATE "C" DESC) AS rn
      FROM obs
),
traits AS (SELECT profile_id, jsonb_object_agg(trait, value) AS golden FROM ranked WHERE rn = 1 GROUP BY profile_id),
consent AS (
    SELECT profile_id, jsonb_object_agg(substr(trait, 9), value) AS consent FROM (
        SELECT DISTINCT ON (t.profile_id, t.trait) t.profile_id, t.trait, t.value
          FROM profile_traits t
         WHERE t.profile_id = ANY($5::uuid[]) AND t.trait LIKE 'consent.%'
         ORDER BY t.profile_id, t.trait, t.observed_at DESC, (t.value = '"opted_out"'::jsonb) DESC
    ) c GROUP BY profile_id
),
golden AS (
    SELECT todo.profile_id,
           coalesce(tr.golden, '{}'::jsonb)
           || CASE WHEN c.consent IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('consent', c.consent) END AS g
      FROM todo LEFT JOIN traits tr USING (profile_id) LEFT JOIN consent c USING (profile_id)
)
UPDATE profiles p SET golden = golden.g, version = p.version + 1, updated_at = now()
  FROM golden
 WHERE p.profile_id = golden.profile_id AND p.golden IS DISTINCT FROM golden.g
"""
_FREQ = re.compile(r"/\*freq\*/.*?/\*end\*/")

# Operator merges and unmerges.
_CANONICAL_IDS = """
SELECT profile_id, coalesce(merged_into, profile_id) AS holder FROM profiles WHERE profile_id = ANY($1::uuid[])
"""
_FIRST_IDENTITIES = "SELECT kind, value FROM identities WHERE profile_id = $1 ORDER BY kind, value LIMIT $2"
_LAST_MERGE = """
SELECT merge_id, surviving_profile_id, identities FROM merges
 WHERE merged_profile_id = $1 AND undone_at IS NULL ORDER BY merged_at DESC LIMIT 1
"""
_MERGED_INTO = "SELECT merged_into FROM profiles WHERE profile_id = $1"
_RESTORE_PROFILE = """
UPDATE profiles SET merged_into = NULL, version = version + 1, updated_at = now() WHERE profile_id = $1
"""
# The profiles merged into the loser before its own merge came along with it: they follow it back.
_RESTORE_ABSORBED = """
UPDATE profiles SET merged_into = $1, updated_at = now() WHERE merged_into = $2 AND profile_id IN
 (SELECT merged_profile_id FROM merges WHERE surviving_profile_id = $1 AND undone_at IS NULL)
"""
_GIVE_BACK_IDENTITIES = """
UPDATE identities i SET profile_id = $1 FROM unnest($3::text[], $4::text[]) AS x(k, v)
 WHERE i.kind = x.k AND i.value = x.v AND i.profile_id = $2
"""
_IDENTITY_OWNERS = "SELECT kind, value, profile_id FROM identities WHERE profile_id = ANY($1::uuid[])"
_DELETE_TRAITS = "DELETE FROM profile_traits WHERE profile_id = ANY($1::uuid[])"
_UNDO_MERGE = "UPDATE merges SET undone_at = now() WHERE merge_id = $1 AND surviving_profile_id = $2"
_INSERT_SPLITS = """
INSERT INTO profile_splits (profile_id, other_profile_id, merge_id, reason)
SELECT a, b, $3, $4 FROM unnest($1::uuid[], $2::uuid[]) AS x(a, b) ON CONFLICT DO NOTHING
"""


class ResolveStatements:
    """Statements on the profile tables that run on a caller's connection, inside its transaction."""

    # -- locks and lookups -----------------------------------------------------------------------------------

    @staticmethod
    async def lock_identity_keys(conn: asyncpg.Connection, lock_ids: Sequence[int]) -> None:
        """Take the transaction-scoped advisory locks of identity keys ``lock_ids`` (sorted by the caller)."""
        await conn.fetchval(_LOCK_IDENTITY_KEYS, LOCK_NS_IDENTITY, lock_ids)

    @staticmethod
    async def lookup(conn: asyncpg.Connection, keys: Sequence[Key],
                     explicit: Sequence[uuid.UUID]) -> IdentityLookup:
        """Where ``keys`` point (profile, last seen), which of them are blocked, and the profile each
        ``explicit`` profile id leads to now; one round trip."""
        rows = await conn.fetch(_LOOKUP, [k for k, _ in keys], [v for _, v in keys], explicit)
        found = IdentityLookup()
        for row in rows:
            if row["src"] == "i":
                found.owner[(row["kind"], row["value"])] = row["profile_id"]
                found.last_seen[(row["kind"], row["value"])] = row["last_seen"]
            elif row["src"] == "b":
                found.blocked.add((row["kind"], row["value"]))
            elif row["src"] == "s":
                found.shared.setdefault((row["kind"], row["value"]), set()).add(row["profile_id"])
            else:
                found.explicit_to[uuid.UUID(row["kind"])] = row["profile_id"]
        return found

    @staticmethod
    async def lock_profiles(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID]) -> list[LockedProfile]:
        """Lock the rows of ``profile_ids`` (FOR UPDATE, in id order); a missing profile is not returned."""
        rows = await conn.fetch(_LOCK_PROFILES, profile_ids)
        return [LockedProfile(r["profile_id"], r["merged_into"], r["created_at"], r["created_by_event"],
                              r["first_name"], r["birth_date"]) for r in rows]

    @staticmethod
    async def constraints(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID],
                          limited_kinds: Sequence[str]) -> ProfileConstraints:
        """The values of ``limited_kinds`` the profiles hold, and the profiles an operator split them from."""
        found = ProfileConstraints()
        for row in await conn.fetch(_PROFILE_CONSTRAINTS, profile_ids, limited_kinds):
            if row["kind"] is None:
                found.splits.append((row["profile_id"], uuid.UUID(row["value"])))
            else:
                found.values.append((row["profile_id"], row["kind"], row["value"]))
        return found

    @staticmethod
    async def canonical_ids(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """Each existing profile of ``profile_ids`` -> the profile holding its data now (itself, if live)."""
        rows = await conn.fetch(_CANONICAL_IDS, list(profile_ids))
        return {r["profile_id"]: r["holder"] for r in rows}

    @staticmethod
    async def first_identities(conn: asyncpg.Connection, profile_id: uuid.UUID, limit: int) -> list[Key]:
        """Up to ``limit`` identities of ``profile_id``, by kind and value."""
        rows = await conn.fetch(_FIRST_IDENTITIES, profile_id, limit)
        return [(r["kind"], r["value"]) for r in rows]

    # -- the resolver's writes -------------------------------------------------------------------------------

    @staticmethod
    async def insert_profiles(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID],
                              created_by_events: Sequence[uuid.UUID | None], created_at: Sequence[datetime],
                              merged_into: Sequence[uuid.UUID | None]) -> None:
        """Create profiles (columns of equal length); one born and merged in the same batch points at its
        survivor right away."""
        await conn.execute(_INSERT_PROFILES, profile_ids, created_by_events, created_at, merged_into)

    @staticmethod
    async def move_profiles(conn: asyncpg.Connection, losers: Sequence[uuid.UUID],
                            survivors: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Key]]:
        """Merge ``losers[i]`` into ``survivors[i]``: profile pointer, identities, events, trait observations.

        Returns the identities each loser held, for the audit rows (an unmerge gives them back). The caller
        holds the row locks of every profile involved.
        """
        held: dict[uuid.UUID, list[Key]] = defaultdict(list)
        for row in await conn.fetch(_IDENTITIES_OF, list(losers)):
            held[row["profile_id"]].append((row["kind"], row["value"]))
        await conn.execute(_MERGE_PROFILES, losers, survivors)
        await conn.execute(_MERGE_IDENTITIES, losers, survivors)
        await EventRepository.move_to_survivors(conn, losers, survivors)
        await conn.execute(_MERGE_TRAITS, losers, survivors)
        await conn.execute(_DELETE_LOSER_TRAITS, losers)
        await conn.execute(_MERGE_SHARED, losers, survivors)
        await conn.execute(_MERGE_SPLITS, losers, survivors)
        return held

    @staticmethod
    async def insert_merges(conn: asyncpg.Connection, survivors: Sequence[uuid.UUID],
                            merge_ids: Sequence[uuid.UUID], losers: Sequence[uuid.UUID],
                            event_ids: Sequence[uuid.UUID | None], identities: Sequence[str],
                            reasons: Sequence[str]) -> None:
        """Merge audit rows (columns of equal length; ``identities`` as JSON text); a row already there (a
        replay: same merge id) is kept."""
        await conn.execute(_INSERT_MERGES, survivors, merge_ids, losers, event_ids, identities, reasons)

    @staticmethod
    async def insert_identities(conn: asyncpg.Connection, keys: Sequence[Key], profile_ids: Sequence[uuid.UUID],
                                sources: Sequence[str], first_seen: Sequence[datetime]) -> None:
        """Attach ``keys[i]`` to ``profile_ids[i]``, first seen from ``sources[i]`` at ``first_seen[i]``."""
        await conn.execute(_INSERT_IDENTITIES, [k for k, _ in keys], [v for _, v in keys], profile_ids, sources,
                           first_seen)

    @staticmethod
    async def keep_apart(conn: asyncpg.Connection, a: Sequence[uuid.UUID], b: Sequence[uuid.UUID],
                         reasons: Sequence[str]) -> None:
        """Record that ``a[i]`` and ``b[i]`` are two people (a refusal): both directions, like an operator's
        split, so they are never merged automatically."""
        await conn.execute(_INSERT_KEPT_APART, [*a, *b], [*b, *a], [*reasons, *reasons])

    @staticmethod
    async def insert_shared(conn: asyncpg.Connection, keys: Sequence[Key], profile_ids: Sequence[uuid.UUID],
                            event_ids: Sequence[uuid.UUID | None], first_seen: Sequence[datetime]) -> None:
        """Record ``keys[i]`` as a value ``profile_ids[i]`` shares with other profiles (a household's phone):
        it links nothing from then on and stays a contact point of every holder."""
        await conn.execute(_INSERT_SHARED, [k for k, _ in keys], [v for _, v in keys], profile_ids, event_ids,
                           first_seen)

    @staticmethod
    async def touch_identities(conn: asyncpg.Connection, keys: Sequence[Key], seen_at: Sequence[datetime]) -> None:
        """Move ``last_seen`` of ``keys[i]`` forward to ``seen_at[i]`` (never back)."""
        await conn.execute(_TOUCH_IDENTITIES, [k for k, _ in keys], [v for _, v in keys], seen_at)

    @staticmethod
    async def upsert_traits(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID], traits: Sequence[str],
                            sources: Sequence[str], values: Sequence[str], observed_at: Sequence[datetime],
                            first_seen: Sequence[datetime], counts: Sequence[int]) -> None:
        """Add aggregated trait observations (``values`` as canonical JSON text) to ``profile_traits``: counts
        add up, time bounds widen."""
        await conn.execute(_UPSERT_TRAITS, profile_ids, traits, sources, values, observed_at, first_seen, counts)

    @staticmethod
    async def refresh_golden(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID], *,
                             traits: Sequence[str], strategies: Sequence[str], default_strategy: str,
                             source_ranks: Sequence[tuple[str, str, int]]) -> None:
        """Recompute ``profiles.golden`` of ``profile_ids`` from their trait observations, in one statement.

        ``traits[i]`` is decided by ``strategies[i]``, any other trait by ``default_strategy``;
        ``source_ranks`` are ``(trait, source, rank)``, the higher rank winning under ``source_priority``.
        """
        stmt = _GOLDEN
        if "most_frequent" not in {default_strategy, *strategies}:
            stmt = _FREQ.sub("NULL::bigint", stmt)
        await conn.execute(stmt, traits, strategies, [r[0] for r in source_ranks], default_strategy,
                           list(profile_ids), [r[1] for r in source_ranks], [r[2] for r in source_ranks])

    @staticmethod
    async def insert_conflicts(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID],
                               conflict_ids: Sequence[uuid.UUID], rules: Sequence[str],
                               kinds: Sequence[str | None], values: Sequence[str | None],
                               profile_id_lists: Sequence[str], event_ids: Sequence[uuid.UUID],
                               details: Sequence[str]) -> None:
        """Record what the rules refused (``profile_id_lists[i]``: a JSON array of profile ids); a conflict
        recorded before (same id) is kept."""
        await conn.execute(_INSERT_CONFLICTS, profile_ids, conflict_ids, rules, kinds, values, profile_id_lists,
                           event_ids, details)

    @staticmethod
    async def conflict_spread(conn: asyncpg.Connection, keys: Sequence[Key]) -> list[tuple[str, str, int]]:
        """``(kind, value, profiles)``: how many distinct profiles the open conflicts over each key name."""
        rows = await conn.fetch(_CONFLICT_SPREAD, [k for k, _ in keys], [v for _, v in keys])
        return [(r["kind"], r["value"], r["profiles"]) for r in rows]

    @staticmethod
    async def block_and_unlink(conn: asyncpg.Connection, keys: Sequence[Key], reasons: Sequence[str]) -> None:
        """Block ``keys`` (with ``reasons[i]``) and detach them from their profiles: they never link again."""
        kinds, values = [k for k, _ in keys], [v for _, v in keys]
        await conn.execute(_BLOCK_VALUES, kinds, values, reasons)
        await conn.execute(_UNLINK_VALUES, kinds, values)

    # -- unmerge ---------------------------------------------------------------------------------------------

    @staticmethod
    async def last_merge(conn: asyncpg.Connection, loser: uuid.UUID) -> LastMerge | None:
        """The latest merge of ``loser`` into another profile that is not undone, or None."""
        row = await conn.fetchrow(_LAST_MERGE, loser)
        if row is None:
            return None
        return LastMerge(row["merge_id"], row["surviving_profile_id"],
                         [(i["kind"], i["value"]) for i in row["identities"]])

    @staticmethod
    async def merged_into(conn: asyncpg.Connection, profile_id: uuid.UUID) -> uuid.UUID | None:
        """The profile ``profile_id`` is merged into; None when it is live or does not exist."""
        holder: uuid.UUID | None = await conn.fetchval(_MERGED_INTO, profile_id)
        return holder

    @staticmethod
    async def restore(conn: asyncpg.Connection, loser: uuid.UUID, holder: uuid.UUID) -> None:
        """Bring ``loser`` back out of ``holder``, with the profiles that were merged into it before."""
        await conn.execute(_RESTORE_PROFILE, loser)
        await conn.execute(_RESTORE_ABSORBED, loser, holder)

    @staticmethod
    async def give_back_identities(conn: asyncpg.Connection, loser: uuid.UUID, holder: uuid.UUID,
                                   keys: Sequence[Key]) -> None:
        """Move ``keys`` that ``holder`` holds to ``loser``."""
        await conn.execute(_GIVE_BACK_IDENTITIES, loser, holder, [k for k, _ in keys], [v for _, v in keys])

    @staticmethod
    async def identity_owners(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID]) -> dict[Key, uuid.UUID]:
        """Every identity of ``profile_ids`` -> the one of them holding it."""
        rows = await conn.fetch(_IDENTITY_OWNERS, list(profile_ids))
        return {(r["kind"], r["value"]): r["profile_id"] for r in rows}

    @staticmethod
    async def delete_traits(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID]) -> None:
        """Forget every trait observation of ``profile_ids`` (before rebuilding them from events)."""
        await conn.execute(_DELETE_TRAITS, list(profile_ids))

    @staticmethod
    async def close_merge(conn: asyncpg.Connection, merge: LastMerge, a: uuid.UUID, b: uuid.UUID,
                          reason: str) -> None:
        """Mark ``merge`` undone and record that ``a`` and ``b`` were split (both directions), so they are
        never merged automatically again."""
        await conn.execute(_UNDO_MERGE, merge.merge_id, merge.surviving_profile_id)
        await conn.execute(_INSERT_SPLITS, [a, b], [b, a], merge.merge_id, reason)
