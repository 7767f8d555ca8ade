-- Unmerge: an operator split two profiles; the resolver must not merge them again automatically.
-- One row per direction, so a lookup by either profile_id is a co-located point query.
CREATE TABLE IF NOT EXISTS profile_splits (
    profile_id        uuid        NOT NULL,
    other_profile_id  uuid        NOT NULL,
    merge_id          uuid,
    reason            text        NOT NULL,
    split_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, other_profile_id)
) /*gp: DISTRIBUTED BY (profile_id) */;

-- Dynamic blocking counts the profiles a value was refused on: a lookup by (kind, value).
CREATE INDEX IF NOT EXISTS identity_conflicts_value_idx ON identity_conflicts (kind, value);
