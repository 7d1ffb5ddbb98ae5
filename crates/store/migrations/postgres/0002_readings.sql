-- Telemetry: one narrow row per reading, a typed nullable column per
-- protocol field (not a JSON body), so a city's years of readings stay
-- compact and every field can be aggregated. The reading's JSON body is
-- rebuilt from these columns when read (crates/store/src/postgres/readings.rs).
--
-- Columns are ordered by alignment (8-byte, 4, 2, 1, then text) so no
-- row carries padding; absent fields are NULL and take no space beyond
-- the null bitmap.
--
--   stream:     1 vitals, 2 sleep, 3 motion, 4 location, 5 event, 6 status
--   event_type: 1 sos, 2 fall, 3 sos_cancel
--
-- Small-range readings are smallint and the 0..1 / 30..45 fractions real
-- (the protocol's ranges, docs/device-protocol.md, fit with room to
-- spare); lat/lon stay double precision, as real would move a fix by up
-- to a metre.
--
-- Layout: when `CREATE EXTENSION timescaledb` succeeds the table is a
-- hypertable with daily chunks (compression and retention policies are
-- set by the service, which knows retention_days). Otherwise it is
-- partitioned by range on ts, one partition per UTC day, which the
-- service creates ahead and drops after retention_days; the DEFAULT
-- partition takes whatever arrives for a day that has no partition yet,
-- so no reading is ever refused for its time.

CREATE SEQUENCE readings_id_seq AS bigint;

DO $migration$
DECLARE
    columns text := $cols$
        ts          timestamptz      NOT NULL,
        -- Storage order: breaks ties between readings with the same ts
        -- when paging.
        id          bigint           NOT NULL DEFAULT nextval('readings_id_seq'),
        seq         bigint,
        lat         double precision,
        lon         double precision,
        temp_c      real,
        movement    real,
        accuracy_m  real,
        confidence  real,
        rssi        integer,
        stream      smallint         NOT NULL CHECK (stream BETWEEN 1 AND 6),
        hr          smallint,
        spo2        smallint,
        rr          smallint,
        sys         smallint,
        dia         smallint,
        event_type  smallint,
        battery_pct smallint,
        in_bed      boolean,
        motion      boolean,
        online      boolean,
        device_id   text COLLATE "C" NOT NULL,
        elder_id    text COLLATE "C" NOT NULL,
        room        text,
        fw          text
    $cols$;
BEGIN
    -- A missing or not preloaded extension is an error; catching it rolls
    -- back only this attempt, and the plain PostgreSQL layout is used.
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'eldercare: TimescaleDB is not available (%); readings are partitioned by day', SQLERRM;
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('CREATE TABLE readings (%s)', columns);
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
    ELSE
        EXECUTE format('CREATE TABLE readings (%s) PARTITION BY RANGE (ts)', columns);
        CREATE TABLE readings_default PARTITION OF readings DEFAULT;
    END IF;
END
$migration$;

ALTER SEQUENCE readings_id_seq OWNED BY readings.id;

-- Every query names an elder or a device and a time range, so composite
-- b-trees that end in (ts, id) serve both the filter and the keyset order
-- without a sort. Partition pruning (or chunk exclusion) already confines
-- a range to its days, which is what a BRIN on ts would add, so there is
-- none.
CREATE INDEX readings_elder_ts ON readings (elder_id, ts, id);
CREATE INDEX readings_device_ts ON readings (device_id, ts, id);
-- "The newest reading of each stream of a device": one probe per stream.
CREATE INDEX readings_device_stream_ts ON readings (device_id, stream, ts, id);

-- The streams each device has ever sent, written with every batch (an
-- index probe per new pair; nothing when already known). The newest
-- reading of a stream a device never sends would otherwise be looked for
-- in every one of the ~400 daily partitions.
CREATE TABLE reading_streams (
    device_id text COLLATE "C" NOT NULL,
    stream    smallint NOT NULL,
    PRIMARY KEY (device_id, stream)
);
