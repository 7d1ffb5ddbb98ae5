//! The domain types every other eldercare crate speaks: validated device
//! readings, elders and devices of the registry, and alerts with their
//! lifecycle events. No I/O and no logic beyond naming and conversion.
use serde::{Deserialize, Serialize};
use std::fmt;

mod visit;
pub use visit::{
    Carer, Provider, SignKind, VisitAction, VisitFlag, VisitInfo, VisitPlan, VisitSign, plan_days,
};

/// Milliseconds since the Unix epoch. Event time when it comes from a
/// device, server time when the backend stamps it.
pub type EpochMs = i64;

/// The six telemetry streams of the device protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Vitals,
    Sleep,
    Motion,
    Location,
    Event,
    Status,
}

impl Stream {
    pub const ALL: [Stream; 6] = [
        Stream::Vitals,
        Stream::Sleep,
        Stream::Motion,
        Stream::Location,
        Stream::Event,
        Stream::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Vitals => "vitals",
            Stream::Sleep => "sleep",
            Stream::Motion => "motion",
            Stream::Location => "location",
            Stream::Event => "event",
            Stream::Status => "status",
        }
    }

    pub fn parse(s: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated reading from one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: String,
    pub seq: Option<u64>,
    /// Event time (device clock).
    pub ts_ms: EpochMs,
    pub body: Body,
}

impl Reading {
    pub fn stream(&self) -> Stream {
        self.body.stream()
    }
}

/// The stream-specific part of a reading, in the protocol's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Body {
    Vitals(Vitals),
    Sleep(Sleep),
    Motion(Motion),
    Location(Location),
    Event(DeviceEvent),
    Status(Status),
}

impl Body {
    pub fn stream(&self) -> Stream {
        match self {
            Body::Vitals(_) => Stream::Vitals,
            Body::Sleep(_) => Stream::Sleep,
            Body::Motion(_) => Stream::Motion,
            Body::Location(_) => Stream::Location,
            Body::Event(_) => Stream::Event,
            Body::Status(_) => Stream::Status,
        }
    }

