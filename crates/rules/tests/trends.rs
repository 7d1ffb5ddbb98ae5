//! Each elder's own normal: weeks of ordinary days teach the usual range,
//! a change held for days raises one `trend` on the care queue, ordinary
//! variation and silent days raise nothing. Days are generated, the clock
//! driven; nothing sleeps.
use eldercare_model::{
    AlertKind, Body, DeviceEvent, DeviceKind, EpochMs, EventType, Motion, Reading, Sleep, Status,
    VisitAction,
};
use eldercare_rules::{
    Decision, DeviceProfile, ElderProfile, Engine, EngineSnapshot, PlanProfile, Record, Rules,
    Trigger,
};

/// 2026-09-01 00:00 in Asia/Shanghai.
const DAY0: i64 = 1_788_192_000_000;
const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;

fn engine(rules: Rules) -> Engine {
    let mut e = Engine::new(rules);
    e.upsert_elder(&ElderProfile::new("E1"), DAY0 + 12 * H);
    for (id, kind) in [
        ("bed-1", DeviceKind::SleepSensor),
        ("pir-1", DeviceKind::Pir),
        ("btn-1", DeviceKind::SosButton),
    ] {
        e.upsert_device(
            &DeviceProfile {
                device_id: id.into(),
                elder_id: "E1".into(),
                kind,
                heartbeat_s: 300,
            },
            DAY0 + 12 * H,
        );
    }
    e
}

fn r(dev: &str, ts: EpochMs, body: Body) -> Reading {
    Reading {
        device_id: dev.into(),
        seq: None,
        ts_ms: ts,
        body,
    }
}

fn motion(room: &str) -> Body {
    Body::Motion(Motion {
        room: room.into(),
        motion: true,
    })
}

fn sleep(in_bed: bool, hr: u32, rr: u32) -> Body {
    Body::Sleep(Sleep {
        in_bed,
        hr: in_bed.then_some(hr),
        rr: in_bed.then_some(rr),
        movement: None,
    })
}

/// One day's readings, from local 12:00 of `day` to 12:00 the day after:
/// heartbeats every 5 min, movement through the afternoon and morning,
/// in bed 22:00-06:30 with `visits` bathroom visits, breathing `rr`.
fn day_readings(day: i64, visits: u32, rr: u32, silent: bool) -> Vec<Reading> {
    day_moving_every(day, visits, rr, silent, 20 * MIN)
}

/// As [`day_readings`], moving every `every` ms while awake.
fn day_moving_every(day: i64, visits: u32, rr: u32, silent: bool, every: i64) -> Vec<Reading> {
    let noon = DAY0 + day * DAY + 12 * H;
    let mut out = Vec::new();
    if silent {
        return out;
    }
    let mut t = noon;
    while t < noon + DAY {
        for d in ["bed-1", "pir-1", "btn-1"] {
            out.push(r(d, t, Body::Status(Status::default())));
        }
        t += 5 * MIN;
    }
    // Awake: 12:00-22:00 and 06:30-12:00, moving every `every`.
    for (from, to) in [
        (noon, noon + 10 * H),
        (noon + 18 * H + 30 * MIN, noon + DAY),
    ] {
        let mut t = from + 2 * MIN;
        while t < to {
            out.push(r("pir-1", t, motion("living")));
            t += every;
        }
    }
    // In bed 22:00 to 06:30, a reading a minute; visits spread over the night.
    let (bed, up) = (noon + 10 * H, noon + 18 * H + 30 * MIN);
    let gaps: Vec<i64> = (1..=visits)
        .map(|i| bed + i64::from(i) * (up - bed) / i64::from(visits + 1))
        .collect();
    let mut t = bed;
    while t < up {
        let out_of_bed = gaps.iter().any(|&g| t >= g && t < g + 6 * MIN);
        out.push(r("bed-1", t, sleep(!out_of_bed, 58, rr)));
        if gaps.iter().any(|&g| t == g + 2 * MIN) {
            out.push(r("pir-1", t, motion("bathroom")));
        }
        t += MIN;
    }
    out.push(r("bed-1", up, sleep(false, 0, 0)));
    out.sort_by_key(|r| r.ts_ms);
    out
}

