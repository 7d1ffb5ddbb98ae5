//! Storage: the registry (elders, devices), telemetry, alerts with their
//! gap-free event log, and the bounded dead-letter store.
//!
//! [`Store`] is the interface the rest of the system uses; [`SqliteStore`]
//! is the embedded default, kept in `--data-dir`. The PostgreSQL /
//! TimescaleDB backend implements the same trait.
#![forbid(unsafe_code)]

mod secret;
mod sqlite;

use async_trait::async_trait;
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, AlertState, DeadLetter, Device, Elder, EpochMs, Reading,
    Severity,
};

pub mod import;
pub use secret::{generate_secret, hash_secret, verify_secret};
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
    #[error("cannot open data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
}

/// Filters and paging for listing alerts, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub states: Vec<AlertState>,
    pub min_severity: Option<Severity>,
    pub elder_id: Option<String>,
    pub raised_from: Option<EpochMs>,
    pub raised_to: Option<EpochMs>,
    pub limit: u32,
    /// Continue after this (raised_at, id), from a previous page.
    pub after: Option<(EpochMs, String)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts or updates an elder; `true` when it was new.
    async fn upsert_elder(&self, elder: &Elder) -> Result<bool>;
    /// Inserts or updates a device; `true` when it was new.
    async fn upsert_device(&self, device: &Device) -> Result<bool>;
    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>>;
    async fn get_device(&self, device_id: &str) -> Result<Option<Device>>;
    /// The registry, for the rule engine: everything, or only the entries
    /// written at or after `changed_since` (server time).
    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>>;
    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>>;

    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()>;

    /// Persists one alert change atomically: the alert's new state and its
    /// event, with the next `seq` (exactly one more than the last).
    async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent>;
    /// Events with `seq > after_seq`, in order, at most `limit`.
    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>>;
    async fn last_seq(&self) -> Result<u64>;
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>>;
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>>;
    /// Every alert not yet resolved.
    async fn unresolved_alerts(&self) -> Result<Vec<Alert>>;

    /// Keeps a refused message; the store holds the newest
    /// [`DEAD_LETTER_CAPACITY`].
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()>;
    /// Newest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>>;
}
