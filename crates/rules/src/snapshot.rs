//! The engine's state carried over a restart.
//!
//! [`Engine::snapshot`] copies everything the engine has learnt from
//! readings and the clock (holds in progress, NEWS2, SOS and fall, bed,
//! motion and activity, GPS and geofence, what each device last said and
//! whether it is silent), keyed by elder and device id. The registry is
//! not in it: after a restart the registry is loaded into a fresh engine
//! as usual, then [`Engine::restore`] puts the saved state back on the
//! elders and devices that still exist.
//!
//! The time the server was down is not evidence: nothing could be heard,
//! so it must not make a device offline or a home inactive
//! ([`Engine::resume_after_gap`], which `restore` applies to the stretch
//! from the snapshot to the restart). What is positively known keeps its
//! times: a person who left bed at night, a vital sign held abnormal, a
//! fall; those are raised when they would have been without the restart.
//!
//! The format is serde, with one- and two-letter field names and nothing
//! written that is at its default. In JSON a typical home (person in bed,
//! normal vital signs, every device heard) takes about 99 bytes a device,
//! its elder's share included: an elder about 205, a band 66, another
//! device about 55, so 600,000 devices make about 60 MB
//! (`snapshot_size_per_device` in `tests/restart.rs` measures it).

use eldercare_model::{
    Body, DeviceEvent, EpochMs, Location, Motion, Reading, Severity, Sleep, Status, Text, Vitals,
};
use serde::{Deserialize, Serialize};

use crate::BLIND_KEPT;
use crate::engine::Engine;
use crate::hold::{Hold, Signal};
use crate::late::Pending;
use crate::rule::trend::Trends;
use crate::rule::visit::Visits;
use crate::state::{DeviceSlot, ElderSlot, FallState, Latest};

/// Everything the engine knows that is not the registry, keyed by elder
/// and device id. Serialize it with any serde format; restore it with
/// [`Engine::restore`] into an engine that was told the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Latest engine time the engine was given: from here on it saw nothing.
    #[serde(rename = "at")]
    at: EpochMs,
    /// Earlier blind stretches, still of use to the inactivity rule.
    #[serde(rename = "bl", default, skip_serializing_if = "Vec::is_empty")]
    blind: Vec<(EpochMs, EpochMs)>,
    #[serde(rename = "e", default)]
    elders: Vec<ElderState>,
    #[serde(rename = "d", default)]
    devices: Vec<DeviceState>,
}

impl EngineSnapshot {
    /// Engine time of the last reading or tick before the snapshot.
    pub fn taken_at(&self) -> EpochMs {
        self.at
    }

    /// Number of elders in the snapshot.
    pub fn elders(&self) -> usize {
        self.elders.len()
    }

    /// Number of devices in the snapshot.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }
}

