//! Weeks of one resident's life as a plan: their own normal, the
//! day-to-day noise around it, the odd days, and an injected drift, laid
//! out as contiguous segments of what they do (in bed, moving about a
//! room, sitting in one, out) with what each day and night amounted to
//! (the ground truth the engine's daily aggregates should see).
//!
//! Days are local calendar days (Asia/Shanghai) from [`EPOCH`], a
//! Monday. "The night of day `d`" starts on the evening of day `d`: its
//! bathroom visits, time in bed, heart and breathing rate in bed, and
//! the rise time of the morning after, are day `d`'s.
use crate::life::Limits;
use eldercare_rules::RuleConfig;
use rand::Rng;
use rand::rngs::StdRng;

pub const S: i64 = 1000;
pub const MIN: i64 = 60 * S;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// Shanghai is UTC+8 all year.
pub const TZ_OFFSET: i64 = 8 * HOUR;
/// 2026-11-23 00:00 in Asia/Shanghai, a Monday: day 0 of a drift run.
pub const EPOCH: i64 = 1_795_363_200_000;

/// Rooms, in the order of [`crate::life::ROOMS`].
pub const BEDROOM: usize = 0;
pub const BATHROOM: usize = 1;
pub const LIVING: usize = 2;
pub const KITCHEN: usize = 3;
pub const ENTRANCE: usize = 4;

/// A daily aggregate the engine learns each elder's normal of; `key()`
/// is the `subject` of its `trend` alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    NightBathroomVisits,
    TimeInBed,
    RiseTime,
    DayActivity,
    TimeOut,
    RestingHr,
    RestingRr,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::NightBathroomVisits,
        Metric::TimeInBed,
        Metric::RiseTime,
        Metric::DayActivity,
        Metric::TimeOut,
        Metric::RestingHr,
        Metric::RestingRr,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Metric::NightBathroomVisits => "night_bathroom_visits",
            Metric::TimeInBed => "time_in_bed",
            Metric::RiseTime => "rise_time",
            Metric::DayActivity => "day_activity",
            Metric::TimeOut => "time_out",
            Metric::RestingHr => "resting_hr",
            Metric::RestingRr => "resting_rr",
        }
    }

    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }
}

/// A slow change of one of the daily aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftKind {
    /// Night-time bathroom visits up by 2–3 a night, over 7 days.
    Nocturia,
    /// Moving about at home down by 30–50 %, over 10 days.
    LessActive,
    /// Breathing rate in bed up by 3–5 /min, over 10 days.
    BreathingUp,
    /// Resting heart rate (in bed) up by 8–12 /min, over 10 days.
    HeartRateUp,
    /// To bed 60–120 min earlier (time in bed up as much), over 10 days.
    MoreInBed,
    /// To bed and up 60–90 min later (time in bed unchanged), over 7 days.
    LaterRise,
    /// Time out of home down by 60–80 %, over 10 days (only drawn for
    /// elders who go out).
    StaysIn,
}

impl DriftKind {
    pub const ALL: [DriftKind; 7] = [
        DriftKind::Nocturia,
        DriftKind::LessActive,
        DriftKind::BreathingUp,
        DriftKind::HeartRateUp,
        DriftKind::MoreInBed,
        DriftKind::LaterRise,
        DriftKind::StaysIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DriftKind::Nocturia => "nocturia",
            DriftKind::LessActive => "less-active",
            DriftKind::BreathingUp => "breathing-up",
            DriftKind::HeartRateUp => "heart-rate-up",
            DriftKind::MoreInBed => "more-in-bed",
            DriftKind::LaterRise => "later-rise",
            DriftKind::StaysIn => "stays-in",
        }
    }

    /// The aggregate it moves (the only one).
    pub fn metric(self) -> Metric {
        match self {
            DriftKind::Nocturia => Metric::NightBathroomVisits,
            DriftKind::LessActive => Metric::DayActivity,
            DriftKind::BreathingUp => Metric::RestingRr,
            DriftKind::HeartRateUp => Metric::RestingHr,
            DriftKind::MoreInBed => Metric::TimeInBed,
            DriftKind::LaterRise => Metric::RiseTime,
            DriftKind::StaysIn => Metric::TimeOut,
        }
    }

    /// Days from onset to the full change.
    pub fn ramp_days(self) -> u32 {
        match self {
            DriftKind::Nocturia | DriftKind::LaterRise => 7,
            _ => 10,
        }
    }

    /// The range the full change is drawn from (visits a night, a share
    /// of activity or time out, beats or breaths a minute, minutes).
    pub fn magnitude_range(self) -> (f64, f64) {
        match self {
            DriftKind::Nocturia => (2.0, 3.0),
            DriftKind::LessActive => (0.3, 0.5),
            DriftKind::BreathingUp => (3.0, 5.0),
            DriftKind::HeartRateUp => (8.0, 12.0),
            DriftKind::MoreInBed => (60.0, 120.0),
            DriftKind::LaterRise => (60.0, 90.0),
            DriftKind::StaysIn => (0.6, 0.8),
        }
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An injected drift: from the start of `onset_day` (local midnight),
/// rising linearly to `magnitude` over `ramp_days` and staying there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub kind: DriftKind,
    pub onset_day: u32,
    pub ramp_days: u32,
    pub magnitude: f64,
}

