//! The alert desk: the one place alerts change.
//!
//! Rule triggers and operator actions come in through [`AlertDesk`]; a
//! single task applies them in order, folds a repeat into the unresolved
//! alert of the same kind for the same elder, persists each change with
//! its `seq` *before* anyone sees it, then fans it out to live
//! subscribers. [`AlertDesk::subscribe`] replays from storage and then
//! follows live, with no gap and no duplicate at the switch-over; a
//! subscriber that falls behind is caught up from storage, so it never
//! slows ingestion or other subscribers.
#![forbid(unsafe_code)]

use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, AlertKind, AlertReading, AlertState, EpochMs,
};
use eldercare_rules::Trigger;
use eldercare_store::{NewAlertEvent, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info};

/// Readings kept on one alert; older evidence beyond this is dropped first.
const MAX_READINGS_PER_ALERT: usize = 20;
/// Events replayed from storage per query while catching up a subscriber.
const REPLAY_BATCH: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("no alert with id `{0}`")]
    NotFound(String),
    #[error("alert `{id}` is {state}; {action} is not allowed from that state")]
    NotAllowed {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the alert desk has shut down")]
    Closed,
}

enum Command {
    Trigger(Trigger),
    Acknowledge {
        id: String,
        operator: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<Alert, DeskError>>,
    },
}

/// Handle to the alert desk; cheap to clone.
#[derive(Clone)]
pub struct AlertDesk {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<AlertEvent>,
    store: Arc<dyn Store>,
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

impl AlertDesk {
    /// Starts the desk's task. It ends when every handle is dropped, after
    /// applying what was already sent.
    pub async fn start(
        store: Arc<dyn Store>,
    ) -> Result<(AlertDesk, tokio::task::JoinHandle<()>), DeskError> {
        let unresolved = store.unresolved_alerts().await?;
        let (tx, rx) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(4096);
        let state = DeskState {
            store: store.clone(),
            events: events.clone(),
            open: unresolved
                .into_iter()
                .map(|a| ((a.elder_id.clone(), a.kind), a))
                .collect(),
        };
        let handle = tokio::spawn(state.run(rx));
        Ok((AlertDesk { tx, events, store }, handle))
    }

    /// Hands a rule trigger to the desk. Waits only when the desk's queue
    /// is full.
    pub async fn trigger(&self, t: Trigger) -> Result<(), DeskError> {
        self.tx
            .send(Command::Trigger(t))
            .await
            .map_err(|_| DeskError::Closed)
    }

    pub async fn acknowledge(
        &self,
        id: &str,
        operator: &str,
        note: Option<String>,
    ) -> Result<Alert, DeskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Acknowledge {
                id: id.to_string(),
                operator: operator.to_string(),
                note,
                reply,
            })
            .await
            .map_err(|_| DeskError::Closed)?;
        rx.await.map_err(|_| DeskError::Closed)?
    }

    /// Live events only, from now on (no replay). For in-process
    /// listeners such as the device command sender.
    pub fn live(&self) -> broadcast::Receiver<AlertEvent> {
        self.events.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Sends every event with `seq > after_seq` that `keep` accepts to
    /// `sink`, replaying from storage and then following live, until the
    /// sink is closed or the desk shuts down. Returns the last seq sent
    /// or skipped.
    pub async fn subscribe<F>(
        &self,
        after_seq: u64,
        keep: F,
        sink: mpsc::Sender<AlertEvent>,
    ) -> Result<u64, DeskError>
    where
        F: Fn(&AlertEvent) -> bool + Send,
    {
        // Subscribe to live events before reading storage, so nothing
        // persisted in between can be missed; duplicates are skipped by seq.
        let mut live = self.events.subscribe();
        let mut last = after_seq;
        loop {
            // Catch up from storage.
            loop {
                let batch = self.store.events_after(last, REPLAY_BATCH).await?;
                if batch.is_empty() {
                    break;
                }
                for ev in batch {
                    last = ev.seq;
                    if keep(&ev) && sink.send(ev).await.is_err() {
                        return Ok(last);
                    }
                }
            }
            // Follow live until a gap shows we fell behind.
            loop {
                match live.recv().await {
                    Ok(ev) if ev.seq <= last => continue,
                    Ok(ev) if ev.seq == last + 1 => {
                        last = ev.seq;
                        if keep(&ev) && sink.send(ev).await.is_err() {
                            return Ok(last);
                        }
                    }
                    // A gap: the missed events are in storage.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        debug!(last, "Subscriber fell behind; catching up from storage.");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(last),
                }
            }
        }
    }
}

struct DeskState {
    store: Arc<dyn Store>,
    events: broadcast::Sender<AlertEvent>,
    /// Unresolved alerts by (elder, kind): where repeats fold.
    open: HashMap<(String, AlertKind), Alert>,
}

