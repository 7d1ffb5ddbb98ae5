//! The engine: the registry it is told, the state per elder and device,
//! and the routing of each reading and tick to the rules.

use crate::RECHECK_MS;
use crate::config::Rules;
use crate::decision::Decision;
use crate::decision::trigger;
use crate::evidence::Evidence;
use crate::hold::{Holds, Level, Signal};
use crate::local::LocalClock;
use crate::profile::{DeviceProfile, ElderProfile, PlanProfile};
use crate::rule::{
    battery::battery,
    fall::{fall, moved_after_fall},
    geofence::location,
    inactivity::{inactivity, motion},
    news2::news2,
    no_breathing::no_breathing,
    offline::{heard_again, offline},
    out_of_bed::{bed, out_of_bed},
    sos::sos_cancel,
    trend,
    vital::{PARAMS, Param, vital},
};
use crate::state::{DeviceSlot, ElderSlot, Latest};
use crate::{evidence, late};
use eldercare_model::{AlertKind, Body, EpochMs, EventType, Reading, Severity, Text, VisitAction};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// The rule engine: one state per elder, fusing all of their devices.
#[derive(Debug, Default)]
pub struct Engine {
    pub(crate) rules: Rules,
    pub(crate) elders: Vec<ElderSlot>,
    pub(crate) elder_ix: FxHashMap<Arc<str>, u32>,
    pub(crate) devices: Vec<DeviceSlot>,
    pub(crate) device_ix: FxHashMap<Arc<str>, u32>,
    pub(crate) free_devices: Vec<u32>,
    /// Latest engine time the engine was given: where a snapshot stops seeing.
    pub(crate) seen: EpochMs,
    /// Engine-time stretches the engine could not see (the server was down),
    /// oldest first: the inactivity rule does not count them.
    pub(crate) blind: Vec<(EpochMs, EpochMs)>,
    /// Each carer's provider (from the registry).
    pub(crate) carers: FxHashMap<Arc<str>, Arc<str>>,
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
            e.alone_or_frail = p.alone_or_frail;
            e.check_in = p.check_in;
            if p.check_in.is_some() {
                crate::rule::visit::state(e);
            }
            e.cfg = cfg;
            e.due = e.due.min(now);
            e.seen.due = EpochMs::MIN;
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
                ts: None,
            }; 5],
            news2_since: None,
            news2_raised: None,
            in_bed: None,
            bed_ts: None,
            left_bed: None,
            out_of_bed_done: false,
            last_motion: None,
            last_motion_bathroom: false,
            activity_at: now,
            inactivity_raised: false,
            gps_ts: None,
            outside_fixes: 0,
            first_outside: None,
            away: false,
            geofence_raised: false,
            home_offline: false,
            seen: Evidence {
                due: EpochMs::MIN,
                ..Evidence::default()
            },
            pending: Vec::new(),
            trends: None,
            alone_or_frail: p.alone_or_frail,
            check_in: p.check_in,
            visits: p.check_in.map(|_| Box::default()),
        };
        let i = u32::try_from(self.elders.len()).unwrap_or(u32::MAX);
        self.elders.push(slot);
        self.elder_ix.insert(id, i);
    }

    /// An elder's visit plans, as the registry holds them now. A plan
    /// known before keeps what was judged of it; a new one is judged from
    /// `now` on.
    pub fn set_visit_plans(&mut self, elder_id: &str, plans: Vec<PlanProfile>, now: EpochMs) {
        self.seen = self.seen.max(now);
        let Some(&i) = self.elder_ix.get(elder_id) else {
            return;
        };
        let e = &mut self.elders[i as usize];
        if plans.is_empty() && e.visits.is_none() {
            return;
        }
        crate::rule::visit::state(e).set_plans(plans, now);
        e.due = e.due.min(now);
    }

    /// Every elder's visit plans at once (a registry refresh): an elder
    /// not named has none.
    pub fn replace_visit_plans(
        &mut self,
        mut plans: std::collections::HashMap<String, Vec<PlanProfile>>,
        now: EpochMs,
    ) {
        self.seen = self.seen.max(now);
        for e in self.elders.iter_mut().filter(|e| !e.removed) {
            let mine = plans.remove(&*e.id).unwrap_or_default();
            if mine.is_empty() && e.visits.as_ref().is_none_or(|v| v.plans.is_empty()) {
                continue;
            }
            crate::rule::visit::state(e).set_plans(mine, now);
            e.due = e.due.min(now);
        }
    }

    /// Every carer and their provider, as the registry holds them now.
    pub fn set_carers<'a>(&mut self, carers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.carers = carers
            .into_iter()
            .map(|(c, p)| (Arc::from(c), Arc::from(p)))
            .collect();
    }

    /// A carer's check-in or check-out sent by the provider's system
    /// (through the API) rather than read at the home: `via` names it.
    #[allow(clippy::too_many_arguments)]
    pub fn on_visit_into(
        &mut self,
        elder_id: &str,
        carer_id: &str,
        action: VisitAction,
        at: EpochMs,
        via: &str,
        now: EpochMs,
        out: &mut Vec<Decision>,
    ) {
        self.seen = self.seen.max(now);
        let Some(&i) = self.elder_ix.get(elder_id) else {
            return;
        };
        let provider = self
            .carers
            .get(carer_id)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let e = &mut self.elders[i as usize];
        let cfg = e.cfg.clone();
        crate::rule::visit::check(e, at, carer_id, &provider, action, via, &cfg, out);
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
            last_ts: None,
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
        let e = &mut elders[devices[d as usize].elder as usize];
        let grace = i64::from(e.cfg.offline.grace_s) * 1000;
        // Once per message: the longest the home may stay silent.
        let silent_ms = evidence::longest_silence(e, devices, grace);
        let dev = &mut devices[d as usize];
        let late = dev.last_ts.is_some_and(|t| r.ts_ms < t);
        if !late {
            dev.last_ts = Some(r.ts_ms);
        }
        let late_ms = i64::from(e.cfg.late.after_s) * 1000;
        let arrived_late = now - r.ts_ms >= late_ms;
        let last_will = matches!(&r.body, Body::Status(s) if s.online == Some(false));
        if last_will {
            if dev.silent_since.is_none() {
                dev.silent_since = Some(now);
                e.due = e.due.min(now + grace);
            }
        } else {
            dev.last_heard = now;
            if dev.silent_since.is_some() {
                heard_again(e, devices, d, now, out);
            }
            if !arrived_late && !e.pending.is_empty() {
                // Readings of now: whatever was being uploaded is in.
                late::flush(e, out);
            }
            evidence::observe(e, r.ts_ms, now, silent_ms, grace);
        }
        let start = out.len();
        if e.visits.is_some() || matches!(&r.body, Body::Event(ev) if ev.kind == EventType::Visit) {
            let carers = &self.carers;
            let provider = |c: &str| carers.get(c).map(|p| p.to_string());
            let cfg = e.cfg.clone();
            crate::rule::visit::observe(e, r, &provider, &cfg, out);
        }
        judge(e, &mut devices[d as usize], r, late, out);
        if !last_will {
            let first = devices[e.devices[0] as usize].id.clone();
            trend::roll(e, &first, r.ts_ms.min(now), out);
            let cfg = e.cfg.clone();
            trend::on_reading(e, r, silent_ms, &cfg);
        }
        if arrived_late {
            late::ended_by(e, r);
            e.seen.late_at = Some(now);
            // An upload moves through the past faster than ticks come:
            // the absence rules look at each moment it shows. (Live,
            // the next tick does.)
            absence_rules(e, devices, &self.blind, now, out);
        }
        late::hold_late(e, out, start, now, late_ms);
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
            if e.removed {
                continue;
            }
            if now >= e.due {
                let mut due = EpochMs::MAX;
                offline(e, devices, now, &mut due, out);
                crate::rule::visit::tick(e, devices, now, &mut due, out);
                e.due = due.max(now + 1);
            }
            let start = out.len();
            absence_rules(e, devices, blind, now, out);
            // While an upload is coming in, what the clock shows of its
            // past waits with it; otherwise the home is live, if slow to
            // report (a PIR's heartbeat), and nothing is late.
            if e.seen.late_at.is_some() {
                let late_ms = i64::from(e.cfg.late.after_s) * 1000;
                late::hold_late(e, out, start, now, late_ms);
            }
            let settle_ms = i64::from(e.cfg.late.settle_s) * 1000;
            if e.seen.late_at.is_some_and(|at| now - at >= settle_ms) {
                late::flush(e, out);
            }
        }
    }
}

