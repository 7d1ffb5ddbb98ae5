-- How far each of several intake logs is stored, for a cluster whose
-- partitions each have their own owner and writer (docs/cluster.md): the
-- position of the newest message of the log `key` the stored readings
-- cover, updated in the same transaction as each batch, so a new owner
-- stores exactly what the previous one did not. Positions only grow.
CREATE TABLE intake_progress_keyed (
    key text PRIMARY KEY,
    pos bigint NOT NULL CHECK (pos >= 0)
);
