-- The fuzzy matcher's index (cdp_hub/resolver/fuzzy/index.py), kept between runs so that an incremental run
-- (`cdp-hub identity suggest --incremental`) prepares only the changed profiles and reads the rest of its
-- neighbourhood from here instead of every profile. One copy per matcher configuration and index layout
-- (`matcher`): a full run replaces it, an incremental run updates the changed profiles' rows.
--
-- matcher_profiles: each live profile's prepared values (folded, transliterated, skeletons; the matcher's
--   field order), what a comparison reads.
-- matcher_keys: the keys a neighbourhood is found by; `kind` >= 0 is a blocking pass (its key), `kind` < 0 is
--   the term frequency of comparison -1 - kind (the value counted). Byte order (COLLATE "C") is the order the
--   matcher sorts keys in, so a sorted pass's neighbours are the rows next to a key in the index.
-- Greenplum: both distributed by the profile, as the profile tables are.
CREATE TABLE IF NOT EXISTS matcher_profiles (
    matcher    text   NOT NULL,
    profile_id uuid   NOT NULL,
    prepared   text[] NOT NULL,
    PRIMARY KEY (matcher, profile_id)
) /*gp: DISTRIBUTED BY (profile_id) */;

CREATE TABLE IF NOT EXISTS matcher_keys (
    matcher    text     NOT NULL,
    kind       smallint NOT NULL,
    key        text     COLLATE "C" NOT NULL,
    profile_id uuid     NOT NULL
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS matcher_keys_lookup_idx ON matcher_keys (matcher, kind, key, profile_id);
CREATE INDEX IF NOT EXISTS matcher_keys_profile_idx ON matcher_keys (matcher, profile_id);
