//! Scoring the alerts of a `visits` run against its ground truth, and a
//! provider's month counted both ways.
//!
//! Each planned visit is matched to the alerts of its subject: its
//! `visit` alert (the planned id, or `{elder}/{carer}/{check-out ms}` for
//! a check-out with no check-in), its `visit_missed` and its `follow_up`.
//! A visit is **exact** when its alerts are what its behaviour calls for
//! and nothing more. An expected flag (or `visit_missed`) absent is a
//! missed flag; a flag not called for (any flag on an on-time visit, a
//! `visit_missed` for a visit that came in its window) is a false one.
//! Alerts of other kinds (inactivity, ...) are counted by kind: a quiet
//! life with carers coming and going should raise none.
use super::HomeRun;
use super::plan::{Behaviour, Occurrence, Provider};
use eldercare_model::{Alert, AlertKind, VisitFlag};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A provider's month, by the names an integrator compares field by
/// field with the report computed from the alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct planned visit ids: visits of a plan, and windows missed.
    pub planned: u64,
    /// Visits with a check-in.
    pub done: u64,
    /// Visits with a check-in and no flag.
    pub on_time: u64,
    pub late: u64,
    pub short: u64,
    /// Windows with no check-in at all.
    pub missed: u64,
    pub uncorroborated: u64,
    pub unverified: u64,
    pub no_check_in: u64,
    pub no_check_out: u64,
    /// Visits with a check-in that matched no plan.
    pub unplanned: u64,
    /// Follow-up calls raised.
    pub follow_ups: u64,
    pub satisfied: u64,
    pub complaint: u64,
    pub no_answer: u64,
    /// Follow-up calls not answered by the end of the run.
    pub open: u64,
    /// Minutes between check-in and check-out, over the visits with both.
    pub minutes: u64,
}

impl Counts {
    pub fn fields(&self) -> [(&'static str, u64); 17] {
        [
            ("planned", self.planned),
            ("done", self.done),
            ("on_time", self.on_time),
            ("late", self.late),
            ("short", self.short),
            ("missed", self.missed),
            ("uncorroborated", self.uncorroborated),
            ("unverified", self.unverified),
            ("no_check_in", self.no_check_in),
            ("no_check_out", self.no_check_out),
            ("unplanned", self.unplanned),
            ("follow_ups", self.follow_ups),
            ("satisfied", self.satisfied),
            ("complaint", self.complaint),
            ("no_answer", self.no_answer),
            ("open", self.open),
            ("minutes", self.minutes),
        ]
    }

    fn flag(&mut self, f: VisitFlag) {
        match f {
            VisitFlag::Late => self.late += 1,
            VisitFlag::Short => self.short += 1,
            VisitFlag::Uncorroborated => self.uncorroborated += 1,
            VisitFlag::Unverified => self.unverified += 1,
            VisitFlag::NoCheckIn => self.no_check_in += 1,
            VisitFlag::NoCheckOut => self.no_check_out += 1,
        }
    }

    fn answer(&mut self, outcome: Option<&str>) {
        match outcome {
            Some("satisfied") => self.satisfied += 1,
            Some("complaint") => self.complaint += 1,
            Some("no_answer") => self.no_answer += 1,
            _ => self.open += 1,
        }
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect::<Map<_, _>>(),
        )
    }
}

/// `(provider, YYYY-MM)`.
pub type Key = (String, String);

fn month(day: &str) -> String {
    day.get(..7).unwrap_or(day).to_string()
}

/// The ground truth's months.
pub fn truth_counts<'a>(occ: impl IntoIterator<Item = &'a Occurrence>) -> BTreeMap<Key, Counts> {
    let mut out: BTreeMap<Key, Counts> = BTreeMap::new();
    for o in occ {
        let c = out
            .entry((o.provider_id.clone(), month(&o.day)))
            .or_default();
        c.planned += 1;
        if o.check_in.is_some() {
            c.done += 1;
        } else if o.check_out.is_none() {
            c.missed += 1;
        }
        for f in o.behaviour.expected_flags().unwrap_or_default() {
            c.flag(f);
        }
        // On time: checked in for the plan, not late (a short visit, one
        // nobody bears out or one never checked out still came on time).
        if o.check_in.is_some() && o.behaviour != Behaviour::Late {
            c.on_time += 1;
        }
        if o.behaviour.expects_follow_up() {
            c.follow_ups += 1;
            c.answer(o.call.map(|(_, x)| x));
        }
        c.minutes += o.minutes().unwrap_or(0).max(0) as u64;
    }
    out
}

