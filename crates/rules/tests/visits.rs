//! Carers' visits and wellbeing check-ins on a driven clock: a visit the
//! home bears out, a short one, one with nobody there, a missed one (to
//! the provider, or the hotline for an elder alone whom nothing shows
//! well), a late arrival, and a missed daily check-in.
use eldercare_model::{
    AlertKind, Body, DeviceEvent, DeviceKind, EpochMs, EventType, Motion, Queue, Reading, Sleep,
    Status, VisitAction, VisitFlag,
};
use eldercare_rules::{
    Decision, DeviceProfile, ElderProfile, Engine, PlanProfile, Record, Rules, Trigger,
};

/// 2026-11-23 (a Monday) 00:00 in Asia/Shanghai.
const MIDNIGHT: i64 = 1_795_363_200_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;
const TICK: i64 = 10 * S;

const DEVICES: [(&str, DeviceKind); 5] = [
    ("gw-1", DeviceKind::Gateway),
    ("bed-1", DeviceKind::SleepSensor),
    ("pirent-1", DeviceKind::Pir),
    ("pirliv-1", DeviceKind::Pir),
    ("pirkit-1", DeviceKind::Pir),
];

struct Home {
    e: Engine,
    got: Vec<Decision>,
    t: EpochMs,
}

impl Home {
    fn new(alone: bool, check_in: Option<(u16, u16)>) -> Home {
        let now = MIDNIGHT + 6 * H;
        let mut e = Engine::new(Rules::defaults());
        let mut p = ElderProfile::new("E1");
        p.alone_or_frail = alone;
        p.check_in = check_in;
        e.upsert_elder(&p, now);
        for (id, kind) in DEVICES {
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
        e.set_carers([("C1", "P1"), ("C2", "P2")]);
        e.set_visit_plans(
            "E1",
            vec![PlanProfile {
                plan_id: "bath".into(),
                provider_id: "P1".into(),
                days: [true; 7],
                start_min: 9 * 60,
                end_min: 9 * 60 + 30,
                length_min: 60,
                service: "bathing".into(),
            }],
            now,
        );
        Home {
            e,
            got: Vec::new(),
            t: now,
        }
    }

    fn send(&mut self, dev: &str, body: Body) {
        let r = Reading {
            device_id: dev.into(),
            seq: None,
            ts_ms: self.t,
            body,
        };
        let d = self.e.on_reading(&r, self.t);
        self.got.extend(d);
    }

    /// Ticks to `to`, every device sending its heartbeat each 5 minutes.
    fn run_to(&mut self, to: EpochMs) {
        while self.t < to {
            self.t += TICK;
            if self.t % (5 * MIN) == 0 {
                for (d, _) in DEVICES {
                    self.send(d, status());
                }
            }
            let d = self.e.tick(self.t);
            self.got.extend(d);
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

    fn visit(&mut self, carer: &str, action: VisitAction) {
        self.send(
            "gw-1",
            Body::Event(DeviceEvent {
                kind: EventType::Visit,
                confidence: None,
                carer: Some(carer.into()),
                action: Some(action),
            }),
        );
    }
}

fn status() -> Body {
    Body::Status(Status {
        online: Some(true),
        ..Default::default()
    })
}

fn motion(room: &str) -> Body {
    Body::Motion(Motion {
        room: room.into(),
        motion: true,
    })
}

fn at(h: i64, m: i64) -> EpochMs {
    MIDNIGHT + h * H + m * MIN
}

#[test]
fn a_visit_the_home_bears_out_is_recorded_with_its_follow_up() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 4));
    h.send("pirent-1", motion("entrance"));
    h.run_to(at(9, 5));
    h.visit("C1", VisitAction::In);
    h.run_to(at(9, 20));
    h.send("pirkit-1", motion("kitchen"));
    h.run_to(at(10, 5));
    h.visit("C1", VisitAction::Out);
    h.run_to(at(10, 20));
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1, "{:?}", h.got);
    let info = v[0].visit.as_ref().unwrap();
    assert_eq!(info.visit_id, "E1/bath/2026-11-23");
    assert!(info.flags.is_empty(), "{info:?}");
    assert_eq!(info.signs[0].kind.as_str(), "entrance");
    assert_eq!(v[0].record, Some(Record::Visit));
    let f = h.raised(AlertKind::FollowUp);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].subject.as_deref(), Some("E1/bath/2026-11-23"));
    assert!(h.raised(AlertKind::VisitMissed).is_empty());
}

