//! The streaming rule engine: a pure state machine that judges each
//! *person* from all of their devices and says which alerts to raise,
//! update or clear.
//!
//! The engine is told the registry ([`Engine::upsert_elder`],
//! [`Engine::upsert_device`]), then fed validated readings
//! ([`Engine::on_reading`]) and clock ticks ([`Engine::tick`]); it answers
//! with [`Decision`]s. It does no I/O and never reads a clock: durations
//! within a signal (a pulse held high, breathing absent) run on the device
//! clock of the readings, and timers (out of bed, inactivity, offline) on
//! the clock the caller passes in, so tests drive time and nothing sleeps.
//!
//! State is one fixed-size slot per elder and per device; nothing keeps a
//! history. Folding repeats into an open alert is the alert desk's job;
//! the engine only avoids re-raising a condition it already reported and
//! that has not cleared (with hysteresis, so a value at a threshold does
//! not flap).
//!
//! Modules: `config` is the rule file (global and per-elder settings);
//! `local` converts event time to the elder's local time and night window;
//! `snapshot` carries the engine's state over a restart
//! ([`Engine::snapshot`], [`Engine::restore`]) without counting the time
//! the server was down as silence ([`Engine::resume_after_gap`]).
#![forbid(unsafe_code)]

mod config;
mod local;
mod snapshot;

pub use config::{
    BatteryRules, FallRules, GeofenceRules, InactivityRules, News2Rules, NoBreathingRules,
    OfflineRules, OutOfBedRules, RuleConfig, Rules, RulesError, SosRules, VitalRules,
};
pub use local::parse_hhmm;
pub use snapshot::{EngineSnapshot, RestoreReport};

use eldercare_model::{
    AlertKind, Body, Device, DeviceKind, Elder, EpochMs, EventType, Reading, Severity, Text,
};
use local::LocalClock;
use rustc_hash::FxHashMap;
use std::sync::Arc;

const NONE: EpochMs = EpochMs::MIN;
/// How often a suppressed timer (in bed, away, moving about) is looked at again.
const RECHECK_MS: i64 = 60_000;
/// How many blind stretches (server down) the engine remembers for the
/// inactivity rule. Restarts are rare: forgetting the oldest only counts
/// it again for a person without activity since before it.
const BLIND_KEPT: usize = 8;

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

/// What the engine needs to know about an elder.
#[derive(Debug, Clone, PartialEq)]
pub struct ElderProfile {
    pub elder_id: String,
    pub timezone: chrono_tz::Tz,
    /// Night window, minutes after local midnight.
    pub night_start_min: u16,
    pub night_end_min: u16,
    /// Home location (lat, lon) for the geofence.
    pub home: Option<(f64, f64)>,
    pub safe_radius_m: Option<f64>,
    pub dementia: bool,
}

impl ElderProfile {
    /// Defaults of the registry: Asia/Shanghai, night 21:00-07:00, no geofence.
    pub fn new(elder_id: impl Into<String>) -> ElderProfile {
        ElderProfile {
            elder_id: elder_id.into(),
            timezone: chrono_tz::Asia::Shanghai,
            night_start_min: 21 * 60,
            night_end_min: 7 * 60,
            home: None,
            safe_radius_m: None,
            dementia: false,
        }
    }

    /// From the registry entry; a timezone or night window the registry
    /// let through but that does not parse falls back to the default.
    pub fn from_elder(e: &Elder) -> ElderProfile {
        let d = ElderProfile::new(e.elder_id.clone());
        ElderProfile {
            timezone: e.timezone.parse().unwrap_or(d.timezone),
            night_start_min: parse_hhmm(&e.night_start).unwrap_or(d.night_start_min),
            night_end_min: parse_hhmm(&e.night_end).unwrap_or(d.night_end_min),
            home: e.home_lat.zip(e.home_lon),
            safe_radius_m: e.safe_radius_m,
            dementia: e.flags.iter().any(|f| f == "dementia"),
            ..d
        }
    }
}

/// What the engine needs to know about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    pub device_id: String,
    pub elder_id: String,
    pub kind: DeviceKind,
    pub heartbeat_s: u32,
}

impl From<&Device> for DeviceProfile {
    fn from(d: &Device) -> DeviceProfile {
        DeviceProfile {
            device_id: d.device_id.clone(),
            elder_id: d.elder_id.clone(),
            kind: d.kind,
            heartbeat_s: d.heartbeat_s,
        }
    }
}

/// The five NEWS2 parameters the devices measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Pulse = 0,
    Spo2 = 1,
    Resp = 2,
    Sys = 3,
    Temp = 4,
}

const PARAMS: [Param; 5] = [
    Param::Pulse,
    Param::Spo2,
    Param::Resp,
    Param::Sys,
    Param::Temp,
];

impl Param {
    fn name(self) -> Text {
        let (en, zh) = match self {
            Param::Pulse => ("pulse", "脉搏"),
            Param::Spo2 => ("SpO2", "血氧"),
            Param::Resp => ("respiration", "呼吸"),
            Param::Sys => ("systolic pressure", "收缩压"),
            Param::Temp => ("temperature", "体温"),
        };
        Text::new(en, zh)
    }

    fn value(self, v: f64) -> Text {
        match self {
            Param::Pulse => Text::new(format!("{v:.0} bpm"), format!("{v:.0} 次/分")),
            Param::Spo2 => Text::new(format!("{v:.0} %"), format!("{v:.0}%")),
            Param::Resp => Text::new(format!("{v:.0} /min"), format!("{v:.0} 次/分")),
            Param::Sys => Text::new(format!("{v:.0} mmHg"), format!("{v:.0} mmHg")),
            Param::Temp => Text::new(format!("{v:.1} °C"), format!("{v:.1}°C")),
        }
    }

