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
use eldercare_rules::{Decision, Outcome, Resolve, Trigger, Update};
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
    Decide(Decision),
    /// Apply everything sent before, then stop.
    Stop,
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
            open: unresolved.into_iter().map(|a| (key_of(&a), a)).collect(),
        };
        let handle = tokio::spawn(state.run(rx));
        Ok((AlertDesk { tx, events, store }, handle))
    }

    /// Hands a rule decision to the desk. Waits only when the desk's
    /// queue is full.
    pub async fn decide(&self, d: Decision) -> Result<(), DeskError> {
        self.tx
            .send(Command::Decide(d))
            .await
            .map_err(|_| DeskError::Closed)
    }

    /// Stops the desk after it has applied every change sent before; the
    /// desk's task then ends even while other handles (a gRPC connection
    /// that never closed) still exist.
    pub async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }

    /// Raises an alert, or folds it into the open one of its kind.
    pub async fn trigger(&self, t: Trigger) -> Result<(), DeskError> {
        self.decide(Decision::Raise(t)).await
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
    /// Unresolved alerts by (elder, kind, subject): where repeats fold.
    open: HashMap<AlertKey, Alert>,
}

/// Where repeats fold: one open alert per elder and kind, and per device
/// for per-device kinds.
type AlertKey = (String, AlertKind, Option<String>);

fn key_of(a: &Alert) -> AlertKey {
    (a.elder_id.clone(), a.kind, a.subject.clone())
}

fn to_alert_readings(readings: &[eldercare_model::Reading]) -> Vec<AlertReading> {
    readings
        .iter()
        .map(|r| AlertReading {
            device_id: r.device_id.clone(),
            stream: r.stream(),
            ts_ms: r.ts_ms,
            json: r.body.to_json(),
        })
        .collect()
}

/// Adds a system note to the end of the alert's summary, in both languages.
fn append_note(a: &mut Alert, note: &eldercare_model::Text) {
    a.summary = format!("{}; {}", a.summary, note.en);
    a.summary_zh = format!("{}；{}", a.summary_zh, note.zh);
}

fn keep_last_readings(a: &mut Alert) {
    let excess = a.readings.len().saturating_sub(MAX_READINGS_PER_ALERT);
    a.readings.drain(..excess);
}

impl DeskState {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Stop => break,
                Command::Decide(Decision::Raise(t)) => self.on_trigger(t).await,
                Command::Decide(Decision::Update(u)) => self.on_update(u).await,
                Command::Decide(Decision::Resolve(r)) => self.on_resolve(r).await,
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
        let readings = to_alert_readings(&t.readings);
        let key = (t.elder_id.clone(), t.kind, t.subject.clone());
        let (kind, alert) = match self.open.get(&key) {
            Some(open) => {
                let mut a = open.clone();
                a.occurrences += 1;
                a.severity = a.severity.max(t.severity);
                a.updated_at = now;
                a.summary = format!("{} (repeated ×{})", t.summary.en, a.occurrences);
                a.summary_zh = format!("{}（第 {} 次）", t.summary.zh, a.occurrences);
                a.readings.extend(readings);
                keep_last_readings(&mut a);
                a.window = match (a.window, t.window) {
                    (Some((f0, t0)), Some((f1, t1))) => Some((f0.min(f1), t0.max(t1))),
                    (w, None) | (None, w) => w,
                };
                if t.score.is_some() {
                    a.score = t.score;
                    a.factors = t.factors.clone();
                }
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
                    summary: t.summary.en.clone(),
                    summary_zh: t.summary.zh.clone(),
                    subject: t.subject.clone(),
                    window: t.window,
                    score: t.score,
                    factors: t.factors.clone(),
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
        if self.persist_retrying(ev).await {
            metrics::counter!("eldercare_alerts_triggered_total",
                "kind" => t.kind.as_str(), "severity" => t.severity.as_str())
            .increment(1);
        }
    }

    /// A rule's change to an open alert; nothing to do when none is open.
    async fn on_update(&mut self, u: Update) {
        let key = (u.elder_id.clone(), u.kind, u.subject.clone());
        let Some(open) = self.open.get(&key) else {
            return;
        };
        let now = now_ms();
        let mut a = open.clone();
        match u.summary {
            Some(s) => {
                a.summary = s.en;
                a.summary_zh = s.zh;
            }
            None => append_note(&mut a, &u.note),
        }
        a.updated_at = now;
        a.readings.extend(to_alert_readings(&u.readings));
        keep_last_readings(&mut a);
        self.persist_retrying(NewAlertEvent {
            kind: AlertEventKind::Updated,
            alert: a,
            actor: String::new(),
            at: now,
            note: Some(u.note.en),
        })
        .await;
    }

    /// The system resolves an alert: a cancelled SOS (only while nobody
    /// has taken it up yet) or a maintenance condition that went away.
    async fn on_resolve(&mut self, r: Resolve) {
        let key = (r.elder_id.clone(), r.kind, r.subject.clone());
        let Some(open) = self.open.get(&key) else {
            return;
        };
        let now = now_ms();
        let mut a = open.clone();
        a.updated_at = now;
        let kind = if r.outcome == Outcome::FalseAlarm && a.state != AlertState::Open {
            // An operator already acts on it: tell them, let them decide.
            append_note(&mut a, &r.note);
            AlertEventKind::Updated
        } else {
            a.state = AlertState::Resolved;
            a.outcome = Some(r.outcome.as_str().to_string());
            AlertEventKind::Resolved
        };
        self.persist_retrying(NewAlertEvent {
            kind,
            alert: a,
            actor: String::new(),
            at: now,
            note: Some(r.note.en),
        })
        .await;
    }

    /// Persists a system change; an alert must not be lost to a passing
    /// storage fault, so retry, then report loudly.
    async fn persist_retrying(&mut self, ev: NewAlertEvent) -> bool {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=8 {
            match self.persist(ev.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    error!(error = %e, attempt, kind = ev.alert.kind.as_str(), "Could not persist an alert change; retrying.");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        metrics::counter!("eldercare_alerts_lost_total").increment(1);
        false
    }

    async fn persist(&mut self, ev: NewAlertEvent) -> Result<AlertEvent, DeskError> {
        let saved = self.store.append_alert_event(ev).await?;
        let a = &saved.alert;
        let key = key_of(a);
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
