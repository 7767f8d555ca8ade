-- The resolver reads the values of the limited kinds (crm_id, ...) that a batch's profiles hold:
-- `profile_id = ANY($1) AND kind = ANY($2)`. With an index on profile_id alone the planner may instead walk the
-- primary key's (kind, value) through every value of a frequent kind, filtering on profile_id: 4-5x the time,
-- seen with statistics taken while the kind was still rare (tests/test_sql_plans.py). This index answers both
-- conditions, and every lookup by profile_id alone, which the one it replaces served.
CREATE INDEX IF NOT EXISTS identities_profile_kind_idx ON identities (profile_id, kind);
DROP INDEX IF EXISTS identities_profile_idx;
