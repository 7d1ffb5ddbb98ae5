//! Riding out a database outage: [`SpoolingStore`] sits in front of any
//! [`Store`]. When a write of telemetry or of an alert event fails with a
//! database error, it goes to a bounded spool on disk (in the data
//! directory) instead, and the system carries on: alert events keep their
//! gap-free `seq` and hash chain (assigned here, exactly as the database
//! would) and are delivered to subscribers at once; a background task
//! writes the spool to the database, in order, when it is back.
//!
//! Alert events are never dropped. Telemetry is bounded: when the spool
//! is full, the oldest spooled readings are dropped and counted. While
//! anything is spooled, new writes queue behind it, so order holds.
use crate::{
    AlertQuery, ChainReport, DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, NewAlertEvent,
    ReadingQuery, ReadingRecord, Result, Store, StoreError, StoredReading, VitalsHour, event_hash,
};
use async_trait::async_trait;
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, Body, DeadLetter, Device, Elder, EpochMs, Reading, Silence,
    Stream,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// How much telemetry the spool holds at most, by default.
pub const SPOOL_READINGS: usize = 1_000_000;

/// An alert event as spooled: everything the database would store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpooledEvent {
    seq: u64,
    kind: AlertEventKind,
    alert: Alert,
    actor: String,
    at: EpochMs,
    note: Option<String>,
    hash: String,
}

