//! What the engine decides: raise, update or resolve an alert.

use crate::snapshot;
use crate::state::ElderSlot;
use eldercare_model::{AlertKind, EpochMs, Queue, Reading, Severity, Text, VisitInfo};

/// A rule's decision that an alert should be raised, or folded into the
/// open alert of the same kind for the same elder (and device, for
/// per-device kinds).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub elder_id: String,
    pub device_id: String,
    /// The device a per-device alert is about.
    pub subject: Option<String>,
    pub kind: AlertKind,
    pub severity: Severity,
    /// Event time of the triggering reading (the engine clock for timers).
    pub at_ms: EpochMs,
    pub summary: Text,
    /// The readings that triggered it, oldest first.
    #[serde(with = "snapshot::saved_readings")]
    pub readings: Vec<Reading>,
    /// The event-time window the condition held over.
    pub window: Option<(EpochMs, EpochMs)>,
    /// NEWS2 score, for vital-sign alerts.
    pub score: Option<u32>,
    /// What contributed, e.g. `pulse 142 (3)`.
    pub factors: Vec<String>,
    /// Shown by readings that arrived late: milliseconds from `at_ms` to
    /// the engine time it was judged at.
    #[serde(default)]
    pub late_ms: Option<i64>,
    /// Recorded for the care managers instead of raised, and why.
    #[serde(default)]
    pub record: Option<Record>,
    /// The visit it is about (`visit`, `visit_missed`, `follow_up`).
    #[serde(default)]
    pub visit: Option<Box<VisitInfo>>,
    /// Where it goes when not the kind's usual queue.
    #[serde(default)]
    pub route: Option<Queue>,
}

/// Why a trigger is recorded (born resolved, on the care queue) rather
/// than raised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// The late readings that showed the episode also show it over.
    OverInLateData(Text),
    /// The trend rule runs in shadow mode.
    Shadow,
    /// A carer's visit the home's sensors bear out: nothing to flag.
    Visit,
}

impl Record {
    /// A note for the event log.
    pub fn note(&self) -> Text {
        match self {
            Record::OverInLateData(t) => t.clone(),
            Record::Shadow => Text::new(
                "Trend rule in shadow mode: recorded, not raised",
                "趋势规则处于观察模式：仅记录，不告警",
            ),
            Record::Visit => Text::new(
                "Visit borne out by the home's sensors: recorded",
                "上门服务经家中传感器佐证：已记录",
            ),
        }
    }
}

/// A change to the open alert of a kind, without counting a repeat.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    pub elder_id: String,
    pub kind: AlertKind,
    pub subject: Option<String>,
    /// New summary, when it changes.
    pub summary: Option<Text>,
    /// A note for the event log.
    pub note: Text,
    pub at_ms: EpochMs,
    #[serde(with = "snapshot::saved_readings")]
    pub readings: Vec<Reading>,
}

/// How the system itself resolves an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The person cancelled it on the device.
    FalseAlarm,
    /// A maintenance condition that went away (device heard, battery charged).
    Cleared,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::FalseAlarm => "false_alarm",
            Outcome::Cleared => "cleared",
        }
    }
}

/// The system resolves the open alert of a kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resolve {
    pub elder_id: String,
    pub kind: AlertKind,
    pub subject: Option<String>,
    pub outcome: Outcome,
    pub note: Text,
    pub at_ms: EpochMs,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    Raise(Trigger),
    Update(Update),
    Resolve(Resolve),
}

impl Decision {
    pub fn kind(&self) -> AlertKind {
        match self {
            Decision::Raise(t) => t.kind,
            Decision::Update(u) => u.kind,
            Decision::Resolve(r) => r.kind,
        }
    }

    pub fn elder_id(&self) -> &str {
        match self {
            Decision::Raise(t) => &t.elder_id,
            Decision::Update(u) => &u.elder_id,
            Decision::Resolve(r) => &r.elder_id,
        }
    }
}

pub(crate) fn trigger(
    e: &ElderSlot,
    r: &Reading,
    kind: AlertKind,
    severity: Severity,
    summary: Text,
) -> Trigger {
    Trigger {
        elder_id: e.id.to_string(),
        device_id: r.device_id.clone(),
        subject: None,
        kind,
        severity,
        at_ms: r.ts_ms,
        summary,
        readings: vec![r.clone()],
        window: None,
        score: None,
        factors: Vec::new(),
        late_ms: None,
        visit: None,
        route: None,
        record: None,
    }
}

pub(crate) fn timer_trigger(
    e: &ElderSlot,
    device_id: &str,
    kind: AlertKind,
    severity: Severity,
    now: EpochMs,
    summary: Text,
) -> Trigger {
    Trigger {
        elder_id: e.id.to_string(),
        device_id: device_id.to_string(),
        subject: None,
        kind,
        severity,
        at_ms: now,
        summary,
        readings: Vec::new(),
        window: None,
        score: None,
        factors: Vec::new(),
        late_ms: None,
        visit: None,
        route: None,
        record: None,
    }
}