/// The rules that infer from absence, judged at the newest time the home
/// has shown evidence for (see `evidence`), when one of them is due.
fn absence_rules(
    e: &mut ElderSlot,
    devices: &[DeviceSlot],
    blind: &[(EpochMs, EpochMs)],
    now: EpochMs,
    out: &mut Vec<Decision>,
) {
    let Some(t) = e.seen.judge_at(now) else {
        return;
    };
    if t < e.seen.due {
        return;
    }
    let mut due = EpochMs::MAX;
    out_of_bed(e, devices, t, &mut due, out);
    inactivity(e, devices, blind, t, &mut due, out);
    if let Some(&first) = e.devices.first() {
        let id = devices[first as usize].id.clone();
        trend::roll(e, &id, t, out);
    }
    // Movement, bed and coming home change what is due without saying so:
    // look again at least every minute of evidence.
    e.seen.due = due.min(t + RECHECK_MS).max(t + 1);
}

/// Every rule a reading concerns. `late`: older than the device's newest
/// reading, so it cannot move what newer ones showed (bed, place, battery).
fn judge(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    late: bool,
    out: &mut Vec<Decision>,
) {
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
            // Visits and check-ins: `rule/visit.rs`, before these rules.
            EventType::Visit | EventType::CheckIn => {}
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
            } else if let Some(h) = dev.holds.as_mut().and_then(|h| h.get(Signal::NoBreathing)) {
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
            // A last will is noticed by the caller, reported after the
            // grace in tick().
            if let (Some(pct), false) = (s.battery_pct, late) {
                battery(e, dev, r, pct, &cfg, out);
            }
        }
    }
}
