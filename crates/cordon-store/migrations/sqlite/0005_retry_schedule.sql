-- When a retrying action may run again (Unix microseconds); NULL: now.
ALTER TABLE actions ADD COLUMN not_before_us INTEGER;
