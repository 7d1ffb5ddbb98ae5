//! The life of one simulated home as a pure function of time: what the
//! resident does (asleep, in which room, out for a walk) and what each
//! device of the home sends because of it, with injected emergencies
//! played as episodes on the same timeline.
//!
//! Nothing here does I/O or reads the clock: [`HomeSim::advance`] yields
//! the messages due up to a time, in order, each with the time it is
//! taken (its `ts`). The runtime publishes them when that time comes; the
//! tests feed them straight into the rule engine over a simulated day.
//!
//! A normal day: asleep through the night window (to bed 5–25 min after
//! it starts, up 0–20 min after it ends) with up to two bathroom trips;
//! by day moving between rooms by time of day, a walk within the safe
//! radius for most, an after-lunch nap for some. Heart rate and breathing
//! follow sleep, activity and the hour. Every value stays where a healthy
//! old person's does, so a normal home raises nothing; where a rule's
//! time is shorter than ordinary life allows (a rehearsal's compressed
//! rule file), ordinary life is shortened to fit inside it: see
//! [`Limits`].
use crate::{Home, Inject};
use eldercare_model::AlertKind;
use eldercare_rules::RuleConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const S: i64 = 1000;
const MIN: i64 = 60 * S;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// Rooms with a PIR sensor, in the order of a home's PIR devices.
pub const ROOMS: [&str; 5] = ["bedroom", "bathroom", "living", "kitchen", "entrance"];

/// Device positions in [`Home::devices`].
pub const BED: usize = 0;
pub const BAND: usize = 1;
/// First PIR; the PIR of `ROOMS[r]` is `PIR + r`.
pub const PIR: usize = 2;
pub const GPS: usize = 7;
pub const BTN: usize = 8;
pub const DEVICES_PER_HOME: usize = 9;

const BEDROOM: usize = 0;
const BATHROOM: usize = 1;
const LIVING: usize = 2;
const KITCHEN: usize = 3;
const ENTRANCE: usize = 4;

/// How often devices report, in milliseconds (defaults: realistic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intervals {
    /// Vital-sign band: heart rate and SpO2 (temperature every 30 min,
    /// blood pressure every hour).
    pub vitals_ms: i64,
    /// Sleep sensor while someone is in bed (and once on every change).
    pub sleep_ms: i64,
    /// GPS watch outdoors; indoors every 10 intervals.
    pub gps_ms: i64,
    /// Status heartbeat of every device (battery, online).
    pub status_ms: i64,
    /// A PIR re-triggers while the person moves about its room, at most
    /// this often.
    pub pir_ms: i64,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            vitals_ms: 10 * S,
            sleep_ms: 5 * S,
            gps_ms: 60 * S,
            status_ms: 300 * S,
            pir_ms: 30 * S,
        }
    }
}

impl Intervals {
    /// Every interval divided by `factor` (a load test's higher rate),
    /// but no device sending more than `device_max` messages/s: its main
    /// stream (vital signs, sleep, GPS outdoors, PIR re-triggers) keeps to
    /// three quarters of that, the status heartbeat every device sends to
    /// a quarter. Servers cap each session's rate (eldercare: 50 msg/s by
    /// default, `mqtt.rate_msgs_per_s`) and slow down, then cut off, a
    /// device above it; a load test must not measure that.
    pub fn scaled(self, factor: f64, device_max: f64) -> Intervals {
        let max = device_max.max(1e-3);
        // Whole milliseconds, as every time in [`HomeSim`]; at least 1.
        let floor = |share: f64| (1000.0 / (share * max)).ceil() as i64;
        let (main, status) = (floor(0.75).max(1), floor(0.25).max(1));
        let f = |ms: i64, min: i64| ((ms as f64 / factor.max(1e-6)).round() as i64).max(min);
        Intervals {
            vitals_ms: f(self.vitals_ms, main),
            sleep_ms: f(self.sleep_ms, main),
            gps_ms: f(self.gps_ms, main),
            status_ms: f(self.status_ms, status),
            pir_ms: f(self.pir_ms, main),
        }
    }

    /// Every interval divided by `factor` (a burst's catching up), never
    /// below 10 ms.
    pub fn faster(self, factor: f64) -> Intervals {
        let f = |ms: i64| ((ms as f64 / factor.max(1e-6)) as i64).max(10);
        Intervals {
            vitals_ms: f(self.vitals_ms),
            sleep_ms: f(self.sleep_ms),
            gps_ms: f(self.gps_ms),
            status_ms: f(self.status_ms),
            pir_ms: f(self.pir_ms),
        }
    }
}

/// What ordinary life must stay within so that it raises nothing under
/// the rules in force: the longest stillness at home by day, the longest
/// night-time trip out of bed, the furthest walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest gap between PIR motions while awake at home.
    pub pir_gap_ms: i64,
    /// Longest night-time trip out of bed.
    pub trip_ms: i64,
    /// Longest walk (no motion at home meanwhile, yet not away).
    pub walk_ms: i64,
    /// Furthest a walk goes, as a share of the safe radius.
    pub walk_reach: f64,
}