    /// The NEWS2 score of one observation (RCP 2017, chart 1; SpO2
    /// scale 1, on air).
    fn news2(self, v: f64) -> u32 {
        match self {
            Param::Resp => match v {
                v if v <= 8.0 => 3,
                v if v <= 11.0 => 1,
                v if v <= 20.0 => 0,
                v if v <= 24.0 => 2,
                _ => 3,
            },
            Param::Spo2 => match v {
                v if v <= 91.0 => 3,
                v if v <= 93.0 => 2,
                v if v <= 95.0 => 1,
                _ => 0,
            },
            Param::Sys => match v {
                v if v <= 90.0 => 3,
                v if v <= 100.0 => 2,
                v if v <= 110.0 => 1,
                v if v < 220.0 => 0,
                _ => 3,
            },
            Param::Pulse => match v {
                v if v <= 40.0 => 3,
                v if v <= 50.0 => 1,
                v if v <= 90.0 => 0,
                v if v <= 110.0 => 1,
                v if v <= 130.0 => 2,
                _ => 3,
            },
            Param::Temp => match v {
                v if v <= 35.0 => 3,
                v if v <= 36.0 => 1,
                v if v <= 38.0 => 0,
                v if v <= 39.0 => 1,
                _ => 2,
            },
        }
    }

