//! One scenario per rule, on a driven clock: it fires when it should,
//! not just short of its threshold or duration, does not flap on noise,
//! and respects its suppressions. Nothing here sleeps.
use eldercare_model::{
    AlertKind, Body, DeviceEvent, DeviceKind, EventType, Location, Motion, Reading, Severity,
    Sleep, Status, Vitals,
};
use eldercare_rules::{
    Decision, DeviceProfile, ElderProfile, Engine, Outcome, Resolve, Rules, Trigger, Update,
};

/// 2026-11-23 00:00 in Asia/Shanghai.
const MIDNIGHT: i64 = 1_795_363_200_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;
const DAY: i64 = MIDNIGHT + 10 * H;
const NIGHT: i64 = MIDNIGHT + 2 * H;
const HOME: (f64, f64) = (31.2, 121.4);

struct Home {
    e: Engine,
}

impl Home {
    fn new() -> Home {
        Home::with(Rules::defaults(), false, DAY - 12 * H)
    }

    fn with(rules: Rules, dementia: bool, now: i64) -> Home {
        let mut e = Engine::new(rules);
        let mut p = ElderProfile::new("E1");
        p.home = Some(HOME);
        p.safe_radius_m = Some(500.0);
        p.dementia = dementia;
        e.upsert_elder(&p, now);
        for (id, kind) in [
            ("bed-1", DeviceKind::SleepSensor),
            ("band-1", DeviceKind::VitalBand),
            ("pir-1", DeviceKind::Pir),
            ("gps-1", DeviceKind::GpsWatch),
            ("btn-1", DeviceKind::SosButton),
        ] {
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
        Home { e }
    }

    /// A reading arriving at its own event time.
    fn read(&mut self, dev: &str, ts: i64, body: Body) -> Vec<Decision> {
        self.read_at(dev, ts, body, ts)
    }

    fn read_at(&mut self, dev: &str, ts: i64, body: Body, now: i64) -> Vec<Decision> {
        let r = Reading {
            device_id: dev.into(),
            seq: None,
            ts_ms: ts,
            body,
        };
        self.e.on_reading(&r, now)
    }

    /// Keeps every device heard, so long timer scenarios do not also go
    /// offline.
    fn heartbeat(&mut self, now: i64) {
        for d in ["bed-1", "band-1", "pir-1", "gps-1", "btn-1"] {
            let got = self.read(d, now, status(None));
            assert!(got.is_empty(), "{got:?}");
        }
    }

    /// Ticks every `step` from `from` to `to` inclusive, collecting, with
    /// every device heard at each step.
    fn run(&mut self, from: i64, to: i64, step: i64) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            self.heartbeat(t);
            out.extend(self.e.tick(t));
            t += step;
        }
        out
    }
}

fn vitals(f: impl FnOnce(&mut Vitals)) -> Body {
    let mut v = Vitals::default();
    f(&mut v);
    Body::Vitals(v)
}

fn hr(v: u32) -> Body {
    vitals(|x| x.hr = Some(v))
}

fn sleep(in_bed: bool, hr: Option<u32>, rr: Option<u32>) -> Body {
    Body::Sleep(Sleep {
        in_bed,
        hr,
        rr,
        movement: None,
    })
}

fn motion(room: &str) -> Body {
    Body::Motion(Motion {
        room: room.into(),
        motion: true,
    })
}

fn event(kind: EventType, confidence: Option<f64>) -> Body {
    Body::Event(DeviceEvent {
        kind,
        confidence,
        carer: None,
        action: None,
    })
}

/// A fix `m` metres north of home.
fn north(m: f64) -> Body {
    Body::Location(Location {
        lat: HOME.0 + m / 111_195.0,
        lon: HOME.1,
        accuracy_m: Some(10.0),
    })
}

fn status(battery: Option<u32>) -> Body {
    Body::Status(Status {
        online: Some(true),
        battery_pct: battery,
        rssi: None,
        fw: None,
    })
}

fn will() -> Body {
    Body::Status(Status {
        online: Some(false),
        ..Default::default()
    })
}

fn raised(d: &[Decision]) -> Vec<&Trigger> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Raise(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn one_raise(d: &[Decision], kind: AlertKind) -> &Trigger {
    let r: Vec<_> = raised(d).into_iter().filter(|t| t.kind == kind).collect();
    assert_eq!(r.len(), 1, "expected one {kind:?} in {d:?}");
    r[0]
}

fn none_of(d: &[Decision], kind: AlertKind) {
    assert!(
        d.iter().all(|x| x.kind() != kind),
        "expected no {kind:?} in {d:?}"
    );
}

fn updates(d: &[Decision]) -> Vec<&Update> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn resolves(d: &[Decision]) -> Vec<&Resolve> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Resolve(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Readings every `step` from `from` to `to` inclusive.
fn feed(
    h: &mut Home,
    dev: &str,
    from: i64,
    to: i64,
    step: i64,
    body: impl Fn() -> Body,
) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        out.extend(h.read(dev, t, body()));
        t += step;
    }
    out
}

