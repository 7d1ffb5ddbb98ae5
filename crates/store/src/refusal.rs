//! Telling "the database refused this data" from "the database is not
//! there", and keeping one refused reading from holding back the rest.
//!
//! An outage is worth waiting out: the same write succeeds later, so the
//! spool keeps it and retries. A refusal is not: the same row fails the
//! same way forever, so retrying it would block every reading behind it.
//! [`StoreError::is_refusal`] draws the line;
//! [`Telemetry::insert_readings_at`] leaves refused rows out of a batch
//! and hands them back as [`RefusedRow`]s, for the caller to keep as dead
//! letters ([`refused_reading_letter`]).
use crate::{StoreError, StoredReading, Telemetry};
use eldercare_model::{Body, DeadLetter, EpochMs};
use std::ops::Range;
use tracing::warn;

/// A reading left out of a batch because the database refuses its
/// content; the rest of the batch was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    /// Its index in the batch that was passed in.
    pub index: usize,
    /// What was wrong: the field, or the database's error code and
    /// message; never the value itself.
    pub reason: String,
}

/// The dead-letter `reason` of a reading the store refused.
pub const STORE_REFUSED: &str = "store_refused";

impl StoreError {
    /// Whether the database refused the data itself: the same write
    /// fails the same way every time, so it must not be retried.
    /// PostgreSQL SQLSTATE classes 22 (data exception: a NUL in text, a
    /// number or time out of range, ...) and 23 (integrity constraint);
    /// SQLite's constraint (including a trigger's `RAISE(ABORT)`),
    /// too-big and datatype-mismatch errors; a value encoded on the
    /// client that the column cannot take ([`StoreError::OutOfRange`], or
    /// sqlx's encode errors).
    pub fn is_refusal(&self) -> bool {
        match self {
            StoreError::OutOfRange(_) => true,
            StoreError::Db(sqlx::Error::Encode(_)) => true,
            StoreError::Db(sqlx::Error::Database(e)) => refusal_code(e.as_ref()).is_some(),
            _ => false,
        }
    }

    /// Whether the error means "the database cannot take writes right
    /// now" (unreachable, timed out, shut down, out of space, ...):
    /// worth spooling and retrying. Every database error that is not a
    /// refusal of the data counts, so nothing is lost to an error
    /// nobody foresaw; it only waits.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Db(_) => !self.is_refusal(),
            _ => false,
        }
    }

    /// Whether the error is one of configuration that waiting will not
    /// mend, when connecting or migrating: a URL that does not parse, a
    /// login the server refuses (SQLSTATE class 28: wrong password, no
    /// such role, no `pg_hba.conf` entry), no such database (3D000), no
    /// right to create the schema (42501), a TLS setting the server does
    /// not meet, or migrations that do not match the database's. A
    /// connection refused, timed out or not resolved is an outage
    /// instead (a name that does not resolve may be a typo, but DNS can
    /// fail too, and waiting is the safe side for a hotline).
    pub fn is_config(&self) -> bool {
        use sqlx::migrate::MigrateError as M;
        fn sqlx_config(e: &sqlx::Error) -> bool {
            match e {
                sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(d) => d
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| {
                        let code = pg.code();
                        code.starts_with("28") || code == "3D000" || code == "42501"
                    }),
                _ => false,
            }
        }
        match self {
            StoreError::Db(e) => sqlx_config(e),
            StoreError::Migrate(M::Execute(e) | M::ExecuteMigration(e, _)) => sqlx_config(e),
            StoreError::Migrate(_) => true,
            _ => false,
        }
    }
}

/// The error code of a database error that refuses the data, if it is
/// one: the SQLSTATE on PostgreSQL, the extended result code on SQLite.
fn refusal_code(e: &dyn sqlx::error::DatabaseError) -> Option<String> {
    if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return (code.starts_with("22") || code.starts_with("23")).then(|| code.to_string());
    }
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code: i32 = e.code()?.parse().ok()?;
        // Primary codes: SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19 (its
        // extended codes: check, not null, unique, trigger, ...),
        // SQLITE_MISMATCH 20.
        return matches!(code & 0xff, 18..=20).then(|| code.to_string());
    }
    None
}

/// The [`RefusedRow::reason`] for an error that [`StoreError::is_refusal`].
pub(crate) fn refusal_reason(e: &StoreError) -> String {
    match e {
        StoreError::Db(sqlx::Error::Database(d)) => format!(
            "refused by the database ({}: {})",
            refusal_code(d.as_ref()).unwrap_or_default(),
            d.message()
        ),
        other => other.to_string(),
    }
}

