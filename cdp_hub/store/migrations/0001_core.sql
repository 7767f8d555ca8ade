-- Core tables of cdp-hub. PostgreSQL syntax; "gp:" marker comments hold the Greenplum-only clauses.
-- Greenplum: every unique key includes the distribution key; profile tables are distributed by
-- profile_id so that profile-centred joins stay co-located; identities by (kind, value), the lookup key.

CREATE TABLE IF NOT EXISTS profiles (
    profile_id      uuid        NOT NULL,
    merged_into     uuid,
    golden          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version         bigint      NOT NULL DEFAULT 1,
    created_by_event uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id)
) /*gp: DISTRIBUTED BY (profile_id) */;

CREATE TABLE IF NOT EXISTS identities (
    kind        text        NOT NULL,
    value       text        NOT NULL,
    profile_id  uuid        NOT NULL,
    source      text,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
) /*gp: DISTRIBUTED BY (kind, value) */;
CREATE INDEX IF NOT EXISTS identities_profile_idx ON identities (profile_id);

CREATE TABLE IF NOT EXISTS profile_traits (
    profile_id  uuid        NOT NULL,
    trait       text        NOT NULL,
    source      text        NOT NULL,
    value       jsonb       NOT NULL,
    observed_at timestamptz NOT NULL,
    seen_count  integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (profile_id, trait, source)
) /*gp: DISTRIBUTED BY (profile_id) */;

CREATE TABLE IF NOT EXISTS merges (
    surviving_profile_id uuid        NOT NULL,
    merge_id             uuid        NOT NULL,
    merged_profile_id    uuid        NOT NULL,
    event_id             uuid,
    identities           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    reason               text        NOT NULL,
    merged_at            timestamptz NOT NULL DEFAULT now(),
    undone_at            timestamptz,
    PRIMARY KEY (surviving_profile_id, merge_id)
) /*gp: DISTRIBUTED BY (surviving_profile_id) */;

-- Append-only fact table, partitioned by time. The unique key (event_id, occurred_at) makes replays no-ops.
CREATE TABLE IF NOT EXISTS events (
    event_id         uuid        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    profile_id       uuid,
    type             text        NOT NULL,
    source           text        NOT NULL,
    source_record_id text,
    received_at      timestamptz NOT NULL,
    body             jsonb       NOT NULL,
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at)
  /*gp: WITH (appendoptimized=true, orientation=column, compresstype=zstd) DISTRIBUTED BY (event_id) */;

DO $$
DECLARE y integer;
BEGIN
    FOR y IN 2015..2035 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS events_y%s PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            y, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END LOOP;
END $$;
CREATE TABLE IF NOT EXISTS events_other PARTITION OF events DEFAULT;
CREATE INDEX IF NOT EXISTS events_profile_idx ON events (profile_id, occurred_at);

CREATE TABLE IF NOT EXISTS connector_state (
    connector   text        NOT NULL,
    stream      text        NOT NULL,
    state       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, stream)
) /*gp: DISTRIBUTED BY (connector, stream) */;

CREATE TABLE IF NOT EXISTS segments (
    segment_id  text        NOT NULL,
    definition  jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id)
) /*gp: DISTRIBUTED BY (segment_id) */;

CREATE TABLE IF NOT EXISTS segment_members (
    profile_id  uuid        NOT NULL,
    segment_id  text        NOT NULL,
    entered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, segment_id)
) /*gp: DISTRIBUTED BY (profile_id) */;

-- Durable timers: a delayed scenario step waits here, not in memory.
CREATE TABLE IF NOT EXISTS scheduled_triggers (
    profile_id  uuid        NOT NULL,
    trigger_id  uuid        NOT NULL,
    scenario    text        NOT NULL,
    fire_at     timestamptz NOT NULL,
    event_id    uuid,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status      text        NOT NULL DEFAULT 'pending',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, trigger_id)
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS scheduled_triggers_due_idx ON scheduled_triggers (status, fire_at);

-- The idempotent send log: one row per message intent, keyed by its deterministic id.
CREATE TABLE IF NOT EXISTS messages (
    message_id          text        NOT NULL,
    profile_id          uuid,
    scenario            text,
    channel             text        NOT NULL,
    status              text        NOT NULL DEFAULT 'queued',
    attempts            integer     NOT NULL DEFAULT 0,
    trigger_event_id    uuid,
    provider            text,
    provider_message_id text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    PRIMARY KEY (message_id)
) /*gp: DISTRIBUTED BY (message_id) */;
CREATE INDEX IF NOT EXISTS messages_profile_idx ON messages (profile_id, created_at);