// ---- sos ----

#[test]
fn sos_is_critical_at_once_and_a_quick_cancel_is_a_false_alarm() {
    let mut h = Home::new();
    let d = h.read("btn-1", DAY, event(EventType::Sos, None));
    let t = one_raise(&d, AlertKind::Sos);
    assert_eq!(t.severity, Severity::Critical);
    assert!(t.summary.zh.contains("紧急呼叫"), "{:?}", t.summary);

    let d = h.read("btn-1", DAY + 30 * S, event(EventType::SosCancel, None));
    let r = resolves(&d);
    assert_eq!(r.len(), 1, "{d:?}");
    assert_eq!(
        (r[0].kind, r[0].outcome),
        (AlertKind::Sos, Outcome::FalseAlarm)
    );
    assert!(r[0].note.en.contains("30 s"), "{:?}", r[0].note);

    // A second cancel has nothing left to cancel.
    assert!(
        h.read("btn-1", DAY + 31 * S, event(EventType::SosCancel, None))
            .is_empty()
    );
}

#[test]
fn a_late_cancel_does_not_resolve_the_sos() {
    let mut h = Home::new();
    h.read("btn-1", DAY, event(EventType::Sos, None));
    let d = h.read("btn-1", DAY + 31 * S, event(EventType::SosCancel, None));
    assert!(resolves(&d).is_empty(), "{d:?}");
    let u = updates(&d);
    assert_eq!(u.len(), 1);
    assert!(u[0].note.en.contains("too late"), "{:?}", u[0].note);
    // A cancel with no SOS before it is nothing.
    let mut h = Home::new();
    assert!(
        h.read("btn-1", DAY, event(EventType::SosCancel, None))
            .is_empty()
    );
}

// ---- fall ----

#[test]
fn fall_confidence_threshold() {
    let mut h = Home::new();
    assert!(
        h.read("btn-1", DAY, event(EventType::Fall, Some(0.69)))
            .is_empty()
    );
    let d = h.read("btn-1", DAY, event(EventType::Fall, Some(0.7)));
    assert_eq!(one_raise(&d, AlertKind::Fall).severity, Severity::Critical);
}

#[test]
fn motion_after_a_fall_says_the_person_is_up_but_keeps_it_raised() {
    let mut h = Home::new();
    h.read("btn-1", DAY, event(EventType::Fall, Some(0.9)));
    // The fall itself moves the PIR: not "up".
    assert!(h.read("pir-1", DAY + 3 * S, motion("living")).is_empty());
    let d = h.read("pir-1", DAY + 20 * S, motion("living"));
    let u = updates(&d);
    assert_eq!(u.len(), 1, "{d:?}");
    assert_eq!(u[0].kind, AlertKind::Fall);
    let s = u[0].summary.as_ref().unwrap();
    assert!(
        s.en.contains("appears to be up") && s.en.contains("20 s"),
        "{s:?}"
    );
    assert!(s.zh.contains("起身"), "{s:?}");
    assert!(
        resolves(&d).is_empty(),
        "a fall is never cleared by the system"
    );
    // Said once.
    assert!(h.read("pir-1", DAY + 30 * S, motion("living")).is_empty());
}

#[test]
fn getting_back_into_bed_after_a_fall_is_getting_up() {
    let mut h = Home::new();
    h.read("bed-1", NIGHT - MIN, sleep(false, None, None));
    h.read("btn-1", NIGHT, event(EventType::Fall, Some(0.9)));
    let d = h.read("bed-1", NIGHT + 40 * S, sleep(true, Some(70), Some(16)));
    assert_eq!(updates(&d).len(), 1, "{d:?}");
}

#[test]
fn motion_later_than_the_window_is_not_getting_up() {
    let mut h = Home::new();
    h.read("btn-1", DAY, event(EventType::Fall, Some(0.9)));
    assert!(h.read("pir-1", DAY + 61 * S, motion("living")).is_empty());
}

#[test]
fn motion_that_arrives_before_the_fall_event_still_counts() {
    let mut h = Home::new();
    h.read_at("pir-1", DAY + 20 * S, motion("kitchen"), DAY + 20 * S);
    let d = h.read_at(
        "btn-1",
        DAY,
        event(EventType::Fall, Some(0.9)),
        DAY + 21 * S,
    );
    let t = one_raise(&d, AlertKind::Fall);
    assert!(t.summary.en.contains("appears to be up"), "{:?}", t.summary);
}

// ---- vital_out_of_range: single parameters ----