    /// Where a value stands against the single-parameter thresholds, and
    /// which threshold it crossed.
    fn level(self, c: &VitalRules, v: f64) -> (Level, &'static str, f64) {
        let (low, high, margin) = match self {
            Param::Pulse => (
                Some(f64::from(c.pulse_low)),
                Some(f64::from(c.pulse_high)),
                f64::from(c.pulse_margin),
            ),
            Param::Spo2 => (Some(f64::from(c.spo2_low)), None, f64::from(c.spo2_margin)),
            Param::Resp => (
                Some(f64::from(c.resp_low)),
                Some(f64::from(c.resp_high)),
                f64::from(c.resp_margin),
            ),
            Param::Sys => (
                Some(f64::from(c.sys_low)),
                Some(f64::from(c.sys_high)),
                f64::from(c.sys_margin),
            ),
            Param::Temp => (Some(c.temp_low), Some(c.temp_high), c.temp_margin),
        };
        if let Some(l) = low
            && v <= l
        {
            return (Level::Abnormal, "≤", l);
        }
        if let Some(h) = high
            && v >= h
        {
            return (Level::Abnormal, "≥", h);
        }
        let clear = low.is_none_or(|l| v > l + margin) && high.is_none_or(|h| v < h - margin);
        (if clear { Level::Clear } else { Level::Near }, "", 0.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Abnormal,
    /// Normal, but within the hysteresis margin of a threshold.
    Near,
    /// Normal by more than the margin.
    Clear,
}

/// An abnormal condition that must hold for a while before it counts,
/// and clear for a while before it can count again. Times are event
/// time, [`NONE`] when unset (kept small: there is one per signal of
/// every device of every elder).
#[derive(Debug, Clone)]
struct Hold {
    /// Start of the current abnormal stretch.
    since: EpochMs,
    /// Newest reading judged.
    last: EpochMs,
    /// After firing: since when the signal has been clear.
    clear_since: EpochMs,
    fired: bool,
    /// First abnormal reading of the stretch, kept as evidence.
    first: Option<Box<Reading>>,
}

impl Default for Hold {
    fn default() -> Hold {
        Hold {
            since: NONE,
            last: NONE,
            clear_since: NONE,
            fired: false,
            first: None,
        }
    }
}

struct HoldRule {
    hold_ms: i64,
    gap_ms: i64,
    clear_ms: i64,
}

impl Hold {
    /// Judges one reading; returns the start of the stretch when the hold
    /// has just been met.
    fn step(&mut self, r: &Reading, level: Level, rule: &HoldRule) -> Option<EpochMs> {
        let ts = r.ts_ms;
        if self.last != NONE {
            // Late readings are stored but cannot rewrite a stretch that
            // newer readings already shaped.
            if ts < self.last {
                return None;
            }
            // A signal gone for longer than the clear time ended its episode.
            if self.fired && ts - self.last > rule.clear_ms.max(rule.gap_ms) {
                *self = Hold::default();
            }
        }
        let continuous = self.last != NONE && ts - self.last <= rule.gap_ms;
        self.last = ts;
        if self.fired {
            if level == Level::Clear {
                if self.clear_since == NONE || !continuous {
                    self.clear_since = ts;
                }
                if ts - self.clear_since >= rule.clear_ms {
                    *self = Hold {
                        last: ts,
                        ..Hold::default()
                    };
                }
            } else {
                self.clear_since = NONE;
            }
            return None;
        }
        if level != Level::Abnormal {
            self.since = NONE;
            self.first = None;
            return None;
        }
        if self.since == NONE || !continuous {
            self.since = ts;
            self.first = Some(Box::new(r.clone()));
        }
        if ts - self.since >= rule.hold_ms {
            self.fired = true;
            return Some(self.since);
        }
        None
    }

    fn reset(&mut self) {
        *self = Hold {
            last: self.last,
            ..Hold::default()
        };
    }
}

/// Signal holds of a device that measures vital signs, only those its
/// kind can report: a band's five parameters; a sleep sensor's pulse,
/// respiration and breathing.
#[derive(Debug)]
struct Holds(Box<[Hold]>);

const NO_BREATHING: usize = 5;

impl Holds {
    fn for_kind(kind: DeviceKind) -> Option<Holds> {
        let n = match kind {
            DeviceKind::VitalBand => 5,
            DeviceKind::SleepSensor => 3,
            _ => return None,
        };
        Some(Holds((0..n).map(|_| Hold::default()).collect()))
    }

    /// `signal`: a [`Param`] index, or [`NO_BREATHING`].
    fn get(&mut self, signal: usize) -> Option<&mut Hold> {
        let i = if self.0.len() == 5 {
            signal
        } else {
            match signal {
                0 => 0,
                2 => 1,
                NO_BREATHING => 2,
                _ => return None,
            }
        };
        self.0.get_mut(i)
    }
}

#[derive(Debug)]
struct DeviceSlot {
    /// Shared with the index's key: one allocation per id.
    id: Arc<str>,
    /// Index of the owning elder; `u32::MAX` for a freed slot.
    elder: u32,
    kind: DeviceKind,
    heartbeat_ms: i64,
    /// Engine time the device was last heard.
    last_heard: EpochMs,
    /// Event time of its newest reading.
    last_ts: EpochMs,
    /// Since when it counts as silent (heartbeat passed or last will).
    silent_since: Option<EpochMs>,
    offline_raised: bool,
    battery_low: bool,
    holds: Option<Holds>,
}

#[derive(Debug, Clone, Copy)]
struct Latest {
    value: f32,
    ts: EpochMs,
}

#[derive(Debug)]
struct FallState {
    at: EpochMs,
    up: bool,
    summary: Text,
}

#[derive(Debug)]
struct ElderSlot {
    id: Arc<str>,
    removed: bool,
    cfg: Arc<RuleConfig>,
    clock: LocalClock,
    home: Option<(f64, f64)>,
    safe_radius_m: Option<f64>,
    dementia: bool,
    devices: Vec<u32>,
    /// Next engine time a timer of this elder needs looking at.
    due: EpochMs,

    sos_at: Option<EpochMs>,
    fall: Option<Box<FallState>>,

    latest: [Latest; 5],
    news2_since: Option<EpochMs>,
    /// 0 none, 1 HIGH raised, 2 CRITICAL raised.
    news2_level: u8,

    in_bed: Option<bool>,
    bed_ts: EpochMs,
    /// The reading that showed the person leaving bed.
    left_bed: Option<Box<Reading>>,
    /// The out-of-bed episode has been judged (raised, or not a night one).
    out_of_bed_done: bool,

    last_motion: EpochMs,
    last_motion_bathroom: bool,
    /// Start of the current stretch without activity.
    activity_at: EpochMs,
    inactivity_raised: bool,

    gps_ts: EpochMs,
    outside_fixes: u32,
    first_outside: Option<Box<Reading>>,
    away: bool,
    geofence_raised: bool,

    home_offline: bool,
}

/// The rule engine: one state per elder, fusing all of their devices.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Rules,
    elders: Vec<ElderSlot>,
    elder_ix: FxHashMap<Arc<str>, u32>,
    devices: Vec<DeviceSlot>,
    device_ix: FxHashMap<Arc<str>, u32>,
    free_devices: Vec<u32>,
    /// Latest engine time the engine was given: where a snapshot stops seeing.
    seen: EpochMs,
    /// Engine-time stretches the engine could not see (the server was down),
    /// oldest first: the inactivity rule does not count them.
    blind: Vec<(EpochMs, EpochMs)>,
}

fn kind_name(k: DeviceKind) -> Text {
    let zh = match k {
        DeviceKind::SleepSensor => "睡眠监测带",
        DeviceKind::VitalBand => "生命体征手环",
        DeviceKind::Pir => "红外感应器",
        DeviceKind::GpsWatch => "定位手表",
        DeviceKind::SosButton => "紧急呼叫按钮",
        DeviceKind::Gateway => "家庭网关",
    };
    Text::new(k.as_str(), zh)
}

/// Great-circle distance in metres. Written here because it is one
/// formula; a geometry crate would bring far more than this needs.
fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_000.0;
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dla = la2 - la1;
    let dlo = (b.1 - a.1).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

fn minutes(ms: i64) -> Text {
    let m = ms / 60_000;
    if m >= 60 {
        Text::new(
            format!("{} h {} min", m / 60, m % 60),
            format!("{} 小时 {} 分钟", m / 60, m % 60),
        )
    } else {
        Text::new(format!("{m} min"), format!("{m} 分钟"))
    }
}

impl Engine {
    pub fn new(rules: Rules) -> Engine {
        Engine {
            rules,
            ..Engine::default()
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Replaces the rule settings; every elder keeps its state.
    pub fn set_rules(&mut self, rules: Rules) {
        for e in &mut self.elders {
            e.cfg = rules.for_elder(&e.id).clone();
        }
        self.rules = rules;
    }

    /// Number of elders the engine holds state for.
    pub fn elders(&self) -> usize {
        self.elder_ix.len()
    }

    /// Number of devices the engine knows.
    pub fn devices(&self) -> usize {
        self.device_ix.len()
    }

    /// Ids of every device the engine knows.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.device_ix.keys().map(|k| &**k)
    }

    /// The elder a device belongs to.
    pub fn elder_of(&self, device_id: &str) -> Option<&str> {
        let d = &self.devices[*self.device_ix.get(device_id)? as usize];
        Some(&self.elders[d.elder as usize].id)
    }

    /// Adds an elder or updates their profile, keeping their state.
    pub fn upsert_elder(&mut self, p: &ElderProfile, now: EpochMs) {
        self.seen = self.seen.max(now);
        let clock = LocalClock::new(p.timezone, p.night_start_min, p.night_end_min);
        let cfg = self.rules.for_elder(&p.elder_id).clone();
        if let Some(&i) = self.elder_ix.get(p.elder_id.as_str()) {
            let e = &mut self.elders[i as usize];
            e.clock = clock;
            e.home = p.home;
            e.safe_radius_m = p.safe_radius_m;
            e.dementia = p.dementia;
            e.cfg = cfg;
            e.due = e.due.min(now);
            return;
        }
        let id: Arc<str> = p.elder_id.as_str().into();
        let slot = ElderSlot {
            id: id.clone(),
            removed: false,
            cfg,
            clock,
            home: p.home,
            safe_radius_m: p.safe_radius_m,
            dementia: p.dementia,
            devices: Vec::new(),
            due: now,
            sos_at: None,
            fall: None,
            latest: [Latest {
                value: 0.0,
                ts: NONE,
            }; 5],
            news2_since: None,
            news2_level: 0,
            in_bed: None,
            bed_ts: NONE,
            left_bed: None,
            out_of_bed_done: false,
            last_motion: NONE,
            last_motion_bathroom: false,
            activity_at: now,
            inactivity_raised: false,
            gps_ts: NONE,
            outside_fixes: 0,
            first_outside: None,
            away: false,
            geofence_raised: false,
            home_offline: false,
        };
        let i = u32::try_from(self.elders.len()).unwrap_or(u32::MAX);
        self.elders.push(slot);
        self.elder_ix.insert(id, i);
    }

    /// Forgets an elder and their devices.
    pub fn remove_elder(&mut self, elder_id: &str) {
        let Some(i) = self.elder_ix.remove(elder_id) else {
            return;
        };
        let devs = std::mem::take(&mut self.elders[i as usize].devices);
        for d in devs {
            let id = self.devices[d as usize].id.clone();
            self.remove_device(&id);
        }
        let e = &mut self.elders[i as usize];
        e.removed = true;
        e.due = EpochMs::MAX;
    }

    /// Adds a device or updates it (possibly moving it to another elder).
    /// An elder not yet known is added with default settings.
    pub fn upsert_device(&mut self, p: &DeviceProfile, now: EpochMs) {
        self.seen = self.seen.max(now);
        if !self.elder_ix.contains_key(p.elder_id.as_str()) {
            self.upsert_elder(&ElderProfile::new(p.elder_id.clone()), now);
        }
        let elder = self.elder_ix[p.elder_id.as_str()];
        let heartbeat_ms = i64::from(p.heartbeat_s.max(1)) * 1000;
        if let Some(&d) = self.device_ix.get(p.device_id.as_str()) {
            let old = self.devices[d as usize].elder;
            if old != elder {
                self.elders[old as usize].devices.retain(|&x| x != d);
                self.elders[elder as usize].devices.push(d);
            }
            let slot = &mut self.devices[d as usize];
            slot.elder = elder;
            slot.heartbeat_ms = heartbeat_ms;
            if slot.kind != p.kind {
                slot.holds = Holds::for_kind(p.kind);
            }
            slot.kind = p.kind;
            return;
        }
        let id: Arc<str> = p.device_id.as_str().into();
        let slot = DeviceSlot {
            id: id.clone(),
            elder,
            kind: p.kind,
            heartbeat_ms,
            last_heard: now,
            last_ts: NONE,
            silent_since: None,
            offline_raised: false,
            battery_low: false,
            holds: Holds::for_kind(p.kind),
        };
        let d = match self.free_devices.pop() {
            Some(d) => {
                self.devices[d as usize] = slot;
                d
            }
            None => {
                self.devices.push(slot);
                u32::try_from(self.devices.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.device_ix.insert(id, d);
        let e = &mut self.elders[elder as usize];
        e.devices.push(d);
        e.due = e.due.min(now);
    }

    pub fn remove_device(&mut self, device_id: &str) {
        let Some(d) = self.device_ix.remove(device_id) else {
            return;
        };
        let elder = self.devices[d as usize].elder;
        self.elders[elder as usize].devices.retain(|&x| x != d);
        let slot = &mut self.devices[d as usize];
        slot.elder = u32::MAX;
        slot.holds = None;
        self.free_devices.push(d);
    }

    /// Tells a fresh engine (after a restart) about an alert that is still
    /// open, so the condition it reports is not raised twice and clears
    /// itself when it goes away: an offline device counts as silent until
    /// heard, a low battery as low until charged.
    pub fn restore_open(
        &mut self,
        kind: AlertKind,
        elder_id: &str,
        subject: Option<&str>,
        now: EpochMs,
    ) {
        self.seen = self.seen.max(now);
        let Some(&ei) = self.elder_ix.get(elder_id) else {
            return;
        };
        let dev = subject
            .and_then(|s| self.device_ix.get(s).copied())
            .filter(|&d| self.devices[d as usize].elder == ei);
        let e = &mut self.elders[ei as usize];
        match (kind, dev) {
            (AlertKind::DeviceOffline, Some(d)) => {
                let dev = &mut self.devices[d as usize];
                dev.offline_raised = true;
                dev.silent_since.get_or_insert(now);
            }
            (AlertKind::LowBattery, Some(d)) => self.devices[d as usize].battery_low = true,
            (AlertKind::HomeOffline, _) => {
                e.home_offline = true;
                for &d in &e.devices {
                    self.devices[d as usize].silent_since.get_or_insert(now);
                }
            }
            (AlertKind::GeofenceExit, _) => e.geofence_raised = true,
            _ => {}
        }
    }

    /// Judges one validated reading; `now` is the engine clock at arrival.
    /// Readings of devices the engine does not know are ignored.
    pub fn on_reading(&mut self, r: &Reading, now: EpochMs) -> Vec<Decision> {
        let mut out = Vec::new();
        self.on_reading_into(r, now, &mut out);
        out
    }

    /// [`Engine::on_reading`], appending to `out` (no allocation when
    /// nothing is decided).
    pub fn on_reading_into(&mut self, r: &Reading, now: EpochMs, out: &mut Vec<Decision>) {
        self.seen = self.seen.max(now);
        let Some(&d) = self.device_ix.get(r.device_id.as_str()) else {
            return;
        };
        let (devices, elders) = (&mut self.devices, &mut self.elders);
        let dev = &mut devices[d as usize];
        let e = &mut elders[dev.elder as usize];
        let late = r.ts_ms < dev.last_ts;
        if !late {
            dev.last_ts = r.ts_ms;
        }
        let last_will = matches!(&r.body, Body::Status(s) if s.online == Some(false));
        if last_will {
            if dev.silent_since.is_none() {
                dev.silent_since = Some(now);
                e.due = e.due.min(now + i64::from(e.cfg.offline.grace_s) * 1000);
            }
        } else {
            dev.last_heard = now;
            if dev.silent_since.is_some() {
                heard_again(e, devices, d, now, out);
            }
        }
        let dev = &mut devices[d as usize];
        let cfg = e.cfg.clone();
        match &r.body {
            Body::Event(ev) => match ev.kind {
                EventType::Sos => {
                    e.sos_at = Some(r.ts_ms);
                    out.push(Decision::Raise(trigger(
                        e,
                        r,
                        AlertKind::Sos,
                        Severity::Critical,
                        Text::new("SOS button pressed", "紧急呼叫按钮被按下"),
                    )));
                }
                EventType::SosCancel => sos_cancel(e, r, &cfg, out),
                EventType::Fall => {
                    let conf = ev.confidence.unwrap_or(1.0);
                    if conf >= cfg.fall.min_confidence {
                        fall(e, r, ev.confidence, &cfg, out);
                    }
                }
            },
            Body::Vitals(v) => {
                let vals = [
                    v.hr.map(f64::from),
                    v.spo2.map(f64::from),
                    v.rr.map(f64::from),
                    v.sys.map(f64::from),
                    v.temp_c,
                ];
                for (p, val) in PARAMS.into_iter().zip(vals) {
                    if let Some(val) = val {
                        vital(e, dev, r, p, val, &cfg, out);
                    }
                }
                news2(e, r, &cfg, out);
            }
            Body::Sleep(s) => {
                // Getting back into bed after a fall: the person is up.
                if !late && bed(e, r, s.in_bed, &cfg) {
                    moved_after_fall(e, r, &cfg, out);
                }
                if s.in_bed {
                    if let Some(hr) = s.hr {
                        vital(e, dev, r, Param::Pulse, f64::from(hr), &cfg, out);
                    }
                    match s.rr {
                        Some(0) => no_breathing(e, dev, r, Level::Abnormal, &cfg, out),
                        Some(rr) => {
                            no_breathing(e, dev, r, Level::Clear, &cfg, out);
                            vital(e, dev, r, Param::Resp, f64::from(rr), &cfg, out);
                        }
                        None => {}
                    }
                    if s.hr.is_some() || s.rr.is_some_and(|rr| rr > 0) {
                        news2(e, r, &cfg, out);
                    }
                } else if let Some(h) = dev.holds.as_mut().and_then(|h| h.get(NO_BREATHING)) {
                    h.reset();
                }
            }
            Body::Motion(m) => {
                if m.motion {
                    motion(e, r, &m.room, &cfg, out);
                }
            }
            Body::Location(loc) => {
                if !late {
                    location(e, r, loc.lat, loc.lon, loc.accuracy_m, &cfg, out);
                }
            }
            Body::Status(s) => {
                if let (Some(pct), false) = (s.battery_pct, late) {
                    battery(e, dev, r, pct, &cfg, out);
                }
                if last_will {
                    // Noticed now, reported after the grace in tick().
                }
            }
        }
    }

    /// Advances the engine clock: looks at every timer that is due.
    pub fn tick(&mut self, now: EpochMs) -> Vec<Decision> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        out
    }

    pub fn tick_into(&mut self, now: EpochMs, out: &mut Vec<Decision>) {
        self.seen = self.seen.max(now);
        let (devices, elders, blind) = (&mut self.devices, &mut self.elders, &self.blind);
        for e in elders.iter_mut() {
            if now < e.due || e.removed {
                continue;
            }
            let mut due = EpochMs::MAX;
            offline(e, devices, now, &mut due, out);
            out_of_bed(e, now, &mut due, out);
            inactivity(e, devices, blind, now, &mut due, out);
            e.due = due.max(now + 1);
        }
    }
}

fn trigger(
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
    }
}

fn timer_trigger(
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
    }
}

fn sos_cancel(e: &mut ElderSlot, r: &Reading, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    let Some(at) = e.sos_at else {
        return;
    };
    let after_s = (r.ts_ms - at) / 1000;
    if r.ts_ms >= at && r.ts_ms - at <= i64::from(cfg.sos.cancel_window_s) * 1000 {
        e.sos_at = None;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::Sos,
            subject: None,
            outcome: Outcome::FalseAlarm,
            note: Text::new(
                format!("Cancelled on the device {after_s} s after the press"),
                format!("老人在按下后 {after_s} 秒于设备上取消"),
            ),
            at_ms: r.ts_ms,
        }));
    } else if r.ts_ms >= at {
        out.push(Decision::Update(Update {
            elder_id: e.id.to_string(),
            kind: AlertKind::Sos,
            subject: None,
            summary: None,
            note: Text::new(
                format!(
                    "Cancel pressed {after_s} s after the SOS, too late to cancel it automatically"
                ),
                format!("老人在呼叫 {after_s} 秒后按下取消，已超过自动取消时限"),
            ),
            at_ms: r.ts_ms,
            readings: vec![r.clone()],
        }));
    }
}

