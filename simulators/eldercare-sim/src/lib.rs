//! Device simulator: homes of elders with a sleep sensor, a vital-sign
//! band, a PIR sensor per room, a GPS watch and an SOS button, living an
//! ordinary day ([`life`]) and publishing over MQTT as real devices do
//! ([`drive`]; each device logs in as itself), with emergencies injected
//! as episodes whose expected alerts are known (the ground truth).
//! [`pace`] turns a target rate into the devices' intervals for a load
//! test, and judges why a run fell short of it.
//!
//! Devices speak MQTT 3.1.1 or 5 ([`mqtt`]), over TCP or TLS, from the
//! local source addresses given ([`net`]); [`procs`] spreads a large
//! fleet over several processes of the simulator and merges their
//! results. [`drift`] plays weeks of life with slow drifts injected
//! through the rule engine in process, to measure its per-elder
//! baselines; [`visits`] plays a month of carers' visits, each with its
//! truth (on time, late, short, missed, from outside the door, ...),
//! the same way, to check every one is judged as docs/visits.md says.
//!
//! Homes are deterministic from `(count, seed)`: ids and secrets derive
//! from them, so the registry written and the devices driven agree
//! without sharing files. What the registry says beyond that (night
//! window, flags, heartbeat) is set on each [`Home`] before it is
//! registered; [`stage`] sets what an episode needs.
pub mod drift;
pub mod drive;
pub mod life;
pub mod mqtt;
pub mod net;
pub mod pace;
pub mod procs;
pub mod visits;

use eldercare_model::AlertKind;
use sha2::{Digest, Sha256};

/// Device kinds of a home in the order of [`life`]'s device positions,
/// with their id prefix and room.
pub const DEVICES: [(&str, &str, Option<&str>); life::DEVICES_PER_HOME] = [
    ("bed", "sleep_sensor", Some("bedroom")),
    ("band", "vital_band", None),
    ("pirbed", "pir", Some("bedroom")),
    ("pirbath", "pir", Some("bathroom")),
    ("pirliv", "pir", Some("living")),
    ("pirkit", "pir", Some("kitchen")),
    ("pirent", "pir", Some("entrance")),
    ("gps", "gps_watch", None),
    ("btn", "sos_button", None),
];

/// Geofence radius of every simulated home, metres.
pub const SAFE_RADIUS_M: f64 = 500.0;
/// The registry's default heartbeat interval, seconds.
pub const DEFAULT_HEARTBEAT_S: u32 = 300;

#[derive(Debug, Clone)]
pub struct SimDevice {
    pub device_id: String,
    pub kind: &'static str,
    pub room: Option<&'static str>,
    pub secret: String,
}

/// A night window in the elder's local time (`HH:MM`), as the registry's
/// `night_start` and `night_end` columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Night {
    pub start: String,
    pub end: String,
}

impl Default for Night {
    /// The registry's default: 21:00 to 07:00.
    fn default() -> Night {
        Night {
            start: "21:00".into(),
            end: "07:00".into(),
        }
    }
}

impl Night {
    /// A night that began an hour before `at_ms` (local time `utc_offset_h`
    /// hours from UTC) and lasts six more hours, so night-only rules (out
    /// of bed, geofence at night) can be rehearsed whatever the time of day.
    pub fn covering(at_ms: i64, utc_offset_h: i32) -> Night {
        Night::around(at_ms, utc_offset_h, -60, 6 * 60)
    }

    /// A night that starts four hours after `at_ms`, so it is daytime then
    /// and for the hours before: inactivity (a daytime rule) can be
    /// rehearsed at night.
    pub fn not_covering(at_ms: i64, utc_offset_h: i32) -> Night {
        Night::around(at_ms, utc_offset_h, 4 * 60, 12 * 60)
    }

    /// A night that began `ago_min` minutes before `at_ms`.
    pub fn began_before(at_ms: i64, utc_offset_h: i32, ago_min: i64) -> Night {
        Night::around(at_ms, utc_offset_h, -ago_min, 8 * 60)
    }