#[test]
fn each_vital_raises_after_sixty_seconds_and_not_just_short() {
    type Set = fn(&mut Vitals, f64);
    let cases: [(&str, Set, f64, f64); 9] = [
        ("pulse high", |v, x| v.hr = Some(x as u32), 131.0, 130.0),
        ("pulse low", |v, x| v.hr = Some(x as u32), 40.0, 41.0),
        ("spo2", |v, x| v.spo2 = Some(x as u32), 91.0, 92.0),
        ("resp high", |v, x| v.rr = Some(x as u32), 25.0, 24.0),
        ("resp low", |v, x| v.rr = Some(x as u32), 8.0, 9.0),
        ("sys low", |v, x| v.sys = Some(x as u32), 90.0, 91.0),
        ("sys high", |v, x| v.sys = Some(x as u32), 220.0, 219.0),
        ("temp high", |v, x| v.temp_c = Some(x), 39.1, 39.0),
        ("temp low", |v, x| v.temp_c = Some(x), 35.0, 35.1),
    ];
    for (name, set, bad, edge) in cases {
        // Just inside the normal range: never.
        let mut h = Home::new();
        let d = feed(&mut h, "band-1", DAY, DAY + 10 * MIN, 10 * S, || {
            vitals(|v| set(v, edge))
        });
        assert!(d.is_empty(), "{name}: {edge} must not raise: {d:?}");

        // At the threshold: 59 s is not enough, 60 s is.
        let mut h = Home::new();
        let d = feed(&mut h, "band-1", DAY, DAY + 50 * S, 10 * S, || {
            vitals(|v| set(v, bad))
        });
        assert!(d.is_empty(), "{name}: raised before 60 s: {d:?}");
        assert!(
            h.read("band-1", DAY + 59 * S, vitals(|v| set(v, bad)))
                .is_empty(),
            "{name}"
        );
        let d = h.read("band-1", DAY + 60 * S, vitals(|v| set(v, bad)));
        let t = one_raise(&d, AlertKind::VitalOutOfRange);
        assert_eq!(t.severity, Severity::High, "{name}");
        assert_eq!(t.window, Some((DAY, DAY + 60 * S)), "{name}");
        assert_eq!(
            t.score,
            Some(if name == "temp high" { 2 } else { 3 }),
            "{name}"
        );
        assert_eq!(t.readings.len(), 2, "{name}: first and last reading kept");
        assert!(!t.summary.en.is_empty() && !t.summary.zh.is_empty());
    }
}

#[test]
fn the_summary_explains_in_both_languages() {
    let mut h = Home::new();
    let d = feed(&mut h, "band-1", DAY, DAY + 60 * S, 10 * S, || hr(150));
    let t = one_raise(&d, AlertKind::VitalOutOfRange);
    assert_eq!(t.summary.en, "Pulse 150 bpm (≥131) for 60 s");
    assert_eq!(t.summary.zh, "脉搏 150 次/分（≥131），持续 60 秒");
    assert_eq!(t.factors, vec!["pulse 150 bpm (3)".to_string()]);
}

#[test]
fn a_missing_reading_or_two_does_not_break_the_hold() {
    let mut h = Home::new();
    // Readings every 10 s with two missing (a 30 s gap).
    h.read("band-1", DAY, hr(140));
    h.read("band-1", DAY + 10 * S, hr(140));
    h.read("band-1", DAY + 40 * S, hr(140));
    let d = h.read("band-1", DAY + 60 * S, hr(140));
    one_raise(&d, AlertKind::VitalOutOfRange);

    // A longer silence starts the hold over.
    let mut h = Home::new();
    h.read("band-1", DAY, hr(140));
    for t in [41, 60, 80, 100] {
        assert!(h.read("band-1", DAY + t * S, hr(140)).is_empty(), "{t}");
    }
    one_raise(
        &h.read("band-1", DAY + 101 * S, hr(140)),
        AlertKind::VitalOutOfRange,
    );
}

#[test]
fn a_value_hovering_at_the_threshold_does_not_flap() {
    let mut h = Home::new();
    // Alternating 131 / 129 never holds for 60 s.
    let mut all = Vec::new();
    for i in 0..60 {
        let v = if i % 2 == 0 { 131 } else { 129 };
        all.extend(h.read("band-1", DAY + i * 10 * S, hr(v)));
    }
    assert!(all.is_empty(), "{all:?}");

    // Once raised, hovering within the margin (127-131) does not end the
    // episode, so it does not raise again...
    let mut h = Home::new();
    let d = feed(&mut h, "band-1", DAY, DAY + 60 * S, 10 * S, || hr(135));
    assert_eq!(raised(&d).len(), 1);
    let mut again = Vec::new();
    for i in 7..100 {
        let v = [131, 127, 133, 128][i as usize % 4];
        again.extend(h.read("band-1", DAY + i * 10 * S, hr(v)));
    }
    assert!(again.is_empty(), "{again:?}");
    // ...only 60 s clearly back in range ends it; then a new episode raises.
    let t0 = DAY + 100 * 10 * S;
    assert!(feed(&mut h, "band-1", t0, t0 + 60 * S, 10 * S, || hr(100)).is_empty());
    let t1 = t0 + 70 * S;
    let d = feed(&mut h, "band-1", t1, t1 + 60 * S, 10 * S, || hr(140));
    assert_eq!(raised(&d).len(), 1, "{d:?}");
}

