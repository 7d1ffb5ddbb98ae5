//! The pure part of `eldercare backtest`: stored readings in, the alerts a
//! rule file would have raised out ([`Replay`]), and how two lists of
//! alerts are told apart ([`only_in`]). No I/O and no clock: the engine's
//! clock is driven from the readings' event times, so a day replays as
//! fast as the CPU allows.
use eldercare_model::{Alert, AlertKind, EpochMs, Reading, Severity};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, PlanProfile, Rules, Trigger};
use std::collections::HashMap;

/// One alert as the report shows it: raised by a replay, or kept in the
/// alert log.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub elder_id: String,
    pub kind: AlertKind,
    /// The device a per-device alert is about.
    pub subject: Option<String>,
    /// Event time of the first raise.
    pub at_ms: EpochMs,
    /// Event time of the last raise folded into it (`at_ms` for one).
    pub last_ms: EpochMs,
    /// The event-time window the condition held over.
    pub window: Option<(EpochMs, EpochMs)>,
    pub severity: Severity,
    pub summary_en: String,
    /// Raises folded into this alert, itself included.
    pub occurrences: u32,
}

impl AlertRow {
    pub fn from_trigger(t: &Trigger) -> AlertRow {
        AlertRow {
            elder_id: t.elder_id.clone(),
            kind: t.kind,
            subject: t.subject.clone(),
            at_ms: t.at_ms,
            last_ms: t.at_ms,
            window: t.window,
            severity: t.severity,
            summary_en: t.summary.en.clone(),
            occurrences: 1,
        }
    }

    /// An alert of the alert log. Its repeats are known by the readings
    /// folded into it: the newest of them is its last raise.
    pub fn from_alert(a: &Alert) -> AlertRow {
        let last = a
            .readings
            .iter()
            .map(|r| r.ts_ms)
            .fold(a.raised_at, EpochMs::max);
        AlertRow {
            elder_id: a.elder_id.clone(),
            kind: a.kind,
            subject: a.subject.clone(),
            at_ms: a.raised_at,
            last_ms: last,
            window: a.window,
            severity: a.severity,
            summary_en: a.summary.clone(),
            occurrences: a.occurrences.max(1),
        }
    }

    fn key(&self) -> (&str, AlertKind, Option<&str>) {
        (&self.elder_id, self.kind, self.subject.as_deref())
    }
}

/// Whether two alerts are the same one seen by two sides: the same elder,
/// kind and subject, and raised within `tolerance_ms` of each other
/// (anywhere from the first raise to the last one folded in) or over
/// overlapping windows.
pub fn same_alert(a: &AlertRow, b: &AlertRow, tolerance_ms: i64) -> bool {
    if a.key() != b.key() {
        return false;
    }
    let near = a.at_ms - tolerance_ms <= b.last_ms && b.at_ms - tolerance_ms <= a.last_ms;
    let overlap = match (a.window, b.window) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
        _ => false,
    };
    near || overlap
}

/// The alerts of `side` that have no counterpart in `other` (see
/// [`same_alert`]), in `side`'s order.
pub fn only_in<'a>(
    side: &'a [AlertRow],
    other: &[AlertRow],
    tolerance_ms: i64,
) -> Vec<&'a AlertRow> {
    side.iter()
        .filter(|a| !other.iter().any(|b| same_alert(a, b, tolerance_ms)))
        .collect()
}

type Key = (String, AlertKind, Option<String>);

/// One rule file's replay of one home (or several): a fresh engine, told
/// the registry at `start`, fed readings in event-time order, its timers
/// ticked at a fixed step of simulated time.
///
/// The engine clock is the readings' event time: the store keeps no
/// arrival time, and event time is what the alerts are dated by. A raise
/// of the same elder, kind and subject within `fold_ms` of the previous
/// one, before the engine resolved it, folds into it as the alert desk
/// folds a repeat into the open alert (the replay cannot know when an
/// operator would have resolved it).
pub struct Replay {
    engine: Engine,
    step_ms: i64,
    next_tick: EpochMs,
    now: EpochMs,
    fold_ms: i64,
    rows: Vec<AlertRow>,
    /// Where a repeat folds: the row of each key's newest raise, until
    /// the engine resolves it.
    open: HashMap<Key, usize>,
    readings: u64,
}

