use crate::{AlertQuery, ChainReport, NewAlertEvent, Result};
use async_trait::async_trait;
use eldercare_model::{Alert, AlertEvent, EpochMs, Silence};

/// The alerts and their gap-free, hash-chained event log, with the
/// silences that mute them. The alert desk is its one writer; the
/// desk's subscribers, the operator API and the rule pipeline (the
/// alerts open at a restart) read it.
#[async_trait]
pub trait AlertLog: Send + Sync + 'static {
    /// Persists one alert change atomically: the alert's new state and its
    /// event, with the next `seq` (exactly one more than the last).
    async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent>;
    /// Events with `seq > after_seq`, in order, at most `limit`.
    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>>;
    async fn last_seq(&self) -> Result<u64>;
    /// The newest rule decision an event was kept for (0: none).
    async fn last_decision(&self) -> Result<u64>;
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>>;
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>>;
    /// Every alert not yet resolved.
    async fn unresolved_alerts(&self) -> Result<Vec<Alert>>;
    /// The event history of one alert, in order.
    async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>>;
    /// Recomputes the hash chain of the whole event log.
    async fn verify_chain(&self) -> Result<ChainReport>;

    /// Inserts a silence, or updates its end.
    async fn insert_silence(&self, silence: &Silence) -> Result<()>;
    /// Silences active at a time, or all of them.
    async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>>;
}