    /// Minutes from `at_ms` (local time) to the start and the end.
    fn around(at_ms: i64, utc_offset_h: i32, start_min: i64, end_min: i64) -> Night {
        let at = local_minute_of_day(at_ms.div_euclid(1000), utc_offset_h);
        Night {
            start: hhmm(at + start_min),
            end: hhmm(at + end_min),
        }
    }
}

/// Minute of the day at `utc_offset_h` hours from UTC. The simulated
/// homes' timezones keep one offset all year (Asia/Shanghai has been
/// UTC+8 since 1991; `Etc/GMT` zones never change), so a fixed offset is
/// exact and needs no timezone database.
fn local_minute_of_day(unix_s: i64, utc_offset_h: i32) -> i64 {
    (unix_s + i64::from(utc_offset_h) * 3600).rem_euclid(86_400) / 60
}

fn hhmm(minute_of_day: i64) -> String {
    let m = minute_of_day.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The UTC offset of the simulated homes by default: Asia/Shanghai.
pub const SHANGHAI_UTC_OFFSET_H: i32 = 8;

/// The IANA name of the timezone the homes are registered in, for an
/// offset of whole hours from UTC: Asia/Shanghai for +8, otherwise the
/// `Etc/GMT` zone (whose sign is the POSIX one, inverted: UTC+3 is
/// `Etc/GMT-3`).
pub fn timezone_name(utc_offset_h: i32) -> String {
    match utc_offset_h {
        SHANGHAI_UTC_OFFSET_H => "Asia/Shanghai".into(),
        0 => "Etc/GMT".into(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    }
}

/// The UTC offset (whole hours, -12..=+14, the range of `Etc/GMT` zones)
/// at which `at_ms` falls in local hour `hour`.
pub fn utc_offset_for_local_hour(at_ms: i64, hour: u32) -> i32 {
    let utc_hour = at_ms.div_euclid(3_600_000).rem_euclid(24) as i32;
    let off = (hour as i32 - utc_hour).rem_euclid(24);
    if off > 14 { off - 24 } else { off }
}

#[derive(Debug, Clone)]
pub struct Home {
    pub index: usize,
    pub elder_id: String,
    pub devices: Vec<SimDevice>,
    /// Home location `(lat, lon)`, the centre of its geofence.
    pub location: (f64, f64),
    pub night: Night,
    /// Registry flags: `lives_alone`, `dementia`, ...
    pub flags: Vec<&'static str>,
    pub safe_radius_m: f64,
    /// The home's gateway, when its devices speak through one MQTT
    /// session (see [`with_gateways`]).
    pub gateway: Option<SimDevice>,
    /// Heartbeat interval of every device of the home, seconds.
    pub heartbeat_s: u32,
    /// The home's local time, whole hours from UTC: the registry's
    /// timezone ([`timezone_name`]), and the clock the resident's day
    /// ([`life`]) and the night window follow.
    pub utc_offset_h: i32,
}

impl Home {
    /// The home's device of a kind (`sleep_sensor`, `pir`, ...).
    pub fn device(&self, kind: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.kind == kind)
    }
}

/// An emergency (or maintenance) episode to inject into one home, one per
/// rule of the engine, played by the devices that would see it as part
/// of the home's day ([`life`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    /// SOS button pressed.
    Sos,
    /// SOS pressed, then cancelled on the button 8 s later (a false alarm).
    SosCancel,
    /// Fall detected (protobuf, confidence 0.93); no movement for a minute.
    Fall,
    /// Fall detected, then movement 20 s later: the person is up.
    FallUp,
    /// Heart rate 150 for 75 s.
    Tachycardia,
    /// Heart rate 35 for 75 s.
    Bradycardia,
    /// SpO2 88 % for 75 s.
    Hypoxia,
    /// Temperature 39.6 °C for 75 s.
    Fever,
    /// In bed, no breathing detected, for 30 s.
    NoBreathing,
    /// Gets out of bed and does not come back, nothing moves [needs the
    /// home in `registry --night-now-homes`].
    OutOfBed,
    /// Out of bed, movement in the bathroom, then nothing [needs
    /// `registry --night-now-homes`].
    BathroomFall,
    /// Out of bed, no movement at home in the daytime [needs `registry
    /// --day-now-homes`].
    Inactivity,
    /// The watch walks out of the safe zone [the elder flagged with
    /// `registry --dementia-homes`; at night with `--night-now-homes`].
    Wandering,
    /// The GPS watch says `online: false`, as its last will would, and
    /// falls silent.
    DeviceOffline,
    /// Every device of the home does so (power or network cut).
    HomeOffline,
    /// The SOS button's battery at 12 %, and staying low.
    LowBattery,
}