impl Replay {
    /// `step_ms` is clamped to at least 1 ms.
    pub fn new(
        rules: Rules,
        elders: &[ElderProfile],
        devices: &[DeviceProfile],
        start: EpochMs,
        step_ms: i64,
        fold_ms: i64,
    ) -> Replay {
        let mut engine = Engine::new(rules);
        for e in elders {
            engine.upsert_elder(e, start);
        }
        for d in devices {
            engine.upsert_device(d, start);
        }
        let step_ms = step_ms.max(1);
        Replay {
            engine,
            step_ms,
            next_tick: start + step_ms,
            now: start,
            fold_ms,
            rows: Vec::new(),
            open: HashMap::new(),
            readings: 0,
        }
    }

    /// Tells the engine the carers (id, provider) and `elder_id`'s visit
    /// plans, as at the replay's start.
    pub fn with_visits(
        mut self,
        carers: &[(String, String)],
        elder_id: &str,
        plans: Vec<PlanProfile>,
    ) -> Replay {
        self.engine
            .set_carers(carers.iter().map(|(c, p)| (c.as_str(), p.as_str())));
        self.engine.set_visit_plans(elder_id, plans, self.now);
        self
    }

    /// Runs the timers at every step of simulated time up to `now`.
    fn advance(&mut self, now: EpochMs) {
        while self.next_tick <= now {
            let t = self.next_tick;
            let decisions = self.engine.tick(t);
            self.apply(decisions);
            self.next_tick += self.step_ms;
        }
        self.now = self.now.max(now);
    }

    /// Judges one reading at its own event time, after the ticks due
    /// before it. Readings must come in event-time order; one older than
    /// the replay's clock is judged at the clock's time.
    pub fn reading(&mut self, r: &Reading) {
        self.advance(r.ts_ms);
        self.readings += 1;
        let decisions = self.engine.on_reading(r, self.now);
        self.apply(decisions);
    }

