-- Fuzzy matching: scored merge suggestions for profiles that share no identifier but look like one person.
-- One row per unordered pair (profile_a < profile_b); re-running the matcher updates the row in place, and a
-- decided row (merged, rejected) keeps its decision. Greenplum: distributed by profile_a, which the primary
-- key includes; joins to profiles on profile_a stay co-located.
CREATE TABLE IF NOT EXISTS merge_suggestions (
    profile_a   uuid             NOT NULL,
    profile_b   uuid             NOT NULL,
    score       double precision NOT NULL,   -- posterior match probability, 0..1
    weight      double precision NOT NULL,   -- log2 Bayes factor (Fellegi-Sunter match weight)
    evidence    jsonb            NOT NULL,   -- per field: level reached, similarity, weight
    status      text             NOT NULL DEFAULT 'open',
    matcher     text             NOT NULL,   -- fingerprint of the matcher configuration that scored it
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    decided_at  timestamptz,
    decided_by  text,
    PRIMARY KEY (profile_a, profile_b),
    CONSTRAINT merge_suggestions_ordered CHECK (profile_a < profile_b),
    CONSTRAINT merge_suggestions_status CHECK (status IN ('open', 'auto', 'merged', 'rejected', 'stale'))
) /*gp: DISTRIBUTED BY (profile_a) */;
CREATE INDEX IF NOT EXISTS merge_suggestions_status_idx ON merge_suggestions (status, score DESC);
CREATE INDEX IF NOT EXISTS merge_suggestions_b_idx ON merge_suggestions (profile_b);