/// The months as the report tells them: `eldercare-visits`, the same
/// code the server's VisitService.ProviderReport runs on stored alerts,
/// for every provider and month the alerts name.
pub fn alert_counts<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> BTreeMap<Key, Counts> {
    let alerts: Vec<Alert> = alerts.into_iter().cloned().collect();
    let keys: BTreeSet<Key> = alerts
        .iter()
        .filter_map(|a| a.visit.as_deref())
        .map(|v| (v.provider_id.clone(), month(&v.day)))
        .collect();
    let mut out = BTreeMap::new();
    for (provider, m) in keys {
        let Ok(parsed) = eldercare_visits::Month::parse(&m) else {
            continue;
        };
        let r = eldercare_visits::ProviderMonth::compute(&provider, parsed, &alerts).counts;
        out.insert(
            (provider, m),
            Counts {
                planned: r.planned,
                done: r.done,
                on_time: r.on_time,
                late: r.late,
                short: r.short,
                missed: r.missed,
                uncorroborated: r.uncorroborated,
                unverified: r.unverified,
                no_check_in: r.no_check_in,
                no_check_out: r.no_check_out,
                unplanned: r.unplanned,
                follow_ups: r.follow_ups,
                satisfied: r.satisfied,
                complaint: r.complaint,
                no_answer: r.no_answer,
                open: r.follow_up_open,
                minutes: r.minutes_delivered,
            },
        );
    }
    out
}

/// One field of a provider's month that the alerts count differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub provider: String,
    pub month: String,
    pub field: &'static str,
    pub truth: u64,
    pub alerts: u64,
}

pub fn compare(truth: &BTreeMap<Key, Counts>, got: &BTreeMap<Key, Counts>) -> Vec<Difference> {
    let keys: BTreeSet<&Key> = truth.keys().chain(got.keys()).collect();
    let zero = Counts::default();
    let mut out = Vec::new();
    for k in keys {
        let (t, g) = (truth.get(k).unwrap_or(&zero), got.get(k).unwrap_or(&zero));
        for ((field, a), (_, b)) in t.fields().into_iter().zip(g.fields()) {
            if a != b {
                out.push(Difference {
                    provider: k.0.clone(),
                    month: k.1.clone(),
                    field,
                    truth: a,
                    alerts: b,
                });
            }
        }
    }
    out
}

/// How the visits of one behaviour fared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub visits: u64,
    /// Alerts exactly as expected.
    pub exact: u64,
    /// Flags (and `visit_missed`) expected, and found.
    pub expected: u64,
    pub found: u64,
    pub false_flags: u64,
    pub follow_ups_expected: u64,
    pub follow_ups_found: u64,
}

/// A visit whose alerts are not what its behaviour calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    pub visit_id: String,
    pub behaviour: &'static str,
    pub expected: Vec<String>,
    pub got: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Score {
    pub homes: usize,
    pub days: u32,
    pub by_behaviour: BTreeMap<Behaviour, Row>,
    /// The first few visits not exact.
    pub misses: Vec<Miss>,
    pub not_exact: u64,
    /// `visit`, `visit_missed` and `follow_up` alerts of no planned visit.
    pub unmatched: u64,
    /// Alerts of every other kind, by kind.
    pub others: BTreeMap<String, u64>,
    pub other_examples: Vec<Value>,
    pub truth: BTreeMap<Key, Counts>,
    pub from_alerts: BTreeMap<Key, Counts>,
    pub differences: Vec<Difference>,
}

impl Score {
    pub fn total(&self) -> Row {
        let mut t = Row::default();
        for r in self.by_behaviour.values() {
            t.visits += r.visits;
            t.exact += r.exact;
            t.expected += r.expected;
            t.found += r.found;
            t.false_flags += r.false_flags;
            t.follow_ups_expected += r.follow_ups_expected;
            t.follow_ups_found += r.follow_ups_found;
        }
        t
    }
}

