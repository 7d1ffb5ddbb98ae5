-- How far the intake log is stored: the position of the newest message
-- the stored readings cover, updated in the same transaction as each
-- batch of readings (crates/store/src/postgres/readings.rs), so after a
-- crash the intake replays exactly what is not stored. One row; NULL
-- until the first batch records a position. Positions only grow
-- (GREATEST), so a late batch never moves it back.
CREATE TABLE intake_progress (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pos      bigint CHECK (pos >= 0)
);
INSERT INTO intake_progress (only_row, pos) VALUES (true, NULL);