impl Inject {
    /// Every episode, in the order of the rules.
    pub const ALL: [Inject; 16] = [
        Inject::Sos,
        Inject::SosCancel,
        Inject::Fall,
        Inject::FallUp,
        Inject::Tachycardia,
        Inject::Bradycardia,
        Inject::Hypoxia,
        Inject::Fever,
        Inject::NoBreathing,
        Inject::OutOfBed,
        Inject::BathroomFall,
        Inject::Inactivity,
        Inject::Wandering,
        Inject::DeviceOffline,
        Inject::HomeOffline,
        Inject::LowBattery,
    ];

    /// The name on the command line, e.g. `bathroom-fall`.
    pub fn name(self) -> &'static str {
        match self {
            Inject::Sos => "sos",
            Inject::SosCancel => "sos-cancel",
            Inject::Fall => "fall",
            Inject::FallUp => "fall-up",
            Inject::Tachycardia => "tachycardia",
            Inject::Bradycardia => "bradycardia",
            Inject::Hypoxia => "hypoxia",
            Inject::Fever => "fever",
            Inject::NoBreathing => "no-breathing",
            Inject::OutOfBed => "out-of-bed",
            Inject::BathroomFall => "bathroom-fall",
            Inject::Inactivity => "inactivity",
            Inject::Wandering => "wandering",
            Inject::DeviceOffline => "device-offline",
            Inject::HomeOffline => "home-offline",
            Inject::LowBattery => "low-battery",
        }
    }

    /// Its alert comes from a rule that infers from absence (out of bed
    /// too long, inactivity): judged at the newest time any device of the
    /// home was heard from, so raised at the home's first message at or
    /// after the deadline.
    pub fn infers_from_absence(self) -> bool {
        matches!(
            self,
            Inject::OutOfBed | Inject::BathroomFall | Inject::Inactivity
        )
    }

    /// The alert the episode must raise.
    pub fn alert_kind(self) -> AlertKind {
        match self {
            Inject::Sos | Inject::SosCancel => AlertKind::Sos,
            Inject::Fall | Inject::FallUp => AlertKind::Fall,
            Inject::Tachycardia | Inject::Bradycardia | Inject::Hypoxia | Inject::Fever => {
                AlertKind::VitalOutOfRange
            }
            Inject::NoBreathing => AlertKind::NoBreathing,
            Inject::OutOfBed | Inject::BathroomFall => AlertKind::OutOfBedTooLong,
            Inject::Inactivity => AlertKind::Inactivity,
            Inject::Wandering => AlertKind::GeofenceExit,
            Inject::DeviceOffline => AlertKind::DeviceOffline,
            Inject::HomeOffline => AlertKind::HomeOffline,
            Inject::LowBattery => AlertKind::LowBattery,
        }
    }

    /// The alert the episode should raise under the default rules (timed
    /// rules after their configured time).
    pub fn expected(self) -> &'static str {
        match self {
            Inject::Sos => "sos CRITICAL, at once",
            Inject::SosCancel => "sos CRITICAL, then resolved as a false alarm ~8 s later",
            Inject::Fall => "fall CRITICAL, at once, and no 'up' update",
            Inject::FallUp => "fall CRITICAL, updated ~20 s later: appears to be up",
            Inject::Tachycardia => "vital_out_of_range HIGH (pulse >= 131) after 60 s",
            Inject::Bradycardia => "vital_out_of_range HIGH (pulse <= 40) after 60 s",
            Inject::Hypoxia => "vital_out_of_range HIGH (SpO2 <= 91) after 60 s",
            Inject::Fever => "vital_out_of_range HIGH (temperature >= 39.1) after 60 s",
            Inject::NoBreathing => "no_breathing CRITICAL after 20 s",
            Inject::OutOfBed => "out_of_bed_too_long HIGH after out_of_bed.after_s",
            Inject::BathroomFall => {
                "out_of_bed_too_long CRITICAL (bathroom) after out_of_bed.after_s"
            }
            Inject::Inactivity => "inactivity HIGH after inactivity.after_s",
            Inject::Wandering => {
                "geofence_exit (CRITICAL at night, HIGH for dementia) at the 2nd fix outside"
            }
            Inject::DeviceOffline => "device_offline LOW after offline.grace_s",
            Inject::HomeOffline => "home_offline LOW after offline.grace_s",
            Inject::LowBattery => "low_battery LOW, at once",
        }
    }
}