/// What one alert of a visit says, as far as scoring goes: its kind,
/// and for a `visit` its flags and whether it was recorded (born
/// resolved, nothing to flag), for a `visit_missed` whether a late
/// check-in cleared it and whether it went to the hotline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Said {
    pub kind: Option<AlertKind>,
    pub flags: Vec<VisitFlag>,
    pub recorded: bool,
    pub cleared: bool,
    pub hotline: bool,
}

impl Said {
    pub fn of(a: &Alert) -> Said {
        Said {
            kind: Some(a.kind),
            flags: a
                .visit
                .as_ref()
                .map(|v| v.flags.clone())
                .unwrap_or_default(),
            recorded: a.recorded,
            cleared: a.outcome.as_deref() == Some("cleared"),
            hotline: a.route.is_some(),
        }
    }
}

/// What a behaviour calls for, as sorted words: its `visit` alert's
/// flags (`recorded` for none), `visit_missed` (`visit_missed:cleared`
/// when a late check-in resolves it), `follow_up`.
pub fn expected(o: &Occurrence) -> Vec<String> {
    let b = o.behaviour;
    let mut want = Vec::new();
    if let Some(flags) = b.expected_flags() {
        if flags.is_empty() {
            want.push("recorded".to_string());
        }
        want.extend(flags.iter().map(|f| f.as_str().to_string()));
    }
    match b {
        Behaviour::Late => want.push("visit_missed:cleared".into()),
        Behaviour::NoCheckIn if o.expects_missed() => want.push("visit_missed:cleared".into()),
        _ if o.expects_missed() => want.push("visit_missed".into()),
        _ => {}
    }
    if b.expects_follow_up() {
        want.push("follow_up".into());
    }
    want.sort();
    want
}

/// What a visit's alerts show, in the words of [`expected`] (and
/// `visit_missed:hotline` for one routed to the hotline).
pub fn shown<'a>(said: impl IntoIterator<Item = &'a Said>) -> Vec<String> {
    let mut got = Vec::new();
    for a in said {
        match a.kind {
            Some(AlertKind::Visit) => {
                if a.flags.is_empty() && a.recorded {
                    got.push("recorded".to_string());
                }
                got.extend(a.flags.iter().map(|f| f.as_str().to_string()));
            }
            Some(AlertKind::VisitMissed) => {
                let mut s = String::from("visit_missed");
                if a.cleared {
                    s.push_str(":cleared");
                }
                if a.hotline {
                    s.push_str(":hotline");
                }
                got.push(s);
            }
            Some(AlertKind::FollowUp) => got.push("follow_up".into()),
            _ => {}
        }
    }
    got.sort();
    got
}

/// What is expected of a visit, and what its alerts show: its `visit`
/// alert (by [`Occurrence::visit_subject`]), its `visit_missed` and its
/// `follow_up` (by the planned id).
fn signature(
    o: &Occurrence,
    by_subject: &HashMap<(&str, AlertKind), Vec<&Alert>>,
) -> (Vec<String>, Vec<String>) {
    let subject = o.visit_subject();
    let keys = [
        (subject.as_str(), AlertKind::Visit),
        (o.visit_id.as_str(), AlertKind::VisitMissed),
        (o.visit_id.as_str(), AlertKind::FollowUp),
    ];
    let said: Vec<Said> = keys
        .iter()
        .flat_map(|k| by_subject.get(k).into_iter().flatten())
        .map(|a| Said::of(a))
        .collect();
    (expected(o), shown(&said))
}

impl Row {
    /// Counts one visit of the row's behaviour: the flags (and
    /// `visit_missed`) expected and found, those not called for, the
    /// follow-ups; true when its alerts are exactly as expected.
    pub fn tally(&mut self, want: &[String], got: &[String]) -> bool {
        let is_flag = |x: &&String| *x != "follow_up" && *x != "recorded";
        let wanted: Vec<&String> = want.iter().filter(is_flag).collect();
        let gotten: Vec<&String> = got.iter().filter(is_flag).collect();
        self.visits += 1;
        self.expected += wanted.len() as u64;
        self.found += wanted.iter().filter(|w| gotten.contains(w)).count() as u64;
        self.false_flags += gotten.iter().filter(|g| !wanted.contains(g)).count() as u64;
        self.follow_ups_expected += u64::from(want.iter().any(|x| x == "follow_up"));
        self.follow_ups_found += got.iter().filter(|x| *x == "follow_up").count() as u64;
        let exact = want == got;
        self.exact += u64::from(exact);
        exact
    }
}

