//! Silence is not evidence, and late evidence is still evidence: a home
//! that goes silent raises its offline alert and nothing that infers from
//! absence; readings uploaded late are judged on their own time, timers
//! included. On a driven clock; nothing here sleeps.
use eldercare_model::{
    AlertKind, Body, DeviceKind, EpochMs, Motion, Reading, Severity, Sleep, Status, Vitals,
};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, Record, Rules, Trigger};

/// 2026-11-23 00:00 in Asia/Shanghai.
const MIDNIGHT: i64 = 1_795_363_200_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;
const TICK: i64 = 10 * S;

struct Home {
    e: Engine,
    got: Vec<Decision>,
}

impl Home {
    fn new(devices: &[(&'static str, DeviceKind)], now: EpochMs) -> Home {
        let mut e = Engine::new(Rules::defaults());
        e.upsert_elder(&ElderProfile::new("E1"), now);
        for &(id, kind) in devices {
            e.upsert_device(
                &DeviceProfile {
                    device_id: id.into(),
                    elder_id: "E1".into(),
                    kind,
                    heartbeat_s: 300,
                },
                now,
            );
        }
        Home { e, got: Vec::new() }
    }

    /// A reading of event time `ts` arriving at `now`.
    fn send(&mut self, dev: &str, ts: EpochMs, body: Body, now: EpochMs) {
        let r = Reading {
            device_id: dev.into(),
            seq: None,
            ts_ms: ts,
            body,
        };
        let d = self.e.on_reading(&r, now);
        self.got.extend(d);
    }

    /// Ticks from `from` to `to`; `alive(t)` says which devices send a
    /// heartbeat at each minute.
    fn run(&mut self, from: EpochMs, to: EpochMs, alive: impl Fn(EpochMs) -> Vec<&'static str>) {
        let mut t = from;
        while t <= to {
            if t % (5 * MIN) == 0 {
                for d in alive(t) {
                    self.send(d, t, status(), t);
                }
            }
            let d = self.e.tick(t);
            self.got.extend(d);
            t += TICK;
        }
    }

    fn raised(&self, kind: AlertKind) -> Vec<&Trigger> {
        self.got
            .iter()
            .filter_map(|d| match d {
                Decision::Raise(t) if t.kind == kind => Some(t),
                _ => None,
            })
            .collect()
    }

    fn kinds_raised(&self) -> Vec<AlertKind> {
        self.got
            .iter()
            .filter_map(|d| match d {
                Decision::Raise(t) => Some(t.kind),
                _ => None,
            })
            .collect()
    }
}

fn status() -> Body {
    Body::Status(Status {
        online: Some(true),
        ..Default::default()
    })
}

fn will() -> Body {
    Body::Status(Status {
        online: Some(false),
        ..Default::default()
    })
}

fn motion(room: &str) -> Body {
    Body::Motion(Motion {
        room: room.into(),
        motion: true,
    })
}

fn sleep(in_bed: bool) -> Body {
    Body::Sleep(Sleep {
        in_bed,
        hr: in_bed.then_some(62),
        rr: in_bed.then_some(14),
        movement: None,
    })
}

fn pulse() -> Body {
    Body::Vitals(Vitals {
        hr: Some(70),
        ..Default::default()
    })
}

const HOME4: [(&str, DeviceKind); 4] = [
    ("bed-1", DeviceKind::SleepSensor),
    ("band-1", DeviceKind::VitalBand),
    ("pir-1", DeviceKind::Pir),
    ("btn-1", DeviceKind::SosButton),
];

#[test]
fn a_home_cut_just_before_its_inactivity_deadline_is_offline_not_inactive() {
    // Last movement 10:00; four daytime hours end at 14:00. Every device
    // sends its heartbeat every 5 min until the power goes at 13:56 (no
    // last will: the broker notices later). The PIR was heard at 13:55,
    // so at 14:00 it is not yet overdue: only the home's own silence
    // tells that nothing can be seen.
    let start = MIDNIGHT + 10 * H;
    let cut = MIDNIGHT + 13 * H + 56 * MIN;
    let mut h = Home::new(&HOME4, start - H);
    h.run(start - H, start - MIN, |_| {
        HOME4.iter().map(|d| d.0).collect()
    });
    h.send("pir-1", start, motion("living"), start);
    h.run(start, MIDNIGHT + 18 * H, |t| {
        if t < cut {
            HOME4.iter().map(|d| d.0).collect()
        } else {
            Vec::new()
        }
    });
    assert_eq!(h.kinds_raised(), [AlertKind::HomeOffline], "{:?}", h.got);
    let offline = h.raised(AlertKind::HomeOffline)[0];
    assert!(
        offline
            .summary
            .en
            .contains("not judged until heard: out of bed too long, inactivity"),
        "{:?}",
        offline.summary
    );

    // Back at 18:00: 3 h 56 min without movement were seen before the
    // cut; the silence does not count, and nor do the first moments
    // back. The remaining 4 min of stillness, once seen, raise.
    let back = MIDNIGHT + 18 * H;
    h.got.clear();
    h.run(back, back + MIN, |_| HOME4.iter().map(|d| d.0).collect());
    assert!(h.raised(AlertKind::Inactivity).is_empty(), "{:?}", h.got);
    h.run(back + MIN + TICK, back + 30 * MIN, |_| {
        HOME4.iter().map(|d| d.0).collect()
    });
    let t = h.raised(AlertKind::Inactivity);
    assert_eq!(t.len(), 1, "{:?}", h.got);
    // Seen still for 4 h: 3 h 56 min before the cut, 4 min after the
    // minute of settling, at the first heartbeat that shows it.
    assert!(
        t[0].at_ms >= back + 5 * MIN && t[0].at_ms <= back + 10 * MIN,
        "{:?}",
        t[0]
    );
    assert!(
        t[0].summary.en.contains("not counted"),
        "{:?}",
        t[0].summary
    );
}

#[test]
fn devices_behind_a_silent_gateway_are_named_on_its_alert_not_raised_one_by_one() {
    // The GPS watch has its own connection and keeps reporting; the bed
    // sensor and the PIR speak through the gateway, which is lost at
    // 13:00 (its last will).
    let devices = [
        ("gw-1", DeviceKind::Gateway),
        ("bed-1", DeviceKind::SleepSensor),
        ("pir-1", DeviceKind::Pir),
        ("gps-1", DeviceKind::GpsWatch),
    ];
    let start = MIDNIGHT + 10 * H;
    let lost = MIDNIGHT + 13 * H;
    let mut h = Home::new(&devices, start - H);
    h.run(start - H, start - MIN, |_| {
        devices.iter().map(|d| d.0).collect()
    });
    h.send("pir-1", start, motion("living"), start);
    h.run(start, lost - TICK, |_| {
        devices.iter().map(|d| d.0).collect()
    });
    h.send("gw-1", lost, will(), lost);
    h.run(lost, MIDNIGHT + 16 * H, |_| vec!["gps-1"]);
    let raised = h.raised(AlertKind::DeviceOffline);
    assert_eq!(raised.len(), 1, "{:?}", h.got);
    let gw = raised[0];
    assert_eq!(gw.subject.as_deref(), Some("gw-1"));
    assert!(
        gw.summary
            .en
            .contains("the 2 devices it carries are silent with it (bed-1, pir-1)")
            && gw.summary.en.contains("inactivity"),
        "{:?}",
        gw.summary
    );
    assert!(h.raised(AlertKind::Inactivity).is_empty(), "{:?}", h.got);
    assert!(h.raised(AlertKind::HomeOffline).is_empty(), "{:?}", h.got);

    // The gateway is back: the devices it carries get a fresh grace to
    // report in through it, and nothing is raised for them.
    let back = MIDNIGHT + 16 * H + 10 * S;
    h.got.clear();
    h.send("gw-1", back, status(), back);
    h.run(back, back + 2 * MIN, |_| {
        devices.iter().map(|d| d.0).collect()
    });
    assert!(h.raised(AlertKind::DeviceOffline).is_empty(), "{:?}", h.got);
    assert!(h.raised(AlertKind::Inactivity).is_empty(), "{:?}", h.got);
}

/// A night uploaded in the morning: in bed, then out of bed at 02:00;
/// the gateway lost its uplink at 01:55 and sends what it kept at 07:30.
/// `tail` adds readings to the upload after 02:00.
fn uploaded_night(tail: &[(EpochMs, &'static str, Body)]) -> Home {
    let cut = MIDNIGHT + H + 55 * MIN;
    let mut h = Home::new(&HOME4, MIDNIGHT);
    let all = |_| HOME4.iter().map(|d| d.0).collect();
    h.run(MIDNIGHT, MIDNIGHT + H + 30 * MIN, all);
    let mut t = MIDNIGHT + H + 30 * MIN;
    while t < cut {
        h.send("bed-1", t, sleep(true), t);
        h.e.tick(t);
        t += 30 * S;
    }
    // Silent from 01:55 to 07:30: the home is reported offline.
    let up = MIDNIGHT + 7 * H + 30 * MIN;
    h.run(cut, up - TICK, |_| Vec::new());
    assert_eq!(h.kinds_raised(), [AlertKind::HomeOffline], "{:?}", h.got);
    h.got.clear();
    // The upload: in bed to 02:00, then out; the band reports its pulse
    // every minute throughout; then `tail`.
    let mut upload: Vec<(EpochMs, &str, Body)> = Vec::new();
    let mut t = cut;
    while t < MIDNIGHT + 2 * H {
        upload.push((t, "bed-1", sleep(true)));
        t += 30 * S;
    }
    upload.push((MIDNIGHT + 2 * H, "bed-1", sleep(false)));
    let mut t = cut;
    while t <= MIDNIGHT + 2 * H + 40 * MIN {
        upload.push((t, "band-1", pulse()));
        t += MIN;
    }
    upload.extend(tail.iter().cloned());
    upload.sort_by_key(|u| u.0);
    let mut now = up;
    for (ts, dev, body) in upload {
        h.send(dev, ts, body, now);
        now += 5;
    }
    // The upload is done; the home goes on live (everyone up by now).
    h.run(up + S, up + MIN, |_| vec!["band-1", "pir-1", "btn-1"]);
    h
}

#[test]
fn an_uploaded_night_out_of_bed_is_raised_late() {
    let h = uploaded_night(&[]);
    let t = h.raised(AlertKind::OutOfBedTooLong);
    assert_eq!(t.len(), 1, "{:?}", h.got);
    let t = t[0];
    // Shown at 02:30 by the pulse readings that kept coming while the bed
    // stayed empty; judged at 07:30.
    assert_eq!(t.at_ms, MIDNIGHT + 2 * H + 30 * MIN);
    assert_eq!(t.severity, Severity::High);
    assert_eq!(t.record, None);
    let late = t.late_ms.expect("marked late");
    assert!((5 * H - MIN..=5 * H + MIN).contains(&late), "{late}");
    assert!(
        t.summary.en.contains("arrived 5 h 0 min late"),
        "{:?}",
        t.summary
    );
    // The home back resolves the offline alert; nothing else.
    assert_eq!(
        h.kinds_raised(),
        [AlertKind::OutOfBedTooLong],
        "{:?}",
        h.got
    );
}

#[test]
fn an_uploaded_bathroom_fall_is_critical() {
    let h = uploaded_night(&[(MIDNIGHT + 2 * H + 4 * MIN, "pir-1", motion("bathroom"))]);
    let t = h.raised(AlertKind::OutOfBedTooLong);
    assert_eq!(t.len(), 1, "{:?}", h.got);
    assert_eq!(t[0].severity, Severity::Critical);
    assert!(t[0].summary.en.contains("bathroom"), "{:?}", t[0].summary);
    assert!(t[0].late_ms.is_some());
    assert_eq!(t[0].record, None);
}

#[test]
fn an_uploaded_episode_already_over_is_recorded_not_raised() {
    // Back in bed at 02:38, in the same upload.
    let h = uploaded_night(&[(MIDNIGHT + 2 * H + 38 * MIN, "bed-1", sleep(true))]);
    let t = h.raised(AlertKind::OutOfBedTooLong);
    assert_eq!(t.len(), 1, "{:?}", h.got);
    match &t[0].record {
        Some(Record::OverInLateData(note)) => {
            assert!(note.en.contains("Back in bed at 02:38"), "{note:?}")
        }
        other => panic!("not recorded: {other:?}"),
    }
}

#[test]
fn an_uploaded_night_still_in_bed_raises_nothing() {
    let h = uploaded_night(&[(MIDNIGHT + 2 * H + 10 * MIN, "bed-1", sleep(true))]);
    let t = h.raised(AlertKind::OutOfBedTooLong);
    assert!(t.is_empty(), "{:?}", h.got);
}