impl Drift {
    /// The share of the full change on day (or night) `d`: 1/ramp on the
    /// onset day, all of it from `onset + ramp - 1`.
    pub fn share(&self, d: u32) -> f64 {
        if d < self.onset_day {
            return 0.0;
        }
        (f64::from(d - self.onset_day + 1) / f64::from(self.ramp_days.max(1))).min(1.0)
    }

    /// When it starts: local midnight of the onset day.
    pub fn onset_ms(&self) -> i64 {
        EPOCH + i64::from(self.onset_day) * DAY
    }

    /// The change on day `d` if this drift is of `kind`, else 0.
    fn of(drift: Option<&Drift>, kind: DriftKind, d: u32) -> f64 {
        drift
            .filter(|x| x.kind == kind)
            .map_or(0.0, |x| x.share(d) * x.magnitude)
    }
}

/// One elder's own normal, drawn once per home.
#[derive(Debug, Clone, PartialEq)]
pub struct Normal {
    /// Usual rise time, minutes after midnight: 05:30–08:00.
    pub rise_min: f64,
    /// Usual time in bed a night, hours: 7.5–9.5 (so to bed 20:00–00:30).
    pub in_bed_h: f64,
    /// Night-to-night spread (sd, minutes) of the bed time: 10–30.
    pub bed_sd_min: f64,
    /// Of the rise time: 10–25.
    pub rise_sd_min: f64,
    /// To bed and up later on Friday and Saturday nights: 0–45 min.
    pub weekend_shift_min: f64,
    /// Mean bathroom visits a night (Poisson): 0.2–2.0.
    pub visits: f64,
    /// Heart rate in bed (resting): 52–68 /min.
    pub hr: f64,
    /// Breathing rate in bed: 12.5–17 /min.
    pub rr: f64,
    /// Share of waking time at home spent moving about: 0.30–0.70.
    pub activity: f64,
    /// Walks a day (Poisson, at most 2): 0 for one in five, else 0.5–1.5.
    pub walks: f64,
    /// Usual walk length, minutes: 20–45.
    pub walk_min: f64,
    /// Naps after lunch (two in five).
    pub napper: bool,
    /// Systolic blood pressure: 115–135.
    pub sys: f64,
}

impl Normal {
    pub fn draw(rng: &mut StdRng) -> Normal {
        Normal {
            rise_min: rng.random_range(330.0..480.0),
            in_bed_h: rng.random_range(7.5..9.5),
            bed_sd_min: rng.random_range(10.0..30.0),
            rise_sd_min: rng.random_range(10.0..25.0),
            weekend_shift_min: rng.random_range(0.0..45.0),
            visits: rng.random_range(0.2..2.0),
            hr: rng.random_range(52.0..68.0),
            rr: rng.random_range(12.5..17.0),
            activity: rng.random_range(0.30..0.70),
            walks: if rng.random_bool(0.2) {
                0.0
            } else {
                rng.random_range(0.5..1.5)
            },
            walk_min: rng.random_range(20.0..45.0),
            napper: rng.random_bool(0.4),
            sys: rng.random_range(115.0..135.0),
        }
    }

    /// Usual bed time, minutes after the midnight of its day (may be
    /// past 24:00).
    pub fn bed_min(&self) -> f64 {
        self.rise_min + 24.0 * 60.0 - self.in_bed_h * 60.0
    }

