//! What a home's devices send while its resident follows a [`Plan`]:
//! the same readings as [`crate::life`]'s devices (sleep sensor `in_bed`
//! with heart and breathing rate while in bed, PIR motion per room, band
//! vitals, GPS fixes, status heartbeats), as the engine's
//! [`Reading`]s, without the MQTT encoding in between.
use super::plan::{Act, ENTRANCE, MIN, Plan, S, Seg, TZ_OFFSET};
use crate::life::{BAND, BED, BTN, DEVICES_PER_HOME, GPS, PIR, ROOMS, offset_m};
use eldercare_model::{Body, Location, Motion, Reading, Sleep, Status, Vitals};
use rand::Rng;
use rand::rngs::StdRng;

/// How often the devices report, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intervals {
    /// Vital-sign band (temperature every 30 min, blood pressure every
    /// hour, whatever the interval).
    pub vitals_ms: i64,
    /// Sleep sensor while someone is in bed (and at once on a change).
    pub sleep_ms: i64,
    /// GPS watch outdoors; indoors every 10 intervals.
    pub gps_ms: i64,
    /// Status heartbeat of every device.
    pub status_ms: i64,
}

impl Intervals {
    /// The devices' own intervals (as [`crate::life::Intervals`]).
    pub fn real() -> Intervals {
        Intervals {
            vitals_ms: 10 * S,
            sleep_ms: 5 * S,
            gps_ms: 60 * S,
            status_ms: 300 * S,
        }
    }

    /// Fewer readings for weeks of life in minutes: the band every 60 s
    /// and the sleep sensor every 15 s (still within the engine's 30 s
    /// `max_gap_s`); GPS, status and PIR as real devices. What the
    /// readings say is the same.
    pub fn coarse() -> Intervals {
        Intervals {
            vitals_ms: 60 * S,
            sleep_ms: 15 * S,
            ..Intervals::real()
        }
    }
}

/// Plays a [`Plan`] as readings, a few segments at a time.
pub struct Emitter<'a> {
    plan: &'a Plan,
    ids: Vec<String>,
    location: (f64, f64),
    iv: Intervals,
    rng: StdRng,
    /// Next segment to play.
    i: usize,
    prev: Option<Act>,
    next_vitals: i64,
    vitals_count: u64,
    next_sleep: i64,
    next_gps: i64,
    next_pir: i64,
    next_status: [i64; DEVICES_PER_HOME],
    seq: [u64; DEVICES_PER_HOME],
    battery: [f64; DEVICES_PER_HOME],
    /// PIR motions by day, between getting up and going to bed.
    pub day_motions: Vec<u32>,
}

