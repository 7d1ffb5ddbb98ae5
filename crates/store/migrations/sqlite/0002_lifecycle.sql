-- Tamper evidence: each event's hash chains to the previous one.
ALTER TABLE alert_events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE INDEX alert_events_alert ON alert_events(alert_id, seq);

-- Alerts by community, for answer-time statistics.
ALTER TABLE alerts ADD COLUMN community TEXT;
UPDATE alerts SET community = json_extract(body, '$.community');
CREATE INDEX alerts_community ON alerts(community, raised_at);

CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    elder_id   TEXT,
    device_id  TEXT,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    until      INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX silences_until ON silences(until);