/// Why no backend stores this reading as it is, if that is so. Both
/// backends refuse exactly these readings in [`Telemetry::insert_readings_at`]
/// before anything is sent, so they cannot be told apart: text holding
/// NUL (a PostgreSQL text column cannot), and values outside what the
/// PostgreSQL readings table holds (see `postgres/readings.rs`).
pub(crate) fn unstorable(r: &StoredReading) -> Option<String> {
    let reading = &r.reading;
    let body_text = match &reading.body {
        Body::Motion(m) => Some(("room", m.room.as_str())),
        Body::Status(s) => s.fw.as_deref().map(|fw| ("fw", fw)),
        Body::Event(e) => e.carer.as_deref().map(|c| ("carer", c)),
        _ => None,
    };
    let texts = [
        ("device_id", reading.device_id.as_str()),
        ("elder_id", r.elder_id.as_str()),
    ];
    if let Some((field, _)) = texts
        .into_iter()
        .chain(body_text)
        .find(|(_, t)| t.contains('\0'))
    {
        return Some(format!(
            "`{field}` contains a NUL character, which a text column cannot hold"
        ));
    }
    crate::postgres::readings::columns_refusal(r)
}

/// Counts readings refused for their content and says so, without their
/// content.
pub(crate) fn note_refused(refused: &[RefusedRow], batch: usize) {
    if refused.is_empty() {
        return;
    }
    metrics::counter!("eldercare_store_readings_refused_total").increment(refused.len() as u64);
    warn!(
        refused = refused.len(),
        batch,
        first_index = refused[0].index,
        "Readings refused by the store for their content; the rest of the batch is stored."
    );
}

/// How far [`isolate`] got.
pub(crate) struct Isolated {
    /// The readings left out, by index in the batch.
    pub refused: Vec<RefusedRow>,
    /// Readings `[0, done)` were stored or refused; the others were not
    /// written because of `error`.
    pub done: usize,
    /// The outage (or other error) that stopped the writing.
    pub error: Option<StoreError>,
}

/// Writes `readings` with [`Telemetry::insert_readings`], leaving out the ones
/// the database refuses: a piece refused as a whole is split in halves,
/// each written on its own, down to single readings. Pieces are written
/// in batch order, so what is stored keeps its order and, when an outage
/// stops the writing, what remains is a suffix of the batch.
///
/// Each piece is a transaction of its own: for a store that has no
/// better way (one transaction with savepoints, as [`SqliteStore`] and
/// [`PgStore`] have), a crash midway leaves some pieces stored. With `k`
/// refused readings in `n`, it costs about `2 k log2(n)` writes.
///
/// [`SqliteStore`]: crate::SqliteStore
/// [`PgStore`]: crate::PgStore
pub(crate) async fn isolate<S: Telemetry + ?Sized>(
    store: &S,
    readings: &[StoredReading],
) -> Isolated {
    let mut refused = Vec::new();
    // Left halves are popped first: pieces go in batch order.
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..readings.len());
    while let Some(piece) = pending.pop() {
        if piece.is_empty() {
            continue;
        }
        match store.insert_readings(&readings[piece.clone()]).await {
            Ok(()) => {}
            Err(e) if e.is_refusal() => {
                if piece.len() == 1 {
                    refused.push(RefusedRow {
                        index: piece.start,
                        reason: refusal_reason(&e),
                    });
                } else {
                    let mid = piece.start + piece.len() / 2;
                    pending.push(mid..piece.end);
                    pending.push(piece.start..mid);
                }
            }
            Err(e) => {
                return Isolated {
                    refused,
                    done: piece.start,
                    error: Some(e),
                };
            }
        }
    }
    note_refused(&refused, readings.len());
    Isolated {
        refused,
        done: readings.len(),
        error: None,
    }
}

/// Replaces control characters, so that text taken from a refused
/// reading can itself be stored.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The dead letter for a reading the store refused: the device's topic,
/// reason [`STORE_REFUSED`], the refusal as detail and the reading as a
/// protocol JSON payload (`ts`, `seq` and the body's fields). Its text
/// fields are made storable (control characters replaced), so keeping it
/// cannot fail the way the reading did.
pub fn refused_reading_letter(
    r: &StoredReading,
    why: &RefusedRow,
    received_at: EpochMs,
) -> DeadLetter {
    let reading = &r.reading;
    let mut payload = serde_json::Map::new();
    payload.insert("ts".into(), reading.ts_ms.into());
    if let Some(seq) = reading.seq {
        payload.insert("seq".into(), seq.into());
    }
    if let Ok(serde_json::Value::Object(body)) = serde_json::to_value(&reading.body) {
        payload.extend(body);
    }
    let device = printable(&reading.device_id);
    let mut payload = serde_json::Value::Object(payload).to_string().into_bytes();
    payload.truncate(4096);
    DeadLetter {
        id: 0,
        received_at,
        topic: format!("eldercare/v1/{device}/{}", reading.stream())
            .chars()
            .take(256)
            .collect(),
        sender: Some(device),
        reason: STORE_REFUSED.to_string(),
        detail: printable(&why.reason),
        payload,
    }
}