impl<'a> Emitter<'a> {
    /// `ids`: the device ids in [`crate::life`]'s device positions.
    pub fn new(
        plan: &'a Plan,
        ids: Vec<String>,
        location: (f64, f64),
        iv: Intervals,
        mut rng: StdRng,
    ) -> Emitter<'a> {
        let t0 = plan.segs.first().map_or(0, |s| s.start);
        let mut next_status = [0; DEVICES_PER_HOME];
        let mut battery = [0.0; DEVICES_PER_HOME];
        for d in 0..DEVICES_PER_HOME {
            next_status[d] = t0 + rng.random_range(0..iv.status_ms.clamp(1, 3 * S));
            battery[d] = rng.random_range(40.0..100.0);
        }
        Emitter {
            plan,
            ids,
            location,
            iv,
            next_vitals: t0 + rng.random_range(0..iv.vitals_ms),
            next_gps: t0 + rng.random_range(0..iv.gps_ms),
            rng,
            i: 0,
            prev: None,
            vitals_count: 0,
            next_sleep: t0,
            next_pir: i64::MAX,
            next_status,
            seq: [0; DEVICES_PER_HOME],
            battery,
            day_motions: vec![0; plan.days.len() + 1],
        }
    }

    /// Whether every segment has been played.
    pub fn done(&self) -> bool {
        self.i >= self.plan.segs.len()
    }

    /// Appends the readings of the segments starting before `before`, in
    /// time order; all are taken before the next segment starts.
    pub fn play(&mut self, before: i64, out: &mut Vec<Reading>) {
        let first = out.len();
        while let Some(seg) = self.plan.segs.get(self.i).copied() {
            if seg.start >= before {
                break;
            }
            self.segment(&seg, out);
            self.i += 1;
        }
        out[first..].sort_by_key(|r| r.ts_ms);
    }

    fn segment(&mut self, seg: &Seg, out: &mut Vec<Reading>) {
        let (s, e, act) = (seg.start, seg.end, seg.act);
        let was = self.prev;
        let in_bed = matches!(act, Act::InBed { .. });
        let was_in_bed = matches!(was, Some(Act::InBed { .. }));
        let out_now = matches!(act, Act::Out { .. });
        let was_out = matches!(was, Some(Act::Out { .. }));
        if in_bed != was_in_bed || was.is_none() {
            let r = self.sleep(s, seg, in_bed);
            out.push(r);
            self.next_sleep = s + self.iv.sleep_ms;
        }
        if was_out != out_now && was.is_some() {
            // Through the front door, out or back in.
            let r = self.motion(s, ENTRANCE, seg);
            out.push(r);
            self.next_gps = s + if out_now { 30 * S } else { 10 * S };
        }
        self.next_pir = i64::MAX;
        if let Act::Room { room, moving } = act {
            let at = s + self.rng.random_range(0..S.min(e - s));
            let r = self.motion(at, room, seg);
            out.push(r);
            if moving {
                self.next_pir = at + self.rng.random_range(30 * S..2 * MIN);
            }
        }
        self.prev = Some(act);
        // Periodic reports within the segment.
        while self.next_vitals < e {
            let at = self.next_vitals.max(s);
            let r = self.vitals(at, seg);
            out.push(r);
            self.next_vitals = at + self.iv.vitals_ms;
        }
        while in_bed && self.next_sleep < e {
            let at = self.next_sleep.max(s);
            let r = self.sleep(at, seg, true);
            out.push(r);
            self.next_sleep = at + self.iv.sleep_ms;
        }
        if let Act::Room { room, .. } = act {
            while self.next_pir < e {
                let at = self.next_pir;
                let r = self.motion(at, room, seg);
                out.push(r);
                self.next_pir = at + self.rng.random_range(30 * S..2 * MIN);
            }
        }
        while self.next_gps < e {
            let at = self.next_gps.max(s);
            let r = self.location(at, seg);
            out.push(r);
            self.next_gps = at
                + if out_now {
                    self.iv.gps_ms
                } else {
                    10 * self.iv.gps_ms
                };
        }
        for d in 0..DEVICES_PER_HOME {
            while self.next_status[d] < e {
                let at = self.next_status[d].max(s);
                let r = self.status(at, d);
                out.push(r);
                self.next_status[d] = at + self.iv.status_ms;
            }
        }
    }

    fn reading(&mut self, d: usize, ts_ms: i64, body: Body) -> Reading {
        self.seq[d] += 1;
        Reading {
            device_id: self.ids[d].clone(),
            seq: Some(self.seq[d]),
            ts_ms,
            body,
        }
    }

    fn motion(&mut self, at: i64, room: usize, seg: &Seg) -> Reading {
        if !seg.night
            && let Some(n) = self.day_motions.get_mut(seg.day as usize)
        {
            *n += 1;
        }
        self.reading(
            PIR + room,
            at,
            Body::Motion(Motion {
                room: ROOMS[room].to_string(),
                motion: true,
            }),
        )
    }

    fn sleep(&mut self, at: i64, seg: &Seg, in_bed: bool) -> Reading {
        let body = if in_bed {
            let hr = (seg.hr + self.rng.random_range(-3.0..3.0))
                .round()
                .max(45.0);
            let rr = (seg.rr + self.rng.random_range(-1.5..1.5))
                .round()
                .clamp(10.0, 24.0);
            let most = if seg.restless { 0.5 } else { 0.25 };
            let movement = (self.rng.random_range(0.0..most) * 100.0f64).round() / 100.0;
            Sleep {
                in_bed: true,
                hr: Some(hr as u32),
                rr: Some(rr as u32),
                movement: Some(movement),
            }
        } else {
            Sleep {
                in_bed: false,
                ..Sleep::default()
            }
        };
        self.reading(BED, at, Body::Sleep(body))
    }

    fn vitals(&mut self, at: i64, seg: &Seg) -> Reading {
        let minute = ((at + TZ_OFFSET).rem_euclid(24 * 60 * MIN) / MIN) as f64;
        // Lowest in the small hours, highest in the afternoon.
        let circadian = -(std::f64::consts::TAU * (minute - 4.0 * 60.0) / 1440.0).cos();
        let (delta, spread) = match seg.act {
            Act::InBed { .. } => (0.0, 2.5),
            Act::Out { .. } => (24.0, 4.0),
            Act::Room { .. } => (10.0, 3.5),
        };
        let hr = (seg.hr + delta + 3.0 * circadian + self.rng.random_range(-spread..spread))
            .round()
            .clamp(45.0, 115.0) as u32;
        let mut v = Vitals {
            hr: Some(hr),
            spo2: Some(self.rng.random_range(96..=99)),
            ..Vitals::default()
        };
        self.vitals_count += 1;
        let per_30min = (30 * MIN / self.iv.vitals_ms).max(1) as u64;
        if self.vitals_count % per_30min == 1 {
            let temp = 36.5 + 0.25 * circadian + self.rng.random_range(-0.15..0.15);
            v.temp_c = Some((temp * 10.0).round() / 10.0);
        }
        if self.vitals_count % (2 * per_30min) == 1 {
            let sys =
                (self.plan.normal.sys + 4.0 * circadian + self.rng.random_range(-8.0..8.0)).round();
            v.sys = Some(sys as u32);
            v.dia = Some((sys * 0.62 + self.rng.random_range(-4.0..4.0)).round() as u32);
        }
        self.reading(BAND, at, Body::Vitals(v))
    }

    fn location(&mut self, at: i64, seg: &Seg) -> Reading {
        let (lat, lon, acc) = match seg.act {
            Act::Out { bearing, reach_m } => {
                let half = ((seg.end - seg.start) / 2).max(1) as f64;
                let d = reach_m * (1.0 - ((at - seg.start) as f64 - half).abs() / half);
                let (lat, lon) = offset_m(self.location, bearing, d.max(0.0));
                (lat, lon, 8.0)
            }
            _ => {
                let b = self.rng.random_range(0.0..std::f64::consts::TAU);
                let d = self.rng.random_range(0.0..15.0);
                let (lat, lon) = offset_m(self.location, b, d);
                (lat, lon, 25.0)
            }
        };
        self.reading(
            GPS,
            at,
            Body::Location(Location {
                lat: (lat * 1e6).round() / 1e6,
                lon: (lon * 1e6).round() / 1e6,
                accuracy_m: Some(acc),
            }),
        )
    }

    fn status(&mut self, at: i64, d: usize) -> Reading {
        // Batteries last a year and more; the band (3 % a day) and the
        // watch (1 %) are put on the charger when down to 35 %.
        let per_day = match d {
            BAND => 3.0,
            GPS => 1.0,
            _ => 0.2,
        };
        self.battery[d] -= per_day * self.iv.status_ms as f64 / (24 * 60 * MIN) as f64;
        if (d == BAND || d == GPS) && self.battery[d] < 35.0 {
            self.battery[d] = 100.0;
        }
        let pct = self.battery[d].round().max(20.0) as u32;
        let rssi = -45 - ((d as i32 * 7 + self.ids[BTN].len() as i32) % 30);
        self.reading(
            d,
            at,
            Body::Status(Status {
                online: Some(true),
                battery_pct: Some(pct),
                rssi: Some(rssi),
                fw: Some("2.4.1".into()),
            }),
        )
    }
}