/// Scores the runs of a `days`-day simulation.
pub fn score(runs: &[HomeRun], days: u32) -> Score {
    let mut s = Score {
        homes: runs.len(),
        days,
        ..Score::default()
    };
    for run in runs {
        let mut by_subject: HashMap<(&str, AlertKind), Vec<&Alert>> = HashMap::new();
        let mut used: BTreeSet<&str> = BTreeSet::new();
        for a in &run.alerts {
            if let Some(sub) = a.subject.as_deref()
                && matches!(
                    a.kind,
                    AlertKind::Visit | AlertKind::VisitMissed | AlertKind::FollowUp
                )
            {
                by_subject.entry((sub, a.kind)).or_default().push(a);
            } else {
                *s.others.entry(a.kind.as_str().to_string()).or_default() += 1;
                if s.other_examples.len() < 20 {
                    s.other_examples.push(json!({
                        "home": run.home, "kind": a.kind.as_str(),
                        "raised_at": a.raised_at, "summary": a.summary,
                    }));
                }
            }
        }
        for o in &run.occurrences {
            let (want, got) = signature(o, &by_subject);
            used.insert(o.visit_id.as_str());
            let r = s.by_behaviour.entry(o.behaviour).or_default();
            if !r.tally(&want, &got) {
                s.not_exact += 1;
                if s.misses.len() < 30 {
                    s.misses.push(Miss {
                        visit_id: o.visit_id.clone(),
                        behaviour: o.behaviour.name(),
                        expected: want,
                        got,
                    });
                }
            }
        }
        let subjects: BTreeSet<String> = run
            .occurrences
            .iter()
            .map(Occurrence::visit_subject)
            .collect();
        for ((sub, _), alerts) in &by_subject {
            if !used.contains(sub) && !subjects.contains(*sub) {
                s.unmatched += alerts.len() as u64;
            }
        }
    }
    s.truth = truth_counts(runs.iter().flat_map(|r| &r.occurrences));
    s.from_alerts = alert_counts(runs.iter().flat_map(|r| &r.alerts));
    s.differences = compare(&s.truth, &s.from_alerts);
    s
}

pub fn row_json(name: &str, r: &Row) -> Value {
    json!({
        "behaviour": name, "visits": r.visits, "exact": r.exact,
        "flags_expected": r.expected, "flags_found": r.found,
        "missed_flags": r.expected - r.found, "false_flags": r.false_flags,
        "follow_ups_expected": r.follow_ups_expected, "follow_ups_found": r.follow_ups_found,
    })
}

fn months_json(m: &BTreeMap<Key, Counts>) -> Value {
    m.iter()
        .map(|((p, mo), c)| {
            let mut v = c.to_json();
            v["provider"] = p.clone().into();
            v["month"] = mo.clone().into();
            v
        })
        .collect()
}

impl Score {
    pub fn to_json(&self) -> Value {
        let mut rows: Vec<Value> = self
            .by_behaviour
            .iter()
            .map(|(b, r)| row_json(b.name(), r))
            .collect();
        let t = self.total();
        rows.push(row_json("all", &t));
        json!({
            "homes": self.homes,
            "days": self.days,
            "visits": t.visits,
            "exact": t.exact,
            "flags_expected": t.expected,
            "flags_found": t.found,
            "missed_flags": t.expected - t.found,
            "false_flags": t.false_flags,
            "by_behaviour": rows,
            "not_exact": {
                "count": self.not_exact,
                "examples": self.misses.iter().map(|m| json!({
                    "visit_id": m.visit_id, "behaviour": m.behaviour,
                    "expected": m.expected, "got": m.got,
                })).collect::<Vec<_>>(),
            },
            "unmatched_visit_alerts": self.unmatched,
            "other_alerts": {
                "count": self.others.values().sum::<u64>(),
                "by_kind": self.others,
                "examples": self.other_examples,
            },
            "report": {
                "provider_months": self.truth.len(),
                "matching": self.truth.len() == self.from_alerts.len() && self.differences.is_empty(),
                "differences": self.differences.iter().map(|d| json!({
                    "provider": d.provider, "month": d.month, "field": d.field,
                    "truth": d.truth, "alerts": d.alerts,
                })).collect::<Vec<_>>(),
                "from_alerts": months_json(&self.from_alerts),
            },
        })
    }