impl std::fmt::Display for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sets what the registry must say about a home for an episode starting
/// at `at_ms` to raise its alert: night-only rules need the night window
/// to cover it (and the person asleep: the night began an hour before),
/// daytime ones need daytime, wandering a `dementia` flag and a night
/// that began minutes ago, before the person went to bed. Call before
/// registering the home.
pub fn stage(home: &mut Home, what: Inject, at_ms: i64) {
    match what {
        Inject::OutOfBed | Inject::BathroomFall | Inject::NoBreathing => {
            home.night = Night::covering(at_ms, home.utc_offset_h)
        }
        Inject::Inactivity | Inject::Fall | Inject::FallUp => {
            home.night = Night::not_covering(at_ms, home.utc_offset_h)
        }
        Inject::Wandering => {
            home.night = Night::began_before(at_ms, home.utc_offset_h, 3);
            if !home.flags.contains(&"dementia") {
                home.flags.push("dementia");
            }
        }
        _ => {}
    }
}

/// The homes of a fleet, laid out on a grid of ~110 m across the city
/// (a thousand to a row), each with the devices of [`DEVICES`].
pub fn homes(count: usize, seed: u64) -> Vec<Home> {
    (1..=count)
        .map(|i| Home {
            index: i,
            elder_id: format!("E{i:05}"),
            devices: DEVICES
                .iter()
                .map(|(prefix, kind, room)| {
                    let device_id = format!("{prefix}-{i:05}");
                    let mut h = Sha256::new();
                    h.update(format!("{seed}:{device_id}"));
                    SimDevice {
                        secret: hex::encode(&h.finalize()[..16]),
                        device_id,
                        kind,
                        room: *room,
                    }
                })
                .collect(),
            location: (
                30.9 + (i % 1000) as f64 * 0.001,
                121.1 + (i / 1000) as f64 * 0.00115,
            ),
            night: Night::default(),
            flags: vec!["lives_alone"],
            safe_radius_m: SAFE_RADIUS_M,
            gateway: None,
            heartbeat_s: DEFAULT_HEARTBEAT_S,
            utc_offset_h: SHANGHAI_UTC_OFFSET_H,
        })
        .collect()
}

/// Gives every home a gateway (`gw-NNNNN`, kind `gateway`), through
/// which its devices publish over a single MQTT session.
pub fn with_gateways(homes: &mut [Home], seed: u64) {
    for h in homes {
        let device_id = format!("gw-{:05}", h.index);
        let mut d = Sha256::new();
        d.update(format!("{seed}:{device_id}"));
        h.gateway = Some(SimDevice {
            secret: hex::encode(&d.finalize()[..16]),
            device_id,
            kind: "gateway",
            room: None,
        });
    }
}

