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

mod remote;
pub use remote::{Forward, Forwarded, WireError};

use async_trait::async_trait;
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, AlertKind, AlertReading, AlertState, Elder, EpochMs,
    Outcome, Responder, Severity, Silence,
};
use eldercare_rules::{Decision, Resolve, Trigger, Update};
use eldercare_store::{AlertLog, NewAlertEvent, Registry, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

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
    /// Someone was first: the alert is already acknowledged.
    #[error("alert `{id}` was already acknowledged by {by} at {at}; it is {state} now")]
    AlreadyAcknowledged {
        id: String,
        by: String,
        at: String,
        state: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the alert desk has shut down")]
    Closed,
}

/// An operator's step on an alert.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    Acknowledge,
    Dispatch(Responder),
    Escalate,
    Resolve(Outcome),
    AddNote,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Dispatch(_) => "dispatch",
            Action::Escalate => "escalate",
            Action::Resolve(_) => "resolve",
            Action::AddNote => "add a note",
        }
    }

    /// The lifecycle: OPEN -ack-> ACKNOWLEDGED -dispatch-> DISPATCHED
    /// -resolve-> RESOLVED; a false alarm may be resolved from OPEN, and a
    /// call handled by phone from ACKNOWLEDGED.
    fn allowed_from(&self, state: AlertState) -> bool {
        use AlertState::*;
        match self {
            Action::Acknowledge => state == Open,
            Action::Dispatch(_) => matches!(state, Acknowledged | Dispatched),
            Action::Escalate => state != Resolved,
            Action::AddNote => true,
            // A follow-up call is one step: the operator calls and records
            // what the elder said.
            Action::Resolve(o) if o.is_follow_up() => matches!(state, Open | Acknowledged),
            Action::Resolve(o) => match state {
                Open => *o == Outcome::FalseAlarm,
                Acknowledged => matches!(o, Outcome::FalseAlarm | Outcome::HandledByPhone),
                Dispatched => true,
                Resolved => false,
            },
        }
    }
}

/// How long an OPEN alert may wait for an acknowledgement, by severity,
/// before it is escalated (and reminded again at each further deadline).
/// 0 means never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Escalation {
    pub critical_s: u32,
    pub high_s: u32,
    pub medium_s: u32,
    pub low_s: u32,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            critical_s: 60,
            high_s: 180,
            medium_s: 600,
            low_s: 0,
        }
    }
}

impl Escalation {
    fn deadline_ms(&self, s: Severity) -> Option<i64> {
        let secs = match s {
            Severity::Critical => self.critical_s,
            Severity::High => self.high_s,
            Severity::Medium => self.medium_s,
            Severity::Low => self.low_s,
        };
        (secs > 0).then(|| i64::from(secs) * 1000)
    }
}

/// The desk's time source: wall clock in service, driven in tests.
pub type Clock = Arc<dyn Fn() -> EpochMs + Send + Sync>;

/// Told the intake log position of each message whose decision the desk
/// has applied; called on the desk's task, in order.
pub type Applied = Arc<dyn Fn(u64) + Send + Sync>;

pub fn wall_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// How the desk runs.
#[derive(Clone)]
pub struct DeskConfig {
    pub escalation: Escalation,
    pub clock: Clock,
    /// How often escalation deadlines are checked; `None` only when the
    /// caller drives [`AlertDesk::tick`] itself (tests).
    pub tick: Option<Duration>,
    /// Where applied decisions' intake positions are reported.
    pub applied: Option<Applied>,
}

impl Default for DeskConfig {
    fn default() -> Self {
        DeskConfig {
            escalation: Escalation::default(),
            clock: wall_clock(),
            tick: Some(Duration::from_secs(1)),
            applied: None,
        }
    }
}

/// The one registry read the desk makes: the elder a new alert is
/// about, for the district and community it is filed under. An answer
/// as of the last registry read will do; without one (an error, or no
/// such elder) the alert is filed under neither.
#[async_trait]
pub trait ElderLookup: Send + Sync + 'static {
    async fn elder(&self, elder_id: &str) -> Result<Option<Elder>, StoreError>;
}

/// The registry's answer, [`Registry::get_elder_recent`], which may come
/// from a cache without a round trip to the database.
#[async_trait]
impl<R: Registry + ?Sized> ElderLookup for Arc<R> {
    async fn elder(&self, elder_id: &str) -> Result<Option<Elder>, StoreError> {
        self.get_elder_recent(elder_id).await
    }
}