fn fall(
    e: &mut ElderSlot,
    r: &Reading,
    confidence: Option<f64>,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let mut summary = match confidence {
        Some(c) => Text::new(
            format!("Fall detected (confidence {:.0} %)", c * 100.0),
            format!("检测到跌倒（置信度 {:.0}%）", c * 100.0),
        ),
        None => Text::new("Fall detected", "检测到跌倒"),
    };
    let base = summary.clone();
    // Motion may have arrived before the fall event did.
    let up = e.last_motion != NONE && up_after_fall(r.ts_ms, e.last_motion, cfg);
    if up {
        summary = up_summary(&base, (e.last_motion - r.ts_ms) / 1000);
    }
    e.fall = Some(Box::new(FallState {
        at: r.ts_ms,
        up,
        summary: base,
    }));
    out.push(Decision::Raise(trigger(
        e,
        r,
        AlertKind::Fall,
        Severity::Critical,
        summary,
    )));
}

fn up_after_fall(fall_at: EpochMs, motion_at: EpochMs, cfg: &RuleConfig) -> bool {
    motion_at > fall_at + i64::from(cfg.fall.settle_s) * 1000
        && motion_at <= fall_at + i64::from(cfg.fall.up_window_s) * 1000
}

fn up_summary(base: &Text, after_s: i64) -> Text {
    Text::new(
        format!(
            "{}; movement {after_s} s later: the person appears to be up",
            base.en
        ),
        format!("{}；{after_s} 秒后检测到活动：老人似乎已起身", base.zh),
    )
}