    /// The body as JSON text, with the protocol's field names; absent
    /// fields left out.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads back what [`Body::to_json`] wrote for a reading of `stream`
    /// (the JSON alone cannot tell a vitals body from a status body).
    pub fn from_json(stream: Stream, json: &str) -> Result<Body, serde_json::Error> {
        Ok(match stream {
            Stream::Vitals => Body::Vitals(serde_json::from_str(json)?),
            Stream::Sleep => Body::Sleep(serde_json::from_str(json)?),
            Stream::Motion => Body::Motion(serde_json::from_str(json)?),
            Stream::Location => Body::Location(serde_json::from_str(json)?),
            Stream::Event => Body::Event(serde_json::from_str(json)?),
            Stream::Status => Body::Status(serde_json::from_str(json)?),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spo2: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sys: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dia: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sleep {
    pub in_bed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub movement: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    pub room: String,
    pub motion: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Sos,
    Fall,
    SosCancel,
    /// A carer's tag read at the home: `carer` and `action` (in or out).
    Visit,
    /// The elder pressed "I am well" (a wellbeing check-in).
    CheckIn,
}

impl EventType {
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "sos" => Some(EventType::Sos),
            "fall" => Some(EventType::Fall),
            "sos_cancel" => Some(EventType::SosCancel),
            "visit" => Some(EventType::Visit),
            "check_in" => Some(EventType::CheckIn),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// For `visit`: the carer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carer: Option<String>,
    /// For `visit`: in or out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<VisitAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fw: Option<String>,
}

/// Kinds of in-home device in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    SleepSensor,
    VitalBand,
    Pir,
    GpsWatch,
    SosButton,
    /// A home gateway: one MQTT session that publishes for the other
    /// devices registered to the same elder (and for itself).
    Gateway,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 6] = [
        DeviceKind::SleepSensor,
        DeviceKind::VitalBand,
        DeviceKind::Pir,
        DeviceKind::GpsWatch,
        DeviceKind::SosButton,
        DeviceKind::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::SleepSensor => "sleep_sensor",
            DeviceKind::VitalBand => "vital_band",
            DeviceKind::Pir => "pir",
            DeviceKind::GpsWatch => "gps_watch",
            DeviceKind::SosButton => "sos_button",
            DeviceKind::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        DeviceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A cared-for person in the registry. `name`, `phone`, `address` and the
/// contact are personal data: never log them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Elder {
    pub elder_id: String,
    pub name: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub district: Option<String>,
    pub community: Option<String>,
    pub home_lat: Option<f64>,
    pub home_lon: Option<f64>,
    pub safe_radius_m: Option<f64>,
    pub flags: Vec<String>,
    pub timezone: String,
    pub night_start: String,
    pub night_end: String,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    /// Daily wellbeing check-in window, local `HH:MM-HH:MM`, for elders
    /// who opted in: any sign of ordinary life in it counts.
    pub check_in: Option<String>,
}

/// A registered device. The secret is kept only as a salted hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub device_id: String,
    pub kind: DeviceKind,
    pub elder_id: String,
    pub room: Option<String>,
    pub heartbeat_s: u32,
    pub secret_salt: String,
    pub secret_hash: String,
}

/// How urgent an alert is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// What kind of emergency or maintenance condition an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Sos,
    Fall,
    VitalOutOfRange,
    OutOfBedTooLong,
    NoBreathing,
    Inactivity,
    GeofenceExit,
    DeviceOffline,
    /// Every device of one home went silent together (power or network
    /// cut): one alert for the home instead of one per device.
    HomeOffline,
    LowBattery,
    /// A sustained change from the elder's own usual range (more night-time
    /// bathroom visits, less activity, faster breathing in bed): for care
    /// managers, never the hotline.
    Trend,
    /// A carer's visit: recorded when the home's sensors bear it out,
    /// open for the visit supervisor when flagged (see [`VisitInfo`]).
    Visit,
    /// No carer checked in by the end of a planned visit's window.
    VisitMissed,
    /// No sign of ordinary life in an elder's daily check-in window.
    CheckInMissed,
    /// A call to the elder after a visit, about the service.
    FollowUp,
}

impl AlertKind {
    pub const ALL: [AlertKind; 15] = [
        AlertKind::Sos,
        AlertKind::Fall,
        AlertKind::VitalOutOfRange,
        AlertKind::OutOfBedTooLong,
        AlertKind::NoBreathing,
        AlertKind::Inactivity,
        AlertKind::GeofenceExit,
        AlertKind::DeviceOffline,
        AlertKind::HomeOffline,
        AlertKind::LowBattery,
        AlertKind::Trend,
        AlertKind::Visit,
        AlertKind::VisitMissed,
        AlertKind::CheckInMissed,
        AlertKind::FollowUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Sos => "sos",
            AlertKind::Fall => "fall",
            AlertKind::VitalOutOfRange => "vital_out_of_range",
            AlertKind::OutOfBedTooLong => "out_of_bed_too_long",
            AlertKind::NoBreathing => "no_breathing",
            AlertKind::Inactivity => "inactivity",
            AlertKind::GeofenceExit => "geofence_exit",
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::HomeOffline => "home_offline",
            AlertKind::LowBattery => "low_battery",
            AlertKind::Trend => "trend",
            AlertKind::Visit => "visit",
            AlertKind::VisitMissed => "visit_missed",
            AlertKind::CheckInMissed => "check_in_missed",
            AlertKind::FollowUp => "follow_up",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Maintenance alerts go to the operations queue and clear themselves.
    pub fn is_maintenance(self) -> bool {
        matches!(
            self,
            AlertKind::DeviceOffline | AlertKind::HomeOffline | AlertKind::LowBattery
        )
    }

    /// Kinds raised per device rather than per elder: two devices of one
    /// home each have their own `low_battery` alert.
    pub fn is_per_device(self) -> bool {
        matches!(self, AlertKind::DeviceOffline | AlertKind::LowBattery)
    }

    /// Kinds about one visit (its id is the alert's `subject`): each visit
    /// is its own alert, never folded into another.
    pub fn is_per_visit(self) -> bool {
        matches!(
            self,
            AlertKind::Visit | AlertKind::VisitMissed | AlertKind::FollowUp
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertState {
    Open,
    Acknowledged,
    Dispatched,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "OPEN",
            AlertState::Acknowledged => "ACKNOWLEDGED",
            AlertState::Dispatched => "DISPATCHED",
            AlertState::Resolved => "RESOLVED",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        [
            AlertState::Open,
            AlertState::Acknowledged,
            AlertState::Dispatched,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A reading kept with the alert it triggered, for the operator's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReading {
    pub device_id: String,
    pub stream: Stream,
    pub ts_ms: EpochMs,
    /// The validated reading body as JSON text.
    pub json: String,
}

/// A sentence in the operators' two languages; each subscriber chooses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub en: String,
    pub zh: String,
}

impl Text {
    pub fn new(en: impl Into<String>, zh: impl Into<String>) -> Text {
        Text {
            en: en.into(),
            zh: zh.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub elder_id: String,
    pub device_id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// Event time of the triggering reading.
    pub raised_at: EpochMs,
    /// Server time the alert was detected.
    pub detected_at: EpochMs,
    pub updated_at: EpochMs,
    /// One-line summary in English.
    pub summary: String,
    /// The same summary in Chinese (zh-CN).
    #[serde(default)]
    pub summary_zh: String,
    /// The device a per-device alert is about (`device_offline`,
    /// `low_battery`); empty for alerts about the person.
    #[serde(default)]
    pub subject: Option<String>,
    /// Event-time window the triggering condition held over.
    #[serde(default)]
    pub window: Option<(EpochMs, EpochMs)>,
    /// NEWS2 score, for vital-sign alerts.
    #[serde(default)]
    pub score: Option<u32>,
    /// What contributed, e.g. `pulse 142 (3)`.
    #[serde(default)]
    pub factors: Vec<String>,
    pub readings: Vec<AlertReading>,
    pub occurrences: u32,
    pub outcome: Option<String>,
    pub district: Option<String>,
    pub community: Option<String>,
    /// Stored and shown, but a silence was active: delivered to the
    /// operations queue only, never escalated.
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub silence_id: Option<String>,
    /// Escalations so far (automatic reminders and manual).
    #[serde(default)]
    pub escalations: u32,
    /// Who was sent, by the latest dispatch.
    #[serde(default)]
    pub responder: Option<Responder>,
    /// Server times of the lifecycle steps, for answer-time accounting.
    #[serde(default)]
    pub acknowledged_at: Option<EpochMs>,
    #[serde(default)]
    pub dispatched_at: Option<EpochMs>,
    #[serde(default)]
    pub resolved_at: Option<EpochMs>,
    /// Shown by readings that arrived late (a gateway's upload after an
    /// outage): milliseconds from the event time the episode was shown
    /// at to its detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<i64>,
    /// Recorded for the care managers, not raised: an episode the late
    /// readings show already over, or a trend rule in shadow mode. Born
    /// resolved (outcome `recorded`), never on the hotline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
    /// The visit a `visit`, `visit_missed` or `follow_up` alert is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<Box<VisitInfo>>,
    /// Where the rule sent it, when not the kind's usual queue (a missed
    /// visit to a frail elder living alone goes to the hotline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Queue>,
}

impl Alert {
    /// Visit records to the visit supervisors and follow-up calls to their
    /// own queue; trends and recorded alerts to the care managers;
    /// maintenance alerts and muted alerts to the operations queue; a
    /// missed visit to its provider unless routed to the hotline;
    /// everything else to the hotline.
    pub fn queue(&self) -> Queue {
        match self.kind {
            AlertKind::Visit => return Queue::Supervision,
            AlertKind::FollowUp => return Queue::FollowUp,
            _ => {}
        }
        if self.kind == AlertKind::Trend || self.recorded {
            Queue::Care
        } else if self.muted || self.kind.is_maintenance() {
            Queue::Operations
        } else if let Some(q) = self.route {
            q
        } else if self.kind == AlertKind::VisitMissed {
            Queue::Provider
        } else {
            Queue::Hotline
        }
    }
}

/// Where an alert is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    Hotline,
    Operations,
    /// Care managers: trends, and episodes known only after they were over.
    Care,
    /// The service provider whose carer missed a visit.
    Provider,
    /// The visit supervisor: every visit, the flagged ones open.
    Supervision,
    /// Follow-up calls to elders after a visit.
    FollowUp,
}

impl Queue {
    pub const ALL: [Queue; 6] = [
        Queue::Hotline,
        Queue::Operations,
        Queue::Care,
        Queue::Provider,
        Queue::Supervision,
        Queue::FollowUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Hotline => "hotline",
            Queue::Operations => "operations",
            Queue::Care => "care",
            Queue::Provider => "provider",
            Queue::Supervision => "supervision",
            Queue::FollowUp => "follow_up",
        }
    }

    pub fn parse(s: &str) -> Option<Queue> {
        Queue::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// Queues whose alerts are never escalated: no one's life waits on them.
    pub fn escalates(self) -> bool {
        matches!(self, Queue::Hotline | Queue::Operations)
    }
}

/// Who a dispatcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponderType {
    FamilyContact,
    CommunityWorker,
    FamilyDoctor,
    /// The 120 emergency ambulance.
    Ambulance120,
}

impl ResponderType {
    pub const ALL: [ResponderType; 4] = [
        ResponderType::FamilyContact,
        ResponderType::CommunityWorker,
        ResponderType::FamilyDoctor,
        ResponderType::Ambulance120,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponderType::FamilyContact => "family_contact",
            ResponderType::CommunityWorker => "community_worker",
            ResponderType::FamilyDoctor => "family_doctor",
            ResponderType::Ambulance120 => "ambulance_120",
        }
    }
}

/// A responder sent to an alert. Name and phone are personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Responder {
    pub kind: ResponderType,
    pub name: String,
    pub phone: String,
}

/// How an alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    FalseAlarm,
    HandledByPhone,
    ResponderOnSite,
    SentToHospital,
    /// A maintenance condition that went away by itself.
    Cleared,
    /// Recorded, not raised (see [`Alert::recorded`]).
    Recorded,
    /// Follow-up call: the elder is satisfied with the visit.
    Satisfied,
    /// Follow-up call: the elder complained about the visit.
    Complaint,
    /// Follow-up call: nobody answered.
    NoAnswer,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::FalseAlarm,
        Outcome::HandledByPhone,
        Outcome::ResponderOnSite,
        Outcome::SentToHospital,
        Outcome::Cleared,
        Outcome::Satisfied,
        Outcome::Complaint,
        Outcome::NoAnswer,
    ];