/// Longest a silence may last.
pub const MAX_SILENCE_MS: i64 = 31 * 24 * 3600 * 1000;

enum Command {
    /// A rule decision, with the intake log position of the message it
    /// came from (`None`: a timer).
    /// The decision, the log position it came from, when it was handed
    /// over, and its id in a cluster's decision log.
    Decide(Decision, Option<u64>, std::time::Instant, Option<u64>),
    /// Apply everything sent before, then stop.
    Stop,
    Act {
        id: String,
        action: Action,
        operator: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<Alert, DeskError>>,
    },
    /// Check escalation deadlines now.
    Tick,
    /// Answer once everything sent before is applied.
    Sync(oneshot::Sender<()>),
    Silence {
        silence: Silence,
        reply: oneshot::Sender<Result<Silence, DeskError>>,
    },
    EndSilence {
        id: String,
        operator: String,
        reply: oneshot::Sender<Result<Silence, DeskError>>,
    },
}

/// Handle to the alert desk; cheap to clone.
#[derive(Clone)]
pub struct AlertDesk {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<AlertEvent>,
    store: Arc<dyn AlertLog>,
}

impl AlertDesk {
    /// Starts the desk's task with the defaults (wall clock, default
    /// escalation deadlines). It ends on [`AlertDesk::stop`] or when every
    /// handle is dropped, after applying what was already sent.
    pub async fn start(
        store: Arc<dyn Store>,
    ) -> Result<(AlertDesk, tokio::task::JoinHandle<()>), DeskError> {
        AlertDesk::start_with(store, DeskConfig::default()).await
    }

    pub async fn start_with(
        store: Arc<dyn Store>,
        cfg: DeskConfig,
    ) -> Result<(AlertDesk, tokio::task::JoinHandle<()>), DeskError> {
        AlertDesk::start_on(store.clone(), Box::new(store), cfg).await
    }

    /// As [`AlertDesk::start_with`], on the storage the desk uses: the
    /// alert log it keeps and the registry read it makes.
    pub async fn start_on(
        store: Arc<dyn AlertLog>,
        elders: Box<dyn ElderLookup>,
        cfg: DeskConfig,
    ) -> Result<(AlertDesk, tokio::task::JoinHandle<()>), DeskError> {
        // A hotline starts during a database outage: the spooling store
        // answers from its local copy then; with none (a first start),
        // the desk starts with no alert open and no silence.
        let unresolved = match store.unresolved_alerts().await {
            Ok(a) => a,
            Err(e) if e.is_outage() => {
                warn!(error = %e, "Open alerts cannot be read; the desk starts with none open.");
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let silences = match store.silences(Some((cfg.clock)())).await {
            Ok(s) => s,
            Err(e) if e.is_outage() => {
                warn!(error = %e, "Silences cannot be read; the desk starts with none.");
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let (tx, rx) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(4096);
        let state = DeskState {
            store: store.clone(),
            elders,
            events: events.clone(),
            open: unresolved.into_iter().map(|a| (key_of(&a), a)).collect(),
            silences,
            escalation: cfg.escalation,
            clock: cfg.clock,
            applied: cfg.applied,
            deciding: None,
            halted: false,
        };
        let handle = tokio::spawn(state.run(rx));
        if let Some(every) = cfg.tick {
            // The ticker holds only a weak sender, so it never keeps the
            // desk alive.
            let weak = tx.downgrade();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    let Some(tx) = weak.upgrade() else { break };
                    if tx.send(Command::Tick).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok((AlertDesk { tx, events, store }, handle))
    }

    /// Checks escalation deadlines at the desk clock's time now.
    pub async fn tick(&self) {
        let _ = self.tx.send(Command::Tick).await;
    }

    /// An operator's step on an alert, recorded as theirs.
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        operator: &str,
        note: Option<String>,
    ) -> Result<Alert, DeskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Act {
                id: id.to_string(),
                action,
                operator: operator.to_string(),
                note,
                reply,
            })
            .await
            .map_err(|_| DeskError::Closed)?;
        rx.await.map_err(|_| DeskError::Closed)?
    }

    /// Mutes one kind of alert for one elder or device until `until`.
    pub async fn silence(&self, silence: Silence) -> Result<Silence, DeskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Silence { silence, reply })
            .await
            .map_err(|_| DeskError::Closed)?;
        rx.await.map_err(|_| DeskError::Closed)?
    }

