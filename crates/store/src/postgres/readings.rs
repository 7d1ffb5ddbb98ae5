//! Telemetry on PostgreSQL: readings go into typed columns, one row per
//! reading (see `migrations/postgres/0002_readings.sql`), and their JSON
//! body is rebuilt from the columns when read, identical to what the
//! SQLite backend stores.
use super::maintenance::Layout;
use super::{PgStore, corrupt, now_ms};
use crate::refusal::{self, RefusedRow};
use crate::{
    ReadingQuery, ReadingRecord, ReadingSubject, Result, StoreError, StoredReading, VITAL_FIELDS,
    VitalsHour, vital_columns,
};
use chrono::{DateTime, Utc};
use eldercare_model::{
    Body, DeviceEvent, EpochMs, EventType, Location, Motion, Sleep, Status, Stream, VisitAction,
    Vitals,
};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use tracing::debug;

/// The `stream` column's code of each stream.
pub(super) fn stream_code(s: Stream) -> i16 {
    match s {
        Stream::Vitals => 1,
        Stream::Sleep => 2,
        Stream::Motion => 3,
        Stream::Location => 4,
        Stream::Event => 5,
        Stream::Status => 6,
    }
}

fn stream_of(code: i16) -> Option<Stream> {
    Stream::ALL.into_iter().find(|s| stream_code(*s) == code)
}

fn event_code(e: EventType) -> i16 {
    match e {
        EventType::Sos => 1,
        EventType::Fall => 2,
        EventType::SosCancel => 3,
        EventType::Visit => 4,
        EventType::CheckIn => 5,
    }
}

fn event_of(code: i16) -> Option<EventType> {
    [
        EventType::Sos,
        EventType::Fall,
        EventType::SosCancel,
        EventType::Visit,
        EventType::CheckIn,
    ]
    .into_iter()
    .find(|e| event_code(*e) == code)
}

/// The `visit_action` column's code of a `visit` event's action.
fn action_code(a: VisitAction) -> i16 {
    match a {
        VisitAction::In => 1,
        VisitAction::Out => 2,
    }
}

fn action_of(code: i16) -> Option<VisitAction> {
    [VisitAction::In, VisitAction::Out]
        .into_iter()
        .find(|a| action_code(*a) == code)
}

/// How far back the latest readings are looked for first: devices report
/// at least every heartbeat (minutes), and the protocol refuses readings
/// older than a day.
const LATEST_WINDOW_MS: EpochMs = 2 * 24 * 3600 * 1000;

/// The earliest instant PostgreSQL's timestamptz holds (4713-11-24 BC),
/// in epoch milliseconds. chrono's range is narrower at the other end.
const PG_MIN_MS: EpochMs = -210_866_803_200_000;

/// A reading's time as a timestamptz; `None` outside what it can hold.
fn to_ts(ms: EpochMs) -> Option<DateTime<Utc>> {
    if ms < PG_MIN_MS {
        return None;
    }
    DateTime::from_timestamp_millis(ms)
}

