//! Storage: the registry (elders, devices), telemetry, alerts with their
//! gap-free event log, and the bounded dead-letter store.
//!
//! [`Store`] is the interface the rest of the system uses, made of four
//! roles (module `roles`): [`Registry`], [`Telemetry`], [`AlertLog`] and
//! [`DeadLetters`], which a component that needs only one takes alone.
//! [`SqliteStore`] is the embedded default, kept in `--data-dir`, and
//! [`PgStore`] the PostgreSQL / TimescaleDB backend for a city
//! (`--database-url`).
#![forbid(unsafe_code)]

pub mod postgres;
mod refusal;
mod roles;
mod secret;
pub mod spool;
mod sqlite;

use eldercare_model::{Alert, AlertEventKind, AlertState, EpochMs, Reading, Severity, Stream};
use sha2::{Digest, Sha256};

pub mod import;
mod local;
pub use postgres::{PgOptions, PgStore};
pub use refusal::{RefusedRow, STORE_REFUSED, refused_reading_letter};
pub use roles::{AlertLog, DeadLetters, Registry, Store, Telemetry};
pub use secret::{generate_secret, hash_secret, verify_secret};
pub use spool::SpoolingStore;
pub use sqlite::SqliteStore;

/// Most dead letters kept; older ones are dropped first.
pub const DEAD_LETTER_CAPACITY: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A value the storage's columns cannot hold (the PostgreSQL readings
    /// table keeps the protocol's small counts as smallint).
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// The database cannot be used yet (PostgreSQL not reached since the
    /// server started): an outage, failed at once.
    #[error("database unavailable: {0}")]
    Unavailable(&'static str),
    /// An event of this rule decision is kept already (a decision
    /// delivered again); nothing was written and no seq was taken.
    #[error("an event of rule decision {0} is kept already")]
    DecisionKept(u64),
    /// A registry delete refused because other records still name the
    /// one to delete (a provider with carers or visit plans), or a write
    /// naming a record that does not exist: the reason says which.
    #[error("{0}")]
    RegistryConflict(String),
    #[error("cannot open data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What checking the event log's hash chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub checked: u64,
    /// The first event where the chain breaks, and why.
    pub first_break: Option<(u64, String)>,
}

/// One stored alert event, as its hash covers it.
pub(crate) struct ChainLink<'a> {
    pub seq: u64,
    pub kind: &'a str,
    pub alert_id: &'a str,
    pub actor: &'a str,
    pub at: EpochMs,
    pub note: Option<&'a str>,
    pub alert_json: &'a str,
    pub hash: &'a str,
}

/// Walks the event log in seq order, as each backend reads it in pages,
/// and records the first break: a missing seq, or a hash that does not
/// match the event and the previous hash.
#[derive(Default)]
pub(crate) struct ChainWalk {
    prev: String,
    after: u64,
    pub report: ChainReport,
}

impl ChainWalk {
    /// The seq the next page starts after.
    pub fn after(&self) -> u64 {
        self.after
    }

    pub fn check(&mut self, l: ChainLink<'_>) {
        let kind = AlertEventKind::parse(l.kind);
        let expected = event_hash(
            &self.prev,
            l.seq,
            kind.unwrap_or(AlertEventKind::Note),
            l.alert_id,
            l.actor,
            l.at,
            l.note,
            l.alert_json,
        );
        if self.report.first_break.is_none() {
            if l.seq != self.after + 1 {
                self.report.first_break = Some((self.after + 1, "seq missing".into()));
            } else if expected != l.hash || kind.is_none() {
                self.report.first_break = Some((l.seq, "hash does not match the event".into()));
            }
        }
        self.report.checked += 1;
        self.prev = l.hash.to_string();
        self.after = l.seq;
    }
}

