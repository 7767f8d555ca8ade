-- The dead-letter archive: every record of cdp.dlq, browsable and replayable whatever the bus backend.
CREATE TABLE IF NOT EXISTS dead_letters (
    dlq_id        text        NOT NULL,
    failure_type  text        NOT NULL,
    stage         text        NOT NULL,
    source        text,
    record_id     text,
    error         text        NOT NULL,
    field         text,
    envelope      jsonb       NOT NULL,
    failed_at     timestamptz NOT NULL,
    replayed_at   timestamptz,
    replay_result text,
    PRIMARY KEY (dlq_id)
) /*gp: DISTRIBUTED BY (dlq_id) */;
CREATE INDEX IF NOT EXISTS dead_letters_failed_idx ON dead_letters (failed_at);
