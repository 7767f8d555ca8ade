"""The resolver's SQL, in one place. Every statement takes arrays (``unnest``), so a micro-batch of hundreds of
events costs a handful of round trips, set-wise, which both PostgreSQL and Greenplum do well.

No value is ever formatted into SQL; everything is a bind parameter.
"""

from __future__ import annotations

__all__: list[str] = []

# Advisory-lock namespaces (the first key of the two-key form), so resolver locks never collide with others.
LOCK_NS_IDENTITY = 0x0CD9_0010

# Lock the batch's identity keys in ascending order (the array is sorted by the caller; a function scan
# yields in array order). Every writer of an identity key takes its lock first, so two workers never
# insert the same key or decide about it on stale data; the global order keeps them deadlock-free.
LOCK_IDENTITY_KEYS = """
SELECT count(pg_advisory_xact_lock($1::int4, k)) FROM unnest($2::int4[]) AS k
"""

# Where the batch's identities point, which of them are blocked, and where explicit profile ids lead now.
LOOKUP = """
SELECT 'i' AS src, i.kind, i.value, i.profile_id, i.last_seen
  FROM unnest($1::text[], $2::text[]) AS k(kind, value)
  JOIN identities i ON i.kind = k.kind AND i.value = k.value
UNION ALL
SELECT 'b', b.kind, b.value, NULL, NULL
  FROM unnest($1::text[], $2::text[]) AS k(kind, value)
  JOIN blocked_identities b ON b.kind = k.kind AND b.value = k.value
UNION ALL
SELECT 'p', p.profile_id::text, NULL, coalesce(p.merged_into, p.profile_id), NULL
  FROM profiles p WHERE p.profile_id = ANY($3::uuid[])
"""

# Row locks on the profiles the batch touches, in id order. FOR UPDATE re-reads the latest committed row
# after waiting, so a profile merged away meanwhile shows up with merged_into set (and the batch retries).
LOCK_PROFILES = """
SELECT profile_id, merged_into, created_at, created_by_event
  FROM profiles WHERE profile_id = ANY($1::uuid[])
 ORDER BY profile_id
   FOR UPDATE
"""

# What the rules need to know about the locked profiles: their values of limited kinds, and the profiles an
# operator split them from (kind NULL; never merged automatically again).
PROFILE_CONSTRAINTS = """
SELECT profile_id, kind, value FROM identities
 WHERE profile_id = ANY($1::uuid[]) AND kind = ANY($2::text[])
UNION ALL
SELECT profile_id, NULL, other_profile_id::text FROM profile_splits WHERE profile_id = ANY($1::uuid[])
"""

IDENTITIES_OF = """
SELECT profile_id, kind, value FROM identities WHERE profile_id = ANY($1::uuid[]) ORDER BY kind, value
"""

INSERT_PROFILES = """
INSERT INTO profiles (profile_id, created_by_event, created_at, updated_at, merged_into)
SELECT p, e, c, c, m FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[]) AS t(p, e, c, m)
"""

# Merges: losers point at the survivor (flattened, so merged_into is always one hop), and their identities,
# events and trait observations move to it.
MERGE_PROFILES = """
UPDATE profiles p SET merged_into = m.survivor, updated_at = now(), version = p.version + 1
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE p.profile_id = m.loser OR p.merged_into = m.loser
"""
MERGE_IDENTITIES = """
UPDATE identities i SET profile_id = m.survivor
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE i.profile_id = m.loser
"""
MERGE_EVENTS = """
UPDATE events e SET profile_id = m.survivor
  FROM unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor)
 WHERE e.profile_id = m.loser
"""
MERGE_TRAITS = """
INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)
SELECT m.survivor, t.trait, t.source, t.value, max(t.observed_at), min(t.first_seen), sum(t.seen_count)
  FROM profile_traits t JOIN unnest($1::uuid[], $2::uuid[]) AS m(loser, survivor) ON t.profile_id = m.loser
 GROUP BY m.survivor, t.trait, t.source, t.value
ON CONFLICT (profile_id, trait, source, value) DO UPDATE
   SET observed_at = greatest(profile_traits.observed_at, excluded.observed_at),
       first_seen = least(profile_traits.first_seen, excluded.first_seen),
       seen_count = profile_traits.seen_count + excluded.seen_count
"""
DELETE_LOSER_TRAITS = """
DELETE FROM profile_traits t USING unnest($1::uuid[]) AS m(loser) WHERE t.profile_id = m.loser
"""
INSERT_MERGES = """
INSERT INTO merges (surviving_profile_id, merge_id, merged_profile_id, event_id, identities, reason)
SELECT s, id, l, e, i::jsonb, r
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[]) AS t(s, id, l, e, i, r)
ON CONFLICT DO NOTHING
"""