/// Runs `days` days; `visits(day)` and `rr(day)` shape each night.
fn live(
    e: &mut Engine,
    days: std::ops::Range<i64>,
    visits: impl Fn(i64) -> u32,
    rr: impl Fn(i64) -> u32,
    silent: impl Fn(i64) -> bool,
) -> Vec<Decision> {
    let mut got = Vec::new();
    for day in days {
        for reading in day_readings(day, visits(day), rr(day), silent(day)) {
            let t = reading.ts_ms;
            got.extend(e.on_reading(&reading, t));
            got.extend(e.tick(t));
        }
        // Silent days still have a clock.
        got.extend(e.tick(DAY0 + (day + 1) * DAY + 12 * H));
    }
    got
}

fn trends(d: &[Decision]) -> Vec<&Trigger> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Raise(t) if t.kind == AlertKind::Trend => Some(t),
            _ => None,
        })
        .collect()
}

/// An ordinary elder: one or two visits a night, sometimes none or
/// three, breathing 14-16.
fn usual_visits(day: i64) -> u32 {
    [1, 2, 1, 0, 1, 2, 1, 3, 1, 2][(day % 10) as usize]
}

fn usual_rr(day: i64) -> u32 {
    14 + (day % 3) as u32
}

#[test]
fn ordinary_weeks_raise_nothing() {
    let mut e = engine(Rules::defaults());
    let got = live(&mut e, 0..60, usual_visits, usual_rr, |_| false);
    assert!(trends(&got).is_empty(), "{:?}", trends(&got));
    let raised: Vec<_> = got
        .iter()
        .filter_map(|d| match d {
            Decision::Raise(t) => Some(t.kind),
            _ => None,
        })
        .collect();
    assert!(raised.is_empty(), "{raised:?}");
}

#[test]
fn nocturia_rising_raises_one_trend_with_its_evidence() {
    let mut e = engine(Rules::defaults());
    let onset = 35;
    let got = live(
        &mut e,
        0..50,
        |d| if d >= onset { 5 } else { usual_visits(d) },
        usual_rr,
        |_| false,
    );
    let t = trends(&got);
    assert_eq!(t.len(), 1, "{t:?}");
    let t = t[0];
    assert_eq!(t.subject.as_deref(), Some("night_bathroom_visits"));
    assert_eq!(t.record, None);
    // Each night far beyond adds `cap` (2) less `k` (0.5) spreads of
    // evidence: the sixth passes `h` (8), judged at the noon after it.
    assert_eq!(t.at_ms, DAY0 + (onset + 6) * DAY + 12 * H);
    assert!(
        t.summary.en.starts_with(
            "Night-time bathroom visits above this elder's usual for 6 days running: 5, 5, 5, 5, 5, 5"
        ),
        "{:?}",
        t.summary
    );
    assert_eq!(t.factors.len(), 7, "{:?}", t.factors);
    assert!(t.factors[6].starts_with("usual "), "{:?}", t.factors);

    // Back to usual for three days: the alert is told so.
    let got = live(&mut e, 50..56, usual_visits, usual_rr, |_| false);
    assert!(trends(&got).is_empty());
    assert!(
        got.iter().any(|d| matches!(d, Decision::Update(u)
            if u.kind == AlertKind::Trend && u.note.en.contains("back within the usual range"))),
        "{got:?}"
    );
}

#[test]
fn breathing_creeping_up_raises_and_survives_a_restart() {
    let mut e = engine(Rules::defaults());
    live(&mut e, 0..30, usual_visits, usual_rr, |_| false);
    // A restart: the weeks learnt are in the snapshot.
    let snap: EngineSnapshot =
        serde_json::from_str(&serde_json::to_string(&e.snapshot()).unwrap()).unwrap();
    let mut e = engine(Rules::defaults());
    e.restore(&snap, DAY0 + 30 * DAY + 12 * H);
    let got = live(
        &mut e,
        30..45,
        usual_visits,
        |d| if d >= 34 { 21 } else { usual_rr(d) },
        |_| false,
    );
    let t = trends(&got);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].subject.as_deref(), Some("resting_rr"));
    assert_eq!(t[0].at_ms, DAY0 + 40 * DAY + 12 * H);
}

