-- Identity resolution: trait provenance per observed value, conflicts held by the rules, blocked values.
-- Greenplum: profile tables stay distributed by profile_id and identity tables by (kind, value), so the
-- resolver's joins (identities -> profiles by profile_id, traits -> profiles) are co-located.

-- One row per (profile, trait, source, value): survivorship needs every value a source asserted (most
-- frequent, first non-empty), and the rows are the provenance shown by `cdp-hub profiles show`.
ALTER TABLE profile_traits DROP CONSTRAINT IF EXISTS profile_traits_pkey;
ALTER TABLE profile_traits ADD COLUMN IF NOT EXISTS first_seen timestamptz;
UPDATE profile_traits SET first_seen = observed_at WHERE first_seen IS NULL;
ALTER TABLE profile_traits ALTER COLUMN first_seen SET NOT NULL;
ALTER TABLE profile_traits ADD PRIMARY KEY (profile_id, trait, source, value);

-- Replay detection: a replayed batch re-emits profile.created / profile.merged for the events that caused them.
CREATE INDEX IF NOT EXISTS profiles_created_by_event_idx ON profiles (created_by_event);
-- Partial: most profiles are never merged away, and the bulk import writes hundreds of thousands at once.
CREATE INDEX IF NOT EXISTS profiles_merged_into_idx ON profiles (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX IF NOT EXISTS merges_event_idx ON merges (event_id);
CREATE INDEX IF NOT EXISTS merges_merged_profile_idx ON merges (merged_profile_id);

-- What the rules refused to do: link a second crm_id, merge two profiles with different crm_ids, a merge over
-- the size cap. conflict_id is deterministic (rule + identity + profiles), so a replay records nothing new.
CREATE TABLE IF NOT EXISTS identity_conflicts (
    profile_id   uuid        NOT NULL,
    conflict_id  uuid        NOT NULL,
    rule         text        NOT NULL,
    kind         text,
    value        text,
    profile_ids  uuid[]      NOT NULL,
    event_id     uuid,
    detail       text        NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (profile_id, conflict_id)
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS identity_conflicts_open_idx ON identity_conflicts (detected_at) WHERE resolved_at IS NULL;

-- Values that never link profiles, beyond the configured list: the resolver adds a value here when the rules
-- saw it on more than `max_profiles_per_value` profiles (a store's shared phone, a placeholder e-mail).
CREATE TABLE IF NOT EXISTS blocked_identities (
    kind        text        NOT NULL,
    value       text        NOT NULL,
    reason      text        NOT NULL,
    blocked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
) /*gp: DISTRIBUTED BY (kind, value) */;