/// A query bound as a timestamptz. Bounds beyond what can be stored are
/// moved to the nearest storable instant, which selects the same readings.
fn bound_ts(ms: EpochMs) -> DateTime<Utc> {
    let max = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    DateTime::from_timestamp_millis(ms.clamp(PG_MIN_MS, max)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The protocol's small counts (hr, spo2, rr, sys, dia, battery) fit a
/// smallint many times over; a value that does not was never validated.
/// (The error names the field, not the value: a reading is personal
/// data, and errors are logged.)
fn small(field: &str, v: Option<u32>) -> Result<Option<i16>> {
    v.map(|v| {
        i16::try_from(v).map_err(|_| {
            StoreError::OutOfRange(format!(
                "`{field}` is larger than the readings table holds (smallint)"
            ))
        })
    })
    .transpose()
}

/// Fractions kept as `real`: readings are single-precision measurements
/// (a thermometer's 36.6, a confidence of 0.93), so 4 bytes keep every
/// digit a sensor reports.
fn narrow(v: Option<f64>) -> Option<f32> {
    v.map(|v| v as f32)
}

/// Back from `real` to the decimal that was stored: 36.6 read as an f32
/// widened bit for bit would print as 36.599998474121094. The shortest
/// decimal that round-trips the f32 is the value the device sent (up to
/// an f32's 6 to 9 significant digits), and that decimal parsed as f64 is
/// what the SQLite backend would have kept.
fn widen(v: Option<f32>) -> Option<f64> {
    v.map(|v| v.to_string().parse().unwrap_or(f64::from(v)))
}

fn unsigned(v: Option<i16>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// A batch of readings as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    ts: Vec<DateTime<Utc>>,
    seq: Vec<Option<i64>>,
    lat: Vec<Option<f64>>,
    lon: Vec<Option<f64>>,
    temp_c: Vec<Option<f32>>,
    movement: Vec<Option<f32>>,
    accuracy_m: Vec<Option<f32>>,
    confidence: Vec<Option<f32>>,
    rssi: Vec<Option<i32>>,
    stream: Vec<i16>,
    hr: Vec<Option<i16>>,
    spo2: Vec<Option<i16>>,
    rr: Vec<Option<i16>>,
    sys: Vec<Option<i16>>,
    dia: Vec<Option<i16>>,
    event_type: Vec<Option<i16>>,
    battery_pct: Vec<Option<i16>>,
    in_bed: Vec<Option<bool>>,
    motion: Vec<Option<bool>>,
    online: Vec<Option<bool>>,
    device_id: Vec<&'a str>,
    elder_id: Vec<&'a str>,
    room: Vec<Option<&'a str>>,
    fw: Vec<Option<&'a str>>,
    visit_action: Vec<Option<i16>>,
    carer: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, r: &'a StoredReading) -> Result<()> {
        let reading = &r.reading;
        let (ts, row) = row_of(r)?;
        self.ts.push(ts);
        // Stored bit for bit, as SQLite does: a u64 above i64::MAX comes
        // back unchanged.
        self.seq.push(reading.seq.map(|s| s as i64));
        self.stream.push(stream_code(reading.stream()));
        self.device_id.push(&reading.device_id);
        self.elder_id.push(&r.elder_id);
        self.lat.push(row.lat);
        self.lon.push(row.lon);
        self.temp_c.push(row.temp_c);
        self.movement.push(row.movement);
        self.accuracy_m.push(row.accuracy_m);
        self.confidence.push(row.confidence);
        self.rssi.push(row.rssi);
        self.hr.push(row.hr);
        self.spo2.push(row.spo2);
        self.rr.push(row.rr);
        self.sys.push(row.sys);
        self.dia.push(row.dia);
        self.event_type.push(row.event_type);
        self.battery_pct.push(row.battery_pct);
        self.in_bed.push(row.in_bed);
        self.motion.push(row.motion);
        self.online.push(row.online);
        self.room.push(row.room);
        self.fw.push(row.fw);
        self.visit_action.push(row.visit_action);
        self.carer.push(row.carer);
        Ok(())
    }
}

impl<'a> Columns<'a> {
    fn of(readings: impl IntoIterator<Item = &'a StoredReading>) -> Result<Columns<'a>> {
        let mut c = Columns::default();
        for r in readings {
            c.push(r)?;
        }
        Ok(c)
    }

    fn len(&self) -> usize {
        self.ts.len()
    }
}

/// Why the readings table's columns cannot hold this reading, if they
/// cannot (a count beyond a smallint, a time beyond a timestamptz).
pub(crate) fn columns_refusal(r: &StoredReading) -> Option<String> {
    row_of(r).err().map(|e| e.to_string())
}

/// Batches of at least this many readings are written with COPY, smaller
/// ones with UNNEST (see [`PgStore::pg_insert_readings`]).
pub const COPY_MIN: usize = 2000;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

impl Columns<'_> {
    /// The batch in COPY's binary format: no text to format, escape or
    /// parse, every value as the server stores it.
    fn copy_binary(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
            match v {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let n = self.ts.len();
        let mut out = Vec::with_capacity(19 + n * 220);
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for i in 0..n {
            out.extend_from_slice(&26i16.to_be_bytes());
            let ts = self.ts[i].timestamp_micros() - PG_EPOCH_US;
            field(&mut out, Some(&ts.to_be_bytes()));
            field(
                &mut out,
                self.seq[i].map(i64::to_be_bytes).as_ref().map(|b| &b[..]),
            );
            for v in [self.lat[i], self.lon[i]] {
                field(&mut out, v.map(f64::to_be_bytes).as_ref().map(|b| &b[..]));
            }
            for v in [
                self.temp_c[i],
                self.movement[i],
                self.accuracy_m[i],
                self.confidence[i],
            ] {
                field(&mut out, v.map(f32::to_be_bytes).as_ref().map(|b| &b[..]));
            }
            field(
                &mut out,
                self.rssi[i].map(i32::to_be_bytes).as_ref().map(|b| &b[..]),
            );
            field(&mut out, Some(&self.stream[i].to_be_bytes()));
            for v in [
                self.hr[i],
                self.spo2[i],
                self.rr[i],
                self.sys[i],
                self.dia[i],
                self.event_type[i],
                self.battery_pct[i],
            ] {
                field(&mut out, v.map(i16::to_be_bytes).as_ref().map(|b| &b[..]));
            }
            for v in [self.in_bed[i], self.motion[i], self.online[i]] {
                field(&mut out, v.map(|b| [u8::from(b)]).as_ref().map(|b| &b[..]));
            }
            for v in [
                Some(self.device_id[i]),
                Some(self.elder_id[i]),
                self.room[i],
                self.fw[i],
            ] {
                field(&mut out, v.map(str::as_bytes));
            }
            field(
                &mut out,
                self.visit_action[i]
                    .map(i16::to_be_bytes)
                    .as_ref()
                    .map(|b| &b[..]),
            );
            field(&mut out, self.carer[i].map(str::as_bytes));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }
}

/// A reading's time and stream-specific columns, or why the columns
/// cannot hold it. Every column gets a value (most of them NULL) for
/// every reading, so the arrays stay aligned.
fn row_of(r: &StoredReading) -> Result<(DateTime<Utc>, Row26<'_>)> {
    let reading = &r.reading;
    let ts = to_ts(reading.ts_ms)
        .ok_or_else(|| StoreError::OutOfRange("`ts` is outside what a timestamptz holds".into()))?;
    let mut row = Row26::default();
    match &reading.body {
        Body::Vitals(v) => {
            row.hr = small("hr", v.hr)?;
            row.spo2 = small("spo2", v.spo2)?;
            row.rr = small("rr", v.rr)?;
            row.temp_c = narrow(v.temp_c);
            row.sys = small("sys", v.sys)?;
            row.dia = small("dia", v.dia)?;
        }
        Body::Sleep(s) => {
            row.in_bed = Some(s.in_bed);
            row.hr = small("hr", s.hr)?;
            row.rr = small("rr", s.rr)?;
            row.movement = narrow(s.movement);
        }
        Body::Motion(m) => {
            row.room = Some(m.room.as_str());
            row.motion = Some(m.motion);
        }
        Body::Location(l) => {
            row.lat = Some(l.lat);
            row.lon = Some(l.lon);
            row.accuracy_m = narrow(l.accuracy_m);
        }
        Body::Event(e) => {
            row.event_type = Some(event_code(e.kind));
            row.confidence = narrow(e.confidence);
            row.visit_action = e.action.map(action_code);
            row.carer = e.carer.as_deref();
        }
        Body::Status(s) => {
            row.online = s.online;
            row.battery_pct = small("battery_pct", s.battery_pct)?;
            row.rssi = s.rssi;
            row.fw = s.fw.as_deref();
        }
    }
    Ok((ts, row))
}

/// The stream-specific columns of one reading.
#[derive(Default)]
struct Row26<'a> {
    lat: Option<f64>,
    lon: Option<f64>,
    temp_c: Option<f32>,
    movement: Option<f32>,
    accuracy_m: Option<f32>,
    confidence: Option<f32>,
    rssi: Option<i32>,
    hr: Option<i16>,
    spo2: Option<i16>,
    rr: Option<i16>,
    sys: Option<i16>,
    dia: Option<i16>,
    event_type: Option<i16>,
    battery_pct: Option<i16>,
    in_bed: Option<bool>,
    motion: Option<bool>,
    online: Option<bool>,
    room: Option<&'a str>,
    fw: Option<&'a str>,
    visit_action: Option<i16>,
    carer: Option<&'a str>,
}

/// The columns a reading is read back from.
const READ_COLUMNS: &str = "id, elder_id, device_id, stream, ts, seq, hr, spo2, rr, temp_c, \
     sys, dia, in_bed, movement, room, motion, lat, lon, accuracy_m, event_type, confidence, \
     online, battery_pct, rssi, fw, visit_action, carer";

/// Rebuilds the reading's body from its columns.
fn body_from_row(stream: Stream, r: &PgRow) -> Result<Body> {
    let missing = |field: &str| corrupt(format!("{stream} reading without {field}"));
    Ok(match stream {
        Stream::Vitals => Body::Vitals(Vitals {
            hr: unsigned(r.try_get("hr")?),
            spo2: unsigned(r.try_get("spo2")?),
            rr: unsigned(r.try_get("rr")?),
            temp_c: widen(r.try_get("temp_c")?),
            sys: unsigned(r.try_get("sys")?),
            dia: unsigned(r.try_get("dia")?),
        }),
        Stream::Sleep => Body::Sleep(Sleep {
            in_bed: r
                .try_get::<Option<bool>, _>("in_bed")?
                .ok_or_else(|| missing("in_bed"))?,
            hr: unsigned(r.try_get("hr")?),
            rr: unsigned(r.try_get("rr")?),
            movement: widen(r.try_get("movement")?),
        }),
        Stream::Motion => Body::Motion(Motion {
            room: r
                .try_get::<Option<String>, _>("room")?
                .ok_or_else(|| missing("room"))?,
            motion: r
                .try_get::<Option<bool>, _>("motion")?
                .ok_or_else(|| missing("motion"))?,
        }),
        Stream::Location => Body::Location(Location {
            lat: r
                .try_get::<Option<f64>, _>("lat")?
                .ok_or_else(|| missing("lat"))?,
            lon: r
                .try_get::<Option<f64>, _>("lon")?
                .ok_or_else(|| missing("lon"))?,
            accuracy_m: widen(r.try_get("accuracy_m")?),
        }),
        Stream::Event => {
            let code: Option<i16> = r.try_get("event_type")?;
            Body::Event(DeviceEvent {
                kind: code.and_then(event_of).ok_or_else(|| missing("type"))?,
                confidence: widen(r.try_get("confidence")?),
                carer: r.try_get("carer")?,
                action: r
                    .try_get::<Option<i16>, _>("visit_action")?
                    .map(|c| action_of(c).ok_or_else(|| corrupt(format!("visit action code {c}"))))
                    .transpose()?,
            })
        }
        Stream::Status => Body::Status(Status {
            online: r.try_get("online")?,
            battery_pct: unsigned(r.try_get("battery_pct")?),
            rssi: r.try_get("rssi")?,
            fw: r.try_get("fw")?,
        }),
    })
}

fn reading_from_row(r: &PgRow) -> Result<ReadingRecord> {
    let code: i16 = r.try_get("stream")?;
    let stream = stream_of(code).ok_or_else(|| corrupt(format!("stream code {code}")))?;
    let ts: DateTime<Utc> = r.try_get("ts")?;
    let seq: Option<i64> = r.try_get("seq")?;
    Ok(ReadingRecord {
        id: r.try_get("id")?,
        elder_id: r.try_get("elder_id")?,
        device_id: r.try_get("device_id")?,
        stream,
        ts_ms: ts.timestamp_millis(),
        seq: seq.map(|s| s as u64),
        json: body_from_row(stream, r)?.to_json(),
    })
}

impl PgStore {
    /// Writes a batch atomically: small batches in one statement, large
    /// ones with COPY.
    ///
    /// Small batches: `INSERT ... SELECT FROM UNNEST(one array per
    /// column)`, one round trip whatever the size, measured here
    /// (2026-11-23, release, 200 000 readings from 5 000 devices into the
    /// partitioned table with its indexes; readings per second; the
    /// end-to-end measurement is `benches/pg_writer.rs`):
    ///
    /// | batch | UNNEST | COPY over TCP | COPY over a Unix socket |
    /// |-------|--------|---------------|-------------------------|
    /// | 100   | ~67k   | ~2.3k         | ~92k                    |
    /// | 500   | ~80k   | ~11k          | ~113k                   |
    /// | 1000  | ~82k   | ~120k         | ~118k                   |
    /// | 5000  | ~85k   | ~116k         | ~129k                   |
    ///
    /// (UNNEST's figures include recording the batch's (device, stream)
    /// pairs, ~15 % of its time; COPY's do not.)
    ///
    /// Through sqlx over TCP each COPY of a small batch stalls ~44 ms:
    /// sqlx 0.9 does not set TCP_NODELAY, so its separate CopyDone write
    /// waits for the delayed ACK of the data before it (the stall is gone
    /// over a Unix socket). Ingest flushes small batches often (whatever
    /// arrived in the last interval), exactly where COPY collapses, and
    /// the server is normally reached over TCP: small batches stay on
    /// UNNEST, which also sends typed binary arrays and runs as one cached
    /// prepared statement.
    ///
    /// Large batches ([`COPY_MIN`] readings or more, which the writer
    /// makes only when readings queue up faster than they are written):
    /// COPY in binary format (no text to escape or parse), after the
    /// pairs' INSERT, in one transaction. UNNEST does not get faster
    /// beyond ~1000 readings a statement (its executor cost is per row),
    /// COPY does (multi-row heap and WAL inserts). The batch writer's
    /// benchmark (benches/pg_writer.rs, 300,000 readings, devices known,
    /// over TCP; readings/s): batch 5000 UNNEST ~97k, COPY ~123k; batch
    /// 20000 UNNEST ~92k, COPY ~132k; at 1000 the two are even (~83-92k),
    /// COPY's four round trips eating its gain. No stall was seen at
    /// these sizes over TCP: the data fills whole segments, which the
    /// server acknowledges at once.
    ///
    /// Every reading is checked before anything is sent: a value the
    /// columns cannot hold (far outside the protocol's ranges, so never a
    /// validated reading) fails the batch with [`StoreError::OutOfRange`]
    /// and writes nothing.
    pub(super) async fn pg_insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let c = Columns::of(readings)?;
        let mut conn = self.pool.acquire().await?;
        write(&mut conn, &c, None).await
    }

    /// [`Telemetry::insert_readings_at`](crate::Telemetry::insert_readings_at):
    /// readings no backend stores ([`refusal::unstorable`]) are left out
    /// first; the rest, with the position, in one write as
    /// [`PgStore::pg_insert_readings`] does. Only if the database refuses
    /// that for its content is the batch split: in one transaction, each
    /// piece in a savepoint, a refused piece rolled back to it and halved
    /// down to the single readings refused, then the position recorded
    /// and everything committed together. So the stored readings and the
    /// position stay one atomic write whatever was refused, and a batch
    /// with nothing refused costs what it did before.
    pub(super) async fn pg_insert_readings_at(
        &self,
        readings: &[StoredReading],
        key: Option<&str>,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        let pos = Progress {
            key,
            pos: position(intake_pos)?,
        };
        let mut refused = Vec::new();
        let mut good: Vec<(usize, &StoredReading)> = Vec::with_capacity(readings.len());
        for (index, r) in readings.iter().enumerate() {
            match refusal::unstorable(r) {
                Some(reason) => refused.push(RefusedRow { index, reason }),
                None => good.push((index, r)),
            }
        }
        let mut conn = self.pool.acquire().await?;
        let all = Columns::of(good.iter().map(|(_, r)| *r))?;
        match write(&mut conn, &all, Some(pos)).await {
            Ok(()) => {
                refusal::note_refused(&refused, readings.len());
                return Ok(refused);
            }
            Err(e) if e.is_refusal() => {
                debug!(error = %e, batch = good.len(), "Batch refused; splitting it to find the readings refused.");
            }
            Err(e) => return Err(e),
        }
        drop(all);
        let mut tx = conn.begin().await?;
        // Left halves are popped first: pieces are written in batch order.
        let mut pending = Vec::new();
        pending.push(0..good.len());
        while let Some(piece) = pending.pop() {
            if piece.is_empty() {
                continue;
            }
            let c = Columns::of(good[piece.clone()].iter().map(|(_, r)| *r))?;
            let mut savepoint = tx.begin().await?;
            match write(&mut savepoint, &c, None).await {
                Ok(()) => savepoint.commit().await?,
                Err(e) if e.is_refusal() => {
                    savepoint.rollback().await?;
                    if piece.len() == 1 {
                        refused.push(RefusedRow {
                            index: good[piece.start].0,
                            reason: refusal::refusal_reason(&e),
                        });
                    } else {
                        let mid = piece.start + piece.len() / 2;
                        pending.push(mid..piece.end);
                        pending.push(piece.start..mid);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        record_position(&mut tx, pos).await?;
        tx.commit().await?;
        refused.sort_by_key(|r| r.index);
        refusal::note_refused(&refused, readings.len());
        Ok(refused)
    }

    pub(super) async fn pg_keyed_position(&self, key: &str) -> Result<Option<u64>> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT pos FROM intake_progress_keyed WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(pos.map(|p| p as u64))
    }

    pub(super) async fn pg_intake_position(&self) -> Result<Option<u64>> {
        let pos: Option<i64> = sqlx::query_scalar("SELECT pos FROM intake_progress")
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        Ok(pos.map(|p| p as u64))
    }

    pub(super) async fn pg_query_readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        let mut b =
            QueryBuilder::<Postgres>::new(format!("SELECT {READ_COLUMNS} FROM readings WHERE "));
        match &q.subject {
            ReadingSubject::Elder(e) => b.push("elder_id = ").push_bind(e.clone()),
            ReadingSubject::Device(d) => b.push("device_id = ").push_bind(d.clone()),
        };
        // Bounds on ts let the planner skip every partition (or chunk)
        // outside the range.
        if let Some(f) = q.from {
            b.push(" AND ts >= ").push_bind(bound_ts(f));
        }
        if let Some(t) = q.to {
            b.push(" AND ts < ").push_bind(bound_ts(t));
        }
        if !q.streams.is_empty() {
            let codes: Vec<i16> = q.streams.iter().map(|s| stream_code(*s)).collect();
            b.push(" AND stream = ANY(").push_bind(codes).push(")");
        }
        // Keyset paging on (ts, id): stable while readings arrive, and
        // cheap however deep the page; the row comparison is served by the
        // (elder_id | device_id, ts, id) indexes.
        let (cmp, dir) = if q.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((ts, id)) = q.after {
            b.push(format!(" AND (ts, id) {cmp} ("))
                .push_bind(bound_ts(ts))
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        b.push(format!(" ORDER BY ts {dir}, id {dir} LIMIT "))
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(reading_from_row).collect()
    }

    /// On TimescaleDB from the continuous aggregate `vitals_hourly`
    /// (real-time: materialized hours plus the raw readings since), so a
    /// year is ~9,000 rows read, not millions; on plain PostgreSQL
    /// grouped over the elder's raw readings, which the (elder_id, ts)
    /// index confines to the range.
    pub(super) async fn pg_vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        let sql = match self.ready()? {
            Layout::Timescale => {
                let columns = VITAL_FIELDS
                    .iter()
                    .map(|f| {
                        format!(
                            "{f}_n, {f}_avg::float8 AS {f}_avg, {f}_min::float8 AS {f}_min, \
                             {f}_max::float8 AS {f}_max"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "SELECT bucket AS hour, readings, {columns} FROM vitals_hourly
                     WHERE elder_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket"
                )
            }
            Layout::Partitioned => {
                let columns = vital_columns(|f| f.to_string(), "float8");
                format!(
                    "SELECT date_trunc('hour', ts, 'UTC') AS hour, count(*) AS readings, {columns}
                     FROM readings
                     WHERE elder_id = $1 AND ts >= $2 AND ts < $3 AND stream = {}
                     GROUP BY 1 ORDER BY 1",
                    stream_code(Stream::Vitals)
                )
            }
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(elder_id)
            .bind(bound_ts(from))
            .bind(bound_ts(to))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let hour: DateTime<Utc> = r.try_get("hour")?;
                crate::vitals_hour_of(r, hour.timestamp_millis())
            })
            .collect()
    }

    pub(super) async fn pg_latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        // Over ~400 daily partitions an unbounded "newest reading" costs
        // tens of milliseconds to plan and to probe, per stream a device
        // never sends. So: only the (device, stream) pairs that exist
        // (reading_streams), looked for first in the last two days, which
        // plans and runs in a few partitions and finds every device that
        // reports; only the pairs not found there are looked for further
        // back. Either way it is the newest reading attributed to the
        // elder, the same answer as one unbounded search.
        let window = bound_ts(now_ms() - LATEST_WINDOW_MS);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.device_id AS pair_device, p.stream AS pair_stream, r.*
             FROM devices d
             JOIN reading_streams p ON p.device_id = d.device_id
             LEFT JOIN LATERAL (
                SELECT {READ_COLUMNS} FROM readings x
                WHERE x.device_id = p.device_id AND x.stream = p.stream
                  AND x.elder_id = d.elder_id AND x.ts >= $2
                ORDER BY x.ts DESC, x.id DESC LIMIT 1) r ON true
             WHERE d.elder_id = $1"
        )))
        .bind(elder_id)
        .bind(window)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        let (mut older_devices, mut older_streams) = (Vec::<String>::new(), Vec::<i16>::new());
        for r in &rows {
            if r.try_get::<Option<i64>, _>("id")?.is_some() {
                out.push(reading_from_row(r)?);
            } else {
                older_devices.push(r.try_get("pair_device")?);
                older_streams.push(r.try_get("pair_stream")?);
            }
        }
        if !older_devices.is_empty() {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT r.* FROM UNNEST($2::text[], $3::int2[]) AS p(device_id, stream)
                 CROSS JOIN LATERAL (
                    SELECT {READ_COLUMNS} FROM readings x
                    WHERE x.device_id = p.device_id AND x.stream = p.stream
                      AND x.elder_id = $1 AND x.ts < $4
                    ORDER BY x.ts DESC, x.id DESC LIMIT 1) r"
            )))
            .bind(elder_id)
            .bind(&older_devices)
            .bind(&older_streams)
            .bind(window)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(reading_from_row(r)?);
            }
        }
        // The SQLite backend's order: by stream name, then device.
        out.sort_by(|a, b| {
            (a.stream.as_str(), &a.device_id).cmp(&(b.stream.as_str(), &b.device_id))
        });
        Ok(out)
    }
}