    /// The registry's night window for this elder, minutes after
    /// midnight: starting an hour before the usual bed time (on the half
    /// hour), ending 75 min before the usual rise time (on the quarter),
    /// so that getting up in the morning is never "out of bed at night".
    pub fn night_window(&self) -> (u16, u16) {
        let start = ((self.bed_min() - 60.0) / 30.0).floor() * 30.0;
        let end = ((self.rise_min - 75.0) / 15.0).floor() * 15.0;
        (
            (start as i64).rem_euclid(1440) as u16,
            (end as i64).rem_euclid(1440) as u16,
        )
    }
}

/// What the resident does over a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// In bed (the night's sleep, or a nap).
    InBed { night: bool },
    /// At home in a room, moving about (its PIR fires every 30 s–2 min)
    /// or sitting (it fires once, on coming in).
    Room { room: usize, moving: bool },
    /// Out of home within the safe radius, out and back along `bearing`.
    Out { bearing: f64, reach_m: f64 },
}

/// A stretch of one activity. Segments are contiguous.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seg {
    pub start: i64,
    pub end: i64,
    pub act: Act,
    /// The day this stretch counts for (a night: the day it began).
    pub day: u32,
    /// Heart and breathing rate in bed that day or night (means).
    pub hr: f64,
    pub rr: f64,
    /// A restless night: more movement in bed.
    pub restless: bool,
    /// Part of the night (in bed, or a trip out of it), not of the day.
    pub night: bool,
}

/// Odd days, as flags.
pub const LATE_OUT: u8 = 1;
pub const RESTLESS: u8 = 2;
pub const VISITOR: u8 = 4;
pub const DAY_OUT: u8 = 8;
pub const UNWELL: u8 = 16;

pub fn odd_names(flags: u8) -> Vec<&'static str> {
    [
        (LATE_OUT, "late_out"),
        (RESTLESS, "restless"),
        (VISITOR, "visitor"),
        (DAY_OUT, "day_out"),
        (UNWELL, "unwell"),
    ]
    .into_iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| n)
    .collect()
}

/// What day `d` and the night after it amounted to, as planned (PIR
/// counts are filled in as the readings are made).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayTruth {
    pub day: u32,
    /// Odd-day flags ([`LATE_OUT`], ...).
    pub odd: u8,
    /// Share of the injected drift in effect.
    pub drift_share: f64,
    pub night_bathroom_visits: u32,
    /// In bed from getting in to the final getting up, less the trips.
    pub time_in_bed_min: f64,
    /// The final getting up the morning after, minutes after midnight.
    pub rise_time_min: f64,
    /// Minutes moving about at home between getting up and going to bed.
    pub active_min: f64,
    /// PIR motions between getting up and going to bed (emitted).
    pub pir_motions: u32,
    pub time_out_min: f64,
    /// Mean heart and breathing rate in bed that night.
    pub resting_hr: f64,
    pub resting_rr: f64,
}

impl DayTruth {
    pub fn value(&self, m: Metric) -> f64 {
        match m {
            Metric::NightBathroomVisits => f64::from(self.night_bathroom_visits),
            Metric::TimeInBed => self.time_in_bed_min,
            Metric::RiseTime => self.rise_time_min,
            Metric::DayActivity => f64::from(self.pir_motions),
            Metric::TimeOut => self.time_out_min,
            Metric::RestingHr => self.resting_hr,
            Metric::RestingRr => self.resting_rr,
        }
    }
}

/// A home's whole run, planned.
#[derive(Debug, Clone)]
pub struct Plan {
    pub normal: Normal,
    pub drift: Option<Drift>,
    pub segs: Vec<Seg>,
    pub days: Vec<DayTruth>,
    /// The plan covers `[EPOCH, end)`.
    pub end: i64,
}

/// How far the simulated life may go under the rules in force (a
/// rehearsal's short timers shorten it, as [`Limits`] does for `life`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Longest night-time trip out of bed.
    pub trip_ms: i64,
    /// Longest stretch sitting still by day (no PIR motion).
    pub still_ms: i64,
    /// Longest walk.
    pub walk_ms: i64,
    /// Longest time out by day (no motion at home, within the safe
    /// radius, so inactivity keeps counting).
    pub out_ms: i64,
    /// Furthest out, metres.
    pub reach_m: f64,
}