/// The registry files for these homes: `(elders.csv, devices.csv)`.
/// Names and addresses are synthetic.
pub fn registry_csv(homes: &[Home]) -> (String, String) {
    let mut elders = String::from(
        "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags,timezone,night_start,night_end\n",
    );
    let mut devices = String::from("device_id,kind,elder_id,room,heartbeat_s,secret\n");
    for h in homes {
        // Night windows are computed in the home's local time: say which
        // rather than rely on the importer's default.
        elders.push_str(&format!(
            "{},Resident {},Demo District,Community {},{:.6},{:.6},{:.0},{},{},{},{}\n",
            h.elder_id,
            h.index,
            (h.index - 1) / 10 + 1,
            h.location.0,
            h.location.1,
            h.safe_radius_m,
            h.flags.join(";"),
            timezone_name(h.utc_offset_h),
            h.night.start,
            h.night.end,
        ));
        for d in h.devices.iter().chain(&h.gateway) {
            let room = d.room.unwrap_or("");
            devices.push_str(&format!(
                "{},{},{},{},{},{}\n",
                d.device_id, d.kind, h.elder_id, room, h.heartbeat_s, d.secret
            ));
        }
    }
    (elders, devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 16:00 UTC: 00:00 in Shanghai.
    const AT: i64 = 1_795_363_200_000;

    #[test]
    fn timezones_by_offset() {
        assert_eq!(timezone_name(8), "Asia/Shanghai");
        assert_eq!(timezone_name(0), "Etc/GMT");
        assert_eq!(timezone_name(3), "Etc/GMT-3");
        assert_eq!(timezone_name(-5), "Etc/GMT+5");
    }

    #[test]
    fn the_offset_that_puts_a_moment_in_a_local_hour() {
        // 16:00 UTC (and 16:59).
        for at in [AT, AT + 59 * 60_000] {
            assert_eq!(utc_offset_for_local_hour(at, 16), 0);
            assert_eq!(utc_offset_for_local_hour(at, 10), -6);
            assert_eq!(utc_offset_for_local_hour(at, 2), 10);
            assert_eq!(utc_offset_for_local_hour(at, 0), 8);
            assert_eq!(utc_offset_for_local_hour(at, 5), 13);
            // 06:00 is 14 hours ahead or 10 behind: ahead, as far as the
            // easternmost zone (UTC+14) goes.
            assert_eq!(utc_offset_for_local_hour(at, 6), 14);
            assert_eq!(utc_offset_for_local_hour(at, 3), 11);
        }
        for hour in 0..24 {
            let off = utc_offset_for_local_hour(AT, hour);
            assert!((-12..=14).contains(&off));
            assert_eq!(
                local_minute_of_day(AT / 1000, off),
                i64::from(hour) * 60,
                "hour {hour}"
            );
        }
    }

    #[test]
    fn staged_nights_are_in_the_homes_local_time() {
        let mut h = homes(1, 1).remove(0);
        stage(&mut h, Inject::OutOfBed, AT);
        assert_eq!(
            (h.night.start.as_str(), h.night.end.as_str()),
            ("23:00", "06:00")
        );
        h.utc_offset_h = -6;
        stage(&mut h, Inject::OutOfBed, AT);
        assert_eq!(
            (h.night.start.as_str(), h.night.end.as_str()),
            ("09:00", "16:00")
        );
        stage(&mut h, Inject::Inactivity, AT);
        assert_eq!(
            (h.night.start.as_str(), h.night.end.as_str()),
            ("14:00", "22:00")
        );
        let (elders, _) = registry_csv(&[h]);
        assert!(elders.contains(",Etc/GMT+6,14:00,22:00\n"), "{elders}");
    }
}
