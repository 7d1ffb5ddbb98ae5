-- The rule decision an alert event came from, in a cluster (see the
-- PostgreSQL migration 0004): unique, so a decision delivered twice is
-- kept once. NULL otherwise. Numbered after 0100 for the reason given
-- there.
ALTER TABLE alert_events ADD COLUMN decision INTEGER;
CREATE UNIQUE INDEX alert_events_decision ON alert_events (decision) WHERE decision IS NOT NULL;
