-- The registry, alerts with their hash-chained event log, silences and
-- dead letters. Times are epoch milliseconds (bigint), as in the SQLite
-- schema, so both backends hold exactly the same values; only readings
-- (0002) keep a timestamptz, which partitioning and TimescaleDB need.
--
-- Ids are COLLATE "C": lists are ordered and keyset-paged by id, and they
-- must order byte by byte as in SQLite, whatever locale the database
-- was created with (a linguistic collation would also be slower).

CREATE TABLE elders (
    elder_id      text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    phone         text,
    address       text,
    district      text COLLATE "C",
    community     text COLLATE "C",
    home_lat      double precision,
    home_lon      double precision,
    safe_radius_m double precision,
    -- ';'-separated, as the import files write them.
    flags         text NOT NULL DEFAULT '',
    timezone      text NOT NULL DEFAULT 'Asia/Shanghai',
    night_start   text NOT NULL DEFAULT '21:00',
    night_end     text NOT NULL DEFAULT '07:00',
    contact_name  text,
    contact_phone text,
    -- Server time of the last write: the rule engine reloads what changed.
    updated_at    bigint NOT NULL
);
-- A city registry is large enough that the operator API's filtered, paged
-- lists and the engine's "changed since" refresh should not scan it.
CREATE INDEX elders_updated ON elders (updated_at);
CREATE INDEX elders_district ON elders (district, elder_id);
CREATE INDEX elders_community ON elders (community, elder_id);

CREATE TABLE devices (
    device_id   text COLLATE "C" PRIMARY KEY,
    kind        text NOT NULL,
    elder_id    text COLLATE "C" NOT NULL REFERENCES elders (elder_id),
    room        text,
    heartbeat_s bigint NOT NULL DEFAULT 300,
    secret_salt text NOT NULL,
    secret_hash text NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE INDEX devices_elder ON devices (elder_id, device_id);
CREATE INDEX devices_updated ON devices (updated_at);

-- The current state of each alert. `body` is the whole alert; the other
-- columns are copies for filtering. jsonb, so operators can query it ad
-- hoc; the event log below keeps the exact text that was hashed.
CREATE TABLE alerts (
    id         text COLLATE "C" PRIMARY KEY,
    elder_id   text COLLATE "C" NOT NULL,
    kind       text NOT NULL,
    -- 0 LOW, 1 MEDIUM, 2 HIGH, 3 CRITICAL: ordered, for "at least".
    severity   smallint NOT NULL,
    state      text NOT NULL,
    raised_at  bigint NOT NULL,
    updated_at bigint NOT NULL,
    community  text COLLATE "C",
    body       jsonb NOT NULL
);
-- Newest first, keyset-paged on (raised_at, id), overall and per filter.
CREATE INDEX alerts_raised ON alerts (raised_at DESC, id DESC);
CREATE INDEX alerts_elder ON alerts (elder_id, raised_at DESC, id DESC);
CREATE INDEX alerts_community ON alerts (community, raised_at DESC, id DESC);
-- The desk loads every unresolved alert at start; resolved ones pile up.
CREATE INDEX alerts_unresolved ON alerts (raised_at) WHERE state <> 'RESOLVED';

-- Every alert change, gap-free by seq and hash-chained: `alert` is the
-- exact JSON text that was hashed (text, not jsonb, which would reorder
-- keys and break every hash).
CREATE TABLE alert_events (
    seq      bigint PRIMARY KEY,
    alert_id text COLLATE "C" NOT NULL,
    kind     text NOT NULL,
    actor    text NOT NULL,
    at       bigint NOT NULL,
    note     text,
    alert    text NOT NULL,
    hash     text NOT NULL
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, seq);

-- The head of the chain: one row, the last seq and its hash. Appending
-- locks this row (UPDATE ... RETURNING), so concurrent appends queue on
-- it and each sees the one before it; a rolled-back append rolls the head
-- back too, so seq never skips a number.
CREATE TABLE alert_chain_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO alert_chain_head (seq, hash) VALUES (0, '');

CREATE TABLE silences (
    id         text PRIMARY KEY,
    kind       text NOT NULL,
    elder_id   text,
    device_id  text,
    reason     text NOT NULL,
    created_by text NOT NULL,
    created_at bigint NOT NULL,
    until      bigint NOT NULL,
    ended_at   bigint
);
CREATE INDEX silences_until ON silences (until);

-- Refused messages; the store keeps the newest 10 000 (DEAD_LETTER_CAPACITY).
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at bigint NOT NULL,
    topic       text NOT NULL,
    sender      text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea NOT NULL
);
