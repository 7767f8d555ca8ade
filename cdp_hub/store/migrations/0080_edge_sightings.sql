-- The HTTP edge's dedupe window in PostgreSQL (edge.dedupe_store = "postgres"), for deployments where Redis is
-- a cache that may be flushed: one row per (scope, item) seen, a tracking source's messageId or the id of an
-- event the hub derives from a provider callback or an unsubscribe click. Owned by store/sightings.py.
--
-- A row counts until expires_at; a row past it is taken over by the next sighting (ON CONFLICT ... WHERE) and
-- deleted by the edge_sightings_purge job (edge_sightings_expiry_idx keeps that a range scan). On Greenplum the
-- distribution key is the primary key (scope, item): the unique key must contain it, and ids spread evenly.
CREATE TABLE IF NOT EXISTS edge_sightings (
    scope       text        NOT NULL,
    item        text        NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, item)
) /*gp: DISTRIBUTED BY (scope, item) */;
CREATE INDEX IF NOT EXISTS edge_sightings_expiry_idx ON edge_sightings (expires_at);