    /// The outcomes of a follow-up call, and only of one.
    pub fn is_follow_up(self) -> bool {
        matches!(
            self,
            Outcome::Satisfied | Outcome::Complaint | Outcome::NoAnswer
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::FalseAlarm => "false_alarm",
            Outcome::HandledByPhone => "handled_by_phone",
            Outcome::ResponderOnSite => "responder_on_site",
            Outcome::SentToHospital => "sent_to_hospital",
            Outcome::Cleared => "cleared",
            Outcome::Recorded => "recorded",
            Outcome::Satisfied => "satisfied",
            Outcome::Complaint => "complaint",
            Outcome::NoAnswer => "no_answer",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            // The issue tracker's wording for the same outcome.
            "taken_to_hospital" => Some(Outcome::SentToHospital),
            _ => Outcome::ALL.into_iter().find(|o| o.as_str() == s),
        }
    }
}

/// An operator's mute of one kind of alert for one elder or one device,
/// for a bounded time, with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub kind: AlertKind,
    /// Exactly one of elder_id and device_id is set.
    pub elder_id: Option<String>,
    pub device_id: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub created_at: EpochMs,
    pub until: EpochMs,
    /// Set when ended early.
    pub ended_at: Option<EpochMs>,
}

impl Silence {
    pub fn active_at(&self, t: EpochMs) -> bool {
        self.created_at <= t && t < self.until && self.ended_at.is_none_or(|e| t < e)
    }