/// Motion (or getting into bed) after a fall: say the person seems up.
fn moved_after_fall(e: &mut ElderSlot, r: &Reading, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    let Some(f) = e.fall.as_mut() else {
        return;
    };
    if f.up || !up_after_fall(f.at, r.ts_ms, cfg) {
        return;
    }
    f.up = true;
    let summary = up_summary(&f.summary, (r.ts_ms - f.at) / 1000);
    out.push(Decision::Update(Update {
        elder_id: e.id.to_string(),
        kind: AlertKind::Fall,
        subject: None,
        note: summary.clone(),
        summary: Some(summary),
        at_ms: r.ts_ms,
        readings: vec![r.clone()],
    }));
}

fn vital(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    p: Param,
    v: f64,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let l = &mut e.latest[p as usize];
    if r.ts_ms >= l.ts {
        *l = Latest {
            value: v as f32,
            ts: r.ts_ms,
        };
    }
    let Some(holds) = dev.holds.as_mut() else {
        return;
    };
    let c = &cfg.vitals;
    let (level, side, threshold) = p.level(c, v);
    let rule = HoldRule {
        hold_ms: i64::from(c.hold_s) * 1000,
        gap_ms: i64::from(c.max_gap_s) * 1000,
        clear_ms: i64::from(c.clear_s) * 1000,
    };
    let Some(h) = holds.get(p as usize) else {
        return;
    };
    let Some(since) = h.step(r, level, &rule) else {
        return;
    };
    let first = h.first.take();
    let held_s = (r.ts_ms - since) / 1000;
    let (name, val) = (p.name(), p.value(v));
    let thr = if p == Param::Temp {
        format!("{threshold:.1}")
    } else {
        format!("{threshold:.0}")
    };
    let mut t = trigger(
        e,
        r,
        AlertKind::VitalOutOfRange,
        Severity::High,
        Text::new(
            format!(
                "{} {} ({side}{thr}) for {held_s} s",
                capitalize(&name.en),
                val.en
            ),
            format!("{} {}（{side}{thr}），持续 {held_s} 秒", name.zh, val.zh),
        ),
    );
    if let Some(first) = first
        && first.ts_ms < r.ts_ms
    {
        t.readings.insert(0, *first);
    }
    t.window = Some((since, r.ts_ms));
    t.score = Some(p.news2(v));
    t.factors = vec![format!("{} {} ({})", name.en, val.en, p.news2(v))];
    out.push(Decision::Raise(t));
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The NEWS2 aggregate over the elder's latest readings from all devices.
fn news2(e: &mut ElderSlot, r: &Reading, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    let c = &cfg.news2;
    let from = r.ts_ms - i64::from(c.window_s) * 1000;
    let mut score = 0;
    for p in PARAMS {
        let l = e.latest[p as usize];
        if l.ts >= from && l.ts != NONE {
            score += p.news2(f64::from(l.value));
        }
    }
    if e.news2_level > 0 && score <= c.clear_at {
        e.news2_level = 0;
        e.news2_since = None;
    }
    if score < c.high {
        if e.news2_level == 0 {
            e.news2_since = None;
        }
        return;
    }
    let since = *e.news2_since.get_or_insert(r.ts_ms);
    if r.ts_ms - since < i64::from(c.hold_s) * 1000 {
        return;
    }
    let (level, severity) = if score >= c.critical {
        (2, Severity::Critical)
    } else {
        (1, Severity::High)
    };
    if level <= e.news2_level {
        return;
    }
    e.news2_level = level;
    let mut factors = Vec::new();
    let (mut en, mut zh) = (Vec::new(), Vec::new());
    for p in PARAMS {
        let l = e.latest[p as usize];
        if l.ts < from || l.ts == NONE {
            continue;
        }
        let v = f64::from(l.value);
        let s = p.news2(v);
        if s > 0 {
            let (name, val) = (p.name(), p.value(v));
            factors.push(format!("{} {} ({s})", name.en, val.en));
            en.push(format!("{} {} ({s})", name.en, val.en));
            zh.push(format!("{} {} ({s})", name.zh, val.zh));
        }
    }
    let held_s = (r.ts_ms - since) / 1000;
    let mut t = trigger(
        e,
        r,
        AlertKind::VitalOutOfRange,
        severity,
        Text::new(
            format!("NEWS2 score {score}: {}, for {held_s} s", en.join(", ")),
            format!("NEWS2 评分 {score}：{}，持续 {held_s} 秒", zh.join("，")),
        ),
    );
    t.window = Some((since, r.ts_ms));
    t.score = Some(score);
    t.factors = factors;
    out.push(Decision::Raise(t));
}

fn no_breathing(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    level: Level,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let Some(holds) = dev.holds.as_mut() else {
        return;
    };
    let c = &cfg.no_breathing;
    let rule = HoldRule {
        hold_ms: i64::from(c.hold_s) * 1000,
        gap_ms: i64::from(c.max_gap_s) * 1000,
        clear_ms: i64::from(c.clear_s) * 1000,
    };
    let Some(h) = holds.get(NO_BREATHING) else {
        return;
    };
    let Some(since) = h.step(r, level, &rule) else {
        return;
    };
    let first = h.first.take();
    let held_s = (r.ts_ms - since) / 1000;
    let mut t = trigger(
        e,
        r,
        AlertKind::NoBreathing,
        Severity::Critical,
        Text::new(
            format!("No breathing detected in bed for {held_s} s"),
            format!("卧床期间 {held_s} 秒未检测到呼吸"),
        ),
    );
    if let Some(first) = first
        && first.ts_ms < r.ts_ms
    {
        t.readings.insert(0, *first);
    }
    t.window = Some((since, r.ts_ms));
    out.push(Decision::Raise(t));
}

/// Tracks in/out of bed; true when the person just got into bed.
fn bed(e: &mut ElderSlot, r: &Reading, in_bed: bool, cfg: &RuleConfig) -> bool {
    if r.ts_ms < e.bed_ts {
        return false;
    }
    e.bed_ts = r.ts_ms;
    let was = e.in_bed.replace(in_bed);
    match (was, in_bed) {
        (Some(false), true) => {
            e.left_bed = None;
            e.out_of_bed_done = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
            return true;
        }
        (Some(true), false) => {
            e.left_bed = Some(Box::new(r.clone()));
            e.out_of_bed_done = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
            e.due = e
                .due
                .min(r.ts_ms + i64::from(cfg.out_of_bed.after_s) * 1000);
        }
        _ => {}
    }
    false
}

fn motion(e: &mut ElderSlot, r: &Reading, room: &str, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    if r.ts_ms >= e.last_motion {
        e.last_motion = r.ts_ms;
        e.last_motion_bathroom = cfg
            .out_of_bed
            .bathroom_rooms
            .iter()
            .any(|b| b.eq_ignore_ascii_case(room));
    }
    if r.ts_ms > e.activity_at {
        e.activity_at = r.ts_ms;
        e.inactivity_raised = false;
    }
    moved_after_fall(e, r, cfg, out);
}

fn location(
    e: &mut ElderSlot,
    r: &Reading,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f64>,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    if r.ts_ms < e.gps_ts {
        return;
    }
    e.gps_ts = r.ts_ms;
    let (Some(home), Some(radius)) = (e.home, e.safe_radius_m) else {
        return;
    };
    let c = &cfg.geofence;
    if accuracy_m.is_some_and(|a| a > c.max_accuracy_m) {
        return;
    }
    let dist = distance_m(home, (lat, lon));
    if dist > radius {
        e.away = true;
        e.outside_fixes += 1;
        if e.outside_fixes == 1 {
            e.first_outside = Some(Box::new(r.clone()));
        }
        if e.outside_fixes >= c.fixes && !e.geofence_raised {
            e.geofence_raised = true;
            let night = e.clock.is_night(r.ts_ms);
            let severity = if night {
                Severity::Critical
            } else if e.dementia {
                Severity::High
            } else {
                Severity::Medium
            };
            let n = e.outside_fixes;
            let (en_night, zh_night) = if night {
                (" at night", "夜间")
            } else {
                ("", "")
            };
            let mut t = trigger(
                e,
                r,
                AlertKind::GeofenceExit,
                severity,
                Text::new(
                    format!(
                        "Left the safe zone{en_night}: {dist:.0} m from home (safe radius {radius:.0} m), {n} fixes"
                    ),
                    format!(
                        "{zh_night}离开安全区域：距家 {dist:.0} 米（安全半径 {radius:.0} 米），连续 {n} 次定位"
                    ),
                ),
            );
            if let Some(first) = e.first_outside.take()
                && first.ts_ms < r.ts_ms
            {
                t.window = Some((first.ts_ms, r.ts_ms));
                t.readings.insert(0, *first);
            }
            out.push(Decision::Raise(t));
        }
    } else if dist <= radius - c.margin_m {
        e.outside_fixes = 0;
        e.first_outside = None;
        if e.away {
            e.away = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
        }
        if e.geofence_raised {
            e.geofence_raised = false;
            let at = e.clock.hhmm(r.ts_ms);
            let note = Text::new(
                format!("Back inside the safe zone at {at} ({dist:.0} m from home)"),
                format!("{at} 已回到安全区域（距家 {dist:.0} 米）"),
            );
            out.push(Decision::Update(Update {
                elder_id: e.id.to_string(),
                kind: AlertKind::GeofenceExit,
                subject: None,
                summary: None,
                note,
                at_ms: r.ts_ms,
                readings: vec![r.clone()],
            }));
        }
    } else {
        // Inside, but within the margin: neither out nor back.
        e.outside_fixes = 0;
        e.first_outside = None;
    }
}

fn battery(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    pct: u32,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let c = &cfg.battery;
    if pct <= c.low_pct && !dev.battery_low {
        dev.battery_low = true;
        let mut t = trigger(
            e,
            r,
            AlertKind::LowBattery,
            Severity::Low,
            Text::new(
                format!("Battery of {} ({}) at {pct} %", dev.id, dev.kind.as_str()),
                format!("设备 {}（{}）电量 {pct}%", dev.id, kind_name(dev.kind).zh),
            ),
        );
        t.subject = Some(dev.id.to_string());
        out.push(Decision::Raise(t));
    } else if pct >= c.clear_pct && dev.battery_low {
        dev.battery_low = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::LowBattery,
            subject: Some(dev.id.to_string()),
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("Battery back at {pct} %"),
                format!("电量已恢复至 {pct}%"),
            ),
            at_ms: r.ts_ms,
        }));
    }
}

