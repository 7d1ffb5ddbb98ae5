CREATE TABLE elders (
    elder_id      TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    phone         TEXT,
    address       TEXT,
    district      TEXT,
    community     TEXT,
    home_lat      REAL,
    home_lon      REAL,
    safe_radius_m REAL,
    flags         TEXT NOT NULL DEFAULT '',
    timezone      TEXT NOT NULL DEFAULT 'Asia/Shanghai',
    night_start   TEXT NOT NULL DEFAULT '21:00',
    night_end     TEXT NOT NULL DEFAULT '07:00',
    contact_name  TEXT,
    contact_phone TEXT,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    elder_id    TEXT NOT NULL REFERENCES elders(elder_id),
    room        TEXT,
    heartbeat_s INTEGER NOT NULL DEFAULT 300,
    secret_salt TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX devices_elder ON devices(elder_id);

CREATE TABLE readings (
    device_id TEXT NOT NULL,
    elder_id  TEXT NOT NULL,
    stream    TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    seq       INTEGER,
    body      TEXT NOT NULL
);
CREATE INDEX readings_elder_ts ON readings(elder_id, ts);
CREATE INDEX readings_device_ts ON readings(device_id, ts);

CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    elder_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    severity   INTEGER NOT NULL,
    state      TEXT NOT NULL,
    raised_at  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX alerts_state ON alerts(state);
CREATE INDEX alerts_elder ON alerts(elder_id, raised_at);
CREATE INDEX alerts_raised ON alerts(raised_at, id);

CREATE TABLE alert_events (
    seq      INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    kind     TEXT NOT NULL,
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    note     TEXT,
    alert    TEXT NOT NULL
);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    sender      TEXT,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    payload     BLOB NOT NULL
);