#[test]
fn a_short_visit_and_one_with_nobody_there_are_flagged() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 10));
    h.visit("C1", VisitAction::In);
    h.run_to(at(9, 25));
    h.visit("C1", VisitAction::Out);
    h.run_to(at(9, 40));
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1, "{:?}", h.got);
    let info = v[0].visit.as_ref().unwrap();
    assert_eq!(info.flags, [VisitFlag::Short, VisitFlag::Uncorroborated]);
    assert_eq!(v[0].record, None, "flagged visits are raised, not recorded");
    assert!(v[0].summary.en.contains("no motion at the entrance"));
}

#[test]
fn a_visit_while_the_home_is_not_heard_is_unverified_not_uncorroborated() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 0));
    // Every motion sensor goes quiet (no heartbeats, last wills).
    for d in ["pirent-1", "pirliv-1", "pirkit-1"] {
        h.send(
            d,
            Body::Status(Status {
                online: Some(false),
                ..Default::default()
            }),
        );
    }
    h.t += 5 * MIN;
    h.e.tick(h.t);
    h.visit("C1", VisitAction::In);
    h.t += 60 * MIN;
    h.e.tick(h.t);
    h.visit("C1", VisitAction::Out);
    h.t += 6 * MIN;
    let d = h.e.tick(h.t);
    h.got.extend(d);
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1, "{:?}", h.got);
    assert_eq!(v[0].visit.as_ref().unwrap().flags, [VisitFlag::Unverified]);
}

#[test]
fn a_missed_visit_goes_to_the_provider_and_a_late_arrival_resolves_it() {
    let mut h = Home::new(false, None);
    h.run_to(at(8, 50));
    h.send("pirliv-1", motion("living"));
    h.run_to(at(9, 30) - TICK);
    assert!(h.raised(AlertKind::VisitMissed).is_empty());
    h.run_to(at(9, 31));
    let m = h.raised(AlertKind::VisitMissed);
    assert_eq!(m.len(), 1, "{:?}", h.got);
    assert_eq!(m[0].at_ms, at(9, 30));
    assert_eq!(m[0].route, None, "to the provider");
    assert_eq!(m[0].subject.as_deref(), Some("E1/bath/2026-11-23"));
    h.run_to(at(9, 50));
    h.send("pirent-1", motion("entrance"));
    h.visit("C1", VisitAction::In);
    assert!(
        h.got.iter().any(|d| matches!(d, Decision::Resolve(r)
            if r.kind == AlertKind::VisitMissed && r.subject.as_deref() == Some("E1/bath/2026-11-23"))),
        "{:?}",
        h.got
    );
    h.run_to(at(10, 50));
    h.visit("C1", VisitAction::Out);
    h.run_to(at(11, 0));
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v[0].visit.as_ref().unwrap().flags, [VisitFlag::Late]);
    // The next day's window is judged again.
    h.run_to(at(24 + 9, 31));
    assert_eq!(h.raised(AlertKind::VisitMissed).len(), 2);
}

#[test]
fn a_missed_visit_to_an_elder_alone_whom_nothing_shows_well_goes_to_the_hotline() {
    let mut h = Home::new(true, None);
    h.run_to(at(9, 31));
    let m = h.raised(AlertKind::VisitMissed);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].route, Some(Queue::Hotline));
    assert!(
        m[0].summary.en.contains("no sign of life"),
        "{}",
        m[0].summary.en
    );

    // Seen moving an hour before: the provider first.
    let mut h = Home::new(true, None);
    h.run_to(at(8, 30));
    h.send("pirkit-1", motion("kitchen"));
    h.run_to(at(9, 31));
    assert_eq!(h.raised(AlertKind::VisitMissed)[0].route, None);
}