    /// Whether this silence covers an alert of `kind` for `elder_id` from
    /// `device_id` (or about `subject`).
    pub fn covers(
        &self,
        kind: AlertKind,
        elder_id: &str,
        device_id: &str,
        subject: Option<&str>,
    ) -> bool {
        self.kind == kind
            && (self.elder_id.as_deref() == Some(elder_id)
                || self
                    .device_id
                    .as_deref()
                    .is_some_and(|d| d == device_id || Some(d) == subject))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    Raised,
    Updated,
    Acknowledged,
    Dispatched,
    Escalated,
    Resolved,
    Note,
}

impl AlertEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEventKind::Raised => "raised",
            AlertEventKind::Updated => "updated",
            AlertEventKind::Acknowledged => "acknowledged",
            AlertEventKind::Dispatched => "dispatched",
            AlertEventKind::Escalated => "escalated",
            AlertEventKind::Resolved => "resolved",
            AlertEventKind::Note => "note",
        }
    }

    pub fn parse(s: &str) -> Option<AlertEventKind> {
        [
            AlertEventKind::Raised,
            AlertEventKind::Updated,
            AlertEventKind::Acknowledged,
            AlertEventKind::Dispatched,
            AlertEventKind::Escalated,
            AlertEventKind::Resolved,
            AlertEventKind::Note,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One change to one alert. `seq` increases by exactly one across the
/// whole system and is assigned when the event is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub seq: u64,
    pub kind: AlertEventKind,
    pub alert: Alert,
    /// Operator who acted; empty for the system.
    pub actor: String,
    pub at: EpochMs,
    pub note: Option<String>,
    /// SHA-256 chained over every event: hex of
    /// `sha256(prev_hash || this event's canonical bytes)`.
    #[serde(default)]
    pub hash: String,
}

/// A message refused at ingest, kept for operators to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub received_at: EpochMs,
    pub topic: String,
    /// Authenticated sender, when known.
    pub sender: Option<String>,
    pub reason: String,
    pub detail: String,
    /// The payload, truncated to the protocol's size limit.
    pub payload: Vec<u8>,
}

/// A registry change the operator API tells the rule engine about, so it
/// learns creations, updates and deletions at once instead of at its next
/// periodic refresh (which never sees deletions). It names what changed;
/// the receiver reads the store for the current state, so changes applied
/// in any order still end at what the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChange {
    /// This elder was created, updated or deleted.
    Elder(String),
    /// This device was created, updated, deleted or given a new secret.
    Device(String),
    /// Many entries changed at once (a bulk import): reload what changed.
    Many,
    /// Providers, carers or visit plans changed: reload them.
    Visits,
}