#[test]
fn late_readings_do_not_rewind_a_hold() {
    let mut h = Home::new();
    h.read("band-1", DAY + 100 * S, hr(150));
    // Late, and 90 s before: it must not make the stretch look longer.
    assert!(h.read("band-1", DAY + 10 * S, hr(150)).is_empty());
    for t in [120, 140, 150] {
        assert!(h.read("band-1", DAY + t * S, hr(150)).is_empty(), "{t}");
    }
    one_raise(
        &h.read("band-1", DAY + 160 * S, hr(150)),
        AlertKind::VitalOutOfRange,
    );
}

#[test]
fn each_device_holds_its_own_signal() {
    let mut h = Home::new();
    let mut d = feed(&mut h, "band-1", DAY, DAY + 20 * S, 10 * S, || hr(150));
    // The sleep sensor's normal pulse does not cancel the band's episode.
    d.extend(h.read("bed-1", DAY + 25 * S, sleep(true, Some(60), Some(14))));
    d.extend(feed(
        &mut h,
        "band-1",
        DAY + 30 * S,
        DAY + 60 * S,
        10 * S,
        || hr(150),
    ));
    one_raise(&d, AlertKind::VitalOutOfRange);
    // And the sleep sensor's own pulse counts while in bed.
    let mut h = Home::new();
    let d = feed(&mut h, "bed-1", DAY, DAY + 60 * S, 5 * S, || {
        sleep(true, Some(35), Some(14))
    });
    one_raise(&d, AlertKind::VitalOutOfRange);
}

#[test]
fn per_elder_overrides_apply() {
    let rules = Rules::parse("[elders.E1.vitals]\npulse_high = 150\n").unwrap();
    let mut h = Home::with(rules, false, DAY - H);
    assert!(feed(&mut h, "band-1", DAY, DAY + 5 * MIN, 10 * S, || hr(145)).is_empty());
    let t = DAY + 10 * MIN;
    let d = feed(&mut h, "band-1", t, t + 60 * S, 10 * S, || hr(150));
    assert_eq!(raised(&d).len(), 1);
}

#[test]
fn reloading_rules_keeps_state() {
    let mut h = Home::new();
    feed(&mut h, "band-1", DAY, DAY + 30 * S, 10 * S, || hr(140));
    h.e.set_rules(Rules::parse("[vitals]\nhold_s = 45\n").unwrap());
    // The stretch that began before the reload counts, under the new hold.
    let d = h.read("band-1", DAY + 45 * S, hr(140));
    one_raise(&d, AlertKind::VitalOutOfRange);
}

// ---- vital_out_of_range: NEWS2 aggregate ----

fn news2_5() -> Body {
    // pulse 115 (2), SpO2 93 (2), temperature 38.5 (1): 5.
    vitals(|v| {
        v.hr = Some(115);
        v.spo2 = Some(93);
        v.temp_c = Some(38.5);
    })
}

#[test]
fn news2_five_raises_high_after_its_hold_and_seven_critical() {
    let mut h = Home::new();
    let d = feed(&mut h, "band-1", DAY, DAY + 50 * S, 10 * S, news2_5);
    assert!(d.is_empty(), "{d:?}");
    let d = h.read("band-1", DAY + 60 * S, news2_5());
    let t = one_raise(&d, AlertKind::VitalOutOfRange);
    assert_eq!((t.severity, t.score), (Severity::High, Some(5)));
    assert_eq!(t.factors.len(), 3, "{:?}", t.factors);
    assert!(t.summary.en.starts_with("NEWS2 score 5"), "{:?}", t.summary);
    assert!(t.summary.zh.starts_with("NEWS2 评分 5"), "{:?}", t.summary);
    // Still 5: nothing more.
    assert!(h.read("band-1", DAY + 70 * S, news2_5()).is_empty());
    // The sleep sensor adds respiration 22 (2): 7 -> CRITICAL.
    let d = h.read("bed-1", DAY + 75 * S, sleep(true, Some(115), Some(22)));
    let t = one_raise(&d, AlertKind::VitalOutOfRange);
    assert_eq!((t.severity, t.score), (Severity::Critical, Some(7)));
}