/// The hash of one alert event, chained to the previous event's hash:
/// hex SHA-256 over the previous hash and every stored field, each
/// length-prefixed so no two different events hash the same bytes.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: &str,
    seq: u64,
    kind: AlertEventKind,
    alert_id: &str,
    actor: &str,
    at: EpochMs,
    note: Option<&str>,
    alert_json: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(prev_hash.as_bytes());
    field(&seq.to_be_bytes());
    field(kind.as_str().as_bytes());
    field(alert_id.as_bytes());
    field(actor.as_bytes());
    field(&at.to_be_bytes());
    match note {
        Some(n) => field(n.as_bytes()),
        None => field(b"\0none"),
    }
    field(alert_json.as_bytes());
    hex::encode(h.finalize())
}

/// A reading with the elder it was attributed to at ingest.
#[derive(Debug, Clone)]
pub struct StoredReading {
    pub elder_id: String,
    pub reading: Reading,
}

/// An alert change to persist; the store assigns its `seq`.
#[derive(Debug, Clone)]
pub struct NewAlertEvent {
    pub kind: AlertEventKind,
    pub alert: Alert,
    pub actor: String,
    pub at: EpochMs,
    pub note: Option<String>,
    /// In a cluster, the rule decision this event came from (its
    /// sequence in the decision log): the store keeps one event per
    /// decision and refuses another with [`StoreError::DecisionKept`].
    pub decision: Option<u64>,
}

/// Filters and paging for listing alerts, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub states: Vec<AlertState>,
    pub min_severity: Option<Severity>,
    pub elder_id: Option<String>,
    pub community: Option<String>,
    pub kinds: Vec<eldercare_model::AlertKind>,
    pub raised_from: Option<EpochMs>,
    pub raised_to: Option<EpochMs>,
    pub limit: u32,
    /// Continue after this (raised_at, id), from a previous page.
    pub after: Option<(EpochMs, String)>,
}

/// Milliseconds in an hour, the width of a [`VitalsHour`].
pub const HOUR_MS: EpochMs = 3_600_000;

/// One UTC hour of an elder's `vitals` readings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VitalsHour {
    /// Start of the hour.
    pub hour: EpochMs,
    /// Vitals readings in the hour (each carries some of the fields).
    pub readings: u64,
    pub hr: Option<VitalStat>,
    pub spo2: Option<VitalStat>,
    pub rr: Option<VitalStat>,
    pub temp_c: Option<VitalStat>,
    pub sys: Option<VitalStat>,
    pub dia: Option<VitalStat>,
}

/// One field's values within an hour; absent when no reading had it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VitalStat {
    pub count: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// The vitals fields aggregated per hour, as columns are named in both
/// backends' queries (`<field>_n`, `_avg`, `_min`, `_max`).
pub const VITAL_FIELDS: [&str; 6] = ["hr", "spo2", "rr", "temp_c", "sys", "dia"];

impl VitalsHour {
    /// Sets a field's stat from the columns of a row; `n == 0` leaves it
    /// absent.
    pub fn set(
        &mut self,
        field: &str,
        n: i64,
        avg: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) {
        let stat = match (n, avg, min, max) {
            (n, Some(avg), Some(min), Some(max)) if n > 0 => Some(VitalStat {
                count: n as u64,
                avg,
                min,
                max,
            }),
            _ => None,
        };
        match field {
            "hr" => self.hr = stat,
            "spo2" => self.spo2 = stat,
            "rr" => self.rr = stat,
            "temp_c" => self.temp_c = stat,
            "sys" => self.sys = stat,
            "dia" => self.dia = stat,
            other => unreachable!("not a vitals field: {other}"),
        }
    }
}

/// A [`VitalsHour`] from a row of either backend's hourly query (columns
/// `readings` and `<field>_n`, `_avg`, `_min`, `_max`), its hour read by
/// the caller (each backend has its own time type).
fn vitals_hour_of<R>(r: &R, hour: EpochMs) -> Result<VitalsHour>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let mut h = VitalsHour {
        hour,
        readings: r.try_get::<i64, _>("readings")? as u64,
        ..Default::default()
    };
    for f in VITAL_FIELDS {
        h.set(
            f,
            r.try_get(format!("{f}_n").as_str())?,
            r.try_get(format!("{f}_avg").as_str())?,
            r.try_get(format!("{f}_min").as_str())?,
            r.try_get(format!("{f}_max").as_str())?,
        );
    }
    Ok(h)
}