impl Bounds {
    pub fn for_rules(r: &RuleConfig, safe_radius_m: f64) -> Bounds {
        let lim = Limits::for_rules(r);
        let inactivity = i64::from(r.inactivity.after_s) * S;
        Bounds {
            trip_ms: lim.trip_ms,
            still_ms: (60 * MIN).min(inactivity / 4).max(MIN),
            walk_ms: lim.walk_ms,
            out_ms: (inactivity - 45 * MIN).max(inactivity / 2).max(MIN),
            reach_m: safe_radius_m * lim.walk_reach,
        }
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Normal noise of `sd`, cut at 2.5 sd.
fn noise(rng: &mut StdRng, sd: f64) -> f64 {
    sd * normal(rng).clamp(-2.5, 2.5)
}

pub fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    // Knuth's: fine for the small means here.
    let l = (-lambda.max(0.0)).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.random_range(0.0..1.0f64);
        if p <= l || k >= 50 {
            return k;
        }
        k += 1;
    }
}

/// Local minute of the day of `t`.
pub fn local_minute(t: i64) -> i64 {
    (t + TZ_OFFSET).rem_euclid(DAY) / MIN
}

/// Local midnight of day `d`.
fn midnight(d: u32) -> i64 {
    EPOCH + i64::from(d) * DAY
}

fn at_min(d: u32, minutes: f64) -> i64 {
    midnight(d) + (minutes * MIN as f64) as i64
}

/// The plan of one night: getting in, the trips, the final getting up.
struct Night {
    bed: i64,
    rise: i64,
    hr: f64,
    rr: f64,
    visits: u32,
    restless: bool,
}

/// Builds the segments, each taking the context in force.
struct Builder {
    segs: Vec<Seg>,
    day: u32,
    hr: f64,
    rr: f64,
    restless: bool,
    night: bool,
}

impl Builder {
    /// The next segment, from the end of the last until `end`.
    fn push(&mut self, end: i64, act: Act) {
        let start = self.now();
        if end <= start {
            return;
        }
        self.segs.push(Seg {
            start,
            end,
            act,
            day: self.day,
            hr: self.hr,
            rr: self.rr,
            restless: self.restless,
            night: self.night,
        });
    }

    fn now(&self) -> i64 {
        self.segs.last().map_or(EPOCH, |s| s.end)
    }

    /// Day `d`'s waking hours from here.
    fn by_day(&mut self, d: u32, hr: f64, rr: f64) {
        self.day = d;
        self.hr = hr;
        self.rr = rr;
        self.restless = false;
        self.night = false;
    }
}

