-- Every run of a scheduled job (cdp-hub run's scheduler, `cdp-hub jobs run`, the Airflow operators): status,
-- duration and error. One row per run. A scheduled run names its cron slot (scheduled_for): the unique index
-- lets one process claim a slot, however many schedulers run. A running row's heartbeat_at is refreshed
-- while the job runs; a row whose heartbeat is older than the lease belongs to a process that died, and no
-- longer keeps the job from running.
CREATE TABLE IF NOT EXISTS job_runs (
    job            text             NOT NULL,
    run_id         uuid             NOT NULL,
    kind           text             NOT NULL,
    trigger        text             NOT NULL,            -- schedule | manual | airflow
    scheduled_for  timestamptz,                          -- the cron slot; NULL for a run started by hand
    started_at     timestamptz      NOT NULL,
    heartbeat_at   timestamptz      NOT NULL,
    finished_at    timestamptz,
    status         text             NOT NULL,            -- running | succeeded | failed | abandoned
    seconds        double precision,
    result         jsonb            NOT NULL DEFAULT '{}'::jsonb,
    error          text,
    host           text             NOT NULL DEFAULT '',
    PRIMARY KEY (job, run_id)
) /*gp: DISTRIBUTED BY (job) */;
CREATE UNIQUE INDEX IF NOT EXISTS job_runs_slot_idx ON job_runs (job, scheduled_for);
CREATE INDEX IF NOT EXISTS job_runs_started_idx ON job_runs (job, started_at);
