-- Fuzzy matching runs: when each started, the matcher configuration's fingerprint, and the parameters it scored
-- with (m, u, priors as JSON). An incremental run (`cdp-hub identity suggest --incremental`) compares only the
-- profiles changed since the last run of the same configuration against the rest, with that run's validated
-- parameters. Greenplum: a small table, distributed by its key.
CREATE TABLE IF NOT EXISTS matcher_runs (
    run_id      uuid        NOT NULL PRIMARY KEY,
    matcher     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    incremental boolean     NOT NULL,
    profiles    integer     NOT NULL,
    compared    integer     NOT NULL,   -- profiles compared against the rest (all, or the changed ones)
    parameters  jsonb       NOT NULL
) /*gp: DISTRIBUTED BY (run_id) */;
CREATE INDEX IF NOT EXISTS matcher_runs_matcher_idx ON matcher_runs (matcher, started_at DESC);
