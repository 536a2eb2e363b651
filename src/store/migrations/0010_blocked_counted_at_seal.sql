-- Blocked lookups are counted into log_hourly_blocked when their rows are
-- sealed, no longer when they are written fresh (upserting every batch's
-- blocked pairs rewrote most of the hour's pages at each commit). Fresh
-- blocks written before this version were counted then: marked, so sealing
-- does not count them again.
ALTER TABLE log_fresh ADD COLUMN blocked_counted INTEGER NOT NULL DEFAULT 0;
UPDATE log_fresh SET blocked_counted = 1;
