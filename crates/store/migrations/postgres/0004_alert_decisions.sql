-- The rule decision an alert event came from, in a cluster: the
-- sequence of the decision in the replicated decision log. Unique, so a
-- decision delivered twice (to a desk that took over, or to a stale one)
-- is kept once: the second insert fails and, being in the same statement
-- as the chain head's update, takes no seq. NULL for operator actions,
-- escalations and a single node's decisions.
ALTER TABLE alert_events ADD COLUMN decision bigint;
CREATE UNIQUE INDEX alert_events_decision ON alert_events (decision) WHERE decision IS NOT NULL;