/// What [`Engine::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Elders whose state was restored.
    pub elders: usize,
    /// Devices whose state was restored.
    pub devices: usize,
    /// Elders in the snapshot that are no longer registered: skipped.
    pub unknown_elders: usize,
    /// Devices in the snapshot that are no longer registered: skipped.
    pub unknown_devices: usize,
    /// Milliseconds between the snapshot and the restore that were not
    /// counted as silence or inactivity.
    pub blind_ms: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ElderState {
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "so", default, skip_serializing_if = "Option::is_none")]
    sos_at: Option<EpochMs>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    fall: Option<SavedFall>,
    /// Latest value and event time of each NEWS2 parameter, by `Param`.
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    latest: Vec<Option<(f32, EpochMs)>>,
    #[serde(rename = "ns", default, skip_serializing_if = "Option::is_none")]
    news2_since: Option<EpochMs>,
    #[serde(rename = "nl", default, skip_serializing_if = "is_zero_u8")]
    news2_level: u8,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    in_bed: Option<bool>,
    #[serde(rename = "bt", default, skip_serializing_if = "Option::is_none")]
    bed_ts: Option<EpochMs>,
    #[serde(rename = "lb", default, skip_serializing_if = "Option::is_none")]
    left_bed: Option<SavedReading>,
    #[serde(rename = "od", default, skip_serializing_if = "is_false")]
    out_of_bed_done: bool,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    last_motion: Option<EpochMs>,
    #[serde(rename = "mb", default, skip_serializing_if = "is_false")]
    last_motion_bathroom: bool,
    #[serde(rename = "a")]
    activity_at: EpochMs,
    #[serde(rename = "ir", default, skip_serializing_if = "is_false")]
    inactivity_raised: bool,
    #[serde(rename = "gt", default, skip_serializing_if = "Option::is_none")]
    gps_ts: Option<EpochMs>,
    #[serde(rename = "of", default, skip_serializing_if = "is_zero")]
    outside_fixes: u32,
    #[serde(rename = "fo", default, skip_serializing_if = "Option::is_none")]
    first_outside: Option<SavedReading>,
    #[serde(rename = "aw", default, skip_serializing_if = "is_false")]
    away: bool,
    #[serde(rename = "gr", default, skip_serializing_if = "is_false")]
    geofence_raised: bool,
    #[serde(rename = "ho", default, skip_serializing_if = "is_false")]
    home_offline: bool,
    /// Daily figures and usual ranges (`rule/trend.rs`): weeks of learning
    /// a restart must not lose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trends: Option<Box<Trends>>,
    /// The newest time the home showed evidence for, and when the latest
    /// late reading arrived (`evidence.rs`).
    #[serde(rename = "ev", default, skip_serializing_if = "Option::is_none")]
    evidence_until: Option<EpochMs>,
    #[serde(rename = "la", default, skip_serializing_if = "Option::is_none")]
    late_at: Option<EpochMs>,
    /// Late episodes waiting for their upload to end (`late.rs`).
    #[serde(rename = "pe", default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Pending>,
    /// Visits in progress, plan windows judged, the last sign of life
    /// (`rule/visit.rs`).
    #[serde(rename = "vi", default, skip_serializing_if = "Option::is_none")]
    visits: Option<Box<Visits>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedFall {
    #[serde(rename = "a")]
    at: EpochMs,
    #[serde(rename = "u", default, skip_serializing_if = "is_false")]
    up: bool,
    #[serde(rename = "s")]
    summary: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeviceState {
    #[serde(rename = "i")]
    id: String,
    /// Engine time last heard.
    #[serde(rename = "h")]
    last_heard: EpochMs,
    /// Event time of the newest reading.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    last_ts: Option<EpochMs>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    silent_since: Option<EpochMs>,
    #[serde(rename = "o", default, skip_serializing_if = "is_false")]
    offline_raised: bool,
    #[serde(rename = "b", default, skip_serializing_if = "is_false")]
    battery_low: bool,
    /// Signal holds that have judged a reading and are in no stretch,
    /// their newest reading being the device's newest: the usual case,
    /// kept to the signal alone.
    #[serde(rename = "gi", default, skip_serializing_if = "Vec::is_empty")]
    idle: Vec<u8>,
    /// Other signal holds that have judged a reading.
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    holds: Vec<SavedHold>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedHold {
    /// A `Param` index, or `NO_BREATHING`.
    #[serde(rename = "k")]
    signal: u8,
    /// Newest reading judged; absent when it is the device's newest reading.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    last: Option<EpochMs>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    since: Option<EpochMs>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    clear_since: Option<EpochMs>,
    #[serde(rename = "f", default, skip_serializing_if = "is_false")]
    fired: bool,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    first: Option<SavedReading>,
}

/// A reading kept as evidence. The model's `Body` is untagged (the stream
/// says what it is), so the snapshot tags it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedReading {
    #[serde(rename = "d")]
    device_id: String,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(rename = "t")]
    ts_ms: EpochMs,
    #[serde(rename = "b")]
    body: SavedBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SavedBody {
    #[serde(rename = "v")]
    Vitals(Vitals),
    #[serde(rename = "s")]
    Sleep(Sleep),
    #[serde(rename = "m")]
    Motion(Motion),
    #[serde(rename = "l")]
    Location(Location),
    #[serde(rename = "e")]
    Event(DeviceEvent),
    #[serde(rename = "st")]
    Status(Status),
}

impl From<&Reading> for SavedReading {
    fn from(r: &Reading) -> SavedReading {
        let body = match &r.body {
            Body::Vitals(b) => SavedBody::Vitals(b.clone()),
            Body::Sleep(b) => SavedBody::Sleep(b.clone()),
            Body::Motion(b) => SavedBody::Motion(b.clone()),
            Body::Location(b) => SavedBody::Location(b.clone()),
            Body::Event(b) => SavedBody::Event(b.clone()),
            Body::Status(b) => SavedBody::Status(b.clone()),
        };
        SavedReading {
            device_id: r.device_id.clone(),
            seq: r.seq,
            ts_ms: r.ts_ms,
            body,
        }
    }
}

/// Readings in a rule decision as a cluster's decision log carries them:
/// tagged by stream, as in a snapshot.
pub(crate) mod saved_readings {
    use super::SavedReading;
    use eldercare_model::Reading;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &[Reading], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(r.iter().map(SavedReading::from))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Reading>, D::Error> {
        let saved = Vec::<SavedReading>::deserialize(d)?;
        Ok(saved.iter().map(Reading::from).collect())
    }
}

impl From<&SavedReading> for Reading {
    fn from(r: &SavedReading) -> Reading {
        let body = match &r.body {
            SavedBody::Vitals(b) => Body::Vitals(b.clone()),
            SavedBody::Sleep(b) => Body::Sleep(b.clone()),
            SavedBody::Motion(b) => Body::Motion(b.clone()),
            SavedBody::Location(b) => Body::Location(b.clone()),
            SavedBody::Event(b) => Body::Event(b.clone()),
            SavedBody::Status(b) => Body::Status(b.clone()),
        };
        Reading {
            device_id: r.device_id.clone(),
            seq: r.seq,
            ts_ms: r.ts_ms,
            body,
        }
    }
}

fn save(r: &Option<Box<Reading>>) -> Option<SavedReading> {
    r.as_deref().map(SavedReading::from)
}

fn load(r: &Option<SavedReading>) -> Option<Box<Reading>> {
    r.as_ref().map(|r| Box::new(Reading::from(r)))
}

impl ElderState {
    fn of(e: &ElderSlot) -> ElderState {
        let latest = if e.latest.iter().all(|l| l.ts.is_none()) {
            Vec::new()
        } else {
            e.latest
                .iter()
                .map(|l| l.ts.map(|ts| (l.value, ts)))
                .collect()
        };
        ElderState {
            id: e.id.to_string(),
            sos_at: e.sos_at,
            fall: e.fall.as_deref().map(|f| SavedFall {
                at: f.at,
                up: f.up,
                summary: f.summary.clone(),
            }),
            latest,
            news2_since: e.news2_since,
            news2_level: match e.news2_raised {
                None => 0,
                Some(Severity::Critical) => 2,
                Some(_) => 1,
            },
            in_bed: e.in_bed,
            bed_ts: e.bed_ts,
            left_bed: save(&e.left_bed),
            out_of_bed_done: e.out_of_bed_done,
            last_motion: e.last_motion,
            last_motion_bathroom: e.last_motion_bathroom,
            activity_at: e.activity_at,
            inactivity_raised: e.inactivity_raised,
            gps_ts: e.gps_ts,
            outside_fixes: e.outside_fixes,
            first_outside: save(&e.first_outside),
            away: e.away,
            geofence_raised: e.geofence_raised,
            home_offline: e.home_offline,
            trends: e.trends.clone(),
            evidence_until: e.seen.until,
            late_at: e.seen.late_at,
            pending: e.pending.clone(),
            visits: e.visits.clone(),
        }
    }

    fn apply(&self, e: &mut ElderSlot, at: EpochMs) {
        e.sos_at = self.sos_at;
        e.fall = self.fall.as_ref().map(|f| {
            Box::new(FallState {
                at: f.at,
                up: f.up,
                summary: f.summary.clone(),
            })
        });
        for (i, l) in e.latest.iter_mut().enumerate() {
            *l = match self.latest.get(i).copied().flatten() {
                Some((value, ts)) => Latest {
                    value,
                    ts: Some(ts),
                },
                None => Latest {
                    value: 0.0,
                    ts: None,
                },
            };
        }
        e.news2_since = self.news2_since;
        e.news2_raised = match self.news2_level {
            0 => None,
            1 => Some(Severity::High),
            _ => Some(Severity::Critical),
        };
        e.in_bed = self.in_bed;
        e.bed_ts = self.bed_ts;
        e.left_bed = load(&self.left_bed);
        e.out_of_bed_done = self.out_of_bed_done;
        e.last_motion = self.last_motion;
        e.last_motion_bathroom = self.last_motion_bathroom;
        e.activity_at = self.activity_at;
        e.inactivity_raised = self.inactivity_raised;
        e.gps_ts = self.gps_ts;
        e.outside_fixes = self.outside_fixes;
        e.first_outside = load(&self.first_outside);
        e.away = self.away;
        e.geofence_raised = self.geofence_raised;
        e.home_offline = self.home_offline;
        e.trends = self.trends.clone();
        e.seen.until = self.evidence_until;
        e.seen.late_at = self.late_at;
        e.pending = self.pending.clone();
        if let Some(v) = &self.visits {
            // The registry's plans win over the snapshot's; what was
            // judged of each is kept.
            let plans = e.visits.as_ref().map(|x| x.plans.clone());
            let mut v = v.clone();
            if let Some(plans) = plans.filter(|p| !p.is_empty()) {
                v.set_plans(plans, at);
            }
            e.visits = Some(v);
        }
    }
}

impl DeviceState {
    fn of(d: &DeviceSlot) -> DeviceState {
        let (mut idle, mut holds) = (Vec::new(), Vec::new());
        if let Some(hs) = &d.holds {
            for (signal, h) in hs.iter() {
                // A hold that never judged a reading is at its default.
                let Some(last) = h.last else {
                    continue;
                };
                let quiet = h.since.is_none() && h.clear_since.is_none() && !h.fired;
                if quiet && h.first.is_none() && h.last == d.last_ts {
                    idle.push(signal.code());
                    continue;
                }
                holds.push(SavedHold {
                    signal: signal.code(),
                    last: (h.last != d.last_ts).then_some(last),
                    since: h.since,
                    clear_since: h.clear_since,
                    fired: h.fired,
                    first: save(&h.first),
                });
            }
        }
        DeviceState {
            id: d.id.to_string(),
            last_heard: d.last_heard,
            last_ts: d.last_ts,
            silent_since: d.silent_since,
            offline_raised: d.offline_raised,
            battery_low: d.battery_low,
            idle,
            holds,
        }
    }

    fn apply(&self, d: &mut DeviceSlot) {
        d.last_heard = self.last_heard;
        d.last_ts = self.last_ts;
        d.silent_since = self.silent_since;
        d.offline_raised = self.offline_raised;
        d.battery_low = self.battery_low;
        let last_ts = d.last_ts;
        if let Some(hs) = d.holds.as_mut() {
            hs.clear();
            // A signal the device's kind does not have (its kind changed in
            // the registry since) has no hold: skipped.
            for &s in &self.idle {
                if let Some(h) = Signal::from_code(s).and_then(|s| hs.get(s)) {
                    h.last = last_ts;
                }
            }
            for s in &self.holds {
                if let Some(h) = Signal::from_code(s.signal).and_then(|s| hs.get(s)) {
                    *h = Hold {
                        since: s.since,
                        last: s.last.or(last_ts),
                        clear_since: s.clear_since,
                        fired: s.fired,
                        first: load(&s.first),
                    };
                }
            }
        }
    }
}

impl Engine {
    /// Copies the state the engine has built from readings and the clock,
    /// keyed by elder and device id, sorted by id. Registry data (profiles,
    /// rule settings, heartbeats) is not in it.
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut elders: Vec<ElderState> = self
            .elder_ix
            .values()
            .map(|&i| &self.elders[i as usize])
            .filter(|e| !e.removed)
            .map(ElderState::of)
            .collect();
        elders.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut devices: Vec<DeviceState> = self
            .device_ix
            .values()
            .map(|&d| DeviceState::of(&self.devices[d as usize]))
            .collect();
        devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        EngineSnapshot {
            at: self.seen,
            blind: self.blind.clone(),
            elders,
            devices,
        }
    }

    /// Puts a snapshot's state back on the elders and devices that are
    /// registered (call it after [`Engine::upsert_elder`] and
    /// [`Engine::upsert_device`] have loaded the registry, and before
    /// [`Engine::restore_open`]). Ids no longer registered are skipped and
    /// counted. The stretch from the snapshot to `now` is then treated as
    /// blind ([`Engine::resume_after_gap`]), and every elder is looked at
    /// again on the next tick.
    pub fn restore(&mut self, snap: &EngineSnapshot, now: EpochMs) -> RestoreReport {
        let mut report = RestoreReport::default();
        for s in &snap.elders {
            match self.elder_ix.get(s.id.as_str()) {
                Some(&i) if !self.elders[i as usize].removed => {
                    s.apply(&mut self.elders[i as usize], snap.at);
                    report.elders += 1;
                }
                _ => report.unknown_elders += 1,
            }
        }
        for s in &snap.devices {
            match self.device_ix.get(s.id.as_str()) {
                Some(&d) => {
                    s.apply(&mut self.devices[d as usize]);
                    report.devices += 1;
                }
                None => report.unknown_devices += 1,
            }
        }
        self.blind = snap.blind.clone();
        self.seen = self.seen.max(snap.at);
        report.blind_ms = self.resume_after_gap(snap.at, now);
        for e in &mut self.elders {
            if !e.removed {
                e.due = e.due.min(now);
            }
        }
        report
    }

    /// The engine could not see anything from `blind_from` to `now` (the
    /// server was down, or its input stopped): that stretch is not counted
    /// as silence. Every device's heartbeat and grace are pushed forward by
    /// the part of it after the device was last heard, and the inactivity
    /// rule skips it; devices already reported offline stay so until heard.
    /// Times of what is positively known (left bed, a held vital sign, a
    /// fall) are kept. A stretch, or the part of one, already declared is
    /// not counted twice. Returns the milliseconds newly declared blind.
    pub fn resume_after_gap(&mut self, blind_from: EpochMs, now: EpochMs) -> i64 {
        let from = self
            .blind
            .last()
            .map_or(blind_from, |w| blind_from.max(w.1));
        self.seen = self.seen.max(now);
        if from >= now {
            return 0;
        }
        for d in self.device_ix.values() {
            let dev = &mut self.devices[*d as usize];
            let e = &self.elders[dev.elder as usize];
            if dev.offline_raised || e.home_offline {
                continue;
            }
            dev.last_heard += (now - dev.last_heard.max(from)).max(0);
            if let Some(s) = dev.silent_since.as_mut() {
                *s += (now - (*s).max(from)).max(0);
            }
        }
        if self.blind.len() >= BLIND_KEPT {
            self.blind.remove(0);
        }
        self.blind.push((from, now));
        now - from
    }
}