#[test]
fn news2_four_does_not_raise_and_a_blip_to_five_does_not_either() {
    let mut h = Home::new();
    let four = || {
        vitals(|v| {
            v.hr = Some(115);
            v.spo2 = Some(93);
            v.temp_c = Some(37.0);
        })
    };
    let mut d = feed(&mut h, "band-1", DAY, DAY + 10 * MIN, 10 * S, four);
    d.extend(h.read("band-1", DAY + 10 * MIN + 10 * S, news2_5()));
    let t = DAY + 10 * MIN + 20 * S;
    d.extend(feed(&mut h, "band-1", t, t + 10 * MIN, 10 * S, four));
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn news2_ignores_readings_older_than_its_window() {
    let mut h = Home::new();
    // An old SpO2 of 93 (2) from the band...
    h.read("band-1", DAY, vitals(|v| v.spo2 = Some(93)));
    // ...does not add to pulse 115 (2) + temp 38.5 (1) eleven minutes later.
    let t = DAY + 11 * MIN;
    let d = feed(&mut h, "band-1", t, t + 5 * MIN, 10 * S, || {
        vitals(|v| {
            v.hr = Some(115);
            v.temp_c = Some(38.5);
        })
    });
    assert!(d.is_empty(), "{d:?}");
}

// ---- no_breathing ----

#[test]
fn no_breathing_in_bed_for_twenty_seconds_is_critical() {
    let mut h = Home::new();
    let d = feed(&mut h, "bed-1", NIGHT, NIGHT + 15 * S, 5 * S, || {
        sleep(true, Some(60), Some(0))
    });
    assert!(d.is_empty(), "{d:?}");
    let d = h.read("bed-1", NIGHT + 20 * S, sleep(true, Some(60), Some(0)));
    let t = one_raise(&d, AlertKind::NoBreathing);
    assert_eq!(t.severity, Severity::Critical);
    assert_eq!(t.window, Some((NIGHT, NIGHT + 20 * S)));
    // Going on: one alert, and rr = 0 is not also a respiration alert.
    let d = feed(
        &mut h,
        "bed-1",
        NIGHT + 25 * S,
        NIGHT + 5 * MIN,
        5 * S,
        || sleep(true, Some(60), Some(0)),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn breathing_or_leaving_bed_breaks_the_no_breathing_hold() {
    let mut h = Home::new();
    feed(&mut h, "bed-1", NIGHT, NIGHT + 15 * S, 5 * S, || {
        sleep(true, Some(60), Some(0))
    });
    h.read("bed-1", NIGHT + 16 * S, sleep(true, Some(60), Some(12)));
    let d = feed(
        &mut h,
        "bed-1",
        NIGHT + 20 * S,
        NIGHT + 35 * S,
        5 * S,
        || sleep(true, Some(60), Some(0)),
    );
    assert!(d.is_empty(), "{d:?}");

    let mut h = Home::new();
    feed(&mut h, "bed-1", NIGHT, NIGHT + 15 * S, 5 * S, || {
        sleep(true, Some(60), Some(0))
    });
    h.read("bed-1", NIGHT + 16 * S, sleep(false, None, None));
    let d = h.read("bed-1", NIGHT + 20 * S, sleep(true, Some(60), Some(0)));
    assert!(d.is_empty(), "{d:?}");
}

// ---- out_of_bed_too_long ----

/// In bed, then out at `left`.
fn leave_bed(h: &mut Home, left: i64) {
    assert!(
        h.read("bed-1", left - 10 * MIN, sleep(true, Some(60), Some(14)))
            .is_empty()
    );
    assert!(h.read("bed-1", left, sleep(false, None, None)).is_empty());
}

#[test]
fn out_of_bed_at_night_for_thirty_minutes_is_high() {
    let mut h = Home::new();
    leave_bed(&mut h, NIGHT);
    let d = h.run(NIGHT, NIGHT + 30 * MIN - S, 10 * S);
    none_of(&d, AlertKind::OutOfBedTooLong);
    let d = h.run(NIGHT + 30 * MIN, NIGHT + 40 * MIN, 10 * S);
    let t = one_raise(&d, AlertKind::OutOfBedTooLong);
    assert_eq!(t.severity, Severity::High);
    assert_eq!(t.at_ms, NIGHT + 30 * MIN);
    assert!(t.summary.en.contains("02:00"), "{:?}", t.summary);
    assert_eq!(t.readings.len(), 1, "the reading that showed leaving bed");
}

#[test]
fn back_in_bed_in_time_raises_nothing() {
    let mut h = Home::new();
    leave_bed(&mut h, NIGHT);
    h.read("bed-1", NIGHT + 20 * MIN, sleep(true, Some(60), Some(14)));
    let d = h.run(NIGHT, NIGHT + 2 * H, 30 * S);
    none_of(&d, AlertKind::OutOfBedTooLong);
}

#[test]
fn moving_about_the_home_suppresses_out_of_bed() {
    let mut h = Home::new();
    leave_bed(&mut h, NIGHT);
    h.read("pir-1", NIGHT + 28 * MIN, motion("kitchen"));
    let d = h.run(NIGHT, NIGHT + 33 * MIN - S, 10 * S);
    none_of(&d, AlertKind::OutOfBedTooLong);
    // Five minutes without motion after that: up, but now still.
    let d = h.run(NIGHT + 33 * MIN, NIGHT + 34 * MIN, 10 * S);
    let t = one_raise(&d, AlertKind::OutOfBedTooLong);
    assert_eq!(t.severity, Severity::High);
    assert!(t.summary.en.contains("02:28"), "{:?}", t.summary);
}

#[test]
fn last_seen_in_the_bathroom_and_nothing_since_is_critical() {
    let mut h = Home::new();
    leave_bed(&mut h, NIGHT);
    h.read("pir-1", NIGHT + 2 * MIN, motion("bathroom"));
    let d = h.run(NIGHT, NIGHT + 31 * MIN, 10 * S);
    let t = one_raise(&d, AlertKind::OutOfBedTooLong);
    assert_eq!(t.severity, Severity::Critical);
    assert!(
        t.summary.en.contains("bathroom at 02:02"),
        "{:?}",
        t.summary
    );
    assert!(t.summary.zh.contains("卫生间"), "{:?}", t.summary);
}

#[test]
fn out_of_bed_in_the_daytime_or_into_the_morning_is_not_watched() {
    let mut h = Home::new();
    leave_bed(&mut h, DAY);
    none_of(&h.run(DAY, DAY + H, MIN), AlertKind::OutOfBedTooLong);
    // Up at 06:45: by 07:15 it is morning.
    let t = MIDNIGHT + 6 * H + 45 * MIN;
    let mut h = Home::new();
    leave_bed(&mut h, t);
    none_of(&h.run(t, t + H, MIN), AlertKind::OutOfBedTooLong);
}

// ---- inactivity ----

#[test]
fn four_hours_of_daytime_without_motion_is_high() {
    let start = MIDNIGHT + 8 * H;
    let mut h = Home::with(Rules::defaults(), false, start - H);
    h.read("pir-1", start, motion("living"));
    let mut d = Vec::new();
    let mut t = start;
    while t < start + 4 * H {
        h.heartbeat(t);
        d.extend(h.e.tick(t));
        t += MIN;
    }
    assert!(d.is_empty(), "{d:?}");
    h.heartbeat(start + 4 * H);
    let d = h.e.tick(start + 4 * H);
    let t = one_raise(&d, AlertKind::Inactivity);
    assert_eq!(t.severity, Severity::High);
    assert!(
        t.summary.en.contains("4 h 0 min") && t.summary.en.contains("08:00"),
        "{:?}",
        t.summary
    );
    // Raised once.
    assert!(
        h.run(start + 4 * H + 5 * MIN, start + 5 * H, 5 * MIN)
            .is_empty()
    );
    // Motion ends the episode; another four hours raise again.
    h.read("pir-1", start + 5 * H, motion("kitchen"));
    let d = h.run(start + 5 * H, start + 9 * H, 5 * MIN);
    let t = one_raise(&d, AlertKind::Inactivity);
    assert_eq!(t.at_ms, start + 9 * H);
}

#[test]
fn a_home_whose_sensors_all_fall_silent_is_offline_not_inactive() {
    // A power cut at 08:00: nothing at all is heard after the last motion.
    let start = MIDNIGHT + 8 * H;
    let mut h = Home::with(Rules::defaults(), false, start - H);
    h.heartbeat(start);
    h.read("pir-1", start, motion("living"));
    let mut d = Vec::new();
    let mut t = start;
    while t <= start + 6 * H {
        d.extend(h.e.tick(t));
        t += 10 * MIN;
    }
    assert!(
        d.iter().any(|d| d.kind() == AlertKind::HomeOffline),
        "the silence is reported: {d:?}"
    );
    none_of(&d, AlertKind::Inactivity);
}

#[test]
fn inactivity_counts_daytime_only() {
    // Last motion 20:00; night 21:00-07:00; four daytime hours end at 10:00.
    let start = MIDNIGHT + 20 * H;
    let mut h = Home::with(Rules::defaults(), false, start - H);
    h.read("pir-1", start, motion("living"));
    none_of(
        &h.run(start, start + 14 * H - MIN, MIN),
        AlertKind::Inactivity,
    );
    h.heartbeat(start + 14 * H);
    one_raise(&h.e.tick(start + 14 * H), AlertKind::Inactivity);
}

#[test]
fn in_bed_or_away_suppresses_inactivity() {
    let start = MIDNIGHT + 8 * H;
    let mut h = Home::with(Rules::defaults(), false, start - H);
    h.read("pir-1", start, motion("living"));
    h.read("bed-1", start + MIN, sleep(true, Some(60), Some(14)));
    h.heartbeat(start + 6 * H);
    none_of(
        &h.run(start, start + 6 * H, 10 * MIN),
        AlertKind::Inactivity,
    );
    // Out of bed at 14:00: the clock starts there.
    h.read("bed-1", start + 6 * H, sleep(false, None, None));
    h.heartbeat(start + 10 * H - MIN);
    none_of(&h.e.tick(start + 10 * H - MIN), AlertKind::Inactivity);

    let mut h = Home::with(Rules::defaults(), false, start - H);
    h.read("pir-1", start, motion("living"));
    h.read("gps-1", start + MIN, north(2000.0));
    h.heartbeat(start + 6 * H);
    none_of(
        &h.run(start, start + 6 * H, 10 * MIN),
        AlertKind::Inactivity,
    );
}

// ---- geofence_exit ----

#[test]
fn two_fixes_outside_raise_by_flag_and_time_of_day() {
    // Daytime, no dementia: MEDIUM, on the second fix only.
    let mut h = Home::new();
    assert!(h.read("gps-1", DAY, north(600.0)).is_empty());
    let d = h.read("gps-1", DAY + MIN, north(700.0));
    let t = one_raise(&d, AlertKind::GeofenceExit);
    assert_eq!(t.severity, Severity::Medium);
    assert_eq!(t.readings.len(), 2);
    assert!(t.summary.en.contains("700 m"), "{:?}", t.summary);
    // Still out: no repeat.
    assert!(h.read("gps-1", DAY + 2 * MIN, north(900.0)).is_empty());
    // Back inside: the alert is updated, not cleared.
    let d = h.read("gps-1", DAY + 3 * MIN, north(100.0));
    let u = updates(&d);
    assert_eq!(u.len(), 1, "{d:?}");
    assert!(u[0].note.en.contains("Back inside"), "{:?}", u[0].note);
    assert!(resolves(&d).is_empty());

    // Dementia: HIGH.
    let mut h = Home::with(Rules::defaults(), true, DAY - H);
    h.read("gps-1", DAY, north(600.0));
    let d = h.read("gps-1", DAY + MIN, north(600.0));
    assert_eq!(
        one_raise(&d, AlertKind::GeofenceExit).severity,
        Severity::High
    );

    // Night: CRITICAL.
    let mut h = Home::new();
    h.read("gps-1", NIGHT, north(600.0));
    let d = h.read("gps-1", NIGHT + MIN, north(600.0));
    assert_eq!(
        one_raise(&d, AlertKind::GeofenceExit).severity,
        Severity::Critical
    );
}

#[test]
fn a_walk_along_the_boundary_does_not_flap() {
    let mut h = Home::new();
    let mut d = Vec::new();
    for i in 0..40 {
        let m = if i % 2 == 0 { 505.0 } else { 495.0 };
        d.extend(h.read("gps-1", DAY + i * MIN, north(m)));
    }
    assert!(d.is_empty(), "{d:?}");
    // Once out, coming back only to the margin is not "back inside".
    h.read("gps-1", DAY + 50 * MIN, north(600.0));
    one_raise(
        &h.read("gps-1", DAY + 51 * MIN, north(600.0)),
        AlertKind::GeofenceExit,
    );
    assert!(h.read("gps-1", DAY + 52 * MIN, north(490.0)).is_empty());
    assert!(h.read("gps-1", DAY + 53 * MIN, north(510.0)).is_empty());
}

#[test]
fn inaccurate_fixes_are_not_judged() {
    let mut h = Home::new();
    let vague = |m: f64| match north(m) {
        Body::Location(mut l) => {
            l.accuracy_m = Some(800.0);
            Body::Location(l)
        }
        b => b,
    };
    assert!(h.read("gps-1", DAY, vague(900.0)).is_empty());
    assert!(h.read("gps-1", DAY + MIN, vague(900.0)).is_empty());
}

// ---- device_offline / home_offline ----

#[test]
fn a_silent_device_is_offline_after_heartbeat_and_grace_and_clears_itself() {
    let mut h = Home::new();
    let t0 = DAY;
    h.heartbeat(t0);
    let mut d = Vec::new();
    let mut t = t0;
    // Everyone but the band keeps talking.
    while t < t0 + 6 * MIN {
        for dev in ["bed-1", "pir-1", "gps-1", "btn-1"] {
            h.read(dev, t, status(None));
        }
        d.extend(h.e.tick(t));
        t += 10 * S;
    }
    assert!(d.is_empty(), "offline before 300 s + 60 s: {d:?}");
    for dev in ["bed-1", "pir-1", "gps-1", "btn-1"] {
        h.read(dev, t0 + 6 * MIN, status(None));
    }
    let d = h.e.tick(t0 + 6 * MIN);
    let a = one_raise(&d, AlertKind::DeviceOffline);
    assert_eq!(
        (a.severity, a.subject.as_deref()),
        (Severity::Low, Some("band-1"))
    );
    none_of(&d, AlertKind::HomeOffline);
    // Heard again: cleared by the system.
    let d = h.read("band-1", t0 + 7 * MIN, hr(70));
    let r = resolves(&d);
    assert_eq!(r.len(), 1, "{d:?}");
    assert_eq!(
        (r[0].kind, r[0].outcome, r[0].subject.as_deref()),
        (AlertKind::DeviceOffline, Outcome::Cleared, Some("band-1"))
    );
}

#[test]
fn a_last_will_is_offline_after_the_grace() {
    let mut h = Home::new();
    h.heartbeat(DAY);
    assert!(h.read("gps-1", DAY + S, will()).is_empty());
    h.heartbeat_except(DAY + 60 * S, "gps-1");
    none_of(&h.e.tick(DAY + 60 * S), AlertKind::DeviceOffline);
    h.heartbeat_except(DAY + 61 * S, "gps-1");
    let d = h.e.tick(DAY + 61 * S);
    assert_eq!(
        one_raise(&d, AlertKind::DeviceOffline).subject.as_deref(),
        Some("gps-1")
    );
}

impl Home {
    fn heartbeat_except(&mut self, now: i64, skip: &str) {
        for d in ["bed-1", "band-1", "pir-1", "gps-1", "btn-1"] {
            if d != skip {
                self.read(d, now, status(None));
            }
        }
    }
}

#[test]
fn a_whole_home_going_silent_is_one_home_offline_alert() {
    let mut h = Home::new();
    h.heartbeat(DAY);
    // Power cut: the devices drop within a few seconds of each other.
    for (i, dev) in ["bed-1", "band-1", "pir-1", "gps-1", "btn-1"]
        .iter()
        .enumerate()
    {
        h.read_at(dev, DAY + i as i64 * S, will(), DAY + i as i64 * S);
    }
    let mut d = Vec::new();
    let mut t = DAY;
    while t <= DAY + 10 * MIN {
        d.extend(h.e.tick(t));
        t += 5 * S;
    }
    one_raise(&d, AlertKind::HomeOffline);
    none_of(&d, AlertKind::DeviceOffline);
    assert_eq!(raised(&d).len(), 1, "{d:?}");
    // Power back: the first device heard clears it; the others reconnect
    // over the next seconds without an alert each.
    let back = DAY + 11 * MIN;
    let d = h.read("bed-1", back, status(None));
    assert_eq!(resolves(&d)[0].kind, AlertKind::HomeOffline);
    let mut d = Vec::new();
    for (i, dev) in ["band-1", "pir-1", "gps-1", "btn-1"].iter().enumerate() {
        d.extend(h.e.tick(back + (i as i64 + 1) * 5 * S));
        d.extend(h.read(dev, back + (i as i64 + 1) * 5 * S, status(None)));
    }
    assert!(raised(&d).is_empty(), "{d:?}");
}

// ---- low_battery ----

#[test]
fn low_battery_raises_at_fifteen_and_clears_at_thirty() {
    let mut h = Home::new();
    assert!(h.read("btn-1", DAY, status(Some(16))).is_empty());
    let d = h.read("btn-1", DAY + MIN, status(Some(15)));
    let t = one_raise(&d, AlertKind::LowBattery);
    assert_eq!(
        (t.severity, t.subject.as_deref()),
        (Severity::Low, Some("btn-1"))
    );
    // Noise around the threshold and a half charge: nothing.
    for (i, p) in [14, 16, 15, 20, 29].into_iter().enumerate() {
        let d = h.read("btn-1", DAY + (i as i64 + 2) * MIN, status(Some(p)));
        assert!(d.is_empty(), "{p}: {d:?}");
    }
    let d = h.read("btn-1", DAY + 10 * MIN, status(Some(30)));
    let r = resolves(&d);
    assert_eq!(
        (r[0].kind, r[0].outcome),
        (AlertKind::LowBattery, Outcome::Cleared)
    );
    one_raise(
        &h.read("btn-1", DAY + 11 * MIN, status(Some(12))),
        AlertKind::LowBattery,
    );
    // Another device of the home has its own.
    one_raise(
        &h.read("gps-1", DAY + 11 * MIN, status(Some(10))),
        AlertKind::LowBattery,
    );
}

// ---- registry ----

#[test]
fn unknown_devices_are_ignored_and_moves_follow_the_registry() {
    let mut h = Home::new();
    assert!(
        h.read("nobody", DAY, event(EventType::Sos, None))
            .is_empty()
    );
    h.e.upsert_device(
        &DeviceProfile {
            device_id: "btn-1".into(),
            elder_id: "E2".into(),
            kind: DeviceKind::SosButton,
            heartbeat_s: 300,
        },
        DAY,
    );
    assert_eq!(h.e.elder_of("btn-1"), Some("E2"));
    let d = h.read("btn-1", DAY, event(EventType::Sos, None));
    assert_eq!(one_raise(&d, AlertKind::Sos).elder_id, "E2");
    h.e.remove_device("btn-1");
    assert!(h.read("btn-1", DAY, event(EventType::Sos, None)).is_empty());
    assert_eq!(h.e.devices(), 4);
}

// ---- restart ----

#[test]
fn after_a_restart_open_maintenance_alerts_still_clear_themselves() {
    let mut h = Home::new();
    h.e.restore_open(AlertKind::DeviceOffline, "E1", Some("gps-1"), DAY);
    h.e.restore_open(AlertKind::LowBattery, "E1", Some("btn-1"), DAY);
    // Not raised a second time while still silent...
    h.heartbeat_except(DAY + 10 * MIN, "gps-1");
    none_of(&h.e.tick(DAY + 10 * MIN), AlertKind::DeviceOffline);
    // ...and cleared when heard.
    let d = h.read("gps-1", DAY + 11 * MIN, north(10.0));
    assert_eq!(resolves(&d)[0].kind, AlertKind::DeviceOffline);
    assert!(h.read("btn-1", DAY + 11 * MIN, status(Some(14))).is_empty());
    let d = h.read("btn-1", DAY + 12 * MIN, status(Some(90)));
    assert_eq!(resolves(&d)[0].kind, AlertKind::LowBattery);
    // An alert of a device that moved elsewhere is ignored.
    h.e.restore_open(AlertKind::LowBattery, "E9", Some("btn-1"), DAY);
}