#[test]
fn silent_days_are_not_days_of_data() {
    // The home is silent (away, or the power off) for a week after four
    // weeks: nothing is judged from the silence, and the run of usual
    // days goes on after it.
    let mut e = engine(Rules::defaults());
    let got = live(&mut e, 0..45, usual_visits, usual_rr, |d| {
        (28..35).contains(&d)
    });
    assert!(trends(&got).is_empty(), "{:?}", trends(&got));
}

#[test]
fn a_trend_rule_in_shadow_mode_is_recorded_not_raised() {
    let rules = Rules::parse("[trends.night_bathroom_visits]\nshadow = true\n").unwrap();
    let mut e = engine(rules);
    let got = live(
        &mut e,
        0..42,
        |d| if d >= 35 { 5 } else { usual_visits(d) },
        usual_rr,
        |_| false,
    );
    let t = trends(&got);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].record, Some(Record::Shadow));
}

#[test]
fn weeks_of_history_stay_small() {
    let mut e = engine(Rules::defaults());
    live(&mut e, 0..35, usual_visits, usual_rr, |_| false);
    let json = serde_json::to_string(&e.snapshot()).unwrap();
    eprintln!(
        "snapshot of one elder with 28 days of history: {} bytes",
        json.len()
    );
    assert!(json.len() < 3_000, "{} bytes", json.len());
}

/// A carer's visit on `day`, 15:00-15:45: movement in the kitchen every
/// minute; with `tagged`, the carer's check-in and check-out read by the
/// button.
fn carer_visit(day: i64, tagged: bool) -> Vec<Reading> {
    let at = DAY0 + day * DAY + 15 * H;
    let mut out: Vec<Reading> = (1..45)
        .map(|m| r("pir-1", at + m * MIN, motion("kitchen")))
        .collect();
    if tagged {
        for (t, action) in [(at, VisitAction::In), (at + 45 * MIN, VisitAction::Out)] {
            let tag = DeviceEvent {
                kind: EventType::Visit,
                confidence: None,
                carer: Some("C1".into()),
                action: Some(action),
            };
            out.push(r("btn-1", t, Body::Event(tag)));
        }
    }
    out
}

#[test]
fn a_carers_daily_visit_does_not_hide_the_elders_decline() {
    // Four weeks of ordinary days; then the elder moves half as much, and
    // a carer comes every afternoon and moves about for 45 minutes.
    let trends_with = |tagged: bool| {
        let mut e = engine(Rules::defaults());
        e.set_carers([("C1", "P1")]);
        let plan = PlanProfile {
            plan_id: "meals".into(),
            provider_id: "P1".into(),
            days: [true; 7],
            start_min: 15 * 60,
            end_min: 16 * 60,
            length_min: 45,
            service: "meals".into(),
        };
        e.set_visit_plans("E1", vec![plan], DAY0 + 12 * H);
        let mut got = Vec::new();
        for day in 0..42 {
            let every = if day >= 30 { 40 * MIN } else { 20 * MIN };
            let mut readings =
                day_moving_every(day, usual_visits(day), usual_rr(day), false, every);
            if day >= 30 {
                readings.extend(carer_visit(day, tagged));
            }
            readings.sort_by_key(|r| r.ts_ms);
            for reading in readings {
                let t = reading.ts_ms;
                got.extend(e.on_reading(&reading, t));
                got.extend(e.tick(t));
            }
            got.extend(e.tick(DAY0 + (day + 1) * DAY + 12 * H));
        }
        trends(&got)
            .iter()
            .filter_map(|t| t.subject.clone())
            .collect::<Vec<_>>()
    };
    // Movement with nobody checked in is the elder's own, and makes up
    // for the decline.
    assert_eq!(trends_with(false), Vec::<String>::new());
    // Within the carer's visits it is the carer's: the decline shows.
    assert_eq!(trends_with(true), ["day_activity"]);
}