    fn apply(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            match d {
                Decision::Raise(t) => self.raise(&t),
                Decision::Resolve(r) => {
                    self.open.remove(&(r.elder_id, r.kind, r.subject));
                }
                Decision::Update(_) => {}
            }
        }
    }

    fn raise(&mut self, t: &Trigger) {
        let key = (t.elder_id.clone(), t.kind, t.subject.clone());
        if let Some(&i) = self.open.get(&key) {
            let row = &mut self.rows[i];
            if t.at_ms <= row.last_ms + self.fold_ms {
                row.occurrences += 1;
                row.last_ms = row.last_ms.max(t.at_ms);
                row.severity = row.severity.max(t.severity);
                row.window = match (row.window, t.window) {
                    (Some((f0, t0)), Some((f1, t1))) => Some((f0.min(f1), t0.max(t1))),
                    (w, None) | (None, w) => w,
                };
                return;
            }
        }
        self.open.insert(key, self.rows.len());
        self.rows.push(AlertRow::from_trigger(t));
    }

    /// Ticks the timers up to `end` and hands back every alert raised, in
    /// the order raised, with how many readings were judged.
    pub fn finish(mut self, end: EpochMs) -> (Vec<AlertRow>, u64) {
        self.advance(end);
        (self.rows, self.readings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{
        Body, DeviceEvent, DeviceKind, EventType, VisitAction, VisitPlan, Vitals,
    };

    const T0: EpochMs = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const MIN: i64 = 60_000;

    /// E1 with a band and a button, each heard at least every
    /// `heartbeat_s` or reported offline.
    fn home(heartbeat_s: u32) -> (Vec<ElderProfile>, Vec<DeviceProfile>) {
        let dev = |id: &str, kind| DeviceProfile {
            device_id: id.into(),
            elder_id: "E1".into(),
            kind,
            heartbeat_s,
        };
        (
            vec![ElderProfile::new("E1")],
            vec![
                dev("band-1", DeviceKind::VitalBand),
                dev("btn-1", DeviceKind::SosButton),
            ],
        )
    }

    fn pulse(ts: EpochMs, hr: u32) -> Reading {
        Reading {
            device_id: "band-1".into(),
            seq: None,
            ts_ms: ts,
            body: Body::Vitals(Vitals {
                hr: Some(hr),
                ..Default::default()
            }),
        }
    }

    fn fall(ts: EpochMs) -> Reading {
        Reading {
            device_id: "btn-1".into(),
            seq: None,
            ts_ms: ts,
            body: Body::Event(DeviceEvent {
                kind: EventType::Fall,
                confidence: Some(0.9),
                carer: None,
                action: None,
            }),
        }
    }

    /// A band every 10 s for `minutes`, at `hr`, from `from`.
    fn stretch(from: EpochMs, minutes: i64, hr: u32) -> Vec<Reading> {
        (0..minutes * 6)
            .map(|i| pulse(from + i * 10_000, hr))
            .collect()
    }

    fn rules(text: &str) -> Rules {
        Rules::parse(text).unwrap()
    }

    /// Replays E1's readings from T0 to `end`, devices quiet for up to a day.
    fn replay(rules: Rules, readings: &[Reading], end: EpochMs) -> Vec<AlertRow> {
        replay_with(86_400, rules, readings, end)
    }

    fn replay_with(
        heartbeat_s: u32,
        rules: Rules,
        readings: &[Reading],
        end: EpochMs,
    ) -> Vec<AlertRow> {
        let (elders, devices) = home(heartbeat_s);
        let mut r = Replay::new(rules, &elders, &devices, T0, 10_000, 10 * MIN);
        for x in readings {
            r.reading(x);
        }
        r.finish(end).0
    }

    fn kinds(rows: &[AlertRow]) -> Vec<&'static str> {
        rows.iter().map(|r| r.kind.as_str()).collect()
    }

    #[test]
    fn a_lower_threshold_raises_what_the_default_does_not() {
        let mut readings = stretch(T0 + MIN, 2, 125);
        readings.push(fall(T0 + 5 * MIN));
        let base = replay(Rules::defaults(), &readings, T0 + 10 * MIN);
        let cand = replay(
            rules("[vitals]\npulse_high = 120\n"),
            &readings,
            T0 + 10 * MIN,
        );
        assert_eq!(kinds(&base), ["fall"]);
        assert_eq!(kinds(&cand), ["vital_out_of_range", "fall"]);
        // Raised once the pulse has held 60 s (the default hold), dated by
        // the reading it was raised on.
        assert_eq!(cand[0].at_ms, T0 + 2 * MIN);
        assert_eq!(cand[0].severity, Severity::High);
        assert_eq!(cand[1].at_ms, T0 + 5 * MIN);
        let only = only_in(&cand, &base, 10 * MIN);
        assert_eq!(
            kinds(&only.into_iter().cloned().collect::<Vec<_>>()),
            ["vital_out_of_range"]
        );
        assert!(only_in(&base, &cand, 10 * MIN).is_empty());
    }

    fn tag(ts: EpochMs, action: VisitAction) -> Reading {
        Reading {
            device_id: "btn-1".into(),
            seq: None,
            ts_ms: ts,
            body: Body::Event(DeviceEvent {
                kind: EventType::Visit,
                confidence: None,
                carer: Some("C1".into()),
                action: Some(action),
            }),
        }
    }

    #[test]
    fn visits_are_judged_against_the_elders_plans() {
        let plan = PlanProfile::from_plan(&VisitPlan {
            plan_id: "bath".into(),
            elder_id: "E1".into(),
            provider_id: "P1".into(),
            days: "daily".into(),
            window_start: "09:00".into(),
            window_end: "10:00".into(),
            length_min: 30,
            service: "bathing".into(),
        })
        .unwrap();
        // Day one: the carer comes; day two: nobody does. The window is
        // the elder's local time (UTC+8): 01:00-02:00 UTC.
        let readings = [
            tag(T0 + 70 * MIN, VisitAction::In),
            tag(T0 + 100 * MIN, VisitAction::Out),
        ];
        let end = T0 + 27 * 60 * MIN;
        let visits = |rows: Vec<AlertRow>| -> Vec<(&'static str, EpochMs)> {
            rows.iter()
                .filter(|r| r.kind.is_per_visit())
                .map(|r| (r.kind.as_str(), r.at_ms))
                .collect()
        };
        let (elders, devices) = home(86_400);
        let mut r = Replay::new(Rules::defaults(), &elders, &devices, T0, 10_000, 10 * MIN)
            .with_visits(&[("C1".into(), "P1".into())], "E1", vec![plan]);
        for x in &readings {
            r.reading(x);
        }
        let with = visits(r.finish(end).0);
        let kinds: Vec<_> = with.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["visit", "follow_up", "visit_missed"], "{with:?}");
        assert!(
            with[2].1 >= T0 + 26 * 60 * MIN,
            "at day two's close: {with:?}"
        );
        // Without the plans the same readings make no planned visit and
        // nothing is missed.
        let without = visits(replay(Rules::defaults(), &readings, end));
        assert!(
            !without.iter().any(|(k, _)| *k == "visit_missed"),
            "{without:?}"
        );
    }

    #[test]
    fn timers_fire_from_simulated_ticks_alone() {
        // Nothing is heard after the first reading: the band (heartbeat
        // 300 s, then 60 s of grace) is reported offline by the ticks,
        // with no reading to drive the clock.
        let readings = [pulse(T0 + 1_000, 70), fall(T0 + 2_000)];
        let rows = replay_with(300, Rules::defaults(), &readings, T0 + 30 * MIN);
        let offline: Vec<_> = rows.iter().filter(|r| r.kind != AlertKind::Fall).collect();
        assert!(!offline.is_empty(), "{rows:?}");
        // Due 6 min after the last reading; the ticks are 10 s apart.
        assert!(
            offline
                .iter()
                .all(|r| r.at_ms >= T0 + 6 * MIN && r.at_ms <= T0 + 7 * MIN),
            "{offline:?}"
        );
        // Without ticking far enough, nothing is due yet.
        let rows = replay_with(300, Rules::defaults(), &readings, T0 + 5 * MIN);
        assert_eq!(kinds(&rows), ["fall"]);
    }

    #[test]
    fn repeats_within_the_fold_time_are_one_alert() {
        let readings = vec![fall(T0 + MIN), fall(T0 + 3 * MIN), fall(T0 + 30 * MIN)];
        let rows = replay(Rules::defaults(), &readings, T0 + 31 * MIN);
        assert_eq!(kinds(&rows), ["fall", "fall"]);
        assert_eq!((rows[0].occurrences, rows[0].last_ms), (2, T0 + 3 * MIN));
        assert_eq!(rows[1].occurrences, 1);
    }

    fn row(elder: &str, kind: AlertKind, at: EpochMs) -> AlertRow {
        AlertRow {
            elder_id: elder.into(),
            kind,
            subject: None,
            at_ms: at,
            last_ms: at,
            window: None,
            severity: Severity::Critical,
            summary_en: String::new(),
            occurrences: 1,
        }
    }

    #[test]
    fn matching_needs_the_same_elder_kind_and_subject_within_the_tolerance() {
        let tol = 10 * MIN;
        let a = row("E1", AlertKind::Fall, T0);
        assert!(same_alert(&a, &row("E1", AlertKind::Fall, T0 + tol), tol));
        assert!(same_alert(&a, &row("E1", AlertKind::Fall, T0 - tol), tol));
        assert!(!same_alert(
            &a,
            &row("E1", AlertKind::Fall, T0 + tol + 1),
            tol
        ));
        assert!(!same_alert(&a, &row("E2", AlertKind::Fall, T0), tol));
        assert!(!same_alert(&a, &row("E1", AlertKind::Sos, T0), tol));
        let mut other_device = row("E1", AlertKind::Fall, T0);
        other_device.subject = Some("btn-9".into());
        assert!(!same_alert(&a, &other_device, tol));
        // A repeat folded in an hour later still matches a raise near it.
        let mut long = row("E1", AlertKind::Fall, T0);
        long.last_ms = T0 + 60 * MIN;
        assert!(same_alert(
            &long,
            &row("E1", AlertKind::Fall, T0 + 65 * MIN),
            tol
        ));
        // Far apart, but over overlapping windows.
        let (mut w1, mut w2) = (
            row("E1", AlertKind::VitalOutOfRange, T0),
            row("E1", AlertKind::VitalOutOfRange, T0 + 3 * tol),
        );
        w1.window = Some((T0 - MIN, T0 + 4 * tol));
        assert!(!same_alert(&w1, &w2, tol));
        w2.window = Some((T0 + 2 * tol, T0 + 3 * tol));
        assert!(same_alert(&w1, &w2, tol));
    }

    #[test]
    fn only_in_keeps_the_alerts_without_a_counterpart() {
        let tol = 10 * MIN;
        let actual = vec![
            row("E1", AlertKind::Fall, T0),
            row("E2", AlertKind::Sos, T0),
        ];
        let replayed = vec![
            row("E1", AlertKind::Fall, T0 + MIN),
            row("E3", AlertKind::Fall, T0),
        ];
        let only: Vec<_> = only_in(&replayed, &actual, tol)
            .iter()
            .map(|r| r.elder_id.as_str())
            .collect();
        assert_eq!(only, ["E3"]);
        let only: Vec<_> = only_in(&actual, &replayed, tol)
            .iter()
            .map(|r| r.elder_id.as_str())
            .collect();
        assert_eq!(only, ["E2"]);
    }
}
