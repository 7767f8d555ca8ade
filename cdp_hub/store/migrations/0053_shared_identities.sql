-- Values two or more people use (a family's phone, an e-mail typed by a relative, a store's phone typed at
-- the till): found by the resolver when a rule refused to let a record join a profile through them. They
-- link no record from then on (a household value links a record only to the one holder whose name agrees),
-- and they stay with every holder as a contact point. The first holder keeps its `identities` row; the
-- others are here, and every holder has a row. Greenplum: distributed by (kind, value) like `identities`,
-- so the resolver's lookup by value is co-located.
CREATE TABLE IF NOT EXISTS shared_identities (
    kind        text        NOT NULL,
    value       text        NOT NULL,
    profile_id  uuid        NOT NULL,
    event_id    uuid,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value, profile_id)
) /*gp: DISTRIBUTED BY (kind, value) */;
CREATE INDEX IF NOT EXISTS shared_identities_profile_idx ON shared_identities (profile_id);

-- Event deduplication by event id alone. `events` is partitioned by time, and PostgreSQL wants the partition
-- key in every unique key of a partitioned table, so `events` can only refuse a second (event_id, occurred_at);
-- an import without a time column stamps each run's time and would store a record again. This table is the
-- unique key: the event writers insert here first, in the same transaction, and store only the events whose
-- id was new. Greenplum: distributed by event_id (as `events` is), the primary key is then enforceable there.
CREATE TABLE IF NOT EXISTS event_ids (
    event_id    uuid        NOT NULL PRIMARY KEY,
    occurred_at timestamptz NOT NULL
) /*gp: DISTRIBUTED BY (event_id) */;
INSERT INTO event_ids (event_id, occurred_at)
SELECT DISTINCT ON (event_id) event_id, occurred_at FROM events ORDER BY event_id, occurred_at
ON CONFLICT DO NOTHING;
