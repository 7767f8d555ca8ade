-- Journey experiments: the arm an entry was assigned when it entered (a variant's name, 'control', 'holdout'),
-- kept with the position so a profile stays on its variant's branch through waits, restarts and merges (the
-- position moves to the surviving profile with its arm). NULL: the journey had no experiment at entry.
ALTER TABLE journey_positions ADD COLUMN IF NOT EXISTS variant text;
-- An entry drawn into the control group is stored finished, status 'control' (it counts for the re-entry policy).