INSERT_IDENTITIES = """
INSERT INTO identities (kind, value, profile_id, source, first_seen, last_seen)
SELECT k, v, p, s, t, t FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[])
    AS x(k, v, p, s, t)
ON CONFLICT (kind, value) DO NOTHING
"""

TOUCH_IDENTITIES = """
UPDATE identities i SET last_seen = greatest(i.last_seen, x.t)
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS x(k, v, t)
 WHERE i.kind = x.k AND i.value = x.v
"""

INSERT_EVENTS = """
INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
SELECT id, o, p, t, s, r, rc, b::jsonb
  FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[],
              $7::timestamptz[], $8::text[]) AS x(id, o, p, t, s, r, rc, b)
ON CONFLICT DO NOTHING
RETURNING event_id
"""

UPSERT_TRAITS = """
INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)
SELECT p, t, s, v::jsonb, o, f, n
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::int4[])
    AS x(p, t, s, v, o, f, n)
ON CONFLICT (profile_id, trait, source, value) DO UPDATE
   SET observed_at = greatest(profile_traits.observed_at, excluded.observed_at),
       first_seen = least(profile_traits.first_seen, excluded.first_seen),
       seen_count = profile_traits.seen_count + excluded.seen_count
"""



INSERT_CONFLICTS = """
INSERT INTO identity_conflicts (profile_id, conflict_id, rule, kind, value, profile_ids, event_id, detail)
SELECT p, c, r, k, v, ARRAY(SELECT jsonb_array_elements_text(ps::jsonb)::uuid), e, d
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[])
    AS x(p, c, r, k, v, ps, e, d)
ON CONFLICT DO NOTHING
"""

# For replayed events only: the profiles and merges they caused the first time, to emit their events again.
CREATED_BY = """
SELECT profile_id, created_by_event FROM profiles WHERE created_by_event = ANY($1::uuid[])
"""
MERGES_BY = """
SELECT event_id, surviving_profile_id, merged_profile_id, reason FROM merges
 WHERE event_id = ANY($1::uuid[]) AND undone_at IS NULL
 ORDER BY merged_at, merged_profile_id
"""

# Values seen on too many profiles: how many distinct profiles the open conflicts over each value name.
CONFLICT_SPREAD = """
SELECT c.kind, c.value, count(DISTINCT p) AS profiles
  FROM identity_conflicts c CROSS JOIN LATERAL unnest(c.profile_ids) AS p
 WHERE (c.kind, c.value) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND c.resolved_at IS NULL
 GROUP BY c.kind, c.value
"""
BLOCK_VALUES = """
INSERT INTO blocked_identities (kind, value, reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING
"""
UNLINK_VALUES = """
DELETE FROM identities i USING unnest($1::text[], $2::text[]) AS x(k, v) WHERE i.kind = x.k AND i.value = x.v
"""

# Survivorship in SQL, the rules of cdp_hub.resolver.survivorship (a test holds them equal): per trait a strategy
# ($1 traits, $2 strategies; $4 the default strategy), source ranks ($3 trait, $6 source, $7 rank: higher
# wins), consent by the latest statement with an opt-out winning a tie. $5: the profiles to refresh.
# Without a most_frequent rule the /*freq*/ windows are replaced by NULL (they cost a sort). A profile whose
# golden record comes out the same is not written (no new row version, version unchanged).
GOLDEN = """
WITH rules AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x(trait, strategy)),
ranks AS (SELECT * FROM unnest($3::text[], $6::text[], $7::int4[]) AS x(trait, source, src_rank)),
todo AS (SELECT DISTINCT profile_id FROM unnest($5::uuid[]) AS x(profile_id)),
obs AS (
    SELECT t.profile_id, t.trait, t.value, t.observed_at, t.first_seen,
           coalesce(r.strategy, $4) AS strategy, coalesce(k.src_rank, 0) AS src_rank,
           /*freq*/sum(t.seen_count) OVER (PARTITION BY t.profile_id, t.trait, t.value)/*end*/ AS value_count,
           /*freq*/max(t.observed_at) OVER (PARTITION BY t.profile_id, t.trait, t.value)/*end*/ AS value_last
      FROM profile_traits t JOIN todo USING (profile_id) LEFT JOIN rules r ON r.trait = t.trait
      LEFT JOIN ranks k ON k.trait = t.trait AND k.source = t.source
     WHERE t.trait NOT LIKE 'consent.%'
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
          FROM profile_traits t JOIN todo USING (profile_id)
         WHERE t.trait LIKE 'consent.%'
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
