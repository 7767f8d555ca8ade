-- What a periodic job has already published, per profile and period (the birthday scan: one row per profile
-- and year), written after the publish: the scan runs every half hour but publishes each birthday once. A
-- crash between the publish and this row only publishes the same event (same id) again.
CREATE TABLE IF NOT EXISTS scheduler_emitted (
    profile_id  uuid        NOT NULL,
    job         text        NOT NULL,
    period      text        NOT NULL,
    emitted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, job, period)
) /*gp: DISTRIBUTED BY (profile_id) */;