/// The aggregate columns of [`VITAL_FIELDS`], each value given by `expr`
/// (given the field name), for a backend's hourly query.
pub fn vital_columns(expr: impl Fn(&str) -> String, cast: &str) -> String {
    VITAL_FIELDS
        .iter()
        .map(|f| {
            let e = expr(f);
            format!(
                "count({e}) AS {f}_n, CAST(avg({e}) AS {cast}) AS {f}_avg, \
                 CAST(min({e}) AS {cast}) AS {f}_min, CAST(max({e}) AS {cast}) AS {f}_max"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`Registry::delete_elder`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElderDeletion {
    Deleted,
    NotFound,
    /// Not deleted: this many devices still watch the elder.
    HasDevices(u32),
    /// Not deleted: this many visit plans are still for the elder (and no
    /// device watches them).
    HasVisitPlans(u32),
}

/// What writing a device did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceWrite {
    Written,
    AlreadyExists,
    NotFound,
    /// The device names an elder that is not registered.
    UnknownElder,
}

/// Filters and paging for listing elders, in id order.
#[derive(Debug, Clone, Default)]
pub struct ElderQuery {
    pub district: Option<String>,
    pub community: Option<String>,
    /// Continue after this id, from a previous page.
    pub after: Option<String>,
    pub limit: u32,
}

/// Filters and paging for listing devices, in id order.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    pub elder_id: Option<String>,
    /// Continue after this id, from a previous page.
    pub after: Option<String>,
    pub limit: u32,
}

/// Whose readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadingSubject {
    /// Every reading attributed to the elder at ingest.
    Elder(String),
    Device(String),
}

/// Filters and paging for readings, ordered by event time then arrival.
#[derive(Debug, Clone)]
pub struct ReadingQuery {
    pub subject: ReadingSubject,
    /// Event time, inclusive.
    pub from: Option<EpochMs>,
    /// Event time, exclusive.
    pub to: Option<EpochMs>,
    /// Only these streams (empty: all).
    pub streams: Vec<Stream>,
    pub newest_first: bool,
    /// Continue after this `(ts, id)`, from a previous page.
    pub after: Option<(EpochMs, i64)>,
    pub limit: u32,
}

/// One stored reading, as the operator API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRecord {
    /// Storage order, for paging past readings with the same `ts`.
    pub id: i64,
    pub elder_id: String,
    pub device_id: String,
    pub stream: Stream,
    pub ts_ms: EpochMs,
    pub seq: Option<u64>,
    /// The validated body as JSON, in the device protocol's field names.
    pub json: String,
}

/// A second event for a rule decision (the unique index on
/// `alert_events.decision`) is [`StoreError::DecisionKept`].
pub(crate) fn decision_kept(e: sqlx::Error, decision: Option<u64>) -> crate::StoreError {
    match (&e, decision) {
        (sqlx::Error::Database(d), Some(n)) if d.is_unique_violation() => {
            crate::StoreError::DecisionKept(n)
        }
        _ => e.into(),
    }
}

/// The registry's answers about providers, carers and visit plans that
/// both backends give alike.
pub(crate) mod visits {
    use crate::StoreError;
    use eldercare_model::VisitPlan;

    /// Why a provider cannot be deleted.
    pub fn provider_in_use(provider_id: &str, carers: i64, plans: i64) -> StoreError {
        StoreError::RegistryConflict(format!(
            "provider `{provider_id}` still has {carers} carer(s) and {plans} visit plan(s); delete them or move them to another provider first"
        ))
    }

    /// A write naming a record that is not registered.
    pub fn unknown(field: &str, id: &str) -> String {
        format!("unknown {field} `{id}`")
    }

    /// A plan naming an elder or provider that is not registered (the
    /// foreign key does not say which).
    pub fn unknown_plan_refs(p: &VisitPlan) -> String {
        format!(
            "unknown elder_id `{}` or provider_id `{}`",
            p.elder_id, p.provider_id
        )
    }
}