    pub async fn end_silence(&self, id: &str, operator: &str) -> Result<Silence, DeskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::EndSilence {
                id: id.to_string(),
                operator: operator.to_string(),
                reply,
            })
            .await
            .map_err(|_| DeskError::Closed)?;
        rx.await.map_err(|_| DeskError::Closed)?
    }

    /// Hands a rule decision to the desk. Waits only when the desk's
    /// queue is full.
    pub async fn decide(&self, d: Decision) -> Result<(), DeskError> {
        self.decide_from(d, None).await
    }

    /// As [`AlertDesk::decide`], for a decision that came from the
    /// message at intake log position `pos`: once the decision is
    /// applied (persisted, or found to change nothing), the desk reports
    /// `pos` through [`DeskConfig::applied`], so a replay after a crash
    /// knows which messages' decisions are already kept.
    pub async fn decide_from(&self, d: Decision, pos: Option<u64>) -> Result<(), DeskError> {
        self.tx
            .send(Command::Decide(d, pos, std::time::Instant::now(), None))
            .await
            .map_err(|_| DeskError::Closed)
    }

    /// A decision from a cluster's decision log, with its sequence there
    /// as its id: its event is kept once however often it is delivered
    /// (the store refuses a second event of the same decision). Once it
    /// is applied, `id` is reported through [`DeskConfig::applied`].
    pub async fn decide_once(&self, d: Decision, id: u64) -> Result<(), DeskError> {
        self.tx
            .send(Command::Decide(
                d,
                Some(id),
                std::time::Instant::now(),
                Some(id),
            ))
            .await
            .map_err(|_| DeskError::Closed)
    }

    /// Returns once every decision and action sent before it is applied
    /// (persisted, or given up after retries): what a checkpoint of the
    /// rule engine waits for, so it never covers a decision not yet kept.
    pub async fn sync(&self) -> Result<(), DeskError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Sync(reply))
            .await
            .map_err(|_| DeskError::Closed)?;
        rx.await.map_err(|_| DeskError::Closed)
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
        self.act(id, Action::Acknowledge, operator, note).await
    }

    /// Live events only, from now on (no replay). For in-process
    /// listeners such as the device command sender.
    pub fn live(&self) -> broadcast::Receiver<AlertEvent> {
        self.events.subscribe()
    }

    /// The alert log the desk keeps.
    pub fn store(&self) -> &Arc<dyn AlertLog> {
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
    store: Arc<dyn AlertLog>,
    elders: Box<dyn ElderLookup>,
    events: broadcast::Sender<AlertEvent>,
    /// Unresolved alerts by (elder, kind, subject): where repeats fold.
    open: HashMap<AlertKey, Alert>,
    /// Silences not yet over.
    silences: Vec<Silence>,
    escalation: Escalation,
    clock: Clock,
    applied: Option<Applied>,
    /// The cluster decision being applied, if any: its event carries it.
    deciding: Option<u64>,
    /// A cluster decision could not be kept: the desk stops here, and the
    /// next desk (maybe this member's again) applies it from the log.
    halted: bool,
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
                Command::Decide(d, pos, handed, id) => {
                    self.deciding = id;
                    match d {
                        Decision::Raise(t) => {
                            let kind = t.kind;
                            self.on_trigger(t).await;
                            // From the rule's decision to the event kept
                            // and sent to subscribers (queue, storage).
                            metrics::histogram!("eldercare_alert_raise_seconds",
                                "kind" => kind.as_str())
                            .record(handed.elapsed().as_secs_f64());
                        }
                        Decision::Update(u) => self.on_update(u).await,
                        Decision::Resolve(r) => self.on_resolve(r).await,
                    }
                    self.deciding = None;
                    if self.halted {
                        break;
                    }
                    if let (Some(pos), Some(applied)) = (pos, &self.applied) {
                        applied(pos);
                    }
                }
                Command::Act {
                    id,
                    action,
                    operator,
                    note,
                    reply,
                } => {
                    let r = self.act(&id, action, &operator, note).await;
                    let _ = reply.send(r);
                }
                Command::Tick => self.escalate_overdue().await,
                Command::Sync(reply) => {
                    let _ = reply.send(());
                }
                Command::Silence { silence, reply } => {
                    let r = self.add_silence(silence).await;
                    let _ = reply.send(r);
                }
                Command::EndSilence {
                    id,
                    operator,
                    reply,
                } => {
                    let r = self.end_silence(&id, &operator).await;
                    let _ = reply.send(r);
                }
            }
        }
        debug!("Alert desk stopped.");
    }

    fn now(&self) -> EpochMs {
        (self.clock)()
    }

    async fn on_trigger(&mut self, t: Trigger) {
        let now = self.now();
        let readings = to_alert_readings(&t.readings);
        let key = (t.elder_id.clone(), t.kind, t.subject.clone());
        // A recorded trigger is its own alert, born resolved: never folded
        // into (nor closing) an open one.
        let open = if t.record.is_some() {
            None
        } else {
            self.open.get(&key)
        };
        let (kind, alert) = match open {
            Some(open)
                if !readings.is_empty() && readings.iter().all(|r| open.readings.contains(r)) =>
            {
                // The same evidence again: a message judged a second time
                // (replayed after a crash), not a new occurrence.
                metrics::counter!("eldercare_alert_repeats_ignored_total").increment(1);
                debug!(alert_id = %open.id, "Trigger with evidence already on the alert ignored.");
                return;
            }
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
                if t.late_ms.is_some() {
                    a.late_ms = t.late_ms;
                }
                (AlertEventKind::Updated, a)
            }
            None => {
                let (district, community) = match self.elders.elder(&t.elder_id).await {
                    Ok(Some(e)) => (e.district, e.community),
                    _ => (None, None),
                };
                let silence = self
                    .silences
                    .iter()
                    .find(|s| {
                        s.active_at(now)
                            && s.covers(t.kind, &t.elder_id, &t.device_id, t.subject.as_deref())
                    })
                    .map(|s| s.id.clone());
                let recorded = t.record.is_some();
                let a = Alert {
                    id: uuid::Uuid::now_v7().to_string(),
                    elder_id: t.elder_id.clone(),
                    device_id: t.device_id.clone(),
                    kind: t.kind,
                    severity: t.severity,
                    state: if recorded {
                        AlertState::Resolved
                    } else {
                        AlertState::Open
                    },
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
                    outcome: recorded.then(|| Outcome::Recorded.as_str().to_string()),
                    district,
                    community,
                    muted: silence.is_some(),
                    silence_id: silence,
                    escalations: 0,
                    responder: None,
                    acknowledged_at: None,
                    dispatched_at: None,
                    resolved_at: recorded.then_some(now),
                    late_ms: t.late_ms,
                    recorded,
                    visit: t.visit.clone(),
                    route: t.route,
                };
                (AlertEventKind::Raised, a)
            }
        };
        let ev = NewAlertEvent {
            kind,
            alert,
            actor: String::new(),
            at: now,
            note: t.record.as_ref().map(|r| r.note().en),
            decision: self.deciding,
        };
        if self.persist_retrying(ev).await {
            metrics::counter!("eldercare_alerts_triggered_total",
                "kind" => t.kind.as_str(), "severity" => t.severity.as_str())
            .increment(1);
            if t.record.is_some() {
                metrics::counter!("eldercare_alerts_recorded_total", "kind" => t.kind.as_str())
                    .increment(1);
            }
            if let Some(late) = t.late_ms {
                metrics::histogram!("eldercare_alert_late_seconds", "kind" => t.kind.as_str())
                    .record(late as f64 / 1000.0);
            }
        }
    }

    /// A rule's change to an open alert; nothing to do when none is open.
    async fn on_update(&mut self, u: Update) {
        let key = (u.elder_id.clone(), u.kind, u.subject.clone());
        let Some(open) = self.open.get(&key) else {
            return;
        };
        let now = self.now();
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
            decision: self.deciding,
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
        let now = self.now();
        let mut a = open.clone();
        a.updated_at = now;
        let outcome = match r.outcome {
            eldercare_rules::Outcome::FalseAlarm => Outcome::FalseAlarm,
            eldercare_rules::Outcome::Cleared => Outcome::Cleared,
        };
        let kind = if outcome == Outcome::FalseAlarm && a.state != AlertState::Open {
            // An operator already acts on it: tell them, let them decide.
            append_note(&mut a, &r.note);
            AlertEventKind::Updated
        } else {
            a.state = AlertState::Resolved;
            a.outcome = Some(outcome.as_str().to_string());
            a.resolved_at = Some(now);
            AlertEventKind::Resolved
        };
        self.persist_retrying(NewAlertEvent {
            kind,
            alert: a,
            actor: String::new(),
            at: now,
            note: Some(r.note.en),
            decision: self.deciding,
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
                Err(DeskError::Store(StoreError::DecisionKept(id))) => {
                    // Delivered again (to a desk that took over): its
                    // event is kept already, and this desk read the alert
                    // as it stands when it took over.
                    metrics::counter!("eldercare_alert_decisions_repeated_total").increment(1);
                    debug!(decision = id, "Rule decision already kept.");
                    return false;
                }
                Err(e) => {
                    error!(error = %e, attempt, kind = ev.alert.kind.as_str(), "Could not persist an alert change; retrying.");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        if let Some(decision) = self.deciding {
            // Not lost: the decision log still holds it, after the alert
            // log's last kept decision, where the next desk starts.
            error!(
                decision,
                "Could not keep a rule decision; the desk stops and the next one applies it again."
            );
            self.halted = true;
            return false;
        }
        metrics::counter!("eldercare_alerts_lost_total").increment(1);
        false
    }

    async fn persist(&mut self, ev: NewAlertEvent) -> Result<AlertEvent, DeskError> {
        let saved = self.store.append_alert_event(ev).await?;
        let a = &saved.alert;
        let key = key_of(a);
        if a.state == AlertState::Resolved {
            // A recorded alert is born resolved beside an open one of the
            // same kind: only the alert itself leaves the open set.
            if self.open.get(&key).is_some_and(|o| o.id == a.id) {
                self.open.remove(&key);
            }
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

    async fn find(&self, id: &str) -> Result<Alert, DeskError> {
        match self.open.values().find(|a| a.id == id) {
            Some(a) => Ok(a.clone()),
            None => self
                .store
                .get_alert(id)
                .await?
                .ok_or_else(|| DeskError::NotFound(id.to_string())),
        }
    }

    /// Who acknowledged the alert and when, for the operator who comes
    /// second (`None` if it cannot be told).
    async fn who_acknowledged(&self, alert: &Alert) -> Option<DeskError> {
        let events = self.store.events_of_alert(&alert.id).await.ok()?;
        let ack = events
            .iter()
            .find(|e| e.kind == AlertEventKind::Acknowledged)?;
        let at = chrono::DateTime::from_timestamp_millis(ack.at)?
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Some(DeskError::AlreadyAcknowledged {
            id: alert.id.clone(),
            by: ack.actor.clone(),
            at,
            state: alert.state.as_str(),
        })
    }

    async fn act(
        &mut self,
        id: &str,
        action: Action,
        operator: &str,
        note: Option<String>,
    ) -> Result<Alert, DeskError> {
        let mut alert = self.find(id).await?;
        if let Action::Resolve(Outcome::Cleared) = action {
            return Err(DeskError::Invalid(
                "outcome `cleared` is for alerts that clear themselves; use false_alarm, handled_by_phone, responder_on_site or sent_to_hospital".into(),
            ));
        }
        if !action.allowed_from(alert.state) {
            if action == Action::Acknowledge
                && let Some(first) = self.who_acknowledged(&alert).await
            {
                return Err(first);
            }
            return Err(DeskError::NotAllowed {
                id: id.to_string(),
                state: alert.state.as_str(),
                action: match &action {
                    Action::Resolve(Outcome::HandledByPhone) => {
                        "resolve as handled_by_phone (acknowledge first)"
                    }
                    Action::Resolve(_) if alert.state != AlertState::Resolved => {
                        "resolve with this outcome (dispatch first)"
                    }
                    a => a.name(),
                },
            });
        }
        let now = self.now();
        alert.updated_at = now;
        let kind = match &action {
            Action::Acknowledge => {
                alert.state = AlertState::Acknowledged;
                alert.acknowledged_at = Some(now);
                AlertEventKind::Acknowledged
            }
            Action::Dispatch(r) => {
                alert.state = AlertState::Dispatched;
                alert.dispatched_at.get_or_insert(now);
                alert.responder = Some(r.clone());
                AlertEventKind::Dispatched
            }
            Action::Escalate => {
                alert.escalations += 1;
                AlertEventKind::Escalated
            }
            Action::Resolve(o) => {
                alert.state = AlertState::Resolved;
                alert.outcome = Some(o.as_str().to_string());
                alert.resolved_at = Some(now);
                AlertEventKind::Resolved
            }
            Action::AddNote => AlertEventKind::Note,
        };
        let saved = self
            .persist(NewAlertEvent {
                kind,
                alert,
                actor: operator.to_string(),
                at: now,
                note,
                decision: None,
            })
            .await?;
        record_answer_time(&saved.alert, &action);
        Ok(saved.alert)
    }

    /// Escalates every OPEN, unmuted alert past its next deadline: the
    /// first time at the severity's deadline after detection, then a
    /// reminder at each further deadline until someone acknowledges. An
    /// alert that missed several deadlines at once (the server was down)
    /// gets one event that counts them all, not a burst.
    async fn escalate_overdue(&mut self) {
        let now = self.now();
        let due: Vec<(Alert, u32)> = self
            .open
            .values()
            .filter(|a| a.state == AlertState::Open && !a.muted)
            // Care managers, providers, visit supervisors and follow-up
            // calls work their queues by day; nobody is paged.
            .filter(|a| a.queue().escalates())
            .filter_map(|a| {
                let d = self.escalation.deadline_ms(a.severity)?;
                let passed = u32::try_from((now - a.detected_at) / d).unwrap_or(u32::MAX);
                (passed > a.escalations).then(|| (a.clone(), passed))
            })
            .collect();
        for (mut a, passed) in due {
            let waited_s = (now - a.detected_at) / 1000;
            a.escalations = passed;
            a.updated_at = now;
            let note = if a.escalations == 1 {
                format!("Not acknowledged within {waited_s} s: escalated")
            } else {
                format!(
                    "Reminder {}: still not acknowledged after {waited_s} s",
                    a.escalations
                )
            };
            metrics::counter!("eldercare_alert_escalations_total",
                "severity" => a.severity.as_str())
            .increment(1);
            self.persist_retrying(NewAlertEvent {
                kind: AlertEventKind::Escalated,
                alert: a,
                actor: String::new(),
                at: now,
                note: Some(note),
                decision: None,
            })
            .await;
        }
        self.silences
            .retain(|s| s.until > now && s.ended_at.is_none());
    }

    async fn add_silence(&mut self, s: Silence) -> Result<Silence, DeskError> {
        let now = self.now();
        if s.elder_id.is_some() == s.device_id.is_some() {
            return Err(DeskError::Invalid(
                "a silence names exactly one of elder_id and device_id".into(),
            ));
        }
        if s.reason.trim().is_empty() {
            return Err(DeskError::Invalid(
                "a silence needs a reason (e.g. \"in hospital until Friday\")".into(),
            ));
        }
        if s.until <= now || s.until - now > MAX_SILENCE_MS {
            return Err(DeskError::Invalid(format!(
                "until must be in the future and at most {} days away",
                MAX_SILENCE_MS / 86_400_000
            )));
        }
        let s = Silence {
            id: uuid::Uuid::now_v7().to_string(),
            created_at: now,
            ended_at: None,
            ..s
        };
        self.store.insert_silence(&s).await?;
        info!(silence_id = %s.id, kind = s.kind.as_str(), by = %s.created_by, "Silence added.");
        self.silences.push(s.clone());
        Ok(s)
    }

    async fn end_silence(&mut self, id: &str, operator: &str) -> Result<Silence, DeskError> {
        let now = self.now();
        let Some(i) = self.silences.iter().position(|s| s.id == id) else {
            return Err(DeskError::NotFound(format!(
                "no active silence with id `{id}`"
            )));
        };
        let mut s = self.silences.remove(i);
        s.ended_at = Some(now);
        self.store.insert_silence(&s).await?;
        info!(silence_id = %s.id, by = %operator, "Silence ended.");
        Ok(s)
    }
}

/// Answer times, the alarm-centre measure: from detection to each step.
fn record_answer_time(a: &Alert, action: &Action) {
    let (step, at) = match action {
        Action::Acknowledge => ("acknowledge", a.acknowledged_at),
        Action::Dispatch(_) => ("dispatch", a.dispatched_at),
        Action::Resolve(_) => ("resolve", a.resolved_at),
        _ => return,
    };
    if let Some(at) = at {
        metrics::histogram!("eldercare_alert_answer_seconds",
            "step" => step, "severity" => a.severity.as_str(), "queue" => a.queue().as_str())
        .record((at - a.detected_at).max(0) as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests;
