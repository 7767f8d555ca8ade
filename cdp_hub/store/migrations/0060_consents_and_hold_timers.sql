-- Consent per channel and purpose, with where it came from, and hold-until timers.
--
-- consents: one row per statement (a form, a double opt-in confirmation, an import, an unsubscribe, a
-- merge resolving a conflict); the current state of (profile, channel, purpose) is its latest statement,
-- an opt-out winning a tie. Rows are never updated except to follow a merge to the surviving profile.
CREATE TABLE IF NOT EXISTS consents (
    profile_id   uuid        NOT NULL,
    channel      text        NOT NULL,
    purpose      text        NOT NULL,
    status       text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    source       text        NOT NULL,
    evidence     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    event_id     uuid        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, event_id, channel, purpose)
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS consents_current_idx ON consents (profile_id, channel, purpose, occurred_at);

-- Hold-until: a timer with a dedupe key is the one pending timer of (profile, scenario, key); a repeated
-- trigger moves its fire time instead of adding a timer. occurred_at is the event time of the trigger the
-- timer waits on (the latest one), so a cancel is judged in event time whatever order events arrive in.
ALTER TABLE scheduled_triggers ADD COLUMN IF NOT EXISTS dedupe_key text;
ALTER TABLE scheduled_triggers ADD COLUMN IF NOT EXISTS occurred_at timestamptz;
CREATE INDEX IF NOT EXISTS scheduled_triggers_key_idx ON scheduled_triggers (profile_id, scenario, dedupe_key);
