-- Campaigns (mass communications): one row per run, and the audience each run snapshotted at launch.
--
-- campaign_runs: a run is 'sending' from its launch (the audience is stored in the same transaction) until
-- every audience row is decided ('done'); 'paused' and 'cancelled' are set by an operator and read by the
-- sender between chunks. owner/heartbeat_at are the sender's lease: a run whose sender stopped checking in is
-- taken over (and resumes from its audience rows). A scheduled run names its slot: the unique index lets one
-- process launch each slot. Distributed by campaign_id so the slot index holds on Greenplum.
CREATE TABLE IF NOT EXISTS campaign_runs (
    campaign_id      text             NOT NULL,
    run_id           uuid             NOT NULL,
    status           text             NOT NULL,             -- sending | paused | cancelled | done
    scheduled_for    timestamptz,                           -- the schedule's slot; NULL: launched by hand
    launched_at      timestamptz      NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    planned          integer          NOT NULL DEFAULT 0,
    rate_limit       double precision NOT NULL,
    snapshot_seconds double precision,
    definition       jsonb            NOT NULL,              -- the campaign as launched (a later edit does not change a run)
    owner            text,
    heartbeat_at     timestamptz,
    PRIMARY KEY (campaign_id, run_id)
) /*gp: DISTRIBUTED BY (campaign_id) */;
CREATE UNIQUE INDEX IF NOT EXISTS campaign_runs_slot_idx ON campaign_runs (campaign_id, scheduled_for);
CREATE INDEX IF NOT EXISTS campaign_runs_status_idx ON campaign_runs (status);

-- The audience of a run, one row per profile: 'pending' until the sender decides it ('sent', or 'skipped'
-- with the contact policy's decision as reason). not_before holds a row deferred by quiet hours. variant is
-- kept for experiments (a control group's rows will be decided 'control'). Written set-wise: the snapshot is
-- one INSERT ... SELECT, each chunk one UPDATE.
CREATE TABLE IF NOT EXISTS campaign_audience (
    run_id      uuid        NOT NULL,
    profile_id  uuid        NOT NULL,
    status      text        NOT NULL DEFAULT 'pending',   -- pending | sent | skipped
    reason      text,                                     -- skipped: no_consent | capped | ...
    variant     text,
    not_before  timestamptz,
    decided_at  timestamptz,
    PRIMARY KEY (run_id, profile_id)
) /*gp: DISTRIBUTED BY (profile_id) */;
