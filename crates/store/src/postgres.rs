//! The PostgreSQL / TimescaleDB backend, for a city: the same
//! [`Store`](crate::Store) as the embedded SQLite one, with exactly its
//! semantics, so the rest of the system cannot tell them apart.
//!
//! Telemetry lives in a narrow, typed table (one row per reading, a column
//! per protocol field; see `migrations/postgres/0002_readings.sql`). With
//! TimescaleDB it is a hypertable with compression and a retention policy;
//! on plain PostgreSQL it is partitioned by day, and [`PgStore::maintain`]
//! creates partitions ahead and drops expired ones.
//!
//! Every query is built at run time (`sqlx::query`, never the `query!`
//! macros), so a fresh clone builds without a database.
use crate::{
    AlertLog, AlertQuery, ChainReport, DeadLetters, DeviceQuery, DeviceWrite, ElderDeletion,
    ElderQuery, NewAlertEvent, ReadingQuery, ReadingRecord, RefusedRow, Registry, Result,
    StoreError, StoredReading, Telemetry, VitalsHour,
};
use async_trait::async_trait;
use eldercare_model::{
    AlertEvent, Carer, DeadLetter, Device, Elder, EpochMs, Provider, Silence, VisitPlan,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, error, info};

mod alerts;
mod maintenance;
pub(crate) mod readings;
mod registry;
mod visits;

pub use maintenance::{Layout, Maintenance};
pub use readings::COPY_MIN;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How the PostgreSQL store runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Days of telemetry kept; older partitions (or TimescaleDB chunks)
    /// are dropped. Alerts, their events and the registry are never
    /// expired.
    pub retention_days: u32,
    /// Daily partitions created ahead of today (plain PostgreSQL only).
    pub partitions_ahead: u32,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            retention_days: 400,
            partitions_ahead: 7,
            max_connections: 8,
        }
    }
}

/// A PostgreSQL store. Made either ready ([`PgStore::connect`]) or lazily
/// ([`PgStore::lazy`], for the server, which must start while the
/// database is unreachable): until [`PgStore::prepare`] has migrated the
/// schema and read the readings layout, every call fails at once with
/// [`StoreError::Unavailable`], an outage, without touching the network.
/// Clones share that state.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    opts: PgOptions,
    layout: Arc<OnceLock<Layout>>,
    /// The alert chain's head as this process last wrote or read it
    /// (seq, hash): lets an append be one statement (see
    /// `pg_append_alert_event`).
    chain_head: Arc<std::sync::Mutex<Option<(i64, String)>>>,
}