/// A position as the `intake_progress` table keeps it.
fn position(intake_pos: u64) -> Result<i64> {
    i64::try_from(intake_pos).map_err(|_| {
        StoreError::OutOfRange(format!("intake position {intake_pos} is beyond a bigint"))
    })
}

/// A position to record with a batch: of the intake log, or of the log
/// `key` (a cluster's partition).
#[derive(Clone, Copy)]
pub(super) struct Progress<'a> {
    pub key: Option<&'a str>,
    pub pos: i64,
}

/// Records `pos` unless a larger one is recorded: positions only grow.
async fn record_position(conn: &mut PgConnection, p: Progress<'_>) -> Result<()> {
    match p.key {
        None => {
            sqlx::query("UPDATE intake_progress SET pos = GREATEST(pos, $1)")
                .bind(p.pos)
                .execute(conn)
                .await?;
        }
        Some(key) => {
            sqlx::query(
                "INSERT INTO intake_progress_keyed (key, pos) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE
                 SET pos = GREATEST(intake_progress_keyed.pos, excluded.pos)",
            )
            .bind(key)
            .bind(p.pos)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// Writes a batch whose readings all fit the columns, atomically, with
/// `pos` recorded in the same transaction when given (see
/// [`PgStore::pg_insert_readings`] for why UNNEST or COPY). Inside a
/// transaction, COPY's own one is a savepoint.
async fn write(conn: &mut PgConnection, c: &Columns<'_>, pos: Option<Progress<'_>>) -> Result<()> {
    if c.len() == 0 {
        if let Some(pos) = pos {
            record_position(conn, pos).await?;
        }
        return Ok(());
    }
    // The batch's (device, stream) pairs, sorted: two batches adding
    // the same new pairs then lock them in the same order.
    let pairs: std::collections::BTreeSet<(&str, i16)> = c
        .device_id
        .iter()
        .copied()
        .zip(c.stream.iter().copied())
        .collect();
    let (pair_devices, pair_streams): (Vec<&str>, Vec<i16>) = pairs.into_iter().unzip();
    if c.len() >= COPY_MIN {
        // The pairs first, in the same transaction: a reading is never
        // stored without its pair.
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO reading_streams (device_id, stream)
             SELECT * FROM UNNEST($1::text[], $2::int2[]) ON CONFLICT DO NOTHING",
        )
        .bind(&pair_devices)
        .bind(&pair_streams)
        .execute(&mut *tx)
        .await?;
        let data = c.copy_binary();
        let mut copy = tx
            .copy_in_raw(
                "COPY readings (ts, seq, lat, lon, temp_c, movement, accuracy_m, \
                 confidence, rssi, stream, hr, spo2, rr, sys, dia, event_type, battery_pct, \
                 in_bed, motion, online, device_id, elder_id, room, fw, visit_action, carer) \
                 FROM STDIN (FORMAT binary)",
            )
            .await?;
        copy.send(data).await?;
        copy.finish().await?;
        if let Some(pos) = pos {
            record_position(&mut tx, pos).await?;
        }
        tx.commit().await?;
        return Ok(());
    }
    // WITH ORDINALITY / ORDER BY: ids are drawn in the batch's order,
    // so readings with the same ts page in arrival order, as in SQLite.
    // The pairs are recorded in the same statement, so a reading is
    // never stored without its pair.
    sqlx::query(
        "WITH pairs AS (
            INSERT INTO reading_streams (device_id, stream)
            SELECT * FROM UNNEST($27::text[], $28::int2[])
            ON CONFLICT DO NOTHING),
         progress AS (
            UPDATE intake_progress SET pos = GREATEST(pos, $29)
            WHERE $29::int8 IS NOT NULL AND $30::text IS NULL),
         keyed AS (
            INSERT INTO intake_progress_keyed (key, pos)
            SELECT $30, $29 WHERE $29::int8 IS NOT NULL AND $30::text IS NOT NULL
            ON CONFLICT (key) DO UPDATE
            SET pos = GREATEST(intake_progress_keyed.pos, excluded.pos))
         INSERT INTO readings (ts, seq, lat, lon, temp_c, movement, accuracy_m, confidence,
            rssi, stream, hr, spo2, rr, sys, dia, event_type, battery_pct, in_bed, motion,
            online, device_id, elder_id, room, fw, visit_action, carer)
         SELECT ts, seq, lat, lon, temp_c, movement, accuracy_m, confidence,
            rssi, stream, hr, spo2, rr, sys, dia, event_type, battery_pct, in_bed, motion,
            online, device_id, elder_id, room, fw, visit_action, carer
         FROM UNNEST($1::timestamptz[], $2::int8[], $3::float8[], $4::float8[],
            $5::float4[], $6::float4[], $7::float4[], $8::float4[], $9::int4[],
            $10::int2[], $11::int2[], $12::int2[], $13::int2[], $14::int2[], $15::int2[],
            $16::int2[], $17::int2[], $18::bool[], $19::bool[], $20::bool[],
            $21::text[], $22::text[], $23::text[], $24::text[], $25::int2[], $26::text[])
            WITH ORDINALITY AS u(ts, seq, lat, lon, temp_c, movement, accuracy_m,
                confidence, rssi, stream, hr, spo2, rr, sys, dia, event_type, battery_pct,
                in_bed, motion, online, device_id, elder_id, room, fw, visit_action, carer, n)
         ORDER BY n",
    )
    .bind(&c.ts)
    .bind(&c.seq)
    .bind(&c.lat)
    .bind(&c.lon)
    .bind(&c.temp_c)
    .bind(&c.movement)
    .bind(&c.accuracy_m)
    .bind(&c.confidence)
    .bind(&c.rssi)
    .bind(&c.stream)
    .bind(&c.hr)
    .bind(&c.spo2)
    .bind(&c.rr)
    .bind(&c.sys)
    .bind(&c.dia)
    .bind(&c.event_type)
    .bind(&c.battery_pct)
    .bind(&c.in_bed)
    .bind(&c.motion)
    .bind(&c.online)
    .bind(&c.device_id)
    .bind(&c.elder_id)
    .bind(&c.room)
    .bind(&c.fw)
    .bind(&c.visit_action)
    .bind(&c.carer)
    .bind(&pair_devices)
    .bind(&pair_streams)
    .bind(pos.map(|p| p.pos))
    .bind(pos.and_then(|p| p.key))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in Stream::ALL {
            assert_eq!(stream_of(stream_code(s)), Some(s));
        }
        for e in [
            EventType::Sos,
            EventType::Fall,
            EventType::SosCancel,
            EventType::Visit,
            EventType::CheckIn,
        ] {
            assert_eq!(event_of(event_code(e)), Some(e));
        }
        for a in [VisitAction::In, VisitAction::Out] {
            assert_eq!(action_of(action_code(a)), Some(a));
        }
        assert_eq!(stream_of(0), None);
        assert_eq!(event_of(9), None);
    }

    #[test]
    fn fractions_come_back_as_the_decimal_that_was_sent() {
        for v in [36.6, 37.25, 0.93, 0.35, 12.5, 9999.9, 0.0, 1.0, 44.999] {
            assert_eq!(widen(narrow(Some(v))), Some(v), "{v}");
        }
        assert_eq!(widen(None), None);
    }

    #[test]
    fn times_outside_timestamptz_are_refused_and_bounds_clamped() {
        assert!(to_ts(PG_MIN_MS - 1).is_none());
        assert!(to_ts(PG_MIN_MS).is_some());
        assert!(to_ts(i64::MAX).is_none());
        assert_eq!(
            to_ts(1_700_000_000_123).unwrap().timestamp_millis(),
            1_700_000_000_123
        );
        assert_eq!(bound_ts(i64::MIN).timestamp_millis(), PG_MIN_MS);
        assert_eq!(
            bound_ts(i64::MAX).timestamp_millis(),
            DateTime::<Utc>::MAX_UTC.timestamp_millis()
        );
    }

    #[test]
    fn counts_that_do_not_fit_are_refused() {
        assert_eq!(small("hr", Some(250)).unwrap(), Some(250));
        assert!(matches!(
            small("hr", Some(40_000)),
            Err(StoreError::OutOfRange(_))
        ));
    }
}