impl Plan {
    /// `days` days of life, and the morning after the last night.
    pub fn new(
        rng: &mut StdRng,
        normal: Normal,
        drift: Option<Drift>,
        days: u32,
        b: &Bounds,
    ) -> Plan {
        let dr = drift.as_ref();
        let n = &normal;
        let mut unwell_left = 0u32;
        let mut out = Builder {
            segs: Vec::new(),
            day: 0,
            hr: n.hr,
            rr: n.rr,
            restless: false,
            night: true,
        };
        let mut truths = Vec::with_capacity(days as usize);
        // Asleep at the start: the tail of the night before day 0.
        let rise0 = at_min(0, n.rise_min + noise(rng, n.rise_sd_min));
        out.push(rise0, Act::InBed { night: true });
        for d in 0..days {
            let weekday = d % 7;
            let fri_sat_night = weekday == 4 || weekday == 5;
            let weekend = weekday >= 5;
            let stays_in = Drift::of(dr, DriftKind::StaysIn, d);
            let odd = odd_day(rng, &mut unwell_left, weekend, fri_sat_night, stays_in);
            let unwell = odd & UNWELL != 0;
            let restless = odd & RESTLESS != 0;
            let if_ = |flag: u8, v: f64| if odd & flag != 0 { v } else { 0.0 };

            // The night after day d, planned first: the day ends with it.
            let late = if odd & LATE_OUT != 0 {
                rng.random_range(60.0..150.0)
            } else {
                0.0
            };
            let weekend_shift = if fri_sat_night {
                n.weekend_shift_min
            } else {
                0.0
            };
            let phase = Drift::of(dr, DriftKind::LaterRise, d);
            let earlier = Drift::of(dr, DriftKind::MoreInBed, d);
            let ill = if_(UNWELL, 45.0);
            let bed = at_min(
                d,
                n.bed_min() + noise(rng, n.bed_sd_min) + weekend_shift + late + phase
                    - earlier
                    - ill,
            );
            let lie_in = if late > 0.0 {
                rng.random_range(30.0..60.0)
            } else {
                0.0
            };
            let rise = at_min(
                d + 1,
                n.rise_min + noise(rng, n.rise_sd_min) + weekend_shift + lie_in + phase + ill,
            );
            let visits_mean = n.visits
                + if_(RESTLESS, 1.0)
                + if_(UNWELL, 0.7)
                + Drift::of(dr, DriftKind::Nocturia, d);
            let night = Night {
                bed,
                rise,
                hr: n.hr
                    + noise(rng, 1.5)
                    + if_(RESTLESS, 3.0)
                    + if_(UNWELL, 4.0)
                    + Drift::of(dr, DriftKind::HeartRateUp, d),
                rr: n.rr
                    + noise(rng, 0.5)
                    + if_(RESTLESS, 1.0)
                    + if_(UNWELL, 1.5)
                    + Drift::of(dr, DriftKind::BreathingUp, d),
                visits: poisson(rng, visits_mean),
                restless,
            };

            // Day d, from getting up to going to bed.
            let mut t = DayTruth {
                day: d,
                odd,
                drift_share: dr.map_or(0.0, |x| x.share(d)),
                ..DayTruth::default()
            };
            out.by_day(
                d,
                n.hr + Drift::of(dr, DriftKind::HeartRateUp, d),
                n.rr + Drift::of(dr, DriftKind::BreathingUp, d),
            );
            // How active the day is, against the elder's normal: moving
            // about more of the time and changing rooms more often.
            let pace = ((1.0 + noise(rng, 0.12))
                * if weekend { 0.95 } else { 1.0 }
                * if odd & VISITOR != 0 { 1.4 } else { 1.0 }
                * if unwell { 0.65 } else { 1.0 }
                * (1.0 - Drift::of(dr, DriftKind::LessActive, d)))
            .max(0.2);
            let activity = Activity {
                p_moving: (n.activity * pace).clamp(0.05, 0.95),
                pace,
            };
            let fixed = fixed_parts(rng, n, dr, d, odd, weekend, bed, b);
            // Up: the bathroom first.
            let up = out.now();
            let wash = up + rng.random_range(8..15) * MIN;
            out.push(
                wash,
                Act::Room {
                    room: BATHROOM,
                    moving: true,
                },
            );
            // Before bed: the bathroom, then the bedroom.
            let evening = bed - rng.random_range(10..20) * MIN;
            let mut last_end = wash;
            for (s, e, act) in fixed {
                if s < last_end + 10 * MIN || e > evening {
                    continue;
                }
                fill_rooms(rng, &mut out, s, activity, b);
                out.push(e, act);
                if let Act::Out { .. } = act {
                    t.time_out_min += (e - s) as f64 / MIN as f64;
                }
                last_end = e;
            }
            fill_rooms(rng, &mut out, evening, activity, b);
            out.push(
                bed - rng.random_range(3..6) * MIN,
                Act::Room {
                    room: BATHROOM,
                    moving: true,
                },
            );
            out.push(
                bed,
                Act::Room {
                    room: BEDROOM,
                    moving: true,
                },
            );
            t.active_min = out
                .segs
                .iter()
                .rev()
                .take_while(|s| s.start >= up)
                .filter(|s| matches!(s.act, Act::Room { moving: true, .. }))
                .map(|s| (s.end - s.start) as f64 / MIN as f64)
                .sum();

            // The night.
            out.hr = night.hr;
            out.rr = night.rr;
            out.restless = night.restless;
            out.night = true;
            let trips = night_trips(rng, &night, b);
            t.night_bathroom_visits = trips.len() as u32;
            let in_bed = Act::InBed { night: true };
            let bedroom = Act::Room {
                room: BEDROOM,
                moving: true,
            };
            let bath = Act::Room {
                room: BATHROOM,
                moving: true,
            };
            let mut away = 0;
            for (at, len) in trips {
                out.push(at, in_bed);
                // Through the bedroom each way.
                let a = rng.random_range(15 * S..25 * S).min(len / 3);
                let z = rng.random_range(15 * S..25 * S).min(len / 3);
                out.push(at + a, bedroom);
                out.push(at + len - z, bath);
                out.push(at + len, bedroom);
                away += len;
            }
            out.push(night.rise, in_bed);
            t.time_in_bed_min = (night.rise - night.bed - away) as f64 / MIN as f64;
            t.rise_time_min = (night.rise + TZ_OFFSET).rem_euclid(DAY) as f64 / MIN as f64;
            t.resting_hr = night.hr;
            t.resting_rr = night.rr;
            truths.push(t);
        }
        // The morning after the last night, until midday.
        let end = midnight(days) + 12 * HOUR;
        out.by_day(days, n.hr, n.rr);
        let wash = out.now() + 10 * MIN;
        out.push(
            wash,
            Act::Room {
                room: BATHROOM,
                moving: true,
            },
        );
        let activity = Activity {
            p_moving: n.activity,
            pace: 1.0,
        };
        fill_rooms(rng, &mut out, end, activity, b);
        Plan {
            normal,
            drift,
            segs: out.segs,
            days: truths,
            end,
        }
    }
}