impl std::fmt::Debug for PgStore {
    // The pool's options hold the password: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("layout", &self.layout.get())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl PgStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) and applies the
    /// migrations (a no-op when they are applied already; concurrent
    /// migrators wait on sqlx's advisory lock). Does not touch partitions:
    /// the server calls [`PgStore::maintain`], one-shot commands do not.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore> {
        let s = PgStore::lazy(url, opts)?;
        s.prepare().await?;
        Ok(s)
    }

    /// The store for `url`, without connecting: only a URL that cannot be
    /// parsed fails here ([`StoreError::is_config`]). Nothing works until
    /// [`PgStore::prepare`] succeeds.
    pub fn lazy(url: &str, opts: PgOptions) -> Result<PgStore> {
        // sqlx logs statements at DEBUG and slow ones at WARN: their text
        // only, never the bound values, so no personal data reaches a log.
        //
        // Server notices ("relation already exists, skipping" on every
        // migration check) are not worth a line each time a command runs.
        let connect = PgConnectOptions::from_str(url)?
            .application_name("eldercare")
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            // Short: when the database is gone, writes fail fast and go to
            // the outage spool instead of holding an alert back.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(connect);
        Ok(PgStore {
            pool,
            opts,
            layout: Arc::new(OnceLock::new()),
            chain_head: Arc::default(),
        })
    }

    /// Connects once, applies the migrations and reads the readings
    /// layout; from then on the store serves calls. A no-op once done.
    ///
    /// The first connection is made directly, not through the pool, so
    /// the error says what went wrong: refused, timed out or unresolved
    /// (an outage: try again later), or a login, database name, TLS or
    /// migration problem ([`StoreError::is_config`]: trying again will
    /// not help).
    pub async fn prepare(&self) -> Result<()> {
        if self.is_ready() {
            return Ok(());
        }
        let probe = self.pool.connect_options();
        match tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::ConnectOptions::connect(&*probe),
        )
        .await
        {
            Ok(Ok(c)) => {
                let _ = sqlx::Connection::close(c).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        }
        MIGRATOR.run(&self.pool).await?;
        let layout = maintenance::detect_layout(&self.pool).await?;
        let _ = self.layout.set(layout);
        Ok(())
    }

    /// Whether [`PgStore::prepare`] has succeeded.
    pub fn is_ready(&self) -> bool {
        self.layout.get().is_some()
    }

    /// Until the store is prepared: waits `every`, then tries
    /// [`PgStore::prepare`]; `true` once prepared, `false` when `stop` is
    /// cancelled first. For a store whose first `prepare` failed as an
    /// outage (the caller has said so): further outages are logged at
    /// debug level only; a configuration problem (the database answers
    /// but refuses the login, has no such database, ...) at error level
    /// each time, as it will not mend itself.
    pub async fn prepare_when_reachable(
        &self,
        every: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        while !self.is_ready() {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(every) => {}
            }
            match self.prepare().await {
                Ok(()) => {
                    info!("PostgreSQL reached: schema migrated; the spool is written to it now.")
                }
                Err(e) if e.is_config() => {
                    error!(error = %e, "PostgreSQL answers but refuses this server; fix the configuration. Retrying.");
                }
                Err(e) => debug!(error = %e, "PostgreSQL still unreachable."),
            }
        }
        true
    }

    /// The readings layout, once prepared.
    fn ready(&self) -> Result<Layout> {
        self.layout.get().copied().ok_or(StoreError::Unavailable(
            "PostgreSQL has not been reached since the server started",
        ))
    }

    /// The migrations of this backend, e.g. to check that re-applying them
    /// is a no-op.
    pub fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    /// Whether telemetry is in a TimescaleDB hypertable or in daily
    /// partitions; `None` until [`PgStore::prepare`] has succeeded.
    pub fn layout(&self) -> Option<Layout> {
        self.layout.get().copied()
    }

    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// The connection pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Registry for PgStore {
    async fn upsert_elder(&self, elder: &Elder) -> Result<bool> {
        self.ready()?;
        self.pg_upsert_elder(elder).await
    }

    async fn upsert_device(&self, device: &Device) -> Result<bool> {
        self.ready()?;
        self.pg_upsert_device(device).await
    }

    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
        self.ready()?;
        self.pg_get_elder(elder_id).await
    }

    async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
        self.ready()?;
        self.pg_get_device(device_id).await
    }

    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
        self.ready()?;
        self.pg_list_elders(changed_since).await
    }

    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
        self.ready()?;
        self.pg_list_devices(changed_since).await
    }

    async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
        self.ready()?;
        self.pg_insert_elder(elder).await
    }

    async fn update_elder(&self, elder: &Elder) -> Result<bool> {
        self.ready()?;
        self.pg_update_elder(elder).await
    }

    async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        self.ready()?;
        self.pg_delete_elder(elder_id).await
    }

    async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
        self.ready()?;
        self.pg_query_elders(query).await
    }

    async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.ready()?;
        self.pg_insert_device(device).await
    }

    async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.ready()?;
        self.pg_update_device(device).await
    }

    async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
        self.ready()?;
        self.pg_set_device_secret(device_id, salt, hash).await
    }

    async fn delete_device(&self, device_id: &str) -> Result<bool> {
        self.ready()?;
        self.pg_delete_device(device_id).await
    }

    async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        self.ready()?;
        self.pg_query_devices(query).await
    }

    async fn upsert_provider(&self, p: &Provider) -> Result<bool> {
        self.ready()?;
        self.pg_upsert_provider(p).await
    }

    async fn delete_provider(&self, provider_id: &str) -> Result<bool> {
        self.ready()?;
        self.pg_delete_provider(provider_id).await
    }

    async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.ready()?;
        self.pg_list_providers().await
    }

    async fn upsert_carer(&self, c: &Carer) -> Result<bool> {
        self.ready()?;
        self.pg_upsert_carer(c).await
    }

    async fn delete_carer(&self, carer_id: &str) -> Result<bool> {
        self.ready()?;
        self.pg_delete_carer(carer_id).await
    }

    async fn list_carers(&self) -> Result<Vec<Carer>> {
        self.ready()?;
        self.pg_list_carers().await
    }

    async fn upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool> {
        self.ready()?;
        self.pg_upsert_visit_plan(p).await
    }

    async fn delete_visit_plan(&self, plan_id: &str) -> Result<bool> {
        self.ready()?;
        self.pg_delete_visit_plan(plan_id).await
    }

    async fn list_visit_plans(&self) -> Result<Vec<VisitPlan>> {
        self.ready()?;
        self.pg_list_visit_plans().await
    }
}

