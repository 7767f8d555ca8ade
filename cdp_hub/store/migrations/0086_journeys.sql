-- Journeys (multi-step scenarios): one row per entry of a profile into a journey, its position in the chain.
--
-- A row is 'active' while the profile is in the journey: it rests at a wait or wait_for step (step) until
-- due_at (the end of the wait, the timeout), which the triggers stage polls like its timers. step_seq counts
-- the row's transitions: every advance is an UPDATE ... WHERE step_seq = the one it read, so a redelivered
-- event or a second process cannot advance a step twice. A finished entry stays ('completed', 'exited',
-- 'converted', 'merged') for the re-entry policy (once, once per window). entry_id is derived from the journey
-- and the trigger event, so a redelivered trigger enters nobody twice; at most one entry per profile and journey
-- is active (the partial unique index, which holds the distribution key). Merges move the rows to the surviving
-- profile, which keeps the earlier-entered active entry (the other is closed 'merged').
CREATE TABLE IF NOT EXISTS journey_positions (
    profile_id   uuid        NOT NULL,
    journey      text        NOT NULL,
    entry_id     uuid        NOT NULL,
    entered_at   timestamptz NOT NULL,             -- event time of the trigger that entered the profile
    status       text        NOT NULL,             -- active | completed | exited | converted | merged
    step         text,                             -- where it rests (active) or where it ended
    step_seq     integer     NOT NULL DEFAULT 0,
    step_since   timestamptz NOT NULL,             -- event time the current step began
    due_at       timestamptz,                      -- active: when the wait ends or the wait_for times out
    entry_event  jsonb       NOT NULL,             -- the trigger event (templates read it at every send)
    reason       text,                             -- how it ended: the exit or goal event type
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, journey, entry_id)
) /*gp: DISTRIBUTED BY (profile_id) */;
CREATE UNIQUE INDEX IF NOT EXISTS journey_positions_active_idx ON journey_positions (profile_id, journey)
    WHERE status = 'active';
CREATE INDEX IF NOT EXISTS journey_positions_due_idx ON journey_positions (due_at) WHERE status = 'active';
