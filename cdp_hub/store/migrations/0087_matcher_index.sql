-- The fuzzy matcher's index (cdp_hub/resolver/fuzzy/index.py), kept between runs so that an incremental run
-- (`cdp-hub identity suggest --incremental`) prepares only the changed profiles and reads the rest of its
-- neighbourhood from here instead of every profile. One copy per matcher configuration and index layout
-- (`matcher`): a full run replaces it, an incremental run updates the changed profiles' rows.
--
-- matcher_profiles: each live profile's prepared values (folded, transliterated, skeletons; the matcher's
--   field order), what a comparison reads.
-- matcher_keys: the keys a neighbourhood is found by, `kind` = the blocking pass. Byte order (COLLATE "C") is the
--   order the matcher sorts keys in, so a sorted pass's neighbours are the rows next to a key in the index;
--   `name_sort` (surname and given name skeletons; '' in sorted passes) is the order a block too big to pair
--   all-to-all is scanned in, so its window around a profile is the rows next to it within the key.
-- matcher_terms: how many indexed profiles hold each value of a term-frequency field (`kind` = -1 - the
--   comparison), the key '' of a kind holding how many hold any value, and (kind 0, key '') the number of
--   profiles: kept up to date by each run, so an incremental run reads counts instead of counting.
-- Greenplum: distributed by the profile (by the counted value for matcher_terms).
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
    name_sort  text     COLLATE "C" NOT NULL,
    profile_id uuid     NOT NULL
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS matcher_keys_lookup_idx ON matcher_keys (matcher, kind, key, name_sort, profile_id);
CREATE INDEX IF NOT EXISTS matcher_keys_profile_idx ON matcher_keys (matcher, profile_id);

CREATE TABLE IF NOT EXISTS matcher_terms (
    matcher text     NOT NULL,
    kind    smallint NOT NULL,
    key     text     COLLATE "C" NOT NULL,
    n       bigint   NOT NULL,
    PRIMARY KEY (matcher, kind, key)
) /*gp: DISTRIBUTED BY (key) */;