#[async_trait]
impl Telemetry for PgStore {
    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
        self.ready()?;
        self.pg_insert_readings(readings).await
    }

    async fn insert_readings_at(
        &self,
        readings: &[StoredReading],
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        self.ready()?;
        self.pg_insert_readings_at(readings, None, intake_pos).await
    }

    async fn intake_position(&self) -> Result<Option<u64>> {
        self.ready()?;
        self.pg_intake_position().await
    }

    async fn insert_readings_keyed(
        &self,
        readings: &[StoredReading],
        key: &str,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        self.ready()?;
        self.pg_insert_readings_at(readings, Some(key), intake_pos)
            .await
    }

    async fn keyed_position(&self, key: &str) -> Result<Option<u64>> {
        self.ready()?;
        self.pg_keyed_position(key).await
    }

    async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        self.ready()?;
        self.pg_query_readings(query).await
    }

    async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        self.ready()?;
        self.pg_latest_readings(elder_id).await
    }

    async fn vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        self.ready()?;
        self.pg_vitals_hourly(elder_id, from, to).await
    }
}

#[async_trait]
impl AlertLog for PgStore {
    async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent> {
        self.ready()?;
        self.pg_append_alert_event(event).await
    }

    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
        self.ready()?;
        self.pg_events_after(after_seq, limit).await
    }

    async fn last_seq(&self) -> Result<u64> {
        self.ready()?;
        self.pg_last_seq().await
    }

    async fn last_decision(&self) -> Result<u64> {
        self.ready()?;
        self.pg_last_decision().await
    }

    async fn get_alert(&self, id: &str) -> Result<Option<eldercare_model::Alert>> {
        self.ready()?;
        self.pg_get_alert(id).await
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<eldercare_model::Alert>> {
        self.ready()?;
        self.pg_list_alerts(query).await
    }

    async fn unresolved_alerts(&self) -> Result<Vec<eldercare_model::Alert>> {
        self.ready()?;
        self.pg_unresolved_alerts().await
    }

    async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
        self.ready()?;
        self.pg_events_of_alert(alert_id).await
    }

    async fn verify_chain(&self) -> Result<ChainReport> {
        self.ready()?;
        self.pg_verify_chain().await
    }

    async fn insert_silence(&self, silence: &Silence) -> Result<()> {
        self.ready()?;
        self.pg_insert_silence(silence).await
    }

    async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
        self.ready()?;
        self.pg_silences(active_at).await
    }
}

#[async_trait]
impl DeadLetters for PgStore {
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
        self.ready()?;
        self.pg_insert_dead_letter(dl).await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        self.ready()?;
        self.pg_dead_letters(limit).await
    }
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<database url>".into();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    // Query parameters may carry a password too (`?password=`).
    let path = tail.split('?').next().unwrap_or("");
    format!("{scheme}://{host}{path}")
}

/// Whether `url` names a PostgreSQL server.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://ec:s3cret@db.local:5432/eldercare?sslmode=require"),
            "postgres://ec:***@db.local:5432/eldercare"
        );
        assert_eq!(
            redact_url("postgresql://ec@db/x?password=s3cret"),
            "postgresql://ec@db/x"
        );
        assert_eq!(redact_url("postgres://db"), "postgres://db");
        assert_eq!(redact_url("nonsense"), "<database url>");
        assert!(is_postgres_url("postgresql://x") && is_postgres_url("postgres://x"));
        assert!(!is_postgres_url("sqlite://x"));
    }
}