/// The odd-day flags of a day (and the night after it).
/// `stays_in`: the share of a `stays-in` drift, which makes evenings
/// and days out as much rarer.
fn odd_day(
    rng: &mut StdRng,
    unwell_left: &mut u32,
    weekend: bool,
    fri_sat_night: bool,
    stays_in: f64,
) -> u8 {
    let mut odd = 0u8;
    // A cold or the like: 2–4 days, about once in three months.
    if *unwell_left == 0 && rng.random_bool(0.01) {
        *unwell_left = rng.random_range(2..=4);
    }
    if *unwell_left > 0 {
        odd |= UNWELL;
        *unwell_left -= 1;
    }
    let unwell = odd & UNWELL != 0;
    let out = 1.0 - stays_in.clamp(0.0, 1.0);
    if !unwell && rng.random_bool(out * if fri_sat_night { 0.06 } else { 0.03 }) {
        odd |= LATE_OUT;
    }
    if rng.random_bool(if unwell { 0.3 } else { 0.06 }) {
        odd |= RESTLESS;
    }
    if !unwell && rng.random_bool(if weekend { 0.2 } else { 0.05 }) {
        odd |= VISITOR;
    }
    if odd & (UNWELL | VISITOR | LATE_OUT) == 0 && rng.random_bool(out * 0.03) {
        odd |= DAY_OUT;
    }
    odd
}

/// The day's fixed parts, by start: walks, a day out, a nap, an evening
/// out. Those that do not fit are dropped by the caller.
#[allow(clippy::too_many_arguments)]
fn fixed_parts(
    rng: &mut StdRng,
    n: &Normal,
    dr: Option<&Drift>,
    d: u32,
    odd: u8,
    weekend: bool,
    bed: i64,
    b: &Bounds,
) -> Vec<(i64, i64, Act)> {
    let mut fixed = Vec::new();
    let out = |rng: &mut StdRng| Act::Out {
        bearing: rng.random_range(0.0..std::f64::consts::TAU),
        reach_m: b.reach_m * rng.random_range(0.4..1.0),
    };
    if odd & (VISITOR | UNWELL | DAY_OUT) == 0 && n.walks > 0.0 {
        let k = poisson(rng, n.walks * if weekend { 0.8 } else { 1.0 }).min(2);
        let less = Drift::of(dr, DriftKind::StaysIn, d);
        let morning_first = rng.random_bool(0.5);
        for i in 0..k {
            let start = if (i == 0) == morning_first {
                rng.random_range(9.0 * 60.0..11.0 * 60.0)
            } else {
                rng.random_range(15.0 * 60.0..16.5 * 60.0)
            };
            let len = n.walk_min * rng.random_range(0.7..1.3) * (1.0 - less);
            let len_ms = ((len * MIN as f64) as i64).min(b.walk_ms);
            if len_ms >= 8 * MIN {
                let s = at_min(d, start);
                fixed.push((s, s + len_ms, out(rng)));
            }
        }
    }
    if odd & DAY_OUT != 0 {
        // Most of a day at a friend's or the community centre, within the
        // safe radius: no longer than inactivity allows.
        let s = at_min(d, rng.random_range(9.0 * 60.0..14.0 * 60.0));
        let len = (rng.random_range(150.0..210.0) * MIN as f64) as i64;
        fixed.push((s, s + len.min(b.out_ms), out(rng)));
    }
    if n.napper || odd & UNWELL != 0 {
        let s = at_min(d, rng.random_range(13.0 * 60.0 + 15.0..13.0 * 60.0 + 45.0));
        let len = if odd & UNWELL != 0 {
            rng.random_range(60.0..90.0)
        } else {
            rng.random_range(25.0..50.0)
        };
        fixed.push((
            s,
            s + (len * MIN as f64) as i64,
            Act::InBed { night: false },
        ));
    }
    if odd & LATE_OUT != 0 {
        // Out for the evening, home a little before bed; of it, by day
        // (before the night window) no more than `out_ms`.
        let (ns, _) = n.night_window();
        let mut night_start = at_min(d, f64::from(ns));
        if night_start < at_min(d, 12.0 * 60.0) {
            night_start += DAY;
        }
        let back = bed - rng.random_range(25..40) * MIN;
        let s = at_min(d, 18.5 * 60.0).max(night_start - b.out_ms + 15 * MIN);
        if back - s >= 30 * MIN {
            fixed.push((s, back, out(rng)));
        }
    }
    fixed.sort_by_key(|f| f.0);
    fixed
}

