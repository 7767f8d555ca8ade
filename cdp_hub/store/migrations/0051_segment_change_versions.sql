-- For trait-only segments a change is identified by the Golden Record version it was decided on, so the
-- batch recompute and the real-time check name the same change with the same event id (and time).
ALTER TABLE segment_changes ADD COLUMN IF NOT EXISTS profile_version bigint;
ALTER TABLE segment_changes ADD COLUMN IF NOT EXISTS changed_at timestamptz;
