-- Segments: recompute runs, the entered/exited diff of each run, and the persisted "last run" of the
-- daily scheduler (birthdays). Greenplum: profile-keyed tables stay distributed by profile_id so the diff
-- joins segment_members (also by profile_id) on the same segment hosts.

-- One row per batch recomputation. A run is 'pending' from the moment its diff is stored until its
-- membership is applied; a recompute that finds a pending run resumes it (same run id, same event ids).
CREATE TABLE IF NOT EXISTS segment_runs (
    segment_id   text        NOT NULL,
    run_id       uuid        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    as_of        timestamptz NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    entered      integer     NOT NULL DEFAULT 0,
    exited       integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (segment_id, run_id)
) /*gp: DISTRIBUTED BY (segment_id) */;
CREATE INDEX IF NOT EXISTS segment_runs_pending_idx ON segment_runs (segment_id, status);

-- The diff of a run: who enters, who leaves. Kept until the next run of the segment (an audit of the last one).
CREATE TABLE IF NOT EXISTS segment_changes (
    profile_id  uuid NOT NULL,
    segment_id  text NOT NULL,
    run_id      uuid NOT NULL,
    change      text NOT NULL,
    PRIMARY KEY (profile_id, segment_id, run_id)
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE INDEX IF NOT EXISTS segment_changes_run_idx ON segment_changes (segment_id, run_id);

CREATE INDEX IF NOT EXISTS segment_members_segment_idx ON segment_members (segment_id);

-- Periodic jobs run at most once per interval across restarts and processes: last_run_at is written when a
-- run finished, claimed_at when one started (a lease, so two processes do not scan at once).
CREATE TABLE IF NOT EXISTS scheduler_runs (
    job          text        NOT NULL,
    last_run_at  timestamptz,
    claimed_at   timestamptz,
    last_result  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (job)
) /*gp: DISTRIBUTED BY (job) */;
