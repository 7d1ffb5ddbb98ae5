-- How far the intake log is stored: the position of the newest message
-- the stored readings cover, updated in the same transaction as each
-- batch of readings (crates/store/src/sqlite.rs), so after a crash the
-- intake replays exactly what is not stored. One row; NULL until the
-- first batch records a position. Positions only grow.
-- Numbered after 0100 for the reason given there.
CREATE TABLE intake_progress (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    pos      INTEGER CHECK (pos >= 0)
);
INSERT INTO intake_progress (only_row, pos) VALUES (1, NULL);