impl SpooledEvent {
    fn event(&self) -> AlertEvent {
        AlertEvent {
            seq: self.seq,
            kind: self.kind,
            alert: self.alert.clone(),
            actor: self.actor.clone(),
            at: self.at,
            note: self.note.clone(),
            hash: self.hash.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpooledReading {
    elder_id: String,
    device_id: String,
    seq: Option<u64>,
    ts_ms: EpochMs,
    stream: Stream,
    body: String,
    /// Server time it was spooled, for the spool's age.
    spooled_at: EpochMs,
}

impl SpooledReading {
    fn from(r: &StoredReading, now: EpochMs) -> SpooledReading {
        SpooledReading {
            elder_id: r.elder_id.clone(),
            device_id: r.reading.device_id.clone(),
            seq: r.reading.seq,
            ts_ms: r.reading.ts_ms,
            stream: r.reading.stream(),
            body: r.reading.body.to_json(),
            spooled_at: now,
        }
    }

    fn stored(&self) -> Option<StoredReading> {
        Some(StoredReading {
            elder_id: self.elder_id.clone(),
            reading: Reading {
                device_id: self.device_id.clone(),
                seq: self.seq,
                ts_ms: self.ts_ms,
                body: Body::from_json(self.stream, &self.body).ok()?,
            },
        })
    }
}

struct State {
    /// Seq and hash of the newest event, stored or spooled.
    last_seq: u64,
    last_hash: String,
    events: VecDeque<SpooledEvent>,
    readings: VecDeque<SpooledReading>,
    dropped: u64,
}

/// A [`Store`] that spools writes while the database is unreachable.
pub struct SpoolingStore {
    inner: Arc<dyn Store>,
    dir: PathBuf,
    max_readings: usize,
    state: Mutex<State>,
    /// Serialise the writers of each kind and the drain, so order is
    /// kept; two locks, so a telemetry batch never delays an alert.
    write_events: tokio::sync::Mutex<()>,
    write_readings: tokio::sync::Mutex<()>,
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// Whether an error means "the database is not there right now".
fn unreachable(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(_))
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<VecDeque<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(source) => {
            return Err(StoreError::DataDir {
                path: path.display().to_string(),
                source,
            });
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| StoreError::Corrupt(format!("spool: {e}"))))
        .collect()
}

impl SpoolingStore {
    /// Wraps `inner`, keeping the spool in `dir`; spooled writes left by an
    /// earlier run are loaded and written first.
    pub async fn open(
        inner: Arc<dyn Store>,
        dir: &Path,
        max_readings: usize,
    ) -> Result<Arc<SpoolingStore>> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let events: VecDeque<SpooledEvent> = read_lines(&dir.join("events.jsonl"))?;
        let readings: VecDeque<SpooledReading> = read_lines(&dir.join("readings.jsonl"))?;
        let (last_seq, last_hash) = match events.back() {
            Some(e) => (e.seq, e.hash.clone()),
            None => {
                let seq = inner.last_seq().await?;
                let hash = match seq {
                    0 => String::new(),
                    s => inner
                        .events_after(s - 1, 1)
                        .await?
                        .pop()
                        .map(|e| e.hash)
                        .unwrap_or_default(),
                };
                (seq, hash)
            }
        };
        if !events.is_empty() || !readings.is_empty() {
            info!(
                events = events.len(),
                readings = readings.len(),
                "Spool from an earlier run found; writing it first."
            );
        }
        let s = Arc::new(SpoolingStore {
            inner,
            dir: dir.to_path_buf(),
            max_readings: max_readings.max(1),
            state: Mutex::new(State {
                last_seq,
                last_hash,
                events,
                readings,
                dropped: 0,
            }),
            write_events: tokio::sync::Mutex::new(()),
            write_readings: tokio::sync::Mutex::new(()),
        });
        s.publish_metrics();
        Ok(s)
    }

    /// Writes the spool to the database every `every` until `stop`.
    pub fn start_drain(
        self: &Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = t.tick() => {}
                }
                s.drain().await;
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events and readings waiting in the spool.
    pub fn spooled(&self) -> (usize, usize) {
        let st = self.lock();
        (st.events.len(), st.readings.len())
    }

    /// Readings dropped because the spool was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn publish_metrics(&self) {
        let st = self.lock();
        metrics::gauge!("eldercare_spool_events").set(st.events.len() as f64);
        metrics::gauge!("eldercare_spool_readings").set(st.readings.len() as f64);
        let oldest = st
            .events
            .front()
            .map(|e| e.at)
            .into_iter()
            .chain(st.readings.front().map(|r| r.spooled_at))
            .min();
        metrics::gauge!("eldercare_spool_oldest_seconds").set(
            oldest
                .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
    }

    fn rewrite<T: Serialize>(&self, name: &str, items: &VecDeque<T>) -> Result<()> {
        let path = self.dir.join(name);
        let err = |source| StoreError::DataDir {
            path: path.display().to_string(),
            source,
        };
        if items.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            };
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        for i in items {
            let line = serde_json::to_string(i).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            writeln!(f, "{line}").map_err(err)?;
        }
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    fn append<T: Serialize>(&self, name: &str, items: &[T]) -> Result<()> {
        let path = self.dir.join(name);
        let err = |source| StoreError::DataDir {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        for i in items {
            let line = serde_json::to_string(i).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            writeln!(f, "{line}").map_err(err)?;
        }
        // An alert event is acknowledged only once it is on disk.
        f.sync_data().map_err(err)
    }

    /// Writes what is spooled to the database, oldest first, stopping at
    /// the first failure.
    pub async fn drain(&self) {
        let _e = self.write_events.lock().await;
        let _r = self.write_readings.lock().await;
        loop {
            let next = self.lock().events.front().cloned();
            let Some(ev) = next else { break };
            match self
                .inner
                .append_alert_event(NewAlertEvent {
                    kind: ev.kind,
                    alert: ev.alert.clone(),
                    actor: ev.actor.clone(),
                    at: ev.at,
                    note: ev.note.clone(),
                })
                .await
            {
                Ok(saved) => {
                    if saved.seq != ev.seq || saved.hash != ev.hash {
                        error!(
                            spooled = ev.seq,
                            stored = saved.seq,
                            "A spooled alert event was stored with another seq or hash."
                        );
                    }
                    let mut st = self.lock();
                    st.events.pop_front();
                    let rest = st.events.clone();
                    drop(st);
                    if let Err(e) = self.rewrite("events.jsonl", &rest) {
                        warn!(error = %e, "Could not shorten the event spool.");
                    }
                }
                Err(e) => {
                    if unreachable(&e) {
                        debug!(error = %e, seq = ev.seq, "Database still unreachable; the spool waits.");
                    } else {
                        error!(error = %e, seq = ev.seq, "A spooled alert event cannot be stored; it stays spooled.");
                    }
                    self.publish_metrics();
                    return;
                }
            }
        }
        loop {
            let batch: Vec<SpooledReading> =
                self.lock().readings.iter().take(1000).cloned().collect();
            if batch.is_empty() {
                break;
            }
            let stored: Vec<StoredReading> = batch.iter().filter_map(|r| r.stored()).collect();
            match self.inner.insert_readings(&stored).await {
                Ok(()) => {
                    let mut st = self.lock();
                    let n = batch.len().min(st.readings.len());
                    st.readings.drain(..n);
                    let rest = st.readings.clone();
                    drop(st);
                    if let Err(e) = self.rewrite("readings.jsonl", &rest) {
                        warn!(error = %e, "Could not shorten the telemetry spool.");
                    }
                }
                Err(_) => break,
            }
        }
        let (e, r) = self.spooled();
        if e == 0 && r == 0 {
            metrics::gauge!("eldercare_spool_oldest_seconds").set(0.0);
        }
        self.publish_metrics();
    }

    fn spool_event(&self, ev: NewAlertEvent) -> Result<AlertEvent> {
        let body =
            serde_json::to_string(&ev.alert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let st = self.lock();
        let seq = st.last_seq + 1;
        let hash = event_hash(
            &st.last_hash,
            seq,
            ev.kind,
            &ev.alert.id,
            &ev.actor,
            ev.at,
            ev.note.as_deref(),
            &body,
        );
        let spooled = SpooledEvent {
            seq,
            kind: ev.kind,
            alert: ev.alert,
            actor: ev.actor,
            at: ev.at,
            note: ev.note,
            hash: hash.clone(),
        };
        drop(st);
        self.append("events.jsonl", std::slice::from_ref(&spooled))?;
        let mut st = self.lock();
        st.last_seq = seq;
        st.last_hash = hash;
        st.events.push_back(spooled.clone());
        drop(st);
        metrics::counter!("eldercare_spool_events_total").increment(1);
        self.publish_metrics();
        Ok(spooled.event())
    }

    fn spool_readings(&self, readings: &[StoredReading]) -> Result<()> {
        let now = now_ms();
        let new: Vec<SpooledReading> = readings
            .iter()
            .map(|r| SpooledReading::from(r, now))
            .collect();
        let mut st = self.lock();
        st.readings.extend(new.iter().cloned());
        let excess = st.readings.len().saturating_sub(self.max_readings);
        if excess > 0 {
            // Full: the oldest routine telemetry goes first.
            st.readings.drain(..excess);
            st.dropped += excess as u64;
            metrics::counter!("eldercare_spool_readings_dropped_total").increment(excess as u64);
            let rest = st.readings.clone();
            drop(st);
            self.rewrite("readings.jsonl", &rest)?;
        } else {
            drop(st);
            self.append("readings.jsonl", &new)?;
        }
        self.publish_metrics();
        Ok(())
    }
}

#[async_trait]
impl Store for SpoolingStore {
    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
        let _w = self.write_readings.lock().await;
        if self.lock().readings.is_empty() {
            match self.inner.insert_readings(readings).await {
                Err(e) if unreachable(&e) => {
                    warn!(error = %e, "Database unreachable; spooling telemetry.");
                }
                r => return r,
            }
        }
        self.spool_readings(readings)
    }

    async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent> {
        let _w = self.write_events.lock().await;
        if self.lock().events.is_empty() {
            match self.inner.append_alert_event(event.clone()).await {
                Ok(saved) => {
                    let mut st = self.lock();
                    st.last_seq = saved.seq;
                    st.last_hash = saved.hash.clone();
                    return Ok(saved);
                }
                Err(e) if unreachable(&e) => {
                    warn!(error = %e, "Database unreachable; spooling alert events (they are delivered meanwhile).");
                }
                Err(e) => return Err(e),
            }
        }
        self.spool_event(event)
    }

    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
        let spooled: Vec<AlertEvent> = self
            .lock()
            .events
            .iter()
            .filter(|e| e.seq > after_seq)
            .map(SpooledEvent::event)
            .collect();
        let first_spooled = spooled.first().map(|e| e.seq);
        match first_spooled {
            // Everything asked for is in the spool.
            Some(first) if first == after_seq + 1 => {
                Ok(spooled.into_iter().take(limit as usize).collect())
            }
            _ => {
                let mut stored = self.inner.events_after(after_seq, limit).await?;
                let last = stored.last().map(|e| e.seq).unwrap_or(after_seq);
                let room = (limit as usize).saturating_sub(stored.len());
                stored.extend(spooled.into_iter().filter(|e| e.seq > last).take(room));
                Ok(stored)
            }
        }
    }

    async fn last_seq(&self) -> Result<u64> {
        Ok(self.lock().last_seq)
    }

    async fn upsert_elder(&self, elder: &Elder) -> Result<bool> {
        self.inner.upsert_elder(elder).await
    }
    async fn upsert_device(&self, device: &Device) -> Result<bool> {
        self.inner.upsert_device(device).await
    }
    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
        self.inner.get_elder(elder_id).await
    }
    async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
        self.inner.get_device(device_id).await
    }
    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
        self.inner.list_elders(changed_since).await
    }
    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
        self.inner.list_devices(changed_since).await
    }
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        // The newest state may still be in the spool.
        let spooled = self
            .lock()
            .events
            .iter()
            .rev()
            .find(|e| e.alert.id == id)
            .map(|e| e.alert.clone());
        match spooled {
            Some(a) => Ok(Some(a)),
            None => self.inner.get_alert(id).await,
        }
    }
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.inner.list_alerts(query).await
    }
    async fn unresolved_alerts(&self) -> Result<Vec<Alert>> {
        self.inner.unresolved_alerts().await
    }
    async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
        let mut stored = self.inner.events_of_alert(alert_id).await?;
        let last = stored.last().map(|e| e.seq).unwrap_or(0);
        stored.extend(
            self.lock()
                .events
                .iter()
                .filter(|e| e.alert.id == alert_id && e.seq > last)
                .map(SpooledEvent::event),
        );
        Ok(stored)
    }
    async fn verify_chain(&self) -> Result<ChainReport> {
        self.inner.verify_chain().await
    }
    async fn insert_silence(&self, silence: &Silence) -> Result<()> {
        self.inner.insert_silence(silence).await
    }
    async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
        self.inner.silences(active_at).await
    }
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
        self.inner.insert_dead_letter(dl).await
    }
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(limit).await
    }
    async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
        self.inner.insert_elder(elder).await
    }
    async fn update_elder(&self, elder: &Elder) -> Result<bool> {
        self.inner.update_elder(elder).await
    }
    async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        self.inner.delete_elder(elder_id).await
    }
    async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
        self.inner.query_elders(query).await
    }
    async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.inner.insert_device(device).await
    }
    async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.inner.update_device(device).await
    }
    async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
        self.inner.set_device_secret(device_id, salt, hash).await
    }
    async fn delete_device(&self, device_id: &str) -> Result<bool> {
        self.inner.delete_device(device_id).await
    }
    async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        self.inner.query_devices(query).await
    }
    async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        self.inner.query_readings(query).await
    }
    async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        self.inner.latest_readings(elder_id).await
    }
    async fn vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        self.inner.vitals_hourly(elder_id, from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use eldercare_model::{AlertKind, AlertState, Severity, Status};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A store whose database can be "switched off".
    struct Flaky {
        inner: SqliteStore,
        down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Db(sqlx::Error::PoolTimedOut))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Store for Flaky {
        async fn upsert_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.upsert_elder(elder).await
        }
        async fn upsert_device(&self, device: &Device) -> Result<bool> {
            self.check()?;
            self.inner.upsert_device(device).await
        }
        async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
            self.check()?;
            self.inner.get_elder(elder_id).await
        }
        async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
            self.check()?;
            self.inner.get_device(device_id).await
        }
        async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
            self.check()?;
            self.inner.list_elders(changed_since).await
        }
        async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
            self.check()?;
            self.inner.list_devices(changed_since).await
        }
        async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
            self.check()?;
            self.inner.insert_readings(readings).await
        }
        async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent> {
            self.check()?;
            self.inner.append_alert_event(event).await
        }
        async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
            self.check()?;
            self.inner.events_after(after_seq, limit).await
        }
        async fn last_seq(&self) -> Result<u64> {
            self.check()?;
            self.inner.last_seq().await
        }
        async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
            self.check()?;
            self.inner.get_alert(id).await
        }
        async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
            self.check()?;
            self.inner.list_alerts(query).await
        }
        async fn unresolved_alerts(&self) -> Result<Vec<Alert>> {
            self.check()?;
            self.inner.unresolved_alerts().await
        }
        async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
            self.check()?;
            self.inner.events_of_alert(alert_id).await
        }
        async fn verify_chain(&self) -> Result<ChainReport> {
            self.check()?;
            self.inner.verify_chain().await
        }
        async fn insert_silence(&self, silence: &Silence) -> Result<()> {
            self.check()?;
            self.inner.insert_silence(silence).await
        }
        async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
            self.check()?;
            self.inner.silences(active_at).await
        }
        async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
            self.check()?;
            self.inner.insert_dead_letter(dl).await
        }
        async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
            self.check()?;
            self.inner.dead_letters(limit).await
        }
        async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.insert_elder(elder).await
        }
        async fn update_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.update_elder(elder).await
        }
        async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
            self.check()?;
            self.inner.delete_elder(elder_id).await
        }
        async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
            self.check()?;
            self.inner.query_elders(query).await
        }
        async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
            self.check()?;
            self.inner.insert_device(device).await
        }
        async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
            self.check()?;
            self.inner.update_device(device).await
        }
        async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
            self.check()?;
            self.inner.set_device_secret(device_id, salt, hash).await
        }
        async fn delete_device(&self, device_id: &str) -> Result<bool> {
            self.check()?;
            self.inner.delete_device(device_id).await
        }
        async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
            self.check()?;
            self.inner.query_devices(query).await
        }
        async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
            self.check()?;
            self.inner.query_readings(query).await
        }
        async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
            self.check()?;
            self.inner.latest_readings(elder_id).await
        }
        async fn vitals_hourly(
            &self,
            elder_id: &str,
            from: EpochMs,
            to: EpochMs,
        ) -> Result<Vec<VitalsHour>> {
            self.check()?;
            self.inner.vitals_hourly(elder_id, from, to).await
        }
    }

    fn alert(id: &str, state: AlertState) -> Alert {
        Alert {
            id: id.into(),
            elder_id: "E1".into(),
            device_id: "btn-1".into(),
            kind: AlertKind::Sos,
            severity: Severity::Critical,
            state,
            raised_at: 1,
            detected_at: 1,
            updated_at: 1,
            summary: "SOS".into(),
            summary_zh: String::new(),
            subject: None,
            window: None,
            score: None,
            factors: Vec::new(),
            readings: Vec::new(),
            occurrences: 1,
            outcome: None,
            district: None,
            community: None,
            muted: false,
            silence_id: None,
            escalations: 0,
            responder: None,
            acknowledged_at: None,
            dispatched_at: None,
            resolved_at: None,
        }
    }

    fn event(id: &str, at: EpochMs) -> NewAlertEvent {
        NewAlertEvent {
            kind: AlertEventKind::Raised,
            alert: alert(id, AlertState::Open),
            actor: String::new(),
            at,
            note: None,
        }
    }

    fn reading(i: u64) -> StoredReading {
        StoredReading {
            elder_id: "E1".into(),
            reading: Reading {
                device_id: "btn-1".into(),
                seq: Some(i),
                ts_ms: 1_000 + i as i64,
                body: Body::Status(Status {
                    battery_pct: Some(50),
                    ..Default::default()
                }),
            },
        }
    }

    #[tokio::test]
    async fn an_outage_spools_in_order_keeps_seq_and_chain_and_loses_no_alert() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: SqliteStore::open(dir.path()).await.unwrap(),
            down: AtomicBool::new(false),
        });
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 5)
            .await
            .unwrap();
        assert_eq!(
            spool.append_alert_event(event("a1", 1)).await.unwrap().seq,
            1
        );
        spool.insert_readings(&[reading(1)]).await.unwrap();

        // The database goes away: writes still succeed, in order.
        flaky.down.store(true, Ordering::SeqCst);
        let e2 = spool.append_alert_event(event("a2", 2)).await.unwrap();
        let e3 = spool.append_alert_event(event("a3", 3)).await.unwrap();
        assert_eq!((e2.seq, e3.seq), (2, 3));
        for i in 2..10 {
            spool.insert_readings(&[reading(i)]).await.unwrap();
        }
        assert_eq!(spool.spooled(), (2, 5), "telemetry bounded at 5");
        assert_eq!(spool.dropped(), 3, "the oldest readings went first");
        // Subscribers can still replay what they missed.
        let replay = spool.events_after(1, 10).await.unwrap();
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        spool.drain().await;
        assert_eq!(spool.spooled(), (2, 5), "nothing written while down");

        // A restart while down: the spool is on disk.
        drop(spool);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 5)
            .await
            .unwrap();
        assert_eq!(spool.spooled(), (2, 5));
        assert_eq!(spool.last_seq().await.unwrap(), 3);

        // Back: the spool goes in first, then new writes; seq gap-free and
        // the chain intact.
        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(spool.spooled(), (0, 0));
        assert_eq!(
            spool.append_alert_event(event("a4", 4)).await.unwrap().seq,
            4
        );
        let stored = flaky.inner.events_after(0, 10).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(stored[1].hash, e2.hash, "the spool computed the same chain");
        let chain = flaky.inner.verify_chain().await.unwrap();
        assert_eq!((chain.checked, chain.first_break), (4, None));
        let readings = flaky
            .inner
            .query_readings(&ReadingQuery {
                subject: crate::ReadingSubject::Device("btn-1".into()),
                from: None,
                to: None,
                streams: Vec::new(),
                newest_first: false,
                after: None,
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(readings.len(), 6, "1 before, the newest 5 of the outage");
    }
}