    /// The summary table, on stdout.
    pub fn print(&self) {
        println!();
        println!(
            "{:<13} {:>7} {:>7} {:>9} {:>7} {:>7} {:>10}",
            "behaviour", "visits", "exact", "expected", "found", "false", "follow-ups"
        );
        let t = self.total();
        let rows = self
            .by_behaviour
            .iter()
            .map(|(b, r)| (b.name(), r))
            .chain([("all", &t)]);
        for (name, r) in rows {
            println!(
                "{:<13} {:>7} {:>7} {:>9} {:>7} {:>7} {:>5}/{:<5}",
                name,
                r.visits,
                r.exact,
                r.expected,
                r.found,
                r.false_flags,
                r.follow_ups_found,
                r.follow_ups_expected
            );
        }
        println!("(expected/found: flags and visit_missed; false: flags not called for)");
        println!("visits not exactly as expected  {}", self.not_exact);
        for m in self.misses.iter().take(5) {
            println!(
                "  {} ({}): expected {:?}, got {:?}",
                m.visit_id, m.behaviour, m.expected, m.got
            );
        }
        println!("visit alerts of no planned visit {}", self.unmatched);
        let n: u64 = self.others.values().sum();
        println!("other alerts raised             {n}");
        for (k, c) in &self.others {
            println!("  {k:<22} {c}");
        }
        println!(
            "provider-months                 {} ({} fields differ between the truth and the alerts)",
            self.truth.len(),
            self.differences.len()
        );
    }
}

/// The ground truth: per provider and month the counts, and per visit
/// its behaviour and expected flags.
pub fn truth_json(runs: &[HomeRun], providers: &[Provider]) -> Value {
    let visits: Vec<Value> = runs
        .iter()
        .flat_map(|r| &r.occurrences)
        .map(|o| {
            json!({
                "visit_id": o.visit_id,
                "elder_id": o.elder_id,
                "plan_id": o.plan_id,
                "provider_id": o.provider_id,
                "carer_id": o.carer_id,
                "service": o.service,
                "day": o.day,
                "window": [o.window.0, o.window.1],
                "planned_min": o.planned_min,
                "behaviour": o.behaviour.name(),
                "check_in": o.check_in,
                "check_out": o.check_out,
                "minutes": o.minutes(),
                "expected_flags": o.behaviour.expected_flags()
                    .map(|f| f.iter().map(|x| x.as_str()).collect::<Vec<_>>()),
                "expects_visit_missed": o.expects_missed(),
                "visit_subject": o.visit_subject(),
                "follow_up": o.behaviour.expects_follow_up().then(|| json!({
                    "called_at": o.call.map(|c| c.0),
                    "outcome": o.call.map(|c| c.1),
                })),
            })
        })
        .collect();
    json!({
        "definitions": {
            "planned": "distinct planned visit ids: visits of a plan, and windows missed",
            "done": "visits with a check-in",
            "on_time": "visits with a check-in and no flag",
            "missed": "plan windows with no check-in at all (a check-out with no check-in included)",
            "late/short/uncorroborated/unverified/no_check_in/no_check_out": "visits carrying that flag",
            "unplanned": "visits with a check-in that matched no plan",
            "follow_ups": "follow-up calls raised (visits checked in and out)",
            "satisfied/complaint/no_answer": "follow-up calls resolved with that outcome",
            "open": "follow-up calls not answered by the end of the run",
            "minutes": "sum over visits with a check-in and a check-out of their length, whole minutes",
            "month": "of the visit's local day (VisitInfo.day)",
        },
        "providers": providers.iter().map(|p| json!({
            "provider_id": p.provider_id, "carers": p.carers,
        })).collect::<Vec<_>>(),
        "homes": runs.iter().map(|r| json!({
            "elder_id": r.elder_id,
            "alone_or_frail": r.visits.alone_or_frail,
            "check_in": r.visits.check_in,
            "plans": r.visits.plans.iter().map(|h| json!({
                "plan_id": h.plan.plan_id, "provider_id": h.plan.provider_id,
                "carer_id": h.carer_id, "days": h.plan.days,
                "start_min": h.plan.start_min, "end_min": h.plan.end_min,
                "length_min": h.plan.length_min, "service": h.plan.service,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "by_provider_month": months_json(&truth_counts(runs.iter().flat_map(|r| &r.occurrences))),
        "visits": visits,
    })
}
