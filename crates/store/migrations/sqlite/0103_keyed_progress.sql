-- How far each of several intake logs is stored (see the PostgreSQL
-- migration 0005). Numbered after 0100 for the reason given there.
CREATE TABLE intake_progress_keyed (
    key TEXT PRIMARY KEY,
    pos INTEGER NOT NULL CHECK (pos >= 0)
);