impl Limits {
    pub fn for_rules(r: &RuleConfig) -> Limits {
        let inactivity = i64::from(r.inactivity.after_s) * S;
        let out_of_bed = i64::from(r.out_of_bed.after_s) * S;
        let moving = i64::from(r.out_of_bed.moving_window_s) * S;
        Limits {
            pir_gap_ms: (2 * MIN).min(inactivity / 3).min(moving / 3).max(S),
            trip_ms: (8 * MIN).min(out_of_bed / 3).max(20 * S),
            walk_ms: (45 * MIN).min(inactivity / 2).max(MIN),
            walk_reach: 0.6,
        }
    }
}

/// What the resident is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    /// In bed (asleep or napping).
    InBed,
    /// Awake at home, moving about this room.
    Room(usize),
    /// At home in this room, not in bed, not moving (lying after a fall,
    /// collapsed, sitting motionless).
    Still(usize),
    /// Outdoors on a walk: out and back along `bearing`, `reach_m` at the
    /// furthest, from `start` to `end`.
    Walk {
        start: i64,
        end: i64,
        bearing: f64,
        reach_m: f64,
    },
    /// Walking away from home from `start`, not coming back.
    Wander { start: i64, bearing: f64 },
}

impl Act {
    fn in_bed(self) -> bool {
        matches!(self, Act::InBed)
    }
    fn outdoors(self) -> bool {
        matches!(self, Act::Walk { .. } | Act::Wander { .. })
    }
}

/// A message a device sends at `at_ms` (its event time, `ts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub at_ms: i64,
    /// Position in [`Home::devices`].
    pub device: usize,
    pub body: Payload,
    /// This message completes an injected emergency: the alert is due
    /// when it arrives.
    pub trigger: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// JSON on `eldercare/v1/{id}/{stream}`, with `ts` and `seq`.
    Json {
        stream: &'static str,
        body: serde_json::Value,
    },
    /// A fall event in protobuf on `eldercare/v1/{id}/event/pb`.
    FallPb { confidence: f64 },
    /// The connection is lost without a goodbye: the broker publishes
    /// the device's last will, `{"online": false}` on its status topic.
    Drop,
}

impl Payload {
    /// The MQTT topic of this message from `device_id`.
    pub fn topic(&self, device_id: &str) -> String {
        match self {
            Payload::Json { stream, .. } => format!("eldercare/v1/{device_id}/{stream}"),
            Payload::FallPb { .. } => format!("eldercare/v1/{device_id}/event/pb"),
            Payload::Drop => format!("eldercare/v1/{device_id}/status"),
        }
    }

    /// The bytes published (for `Drop`, those of the last will).
    pub fn bytes(&self, ts_ms: i64) -> Vec<u8> {
        use prost::Message;
        match self {
            Payload::Json { body, .. } => body.to_string().into_bytes(),
            Payload::FallPb { confidence } => eldercare_proto::v1::DeviceMessage {
                ts_ms,
                seq: None,
                body: Some(eldercare_proto::v1::device_message::Body::Event(
                    eldercare_proto::v1::Event {
                        r#type: "fall".into(),
                        confidence: Some(*confidence),
                        ..Default::default()
                    },
                )),
            }
            .encode_to_vec(),
            Payload::Drop => br#"{"online": false}"#.to_vec(),
        }
    }
}

/// An injected emergency and the alert it must raise: the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub home: usize,
    pub elder_id: String,
    pub what: Inject,
    /// When the episode starts.
    pub at_ms: i64,
    /// The earliest the alert can be raised under the rules: the episode
    /// start plus the rule's own duration (its hold, its timer, the fixes
    /// it needs).
    pub due_ms: i64,
    /// When the episode's effects end (the run may stop checking then).
    pub end_ms: i64,
    pub expected: AlertKind,
}

/// Local minute of the day, `tz` milliseconds from UTC.
fn local_minute(t: i64, tz: i64) -> i64 {
    (t + tz).rem_euclid(DAY) / MIN
}

/// The latest instant `<= t` at local minute `m` of a day, `tz`
/// milliseconds from UTC.
fn last_at_minute(t: i64, m: i64, tz: i64) -> i64 {
    let local = t + tz;
    let day_start = local - local.rem_euclid(DAY);
    let mut x = day_start + m * MIN;
    if x > local {
        x -= DAY;
    }
    x - tz
}

fn parse_hhmm(s: &str) -> i64 {
    let (h, m) = s.split_once(':').unwrap_or(("0", "0"));
    h.parse::<i64>().unwrap_or(0) * 60 + m.parse::<i64>().unwrap_or(0)
}

/// splitmix64: the home's structural choices (bedtimes, rooms, walks)
/// are hashed from the seed, the home and the slot, so the plan at any
/// time is known without simulating up to it.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Offset `dist_m` from `home` along `bearing` (radians from north).
pub fn offset_m(home: (f64, f64), bearing: f64, dist_m: f64) -> (f64, f64) {
    const M_PER_DEG: f64 = 111_195.0;
    (
        home.0 + dist_m * bearing.cos() / M_PER_DEG,
        home.1 + dist_m * bearing.sin() / (M_PER_DEG * home.0.to_radians().cos()),
    )
}

/// Metres between two fixes (equirectangular; exact enough within a city).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dy = (b.0 - a.0) * 111_195.0;
    let dx = (b.1 - a.1) * 111_195.0 * a.0.to_radians().cos();
    dx.hypot(dy)
}