/// Bathroom trips of a night: `(leaves bed at, away for)`, at least 20
/// minutes apart, none in the first or last half hour in bed.
fn night_trips(rng: &mut StdRng, n: &Night, b: &Bounds) -> Vec<(i64, i64)> {
    let (from, to) = (n.bed + 30 * MIN, n.rise - 30 * MIN);
    let mut trips: Vec<(i64, i64)> = Vec::new();
    let mut tries = 0;
    while (trips.len() as u32) < n.visits && tries < 200 && to > from {
        tries += 1;
        let at = rng.random_range(from..to);
        let len = if n.restless {
            rng.random_range(4 * MIN..8 * MIN)
        } else {
            rng.random_range(2 * MIN..6 * MIN)
        }
        .min(b.trip_ms)
        .max(60 * S);
        if trips
            .iter()
            .all(|&(x, l)| at + len + 20 * MIN <= x || x + l + 20 * MIN <= at)
            && at + len <= to
        {
            trips.push((at, len));
        }
    }
    trips.sort();
    trips
}

/// How active a day is.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Chance of moving about in a slot.
    p_moving: f64,
    /// Against the elder's normal: slots are as much shorter.
    pace: f64,
}

/// Moves between rooms from now until `until`, in slots of 5–20 min
/// (divided by the day's pace): moving about with chance `p_moving`, else
/// sitting (the room's PIR sees the coming in only); after `b.still_ms`
/// of sitting, up and about for a few minutes.
fn fill_rooms(rng: &mut StdRng, out: &mut Builder, until: i64, a: Activity, b: &Bounds) {
    let mut still_for = 0;
    let (lo, hi) = (
        ((5 * MIN) as f64 / a.pace) as i64,
        ((20 * MIN) as f64 / a.pace) as i64,
    );
    let (lo, hi) = (lo.clamp(3 * MIN, 20 * MIN), hi.clamp(10 * MIN, 60 * MIN));
    while out.now() < until {
        let t = out.now();
        let mut end = (t + rng.random_range(lo..hi)).min(until);
        if until - end < 2 * MIN {
            end = until;
        }
        let minute = local_minute(t);
        let r = rng.random_range(0..100);
        let meal = (6 * 60..9 * 60).contains(&minute)
            || (11 * 60 + 30..12 * 60 + 30).contains(&minute)
            || (17 * 60 + 30..18 * 60 + 30).contains(&minute);
        let room = if meal {
            match r {
                0..60 => KITCHEN,
                60..90 => LIVING,
                _ => BATHROOM,
            }
        } else {
            match r {
                0..60 => LIVING,
                60..75 => KITCHEN,
                75..88 => BEDROOM,
                _ => BATHROOM,
            }
        };
        let mut moving = rng.random_bool(a.p_moving);
        if !moving && still_for + (end - t) > b.still_ms {
            // Up for a few minutes (the kitchen, the bathroom).
            moving = true;
            end = (t + rng.random_range(2 * MIN..5 * MIN)).min(until);
        }
        still_for = if moving { 0 } else { still_for + (end - t) };
        out.push(end, Act::Room { room, moving });
    }
}
