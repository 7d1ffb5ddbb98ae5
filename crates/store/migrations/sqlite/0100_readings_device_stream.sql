-- The operator API's "latest reading of each stream" looks up the newest
-- reading of one device on one stream; without this index that scans the
-- device's whole history for a stream it never sends.
-- Numbered 0100 so that migrations added on other branches meanwhile
-- (0002, ...) cannot take the same version.
CREATE INDEX readings_device_stream_ts ON readings(device_id, stream, ts);
