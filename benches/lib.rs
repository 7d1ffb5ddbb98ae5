//! Workload generators shared by the benchmarks: a city of simulated
//! elders and a realistic mix of their devices' readings.
#![forbid(unsafe_code)]

use eldercare_model::{Body, DeviceKind, Location, Motion, Reading, Sleep, Status, Vitals};
use eldercare_rules::{DeviceProfile, ElderProfile, Engine, Rules};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 2026-11-23 10:00 in Asia/Shanghai: daytime.
pub const START_MS: i64 = 1_795_399_200_000;

/// Devices of one home: (id prefix, kind, room).
pub const HOME_DEVICES: [(&str, DeviceKind); 6] = [
    ("bed", DeviceKind::SleepSensor),
    ("band", DeviceKind::VitalBand),
    ("pirl", DeviceKind::Pir),
    ("pirb", DeviceKind::Pir),
    ("gps", DeviceKind::GpsWatch),
    ("btn", DeviceKind::SosButton),
];

fn home(i: usize) -> (f64, f64) {
    (
        31.0 + (i % 1000) as f64 * 0.001,
        121.0 + (i / 1000) as f64 * 0.001,
    )
}

/// An engine with the default rules and `elders` homes registered.
pub fn city(elders: usize) -> Engine {
    let mut e = Engine::new(Rules::defaults());
    for i in 0..elders {
        let mut p = ElderProfile::new(format!("E{i:06}"));
        p.home = Some(home(i));
        p.safe_radius_m = Some(500.0);
        p.dementia = i % 7 == 0;
        e.upsert_elder(&p, START_MS);
        for (prefix, kind) in HOME_DEVICES {
            e.upsert_device(
                &DeviceProfile {
                    device_id: format!("{prefix}-{i:06}"),
                    elder_id: p.elder_id.clone(),
                    kind,
                    heartbeat_s: 300,
                },
                START_MS,
            );
        }
    }
    e
}

/// One round of readings: one per elder, in arrival order, spread over
/// `span_ms` of event time from `from_ms`. The mix follows the devices'
/// realistic rates (vitals every 10 s, sleep every 5 s while in bed,
/// PIR on motion, GPS every 60 s outdoors, status every 5 min per
/// device): about 39 % vitals, 31 % sleep, 20 % motion, 8 % status,
/// 2 % location; about 1 % of vitals abnormal.
pub fn round(elders: usize, from_ms: i64, span_ms: i64, rng: &mut StdRng) -> Vec<Reading> {
    (0..elders)
        .map(|i| {
            let ts = from_ms + span_ms * i as i64 / elders as i64;
            let p: f64 = rng.random();
            let (prefix, body) = if p < 0.39 {
                let abnormal = rng.random_bool(0.01);
                (
                    "band",
                    Body::Vitals(Vitals {
                        hr: Some(if abnormal {
                            140
                        } else {
                            rng.random_range(60..95)
                        }),
                        spo2: Some(rng.random_range(95..100)),
                        rr: None,
                        temp_c: Some(36.2 + rng.random_range(0.0..1.0)),
                        sys: Some(rng.random_range(110..140)),
                        dia: Some(rng.random_range(65..85)),
                    }),
                )
            } else if p < 0.70 {
                let in_bed = i % 3 == 0;
                (
                    "bed",
                    Body::Sleep(Sleep {
                        in_bed,
                        hr: in_bed.then(|| rng.random_range(55..75)),
                        rr: in_bed.then(|| rng.random_range(12..18)),
                        movement: Some(rng.random_range(0.0..0.3)),
                    }),
                )
            } else if p < 0.90 {
                let bath = rng.random_bool(0.2);
                (
                    if bath { "pirb" } else { "pirl" },
                    Body::Motion(Motion {
                        room: if bath { "bathroom" } else { "living" }.into(),
                        motion: true,
                    }),
                )
            } else if p < 0.98 {
                let (prefix, _) = HOME_DEVICES[rng.random_range(0..HOME_DEVICES.len())];
                (
                    prefix,
                    Body::Status(Status {
                        online: Some(true),
                        battery_pct: Some(rng.random_range(20..100)),
                        rssi: Some(-60),
                        fw: None,
                    }),
                )
            } else {
                let (lat, lon) = home(i);
                let away = if i % 50 == 0 { 0.008 } else { 0.001 };
                (
                    "gps",
                    Body::Location(Location {
                        lat: lat + rng.random_range(0.0..away),
                        lon,
                        accuracy_m: Some(15.0),
                    }),
                )
            };
            Reading {
                device_id: format!("{prefix}-{i:06}"),
                seq: None,
                ts_ms: ts,
                body,
            }
        })
        .collect()
}

/// A seeded generator, so every run feeds the same workload.
pub fn rng() -> StdRng {
    StdRng::seed_from_u64(2026)
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