impl DeskState {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Trigger(t) => self.on_trigger(t).await,
                Command::Acknowledge {
                    id,
                    operator,
                    note,
                    reply,
                } => {
                    let r = self.acknowledge(&id, &operator, note).await;
                    let _ = reply.send(r);
                }
            }
        }
        debug!("Alert desk stopped.");
    }

    async fn on_trigger(&mut self, t: Trigger) {
        let now = now_ms();
        let readings: Vec<AlertReading> = t
            .readings
            .iter()
            .map(|r| AlertReading {
                device_id: r.device_id.clone(),
                stream: r.stream(),
                ts_ms: r.ts_ms,
                json: r.body.to_json(),
            })
            .collect();
        let key = (t.elder_id.clone(), t.kind);
        let (kind, alert) = match self.open.get(&key) {
            Some(open) => {
                let mut a = open.clone();
                a.occurrences += 1;
                a.severity = a.severity.max(t.severity);
                a.updated_at = now;
                a.summary = format!("{} (repeated ×{})", t.summary, a.occurrences);
                a.readings.extend(readings);
                let excess = a.readings.len().saturating_sub(MAX_READINGS_PER_ALERT);
                a.readings.drain(..excess);
                (AlertEventKind::Updated, a)
            }
            None => {
                let (district, community) = match self.store.get_elder(&t.elder_id).await {
                    Ok(Some(e)) => (e.district, e.community),
                    _ => (None, None),
                };
                let a = Alert {
                    id: uuid::Uuid::now_v7().to_string(),
                    elder_id: t.elder_id.clone(),
                    device_id: t.device_id.clone(),
                    kind: t.kind,
                    severity: t.severity,
                    state: AlertState::Open,
                    raised_at: t.at_ms,
                    detected_at: now,
                    updated_at: now,
                    summary: t.summary.clone(),
                    readings,
                    occurrences: 1,
                    outcome: None,
                    district,
                    community,
                };
                (AlertEventKind::Raised, a)
            }
        };
        let ev = NewAlertEvent {
            kind,
            alert,
            actor: String::new(),
            at: now,
            note: None,
        };
        // An alert must not be lost to a passing storage fault: retry, then
        // report loudly.
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=8 {
            match self.persist(ev.clone()).await {
                Ok(_) => {
                    metrics::counter!("eldercare_alerts_triggered_total",
                        "kind" => t.kind.as_str(), "severity" => t.severity.as_str())
                    .increment(1);
                    return;
                }
                Err(e) => {
                    error!(error = %e, attempt, kind = t.kind.as_str(), "Could not persist an alert; retrying.");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        metrics::counter!("eldercare_alerts_lost_total").increment(1);
    }

    async fn persist(&mut self, ev: NewAlertEvent) -> Result<AlertEvent, DeskError> {
        let saved = self.store.append_alert_event(ev).await?;
        let a = &saved.alert;
        let key = (a.elder_id.clone(), a.kind);
        if a.state == AlertState::Resolved {
            self.open.remove(&key);
        } else {
            self.open.insert(key, a.clone());
        }
        metrics::counter!("eldercare_alert_events_total", "kind" => saved.kind.as_str())
            .increment(1);
        if saved.kind == AlertEventKind::Raised {
            info!(seq = saved.seq, alert_id = %a.id, elder_id = %a.elder_id, kind = a.kind.as_str(),
                severity = a.severity.as_str(), "Alert raised.");
        } else {
            debug!(seq = saved.seq, alert_id = %a.id, event = saved.kind.as_str(), "Alert changed.");
        }
        // No receiver is fine: subscribers read storage first.
        let _ = self.events.send(saved.clone());
        Ok(saved)
    }

    async fn acknowledge(
        &mut self,
        id: &str,
        operator: &str,
        note: Option<String>,
    ) -> Result<Alert, DeskError> {
        let mut alert = match self.open.values().find(|a| a.id == id) {
            Some(a) => a.clone(),
            None => self
                .store
                .get_alert(id)
                .await?
                .ok_or_else(|| DeskError::NotFound(id.to_string()))?,
        };
        if alert.state != AlertState::Open {
            return Err(DeskError::NotAllowed {
                id: id.to_string(),
                state: alert.state.as_str(),
                action: "acknowledge",
            });
        }
        let now = now_ms();
        alert.state = AlertState::Acknowledged;
        alert.updated_at = now;
        let saved = self
            .persist(NewAlertEvent {
                kind: AlertEventKind::Acknowledged,
                alert,
                actor: operator.to_string(),
                at: now,
                note,
            })
            .await?;
        Ok(saved.alert)
    }
}

#[cfg(test)]
mod tests;