/// One episode being played.
#[derive(Debug, Clone)]
struct Episode {
    truth: Truth,
    /// Cadence of the episode's abnormal readings.
    cadence: i64,
    /// When the person leaves bed (night episodes) or starts walking.
    leave: i64,
}

/// The simulation of one home.
pub struct HomeSim {
    home: Home,
    seed: u64,
    iv: Intervals,
    lim: Limits,
    rules: RuleConfig,
    night_start: i64,
    night_end: i64,
    /// The home's UTC offset, milliseconds.
    tz: i64,
    /// Resting heart rate, blood pressure baseline.
    hr_base: f64,
    sys_base: f64,
    walker: bool,
    napper: bool,
    episodes: Vec<Episode>,
    rng: StdRng,
    /// Simulated up to here (exclusive).
    t: i64,
    act: Option<Act>,
    next_vitals: i64,
    vitals_count: u64,
    next_sleep: i64,
    next_gps: i64,
    gps_count: u64,
    next_pir: i64,
    next_status: [i64; DEVICES_PER_HOME],
    seq: [u64; DEVICES_PER_HOME],
    battery: [f64; DEVICES_PER_HOME],
    /// Lost its connection for good (device or home offline).
    dead: [bool; DEVICES_PER_HOME],
    /// When it was lost.
    dead_at: [i64; DEVICES_PER_HOME],
    /// Messages already decided for later (one-off events).
    pending: Vec<Msg>,
    /// Spans the resident stays at home and up, moving about the living
    /// room and kitchen (around carers' visits: [`HomeSim::keep_in`]).
    kept: Vec<(i64, i64)>,
}

impl HomeSim {
    /// A home whose messages start at `t0`. `injections` are the
    /// episodes to play, by start time; the home must be staged for them
    /// ([`crate::stage`]).
    pub fn new(
        home: &Home,
        seed: u64,
        rules: &RuleConfig,
        iv: Intervals,
        t0: i64,
        injections: &[(Inject, i64)],
    ) -> HomeSim {
        let h = mix(seed ^ (home.index as u64).wrapping_mul(0x1000_0001));
        let mut rng = StdRng::seed_from_u64(h);
        let lim = Limits::for_rules(rules);
        // Heard at least every registered heartbeat.
        let iv = Intervals {
            status_ms: iv.status_ms.min(i64::from(home.heartbeat_s) * S),
            ..iv
        };
        let mut sim = HomeSim {
            home: home.clone(),
            seed: h,
            iv,
            lim,
            rules: rules.clone(),
            night_start: parse_hhmm(&home.night.start),
            night_end: parse_hhmm(&home.night.end),
            tz: i64::from(home.utc_offset_h) * HOUR,
            hr_base: rng.random_range(60.0..72.0),
            sys_base: rng.random_range(115.0..135.0),
            walker: h % 10 < 7,
            napper: (h >> 8) % 10 < 4,
            episodes: Vec::new(),
            rng,
            t: t0,
            act: None,
            next_vitals: t0,
            vitals_count: 0,
            next_sleep: t0,
            next_gps: t0,
            gps_count: 0,
            next_pir: i64::MAX,
            next_status: [t0; DEVICES_PER_HOME],
            seq: [0; DEVICES_PER_HOME],
            battery: [0.0; DEVICES_PER_HOME],
            dead: [false; DEVICES_PER_HOME],
            dead_at: [i64::MAX; DEVICES_PER_HOME],
            pending: Vec::new(),
            kept: Vec::new(),
        };
        // Spread the first messages over the first seconds, as devices
        // powering up would (over one interval when that is shorter, so a
        // load test runs at its rate from the start).
        let spread = (3 * S).min(sim.iv.status_ms).max(1);
        for d in 0..DEVICES_PER_HOME {
            sim.next_status[d] = t0 + sim.rng.random_range(0..spread);
            sim.battery[d] = sim.rng.random_range(55.0..100.0);
        }
        sim.next_vitals = t0 + sim.rng.random_range(0..sim.iv.vitals_ms);
        sim.next_gps = t0 + sim.rng.random_range(0..sim.iv.gps_ms);
        let mut inj = injections.to_vec();
        inj.sort_by_key(|(_, at)| *at);
        for (what, at) in inj {
            let ep = sim.episode(what, at);
            sim.episodes.push(ep);
        }
        sim
    }

    /// Devices report at these intervals from now on (a burst).
    pub fn set_intervals(&mut self, iv: Intervals) {
        self.iv = iv;
        self.next_vitals = self.next_vitals.min(self.t + iv.vitals_ms);
        self.next_sleep = self.next_sleep.min(self.t + iv.sleep_ms);
        self.next_gps = self.next_gps.min(self.t + iv.gps_ms);
        for n in &mut self.next_status {
            *n = (*n).min(self.t + iv.status_ms);
        }
    }

    /// Over each of `spans` the resident is at home and up, moving
    /// between the living room and the kitchen: no walk, nap or
    /// night-time trip overlaps them. So what the home's sensors show
    /// then of anyone else (a carer at the entrance, motion while the
    /// resident is in bed or out) is theirs only.
    pub fn keep_in(&mut self, spans: Vec<(i64, i64)>) {
        self.kept = spans;
    }