#[test]
fn a_carer_of_another_provider_does_not_stand_for_the_plan() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 5));
    h.visit("C2", VisitAction::In);
    h.run_to(at(9, 31));
    assert_eq!(h.raised(AlertKind::VisitMissed).len(), 1);
}

#[test]
fn a_check_out_without_a_check_in_is_flagged_at_once_for_its_window() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 31));
    assert_eq!(h.raised(AlertKind::VisitMissed).len(), 1);
    h.run_to(at(11, 0));
    h.visit("C1", VisitAction::Out);
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1);
    let info = v[0].visit.as_ref().unwrap();
    assert_eq!(info.flags, [VisitFlag::NoCheckIn]);
    assert_eq!(
        info.visit_id, "E1/bath/2026-11-23",
        "the window it stands for"
    );
    assert!(
        h.got
            .iter()
            .any(|d| matches!(d, Decision::Resolve(r) if r.kind == AlertKind::VisitMissed)),
        "{:?}",
        h.got
    );
    assert!(h.raised(AlertKind::FollowUp).is_empty());
    // A second one the same day stands for no window.
    h.visit("C1", VisitAction::Out);
    let v = h.raised(AlertKind::Visit);
    assert!(v[1].visit.as_ref().unwrap().plan_id.is_none());
}

#[test]
fn a_visit_in_progress_holds_the_inactivity_rule() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 0));
    h.send("pirliv-1", motion("living"));
    h.send(
        "bed-1",
        Body::Sleep(Sleep {
            in_bed: false,
            hr: None,
            rr: None,
            movement: None,
        }),
    );
    h.run_to(at(9, 10));
    h.visit("C1", VisitAction::In);
    // Four hours without movement end at 13:00, with the carer there.
    h.run_to(at(13, 9));
    assert!(h.raised(AlertKind::Inactivity).is_empty(), "{:?}", h.got);
    // Never checked out: closed after four hours, flagged; with no sign
    // of anyone, the stillness counts again.
    h.run_to(at(13, 11));
    let v = h.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1);
    assert!(v[0].visit.as_ref().unwrap().has(VisitFlag::NoCheckOut));
    assert_eq!(h.raised(AlertKind::Inactivity).len(), 1);
}

#[test]
fn a_daily_check_in_with_no_sign_of_life_is_missed_with_the_last_one() {
    let mut h = Home::new(false, Some((8 * 60, 10 * 60)));
    h.run_to(at(7, 0));
    h.send("pirkit-1", motion("kitchen"));
    h.run_to(at(10, 0) - TICK);
    assert!(h.raised(AlertKind::CheckInMissed).is_empty());
    h.run_to(at(10, 1));
    let c = h.raised(AlertKind::CheckInMissed);
    assert_eq!(c.len(), 1, "{:?}", h.got);
    assert!(
        c[0].summary.en.contains("motion in the kitchen at 07:00"),
        "{}",
        c[0].summary.en
    );
    assert_eq!(c[0].window, Some((at(8, 0), at(10, 0))));

    // Motion in the window: nothing the next day.
    h.run_to(at(24 + 9, 0));
    h.send("pirliv-1", motion("living"));
    h.run_to(at(24 + 11, 0));
    assert_eq!(h.raised(AlertKind::CheckInMissed).len(), 1);
}

#[test]
fn a_visit_survives_a_restart_through_the_snapshot() {
    let mut h = Home::new(false, None);
    h.run_to(at(9, 4));
    h.send("pirent-1", motion("entrance"));
    h.visit("C1", VisitAction::In);
    let snap = h.e.snapshot();
    // A fresh engine: the registry, then the snapshot.
    let mut h2 = Home::new(false, None);
    h2.t = h.t;
    let _ = h2.e.restore(&snap, h.t);
    h2.run_to(at(10, 5));
    h2.visit("C1", VisitAction::Out);
    h2.run_to(at(10, 20));
    let v = h2.raised(AlertKind::Visit);
    assert_eq!(v.len(), 1, "{:?}", h2.got);
    assert!(v[0].visit.as_ref().unwrap().flags.is_empty());
    assert!(h2.raised(AlertKind::VisitMissed).is_empty());
}