/// A silent device is heard again: clear what its silence raised.
fn heard_again(
    e: &mut ElderSlot,
    devices: &mut [DeviceSlot],
    d: u32,
    now: EpochMs,
    out: &mut Vec<Decision>,
) {
    let at = e.clock.hhmm(now);
    let dev = &mut devices[d as usize];
    dev.silent_since = None;
    if dev.offline_raised {
        dev.offline_raised = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::DeviceOffline,
            subject: Some(dev.id.to_string()),
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("Device heard again at {at}"),
                format!("设备于 {at} 恢复通信"),
            ),
            at_ms: now,
        }));
    }
    if e.home_offline {
        e.home_offline = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::HomeOffline,
            subject: None,
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("The home's devices are heard again from {at}"),
                format!("家中设备自 {at} 起恢复通信"),
            ),
            at_ms: now,
        }));
        // The others reconnect over the next moments: give them a fresh
        // grace rather than one alert each.
        for &o in &e.devices {
            let od = &mut devices[o as usize];
            if od.silent_since.is_some() {
                od.silent_since = Some(now);
            }
        }
        e.due = e.due.min(now + i64::from(e.cfg.offline.grace_s) * 1000);
    }
}

fn offline(
    e: &mut ElderSlot,
    devices: &mut [DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    if e.devices.is_empty() {
        return;
    }
    let grace = i64::from(e.cfg.offline.grace_s) * 1000;
    let mut all_silent = true;
    let mut all_past_grace = true;
    let mut ready: Vec<u32> = Vec::new();
    let mut silent_from = EpochMs::MAX;
    for &d in &e.devices {
        let dev = &mut devices[d as usize];
        let since = match dev.silent_since {
            Some(s) => s,
            None => {
                let deadline = dev.last_heard + dev.heartbeat_ms;
                if now < deadline {
                    all_silent = false;
                    *due = (*due).min(deadline);
                    continue;
                }
                *dev.silent_since.insert(deadline)
            }
        };
        silent_from = silent_from.min(since);
        if now < since + grace {
            all_past_grace = false;
            *due = (*due).min(since + grace);
        } else if !dev.offline_raised {
            ready.push(d);
        }
    }
    if e.home_offline || ready.is_empty() {
        return;
    }
    if all_silent && e.devices.len() > 1 {
        if !all_past_grace {
            // Wait for the rest of the home: one alert, not one per device.
            return;
        }
        e.home_offline = true;
        let n = e.devices.len();
        let at = e.clock.hhmm(silent_from);
        let first = devices[e.devices[0] as usize].id.to_string();
        let mut t = timer_trigger(
            e,
            &first,
            AlertKind::HomeOffline,
            Severity::Low,
            now,
            Text::new(
                format!("All {n} devices of the home silent since {at}: power or network cut?"),
                format!("家中全部 {n} 台设备自 {at} 起离线：可能断电或断网"),
            ),
        );
        t.window = Some((silent_from, now));
        out.push(Decision::Raise(t));
        return;
    }
    for d in ready {
        let dev = &mut devices[d as usize];
        dev.offline_raised = true;
        let since = dev.silent_since.unwrap_or(now);
        let at = e.clock.hhmm(since);
        let name = kind_name(dev.kind);
        let mut t = timer_trigger(
            e,
            &dev.id,
            AlertKind::DeviceOffline,
            Severity::Low,
            now,
            Text::new(
                format!("Device {} ({}) silent since {at}", dev.id, name.en),
                format!("设备 {}（{}）自 {at} 起离线", dev.id, name.zh),
            ),
        );
        t.subject = Some(dev.id.to_string());
        t.window = Some((since, now));
        out.push(Decision::Raise(t));
    }
}

fn out_of_bed(e: &mut ElderSlot, now: EpochMs, due: &mut EpochMs, out: &mut Vec<Decision>) {
    if e.out_of_bed_done || e.in_bed != Some(false) {
        return;
    }
    let Some(left) = e.left_bed.as_deref() else {
        return;
    };
    let left_at = left.ts_ms;
    let c = &e.cfg.out_of_bed;
    let deadline = left_at + i64::from(c.after_s) * 1000;
    if !e.clock.is_night(left_at) {
        e.out_of_bed_done = true;
        return;
    }
    if now < deadline {
        *due = (*due).min(deadline);
        return;
    }
    if !e.clock.is_night(now) {
        // Night is over: the person got up for the day.
        e.out_of_bed_done = true;
        return;
    }
    let moving_window = i64::from(c.moving_window_s) * 1000;
    let moved_since_left = e.last_motion != NONE && e.last_motion >= left_at;
    if moved_since_left && now - e.last_motion < moving_window {
        // Up and about the home, not lying somewhere.
        *due = (*due).min(e.last_motion + moving_window);
        return;
    }
    e.out_of_bed_done = true;
    let since = e.clock.hhmm(left_at);
    let gone = minutes(now - left_at);
    let (severity, summary) = if moved_since_left && e.last_motion_bathroom {
        let last = e.clock.hhmm(e.last_motion);
        (
            Severity::Critical,
            Text::new(
                format!(
                    "Out of bed at night since {since} ({}); last movement in the bathroom at {last} and nothing since: possible fall",
                    gone.en
                ),
                format!(
                    "夜间 {since} 离床已 {}；{last} 最后在卫生间有活动，此后无任何活动：可能跌倒",
                    gone.zh
                ),
            ),
        )
    } else {
        let tail = if moved_since_left {
            let last = e.clock.hhmm(e.last_motion);
            Text::new(
                format!("no movement since {last}"),
                format!("{last} 后无活动"),
            )
        } else {
            Text::new("no movement seen since", "此后未检测到活动")
        };
        (
            Severity::High,
            Text::new(
                format!(
                    "Out of bed at night since {since} ({}) and not back; {}",
                    gone.en, tail.en
                ),
                format!("夜间 {since} 离床已 {} 未回床；{}", gone.zh, tail.zh),
            ),
        )
    };
    let device = left.device_id.clone();
    let reading = left.clone();
    let mut t = timer_trigger(
        e,
        &device,
        AlertKind::OutOfBedTooLong,
        severity,
        now,
        summary,
    );
    t.readings = vec![reading];
    t.window = Some((left_at, now));
    out.push(Decision::Raise(t));
}

/// Daytime of the stretch without activity that fell in a blind window
/// (the server down): not evidence of anything, so not counted.
fn blind_day_ms(e: &mut ElderSlot, blind: &[(EpochMs, EpochMs)]) -> i64 {
    blind
        .iter()
        .filter(|w| w.1 > e.activity_at)
        .map(|&(from, to)| e.clock.day_ms_between(from.max(e.activity_at), to))
        .sum()
}

fn inactivity(
    e: &mut ElderSlot,
    devices: &[DeviceSlot],
    blind: &[(EpochMs, EpochMs)],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    if e.inactivity_raised {
        return;
    }
    let Some(pir) = e
        .devices
        .iter()
        .map(|&d| &devices[d as usize])
        .find(|d| d.kind == DeviceKind::Pir)
    else {
        return;
    };
    if e.in_bed == Some(true) || e.away {
        *due = (*due).min(now + RECHECK_MS);
        return;
    }
    // Blind: the home is offline, or every motion sensor is silent. No
    // motion from sensors that say nothing at all is no evidence that the
    // person is not moving (the offline rules report the silence).
    let pirs_silent = e
        .devices
        .iter()
        .map(|&d| &devices[d as usize])
        .filter(|d| d.kind == DeviceKind::Pir)
        .all(|d| d.silent_since.is_some());
    if e.home_offline || pirs_silent {
        *due = (*due).min(now + RECHECK_MS);
        return;
    }
    let after = i64::from(e.cfg.inactivity.after_s) * 1000;
    let unseen = blind_day_ms(e, blind);
    let deadline = e.clock.after_day_ms(e.activity_at, after + unseen);
    if now < deadline {
        *due = (*due).min(deadline);
        return;
    }
    e.inactivity_raised = true;
    let quiet = minutes(e.clock.day_ms_between(e.activity_at, now) - unseen);
    let last = e.clock.hhmm(e.activity_at);
    let (en_unseen, zh_unseen) = if unseen >= 60_000 {
        let m = minutes(unseen);
        (
            format!("; {} while the system was down not counted", m.en),
            format!("；系统停机的 {} 未计入", m.zh),
        )
    } else {
        (String::new(), String::new())
    };
    let pir_id = pir.id.to_string();
    let mut t = timer_trigger(
        e,
        &pir_id,
        AlertKind::Inactivity,
        Severity::High,
        now,
        Text::new(
            format!(
                "No movement at home for {} of daytime (last activity at {last}{en_unseen})",
                quiet.en
            ),
            format!(
                "白天在家 {} 无活动（最后一次活动 {last}{zh_unseen}）",
                quiet.zh
            ),
        ),
    );
    t.window = Some((e.activity_at, now));
    out.push(Decision::Raise(t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news2_table_matches_the_chart() {
        assert_eq!(Param::Pulse.news2(40.0), 3);
        assert_eq!(Param::Pulse.news2(41.0), 1);
        assert_eq!(Param::Pulse.news2(90.0), 0);
        assert_eq!(Param::Pulse.news2(111.0), 2);
        assert_eq!(Param::Pulse.news2(131.0), 3);
        assert_eq!(Param::Spo2.news2(91.0), 3);
        assert_eq!(Param::Spo2.news2(93.0), 2);
        assert_eq!(Param::Spo2.news2(96.0), 0);
        assert_eq!(Param::Resp.news2(8.0), 3);
        assert_eq!(Param::Resp.news2(24.0), 2);
        assert_eq!(Param::Resp.news2(25.0), 3);
        assert_eq!(Param::Sys.news2(90.0), 3);
        assert_eq!(Param::Sys.news2(219.0), 0);
        assert_eq!(Param::Sys.news2(220.0), 3);
        assert_eq!(Param::Temp.news2(35.0), 3);
        assert_eq!(Param::Temp.news2(38.5), 1);
        assert_eq!(Param::Temp.news2(39.1), 2);
    }

    #[test]
    fn distance_is_about_right() {
        // One thousandth of a degree of latitude is ~111 m.
        let d = distance_m((31.2, 121.4), (31.201, 121.4));
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }
}