    /// Messages from outside the resident's life (a carer's tag reads
    /// and footprints), published with the home's own in time order.
    pub fn add_messages(&mut self, msgs: impl IntoIterator<Item = Msg>) {
        self.pending.extend(msgs);
    }

    /// The injected emergencies of this home and the alerts they must raise.
    pub fn truths(&self) -> Vec<Truth> {
        self.episodes.iter().map(|e| e.truth.clone()).collect()
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    fn episode(&mut self, what: Inject, at: i64) -> Episode {
        let r = &self.rules;
        let hold = |s: u32| i64::from(s) * S;
        let after = hold(r.out_of_bed.after_s);
        let moving = hold(r.out_of_bed.moving_window_s);
        // Abnormal readings come at least every 5 s, whatever the
        // device's usual interval: the holds tolerate gaps of 15 s and up.
        let vit_c = self.iv.vitals_ms.min(5 * S);
        let bed_c = self.iv.sleep_ms.min(5 * S);
        let steps = |d: i64, c: i64| (d + c - 1) / c * c;
        let vital_due = at + steps(hold(r.vitals.hold_s), vit_c);
        let grace = hold(r.offline.grace_s);
        let (due, end, leave, cadence) = match what {
            Inject::Sos | Inject::SosCancel | Inject::LowBattery => (at, at + MIN, at, 0),
            // Lying still until found; the run looks no further than
            // other rules allow stillness (inactivity by day).
            Inject::Fall => (
                at,
                at + (10 * MIN).min(hold(r.inactivity.after_s) * 2 / 3),
                at,
                0,
            ),
            Inject::FallUp => (at, at + 5 * MIN, at, 0),
            Inject::Tachycardia | Inject::Bradycardia | Inject::Hypoxia | Inject::Fever => {
                (vital_due, vital_due + 20 * S, at, vit_c)
            }
            Inject::NoBreathing => {
                let due = at + steps(hold(r.no_breathing.hold_s), bed_c);
                (due, at + 10 * MIN, at, bed_c)
            }
            Inject::OutOfBed | Inject::BathroomFall => {
                // Asleep a minute, then up; the last motion is seen
                // shortly after leaving bed (see `episode_act`).
                let leave = at + MIN;
                let last_motion = leave + if what == Inject::OutOfBed { 21 } else { 16 } * S;
                let due = (leave + after).max(last_motion + moving);
                (due, due + 5 * MIN, leave, 0)
            }
            Inject::Inactivity => {
                let due = at + hold(r.inactivity.after_s);
                (due, due + 5 * MIN, at, 0)
            }
            Inject::Wandering => {
                // Out of the door 10 s in, a fix 30 s later and then every
                // GPS interval; raised at the `fixes`-th fix outside.
                let leave = at + 10 * S;
                let radius = self.home.safe_radius_m;
                let mut k = 0;
                let mut outside = 0;
                let due = loop {
                    let fix = leave + 30 * S + k * self.iv.gps_ms;
                    if wander_dist(fix - leave) > radius {
                        outside += 1;
                        if outside >= i64::from(r.geofence.fixes) {
                            break fix;
                        }
                    }
                    k += 1;
                };
                (due, due + 5 * MIN, leave, 0)
            }
            Inject::DeviceOffline | Inject::HomeOffline => (at + grace, at + grace + MIN, at, 0),
        };
        Episode {
            truth: Truth {
                home: self.home.index,
                elder_id: self.home.elder_id.clone(),
                what,
                at_ms: at,
                due_ms: due,
                end_ms: end,
                expected: what.alert_kind(),
            },
            cadence,
            leave,
        }
    }

    /// The episode whose span holds `t`.
    fn episode_at(&self, t: i64) -> Option<&Episode> {
        self.episodes
            .iter()
            .find(|e| e.truth.at_ms <= t && t < e.truth.end_ms)
    }

    /// Whether `[a, b)` comes within 30 minutes of an episode: ordinary
    /// life then keeps to the plain routine (no walk, nap or night-time
    /// trip), so the episode starts from the state it was staged for.
    fn busy(&self, a: i64, b: i64) -> bool {
        self.episodes
            .iter()
            .any(|e| e.truth.at_ms - 30 * MIN < b && a < e.truth.end_ms)
            || self.kept.iter().any(|&(from, to)| from < b && a < to)
    }

    /// What the resident does at `t`.
    fn act_at(&self, t: i64) -> Act {
        if let Some(ep) = self.episode_at(t)
            && let Some(a) = self.episode_act(ep, t)
        {
            return a;
        }
        if self.kept.iter().any(|&(from, to)| from <= t && t < to) {
            let slot = t.div_euclid((2 * MIN).min(self.lim.pir_gap_ms * 5).max(S));
            let r = mix(self.seed ^ 0x6b ^ (slot as u64).wrapping_mul(0x9e37)) % 10;
            return Act::Room(if r < 6 { LIVING } else { KITCHEN });
        }
        self.routine(t)
    }

    /// The activity an episode imposes at `t`, if any.
    fn episode_act(&self, ep: &Episode, t: i64) -> Option<Act> {
        let at = ep.truth.at_ms;
        Some(match ep.truth.what {
            Inject::Fall => Act::Still(LIVING),
            Inject::FallUp => {
                if t < at + 20 * S {
                    Act::Still(LIVING)
                } else {
                    Act::Room(LIVING)
                }
            }
            Inject::NoBreathing => Act::InBed,
            Inject::OutOfBed | Inject::BathroomFall => {
                let l = ep.leave;
                let bath = ep.truth.what == Inject::BathroomFall;
                // One movement seen in each room on the way (a second of
                // motion, then standing or lying still there).
                match t {
                    t if t < l => Act::InBed,
                    t if t < l + S => Act::Room(BEDROOM),
                    t if bath && t < l + 15 * S => Act::Still(BEDROOM),
                    t if bath && t < l + 16 * S => Act::Room(BATHROOM),
                    _ if bath => Act::Still(BATHROOM),
                    t if t < l + 20 * S => Act::Still(BEDROOM),
                    t if t < l + 21 * S => Act::Room(LIVING),
                    _ => Act::Still(LIVING),
                }
            }
            // The last movement is sent with the episode's start
            // (`episode_events`); from then on, sitting still.
            Inject::Inactivity => Act::Still(LIVING),
            Inject::Wandering => {
                if t < ep.leave {
                    Act::Room(ENTRANCE)
                } else {
                    Act::Wander {
                        start: ep.leave,
                        bearing: (self.seed % 628) as f64 / 100.0,
                    }
                }
            }
            _ => return None,
        })
    }

    /// Ordinary life at `t`.
    fn routine(&self, t: i64) -> Act {
        let h = |salt: u64, n: i64| mix(self.seed ^ salt ^ (n as u64).wrapping_mul(0x9e37));
        // The night that began most recently (its end follows it), and
        // the sleep in it.
        let ns = last_at_minute(t, self.night_start, self.tz);
        let ne = last_at_minute(ns + DAY, self.night_end, self.tz);
        let night_no = ns.div_euclid(DAY);
        let bed = ns + (5 + (h(1, night_no) % 21) as i64) * MIN;
        let wake = ne + ((h(2, night_no) % 21) as i64) * MIN;
        if t >= bed && t < wake {
            return self.asleep(t, bed, wake, night_no);
        }
        // The next bedtime, at least five minutes into the next night.
        let next_bed = ns + DAY + 5 * MIN;
        // Awake at home (or out), in slots of a few minutes.
        let slot_ms = (10 * MIN).min(self.lim.pir_gap_ms * 5).max(MIN);
        let slot = t.div_euclid(slot_ms);
        let minute = local_minute(t, self.tz);
        // A walk a day, mid-morning or mid-afternoon.
        if self.walker && t >= wake {
            let day_no = (t + self.tz).div_euclid(DAY);
            let start_min = if h(3, day_no) % 2 == 0 {
                9 * 60 + 30
            } else {
                15 * 60 + 30
            };
            let start = last_at_minute(t, start_min, self.tz);
            let len = (self.lim.walk_ms).min((20 + (h(4, day_no) % 30) as i64) * MIN);
            let end = start + len;
            if t >= start && t < end && start >= wake && end <= next_bed && !self.busy(start, end) {
                let reach = self.home.safe_radius_m
                    * self.lim.walk_reach
                    * (0.4 + 0.6 * ((h(5, day_no) % 100) as f64 / 100.0));
                return Act::Walk {
                    start,
                    end,
                    bearing: (h(6, day_no) % 628) as f64 / 100.0,
                    reach_m: reach,
                };
            }
        }
        // An after-lunch nap.
        if self.napper && (13 * 60 + 20..14 * 60).contains(&minute) {
            let start = last_at_minute(t, 13 * 60 + 20, self.tz);
            if start >= wake && !self.busy(start, start + 40 * MIN) {
                return Act::InBed;
            }
        }
        // The room of the slot, by time of day.
        let since_wake = if t >= wake {
            t - wake
        } else {
            t - (wake - DAY)
        };
        let r = h(7, slot) % 100;
        let room = if (0..15 * MIN).contains(&since_wake) {
            BATHROOM
        } else if (6 * 60..9 * 60).contains(&minute)
            || (11 * 60..12 * 60 + 30).contains(&minute)
            || (17 * 60..18 * 60 + 30).contains(&minute)
        {
            // Meals.
            if r < 60 {
                KITCHEN
            } else if r < 90 {
                LIVING
            } else {
                BATHROOM
            }
        } else if r < 65 {
            LIVING
        } else if r < 80 {
            KITCHEN
        } else if r < 90 {
            BEDROOM
        } else {
            BATHROOM
        };
        Act::Room(room)
    }

    /// Asleep between `bed` and `wake`, but for bathroom trips.
    fn asleep(&self, t: i64, bed: i64, wake: i64, night_no: i64) -> Act {
        let trips = mix(self.seed ^ 0xb47 ^ night_no as u64) % 3;
        let len = wake - bed;
        for k in 0..trips {
            let at = bed + len * (1 + 2 * k as i64) / (2 * trips as i64 + 1);
            let trip = self.lim.trip_ms.min(5 * MIN);
            if t >= at && t < at + trip && !self.busy(at, at + trip) {
                let r = t - at;
                return if r < 20 * S {
                    Act::Room(BEDROOM)
                } else if r < trip - 20 * S {
                    Act::Room(BATHROOM)
                } else {
                    Act::Room(BEDROOM)
                };
            }
        }
        Act::InBed
    }

    fn next_seq(&mut self, d: usize) -> u64 {
        self.seq[d] += 1;
        self.seq[d]
    }

    fn json(
        &mut self,
        at: i64,
        d: usize,
        stream: &'static str,
        mut body: serde_json::Value,
    ) -> Msg {
        body["ts"] = json!(at);
        body["seq"] = json!(self.next_seq(d));
        Msg {
            at_ms: at,
            device: d,
            body: Payload::Json { stream, body },
            trigger: false,
        }
    }

    /// Appends the messages taken in `[self.t, until)` to `out`, in time
    /// order, and moves on to `until`.
    pub fn advance(&mut self, until: i64, out: &mut Vec<Msg>) {
        let first = out.len();
        // One-second steps for what the resident does; devices report on
        // their own timers in between.
        while self.t < until {
            let step_end = ((self.t / S) + 1) * S;
            let end = step_end.min(until);
            let t = self.t;
            let act = self.act_at(t);
            if self.act != Some(act) {
                self.transition(t, act, out);
                self.act = Some(act);
            }
            self.episode_events(t, end, out);
            self.timers(t, end, act, out);
            self.t = end;
        }
        let mut keep = Vec::new();
        for m in self.pending.drain(..) {
            if m.at_ms < until {
                out.push(m);
            } else {
                keep.push(m);
            }
        }
        self.pending = keep;
        out[first..].sort_by_key(|m| m.at_ms);
        // Nothing from a device once its connection is gone.
        let dead_at = self.dead_at;
        let tail: Vec<Msg> = out
            .drain(first..)
            .filter(|m| {
                let d = dead_at[m.device];
                m.at_ms < d || (m.at_ms == d && m.body == Payload::Drop)
            })
            .collect();
        out.extend(tail);
    }

    /// What a change of activity makes the devices send.
    fn transition(&mut self, t: i64, act: Act, out: &mut Vec<Msg>) {
        let was = self.act;
        let was_in_bed = was.is_some_and(Act::in_bed);
        if act.in_bed() != was_in_bed || was.is_none() {
            // The sleep sensor reports the change at once.
            let m = self.sleep_msg(t, act.in_bed());
            out.push(m);
            self.next_sleep = t + self.iv.sleep_ms;
        }
        match act {
            Act::Room(r) => {
                if was != Some(act) {
                    let at = t + self.rng.random_range(0..S);
                    let m = self.pir_msg(at, r);
                    out.push(m);
                    self.next_pir = at + self.pir_gap();
                }
            }
            Act::Walk { .. } | Act::Wander { .. } => {
                if !was.is_some_and(Act::outdoors) {
                    // Out of the front door; the watch now reports outdoors.
                    let m = self.pir_msg(t, ENTRANCE);
                    out.push(m);
                    self.next_gps = t + 30 * S;
                }
                self.next_pir = i64::MAX;
            }
            Act::InBed | Act::Still(_) => self.next_pir = i64::MAX,
        }
        if was.is_some_and(Act::outdoors) && !act.outdoors() {
            // Back home: through the door, and an indoor fix soon.
            let m = self.pir_msg(t, ENTRANCE);
            out.push(m);
            self.next_gps = t + 10 * S;
        }
    }

    /// The next re-trigger of a PIR while the person moves about its
    /// room: one to four PIR intervals (30 s to 2 min by default), and
    /// never more than the limits allow.
    fn pir_gap(&mut self) -> i64 {
        let lo = self.iv.pir_ms.min(self.lim.pir_gap_ms);
        let hi = (4 * self.iv.pir_ms).min(self.lim.pir_gap_ms).max(lo + 1);
        self.rng.random_range(lo..hi)
    }

    fn pir_msg(&mut self, at: i64, room: usize) -> Msg {
        let d = PIR + room;
        self.json(
            at,
            d,
            "motion",
            json!({"room": ROOMS[room], "motion": true}),
        )
    }

    fn sleep_msg(&mut self, at: i64, in_bed: bool) -> Msg {
        let body = if in_bed {
            let (hr, rr) = self.sleeping_hr_rr();
            json!({"in_bed": true, "hr": hr, "rr": rr,
                "movement": (self.rng.random_range(0.0..0.25f64) * 100.0).round() / 100.0})
        } else {
            json!({"in_bed": false})
        };
        self.json(at, BED, "sleep", body)
    }

    fn sleeping_hr_rr(&mut self) -> (u32, u32) {
        let hr = (self.hr_base - 6.0 + self.rng.random_range(-3.0..3.0)).round() as u32;
        (hr.max(48), self.rng.random_range(12..=16))
    }

    /// The one-off messages of the episodes in `[t, end)`.
    fn episode_events(&mut self, t: i64, end: i64, out: &mut Vec<Msg>) {
        let eps: Vec<Episode> = self
            .episodes
            .iter()
            .filter(|e| e.truth.at_ms >= t && e.truth.at_ms < end)
            .cloned()
            .collect();
        for ep in eps {
            let at = ep.truth.at_ms;
            match ep.truth.what {
                Inject::Sos => {
                    let mut m = self.json(at, BTN, "event", json!({"type": "sos"}));
                    m.trigger = true;
                    out.push(m);
                }
                Inject::SosCancel => {
                    let mut m = self.json(at, BTN, "event", json!({"type": "sos"}));
                    m.trigger = true;
                    out.push(m);
                    let c = self.json(at + 8 * S, BTN, "event", json!({"type": "sos_cancel"}));
                    self.pending.push(c);
                }
                Inject::Fall | Inject::FallUp => out.push(Msg {
                    at_ms: at,
                    device: BTN,
                    body: Payload::FallPb { confidence: 0.93 },
                    trigger: true,
                }),
                Inject::LowBattery => {
                    self.battery[BTN] = 12.0;
                    let mut m = self.status_msg(at, BTN);
                    m.trigger = true;
                    out.push(m);
                    self.next_status[BTN] = at + self.iv.status_ms;
                }
                // The abnormal readings start with the episode.
                Inject::Tachycardia | Inject::Bradycardia | Inject::Hypoxia | Inject::Fever => {
                    self.next_vitals = at;
                }
                Inject::NoBreathing => self.next_sleep = at,
                // The last movement, then stillness.
                Inject::Inactivity => {
                    let m = self.pir_msg(at, LIVING);
                    out.push(m);
                    self.next_pir = i64::MAX;
                }
                Inject::DeviceOffline => {
                    self.dead[GPS] = true;
                    self.dead_at[GPS] = at;
                    out.push(Msg {
                        at_ms: at,
                        device: GPS,
                        body: Payload::Drop,
                        trigger: false,
                    });
                }
                Inject::HomeOffline => {
                    for d in 0..DEVICES_PER_HOME {
                        self.dead[d] = true;
                        self.dead_at[d] = at;
                        out.push(Msg {
                            at_ms: at,
                            device: d,
                            body: Payload::Drop,
                            trigger: false,
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Abnormal vitals of an episode at `t`, if one is on.
    fn abnormal_vitals(&self, t: i64) -> Option<(serde_json::Value, bool, i64)> {
        let ep = self.episode_at(t)?;
        let body = match ep.truth.what {
            Inject::Tachycardia => json!({"hr": 150, "spo2": 97}),
            Inject::Bradycardia => json!({"hr": 35, "spo2": 97}),
            Inject::Hypoxia => json!({"hr": 88, "spo2": 88}),
            Inject::Fever => json!({"hr": 98, "spo2": 97, "temp_c": 39.6}),
            _ => return None,
        };
        Some((body, t == ep.truth.due_ms, ep.cadence))
    }

    /// The breathing stop of an episode at `t`: (trigger, cadence).
    fn no_breath(&self, t: i64) -> Option<(bool, i64)> {
        let ep = self.episode_at(t)?;
        (ep.truth.what == Inject::NoBreathing && t < ep.truth.at_ms + 30 * S)
            .then_some((t == ep.truth.due_ms, ep.cadence))
    }

    fn wander_fix_due(&self, t: i64) -> bool {
        self.episode_at(t)
            .is_some_and(|e| e.truth.what == Inject::Wandering && t == e.truth.due_ms)
    }

    /// Periodic reports due in `[t, end)`.
    fn timers(&mut self, t: i64, end: i64, act: Act, out: &mut Vec<Msg>) {
        // Vital-sign band.
        while !self.dead[BAND] && self.next_vitals < end {
            let at = self.next_vitals.max(t);
            if let Some((body, trigger, cadence)) = self.abnormal_vitals(at) {
                let mut m = self.json(at, BAND, "vitals", body);
                m.trigger = trigger;
                out.push(m);
                self.next_vitals = at + cadence;
                continue;
            }
            let body = self.vitals_body(at, act);
            let m = self.json(at, BAND, "vitals", body);
            out.push(m);
            self.next_vitals = at + self.iv.vitals_ms;
        }
        // Sleep sensor, while in bed.
        while !self.dead[BED] && act.in_bed() && self.next_sleep < end {
            let at = self.next_sleep.max(t);
            if let Some((trigger, cadence)) = self.no_breath(at) {
                let mut m = self.json(
                    at,
                    BED,
                    "sleep",
                    json!({"in_bed": true, "rr": 0, "movement": 0.0}),
                );
                m.trigger = trigger;
                out.push(m);
                self.next_sleep = at + cadence;
                continue;
            }
            let m = self.sleep_msg(at, true);
            out.push(m);
            self.next_sleep = at + self.iv.sleep_ms;
        }
        // PIR of the room the person moves about in.
        if let Act::Room(r) = act {
            while !self.dead[PIR + r] && self.next_pir < end {
                let at = self.next_pir.max(t);
                let m = self.pir_msg(at, r);
                out.push(m);
                self.next_pir = at + self.pir_gap();
            }
        }
        // GPS watch: outdoors every interval, indoors every ten.
        while !self.dead[GPS] && self.next_gps < end {
            let at = self.next_gps.max(t);
            let (lat, lon, acc) = match self.act_at(at) {
                Act::Walk {
                    start,
                    end,
                    bearing,
                    reach_m,
                } => {
                    let half = ((end - start) / 2).max(1) as f64;
                    let d = reach_m * (1.0 - ((at - start) as f64 - half).abs() / half);
                    let (lat, lon) = offset_m(self.home.location, bearing, d.max(0.0));
                    (lat, lon, 8)
                }
                Act::Wander { start, bearing } => {
                    let (lat, lon) = offset_m(self.home.location, bearing, wander_dist(at - start));
                    (lat, lon, 8)
                }
                _ => {
                    let b = self.rng.random_range(0.0..std::f64::consts::TAU);
                    let d = self.rng.random_range(0.0..15.0);
                    let (lat, lon) = offset_m(self.home.location, b, d);
                    (lat, lon, 25)
                }
            };
            let outdoors = self.act_at(at).outdoors();
            let trigger = self.wander_fix_due(at);
            let mut m = self.json(
                at,
                GPS,
                "location",
                json!({"lat": (lat * 1e6).round() / 1e6, "lon": (lon * 1e6).round() / 1e6, "accuracy_m": acc}),
            );
            m.trigger = trigger;
            out.push(m);
            self.gps_count += 1;
            self.next_gps = at
                + if outdoors {
                    self.iv.gps_ms
                } else {
                    10 * self.iv.gps_ms
                };
        }
        // Status heartbeats: battery and online.
        for d in 0..DEVICES_PER_HOME {
            while !self.dead[d] && self.next_status[d] < end {
                let at = self.next_status[d].max(t);
                let m = self.status_msg(at, d);
                out.push(m);
                self.next_status[d] = at + self.iv.status_ms;
            }
        }
    }

    fn status_msg(&mut self, at: i64, d: usize) -> Msg {
        // About 1 % a day (the band 3 %), drawn from the last report.
        let per_day = if d == BAND { 3.0 } else { 1.0 };
        if d != BTN || self.battery[BTN] > 12.0 {
            self.battery[d] -= per_day * self.iv.status_ms as f64 / DAY as f64;
            self.battery[d] = self.battery[d].max(31.0);
        }
        let pct = self.battery[d].round() as u32;
        let rssi = -45 - (mix(self.seed ^ d as u64) % 30) as i32;
        self.json(
            at,
            d,
            "status",
            json!({"battery_pct": pct, "online": true, "rssi": rssi, "fw": "2.4.1"}),
        )
    }

    fn vitals_body(&mut self, at: i64, act: Act) -> serde_json::Value {
        let minute = local_minute(at, self.tz) as f64;
        // Lowest in the small hours, highest in the afternoon.
        let circadian = -(std::f64::consts::TAU * (minute - 4.0 * 60.0) / 1440.0).cos();
        let (delta, spread) = match act {
            Act::InBed => (-6.0, 2.5),
            Act::Walk { .. } | Act::Wander { .. } => (18.0, 4.0),
            _ => (4.0, 3.5),
        };
        let hr = (self.hr_base + delta + 3.0 * circadian + self.rng.random_range(-spread..spread))
            .round()
            .clamp(50.0, 100.0) as u32;
        let spo2 = self.rng.random_range(96..=99);
        let mut body = json!({"hr": hr, "spo2": spo2});
        self.vitals_count += 1;
        let per_30min = (30 * MIN / self.iv.vitals_ms).max(1) as u64;
        if self.vitals_count % per_30min == 1 {
            let temp = 36.5 + 0.25 * circadian + self.rng.random_range(-0.15..0.15);
            body["temp_c"] = json!((temp * 10.0).round() / 10.0);
        }
        if self.vitals_count % (2 * per_30min) == 1 {
            let sys = (self.sys_base + 4.0 * circadian + self.rng.random_range(-8.0..8.0)).round();
            body["sys"] = json!(sys as u32);
            body["dia"] = json!((sys * 0.62 + self.rng.random_range(-4.0..4.0)).round() as u32);
        }
        body
    }
}

/// Seconds from an episode's start until its alert is due, under `rules`.
pub fn lead_s(what: Inject, rules: &RuleConfig) -> f64 {
    let home = &crate::homes(1, 0)[0];
    let sim = HomeSim::new(home, 0, rules, Intervals::default(), 0, &[(what, 0)]);
    sim.episodes[0].truth.due_ms as f64 / 1000.0
}

/// Metres from home `dt` after a wandering person leaves: a brisk,
/// confused 1.3 m/s from 20 m out.
fn wander_dist(dt: i64) -> f64 {
    20.0 + 1.3 * dt.max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_helpers() {
        // 2026-11-23 16:00 UTC is 00:00 in Shanghai, 11:00 at UTC-5.
        let midnight = 1_795_363_200_000;
        let (shanghai, minus5) = (8 * HOUR, -5 * HOUR);
        assert_eq!(local_minute(midnight, shanghai), 0);
        assert_eq!(local_minute(midnight + 90 * MIN, shanghai), 90);
        assert_eq!(local_minute(midnight, minus5), 11 * 60);
        assert_eq!(
            last_at_minute(midnight + 90 * MIN, 60, shanghai),
            midnight + 60 * MIN
        );
        assert_eq!(
            last_at_minute(midnight + 30 * MIN, 60, shanghai),
            midnight + 60 * MIN - DAY
        );
        assert_eq!(last_at_minute(midnight, 10 * 60, minus5), midnight - HOUR);
        let home = (31.2, 121.4);
        for b in [0.0, 1.0, 4.0] {
            assert!((distance_m(home, offset_m(home, b, 600.0)) - 600.0).abs() < 1.0);
        }
    }
}
