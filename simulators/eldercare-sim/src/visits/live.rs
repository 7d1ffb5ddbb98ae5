//! Carers' visits in a `verify --carers` rehearsal against a real server:
//! the same plans, behaviours and ground truth as the month of the
//! `visits` mode ([`super::plan`]), laid out over minutes of wall clock
//! instead of days, played by the homes' own MQTT sessions and scored
//! from the alerts the server sends ([`super::measure`]'s words).
//!
//! [`schedule`] gives each visited home one daily plan whose window
//! opens a few minutes into the run (staggered over the homes, so the
//! load is spread) and what its carer does about it, with [`Timing`]
//! and the windows scaled to the rule file's `[visits]` section: every
//! alert a visit calls for is due before the homes stop publishing.
//! [`Schedule::registry`] is what RegistryService.Import is given;
//! [`Schedule::messages`] the carer's tag reads and footprints as the
//! home's button and PIR sensors publish them; [`score`] matches what
//! was heard to the truth.
use super::emit;
use super::measure::{self, Row, Said};
use super::plan::{self, Behaviour, HomePlan, HomeVisits, Mix, Occurrence, Provider, Timing};
use crate::Home;
use crate::life::{Msg, Payload};
use eldercare_model::{AlertKind, VisitFlag};
use eldercare_rules::{PlanProfile, RuleConfig};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

const S: i64 = 1000;
const MIN: i64 = 60 * S;
const DAY: i64 = 24 * 60 * MIN;

/// What a rehearsal's visits are like.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// How often each behaviour is drawn.
    pub mix: Mix,
    /// Providers P1..PK.
    pub providers: usize,
    /// Each plan's check-in window, minutes.
    pub window_min: u32,
    /// Each plan's planned length, minutes.
    pub length_min: u32,
    /// The first windows open this long after the run starts (time to
    /// register the plans).
    pub lead_ms: i64,
    /// When not empty, only these homes are visited, each as given
    /// (`(home index, behaviour)`, in this order), every window opening
    /// on the first whole minute after `lead_ms`: a script (the demo's)
    /// rather than every home without an episode and behaviours drawn
    /// from `mix`.
    pub scripted: Vec<(usize, Behaviour)>,
}

impl Default for Options {
    /// 2-minute windows and visits, the first 3 minutes in.
    fn default() -> Options {
        Options {
            mix: Mix::default(),
            providers: 3,
            window_min: 2,
            length_min: 2,
            lead_ms: 3 * MIN,
            scripted: Vec::new(),
        }
    }
}

/// One visited home: its plan, and what its carer does about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Visited {
    /// The home's index ([`Home::index`]).
    pub home: usize,
    pub visits: HomeVisits,
    pub occurrence: Occurrence,
}

/// The visits of a rehearsal.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub providers: Vec<Provider>,
    pub homes: Vec<Visited>,
    pub timing: Timing,
    /// The windows open at these minutes after the first one (one each).
    pub slots: usize,
    /// When the last alert a visit calls for is due (server clock).
    pub last_due_ms: i64,
}

/// How long after its window opens the last alert of a visit is due
/// under `r`: a late check-in at the latest, stayed 10 % over the plan,
/// judged `margin_s` after the check-out; or a visit never checked out,
/// closed `max_visit_s` (or three times the plan's length) after a
/// check-in at the close.
pub fn visit_span_ms(r: &RuleConfig, o: &Options, t: &Timing) -> i64 {
    let v = &r.visits;
    let window = i64::from(o.window_min) * MIN;
    let length = i64::from(o.length_min) * MIN;
    let late = t.late_ms.1 + length * 11 / 10 + i64::from(v.margin_s) * S;
    let unclosed = (i64::from(v.max_visit_s) * S).max(3 * length);
    window + late.max(unclosed)
}

/// Lays out the visits of a run starting at `t0` (wall clock) and
/// publishing for `duration_ms`: one daily plan for every home of
/// `homes` not in `skip` (the homes with an injected episode), its
/// window opening on a whole minute, `lead_ms` in or later, staggered
/// over the minutes that leave every visit's alerts due 30 s before the
/// homes stop (plus the engine's tick). With [`Options::scripted`], only
/// the homes it names, each window opening on the first of those minutes
/// and each carer doing as it says. Errs when the run is too short for
/// one window, a window would cross the homes' local midnight, or a
/// scripted home is not in `homes` or is in `skip`.
pub fn schedule(
    homes: &[Home],
    skip: &HashSet<usize>,
    t0: i64,
    duration_ms: i64,
    rules: &RuleConfig,
    seed: u64,
    o: &Options,
) -> anyhow::Result<Schedule> {
    if o.window_min == 0 || o.length_min == 0 {
        anyhow::bail!("carers' windows and visits must last at least a minute");
    }
    let timing = Timing::for_rules(&rules.visits);
    let span = visit_span_ms(rules, o, &timing) + 30 * S;
    let first = (t0 + o.lead_ms).div_euclid(MIN) * MIN + MIN;
    let last = t0 + duration_ms - span;
    if last < first {
        anyhow::bail!(
            "--duration-s {} is too short for carers' visits under these rules: a window opens {} s in and its alerts are due up to {} s after it opens; give at least {} s",
            duration_ms / S,
            (first - t0) / S,
            span / S,
            (first - t0 + span) / S + 1
        );
    }
    let visited = visited(homes, skip, &o.scripted)?;
    // A script's windows all open at once, on the first minute.
    let slots = if o.scripted.is_empty() {
        ((last - first) / MIN + 1) as usize
    } else {
        1
    };
    let providers = plan::providers(o.providers, visited.len().max(1));
    let n = visited.len();
    let mut out = Vec::with_capacity(n);
    for (k, (h, scripted)) in visited.into_iter().enumerate() {
        let mut rng = super::home_rng(seed, h.index, 11);
        let open = first + (k * slots / n.max(1)) as i64 * MIN;
        let window = (open, open + i64::from(o.window_min) * MIN);
        let tz = i64::from(h.utc_offset_h) * 60 * MIN;
        let local = |t: i64| (t + tz).rem_euclid(DAY) / MIN;
        let (start_min, end_min) = (local(window.0), local(window.1));
        if end_min <= start_min {
            anyhow::bail!(
                "a carer's window would cross the homes' local midnight: run by day (--local-hour)"
            );
        }
        let p = &providers[rng.random_range(0..providers.len())];
        let mut carer = p.carers.choose(&mut rng).expect("carers").clone();
        if scripted.is_some() {
            // A script's carers take turns: none is in two homes at once
            // while there are carers enough.
            carer = p.carers[k % p.carers.len()].clone();
        }
        let service = plan::SERVICES.choose(&mut rng).expect("services");
        let hp = HomePlan {
            plan: PlanProfile {
                plan_id: format!("V{:05}", h.index),
                provider_id: p.provider_id.clone(),
                days: [true; 7],
                start_min: start_min as u16,
                end_min: end_min as u16,
                length_min: o.length_min,
                service: (*service).to_string(),
            },
            carer_id: carer,
        };
        let hv = HomeVisits {
            elder_id: h.elder_id.clone(),
            plans: vec![hp.clone()],
            alone_or_frail: h.flags.iter().any(|f| *f == "lives_alone" || *f == "frail"),
            check_in: None,
        };
        let day = plan::date((window.0 + tz).div_euclid(DAY));
        let behaviour = scripted.unwrap_or_else(|| o.mix.draw(&mut rng));
        let occ = plan::occurrence(&mut rng, &hv, &hp, &day, window, behaviour, &timing);
        out.push(Visited {
            home: h.index,
            visits: hv,
            occurrence: occ,
        });
    }
    let last_due_ms = out
        .iter()
        .map(|v| v.occurrence.window.0 + span - 30 * S)
        .max()
        .unwrap_or(t0);
    Ok(Schedule {
        providers,
        homes: out,
        timing,
        slots,
        last_due_ms,
    })
}

/// The homes carers visit, each with its behaviour when scripted: every
/// home not in `skip`, or the script's homes in its order.
fn visited<'a>(
    homes: &'a [Home],
    skip: &HashSet<usize>,
    script: &[(usize, Behaviour)],
) -> anyhow::Result<Vec<(&'a Home, Option<Behaviour>)>> {
    if script.is_empty() {
        return Ok(homes
            .iter()
            .filter(|h| !skip.contains(&h.index))
            .map(|h| (h, None))
            .collect());
    }
    let mut seen = HashSet::new();
    script
        .iter()
        .map(|&(index, b)| {
            if skip.contains(&index) || !seen.insert(index) {
                anyhow::bail!(
                    "home {index} cannot have a scripted visit: it has an episode or another visit"
                );
            }
            let h = homes
                .iter()
                .find(|h| h.index == index)
                .ok_or_else(|| anyhow::anyhow!("no home {index} for a scripted visit"))?;
            Ok((h, Some(b)))
        })
        .collect()
}

impl Schedule {
    /// The registry files, in the order Import takes them:
    /// `providers.csv`, `carers.csv`, `visit_plans.csv`.
    pub fn registry(&self) -> [String; 3] {
        let mut providers = String::from("provider_id,name,phone\n");
        let mut carers = String::from("carer_id,provider_id,name\n");
        for p in &self.providers {
            providers.push_str(&format!("{0},Provider {0},\n", p.provider_id));
            for c in &p.carers {
                carers.push_str(&format!("{c},{},Carer {c}\n", p.provider_id));
            }
        }
        let mut plans = String::from(
            "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n",
        );
        let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        for v in &self.homes {
            for hp in &v.visits.plans {
                let p = &hp.plan;
                plans.push_str(&format!(
                    "{},{},{},daily,{},{},{},{}\n",
                    p.plan_id,
                    v.visits.elder_id,
                    p.provider_id,
                    hhmm(p.start_min),
                    hhmm(p.end_min),
                    p.length_min,
                    p.service
                ));
            }
        }
        [providers, carers, plans]
    }

    /// The visit of home `index`, if it has one.
    pub fn of_home(&self, index: usize) -> Option<&Visited> {
        self.homes.iter().find(|v| v.home == index)
    }

    /// The span the elder of a visited home stays in and up.
    pub fn protected(&self, v: &Visited) -> (i64, i64) {
        v.occurrence.protected(&self.timing)
    }
}

/// When each alert a visit calls for is due under `r` (server clock):
/// its `visit_missed` at the window's close; its `visit` and `follow_up`
/// `margin_s` after the check-out, at once for a check-out with no
/// check-in, or when a visit never checked out is closed.
pub fn alerts_due(o: &Occurrence, r: &RuleConfig) -> Vec<(AlertKind, i64)> {
    let v = &r.visits;
    let mut out = Vec::new();
    if o.expects_missed() {
        out.push((AlertKind::VisitMissed, o.window.1));
    }
    let judged = match (o.check_in, o.check_out) {
        (Some(_), Some(t)) => Some(t + i64::from(v.margin_s) * S),
        (None, Some(t)) => Some(t),
        (Some(i), None) => {
            Some(i + (i64::from(v.max_visit_s) * S).max(3 * i64::from(o.planned_min) * MIN))
        }
        (None, None) => None,
    };
    if let Some(t) = judged {
        out.push((AlertKind::Visit, t));
        if o.behaviour.expects_follow_up() {
            out.push((AlertKind::FollowUp, t));
        }
    }
    out
}

/// The carer's tag reads (the home's button publishes
/// `{"ts", "type": "visit", "carer", "action"}` on its `event` topic)
/// and footprints (the entrance on the way in and out, motion where
/// they work) at one home, as its devices publish them.
pub fn messages(v: &Visited, home: &Home) -> Vec<Msg> {
    let ids: Vec<String> = home.devices.iter().map(|d| d.device_id.clone()).collect();
    let mut rs = Vec::new();
    emit::carer_readings(&v.occurrence, &ids, &mut rs);
    rs.into_iter()
        .filter_map(|r| {
            let device = ids.iter().position(|d| *d == r.device_id)?;
            let mut body = serde_json::to_value(&r.body).ok()?;
            body["ts"] = json!(r.ts_ms);
            Some(Msg {
                at_ms: r.ts_ms,
                device,
                body: Payload::Json {
                    stream: r.stream().as_str(),
                    body,
                },
                trigger: false,
            })
        })
        .collect()
}

/// The flags of a `visit` alert from its English summary, `... flagged:
/// late, short (why)` (crates/rules/src/rule/visit.rs); none for a visit
/// borne out. For a server whose Alert does not carry the visit itself
/// ([`Heard::flags`] is `None`).
pub fn flags_in_summary(summary: &str) -> Vec<VisitFlag> {
    let Some((_, rest)) = summary.split_once(" flagged: ") else {
        return Vec::new();
    };
    let list = rest.split(" (").next().unwrap_or("");
    list.split(", ").filter_map(VisitFlag::parse).collect()
}

/// An alert of the fleet as heard on the subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heard {
    pub elder_id: String,
    pub kind: String,
    pub subject: String,
    /// In English.
    pub summary: String,
    pub queue: String,
    pub recorded: bool,
    /// A later event resolved it as `cleared` (a late check-in).
    pub cleared: bool,
    /// The visit's flags as the alert carries them (`Alert.visit.flags`);
    /// `None` when it carries no visit, and the summary is read instead.
    pub flags: Option<Vec<VisitFlag>>,
}

impl Heard {
    fn said(&self) -> Said {
        let kind = AlertKind::parse(&self.kind);
        Said {
            kind,
            flags: match (&self.flags, kind) {
                (Some(f), _) => f.clone(),
                (None, Some(AlertKind::Visit)) => flags_in_summary(&self.summary),
                (None, _) => Vec::new(),
            },
            recorded: self.recorded,
            cleared: self.cleared,
            hotline: self.queue == "hotline",
        }
    }

    fn of_visits(&self) -> bool {
        matches!(
            AlertKind::parse(&self.kind),
            Some(AlertKind::Visit | AlertKind::VisitMissed | AlertKind::FollowUp)
        )
    }
}

/// A visit whose alerts are not what its behaviour calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    pub visit_id: String,
    pub behaviour: &'static str,
    pub expected: Vec<String>,
    pub got: Vec<String>,
}

/// The visits of a rehearsal against what was heard.
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub homes: usize,
    pub by_behaviour: BTreeMap<Behaviour, Row>,
    pub not_exact: u64,
    pub misses: Vec<Miss>,
    /// Alerts a visit called for (its `visit`, `visit_missed`,
    /// `follow_up`) never heard.
    pub missing_alerts: u64,
    /// `visit`, `visit_missed` and `follow_up` alerts of no planned visit.
    pub unmatched: u64,
    /// Alerts of other kinds on visited homes, by kind.
    pub others: BTreeMap<String, u64>,
    pub other_examples: Vec<Value>,
    /// `visit_missed` alerts by queue.
    pub missed_queues: BTreeMap<String, u64>,
}

/// The kinds of alert a behaviour calls for.
fn kinds_wanted(b: Behaviour) -> Vec<AlertKind> {
    let mut k = Vec::new();
    if b.expected_flags().is_some() {
        k.push(AlertKind::Visit);
    }
    if b.expects_missed() {
        k.push(AlertKind::VisitMissed);
    }
    if b.expects_follow_up() {
        k.push(AlertKind::FollowUp);
    }
    k
}

/// Scores what was heard of the visited homes against the schedule.
pub fn score(s: &Schedule, heard: &[Heard]) -> Score {
    let mut out = Score {
        homes: s.homes.len(),
        ..Score::default()
    };
    let elders: HashSet<&str> = s.homes.iter().map(|v| v.visits.elder_id.as_str()).collect();
    let mut by_subject: HashMap<(&str, AlertKind), Vec<&Heard>> = HashMap::new();
    for h in heard
        .iter()
        .filter(|h| elders.contains(h.elder_id.as_str()))
    {
        if h.of_visits() {
            let kind = AlertKind::parse(&h.kind).expect("a visit kind");
            by_subject.entry((&h.subject, kind)).or_default().push(h);
            if kind == AlertKind::VisitMissed {
                *out.missed_queues.entry(h.queue.clone()).or_default() += 1;
            }
        } else {
            *out.others.entry(h.kind.clone()).or_default() += 1;
            if out.other_examples.len() < 20 {
                out.other_examples.push(json!({
                    "elder_id": h.elder_id, "kind": h.kind, "queue": h.queue,
                    "summary": h.summary,
                }));
            }
        }
    }
    let mut used: HashSet<(String, AlertKind)> = HashSet::new();
    for v in &s.homes {
        let o = &v.occurrence;
        let subject = o.visit_subject();
        let keys = [
            (subject.as_str(), AlertKind::Visit),
            (o.visit_id.as_str(), AlertKind::VisitMissed),
            (o.visit_id.as_str(), AlertKind::FollowUp),
        ];
        let said: Vec<Said> = keys
            .iter()
            .flat_map(|k| by_subject.get(k).into_iter().flatten())
            .map(|h| h.said())
            .collect();
        for k in kinds_wanted(o.behaviour) {
            if !said.iter().any(|x| x.kind == Some(k)) {
                out.missing_alerts += 1;
            }
        }
        for (sub, kind) in keys {
            used.insert((sub.to_string(), kind));
        }
        let (want, got) = (measure::expected(o), measure::shown(&said));
        let row = out.by_behaviour.entry(o.behaviour).or_default();
        if !row.tally(&want, &got) {
            out.not_exact += 1;
            if out.misses.len() < 30 {
                out.misses.push(Miss {
                    visit_id: o.visit_id.clone(),
                    behaviour: o.behaviour.name(),
                    expected: want,
                    got,
                });
            }
        }
    }
    for ((sub, kind), hs) in &by_subject {
        if !used.contains(&(sub.to_string(), *kind)) {
            out.unmatched += hs.len() as u64;
        }
    }
    out
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

    /// The `carers` object of a verify result.
    pub fn to_json(&self, s: &Schedule) -> Value {
        let mut rows: Vec<Value> = self
            .by_behaviour
            .iter()
            .map(|(b, r)| measure::row_json(b.name(), r))
            .collect();
        let t = self.total();
        rows.push(measure::row_json("all", &t));
        json!({
            "homes": self.homes,
            "providers": s.providers.len(),
            "carers": s.providers.iter().map(|p| p.carers.len()).sum::<usize>(),
            "window_slots": s.slots,
            "visits": t.visits,
            "exact": t.exact,
            "flags_expected": t.expected,
            "flags_found": t.found,
            "missed_flags": t.expected - t.found,
            "false_flags": t.false_flags,
            "missing_alerts": self.missing_alerts,
            "by_behaviour": rows,
            "not_exact": {
                "count": self.not_exact,
                "examples": self.misses.iter().map(|m| json!({
                    "visit_id": m.visit_id, "behaviour": m.behaviour,
                    "expected": m.expected, "got": m.got,
                })).collect::<Vec<_>>(),
            },
            "unmatched_visit_alerts": self.unmatched,
            "visit_missed_queues": self.missed_queues,
            "other_alerts": {
                "count": self.others.values().sum::<u64>(),
                "by_kind": self.others,
                "examples": self.other_examples,
            },
        })
    }
}

/// The `carers` object of a result as a table on stdout.
pub fn print(c: &Value) {
    println!();
    println!(
        "carers' visits: {} homes, {} visits ({} exact), flags found {} / {} expected, false flags {}, alerts missing {}",
        c["homes"],
        c["visits"],
        c["exact"],
        c["flags_found"],
        c["flags_expected"],
        c["false_flags"],
        c["missing_alerts"]
    );
    println!(
        "{:<13} {:>7} {:>7} {:>9} {:>7} {:>7} {:>10}",
        "behaviour", "visits", "exact", "expected", "found", "false", "follow-ups"
    );
    for r in c["by_behaviour"].as_array().into_iter().flatten() {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "{:<13} {:>7} {:>7} {:>9} {:>7} {:>7} {:>5}/{:<5}",
            r["behaviour"].as_str().unwrap_or(""),
            n("visits"),
            n("exact"),
            n("flags_expected"),
            n("flags_found"),
            n("false_flags"),
            n("follow_ups_found"),
            n("follow_ups_expected")
        );
    }
    println!("(expected/found: flags and visit_missed; false: flags not called for)");
    for m in c["not_exact"]["examples"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
    {
        println!(
            "  {} ({}): expected {}, got {}",
            m["visit_id"].as_str().unwrap_or(""),
            m["behaviour"].as_str().unwrap_or(""),
            m["expected"],
            m["got"]
        );
    }
    println!(
        "visit alerts of no planned visit {}",
        c["unmatched_visit_alerts"]
    );
    println!(
        "other alerts on visited homes   {} {}",
        c["other_alerts"]["count"], c["other_alerts"]["by_kind"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/verify-rules.toml"
        ))
        .expect("deploy/verify-rules.toml");
        (**eldercare_rules::Rules::parse(&text)
            .expect("verify rules")
            .global())
        .clone()
    }

    #[test]
    fn summaries_give_back_their_flags() {
        assert_eq!(
            flags_in_summary(
                "Visit by carer C01002 (meals) 15:04–15:05, 1 of 2 min planned flagged: late, short (checked in after the window closed; much shorter than planned)"
            ),
            vec![VisitFlag::Late, VisitFlag::Short]
        );
        assert_eq!(
            flags_in_summary("Visit by carer C01002 (meals) ?–15:05 flagged: no_check_in (x)"),
            vec![VisitFlag::NoCheckIn]
        );
        assert!(flags_in_summary("Visit by carer C1 (meals) 15:04–15:06, borne out").is_empty());
    }

    #[test]
    fn the_alerts_own_flags_come_before_its_summary() {
        let mut h = Heard {
            kind: "visit".into(),
            summary: "Visit by carer C1 (meals) flagged: late (x)".into(),
            flags: Some(vec![VisitFlag::Short]),
            ..Heard::default()
        };
        assert_eq!(h.said().flags, [VisitFlag::Short]);
        h.flags = None;
        assert_eq!(h.said().flags, [VisitFlag::Late]);
    }

    #[test]
    fn every_visit_is_judged_before_the_homes_stop_and_its_signs_fall_in_the_rules() {
        let r = rules();
        let v = &r.visits;
        let margin = i64::from(v.margin_s) * S;
        // Homes where the run starts in their afternoon.
        let t0 = 1_795_395_617_000;
        let off = crate::utc_offset_for_local_hour(t0, 15);
        let mut homes = crate::homes(300, 3);
        for h in &mut homes {
            h.utc_offset_h = off;
        }
        let duration = 1200 * S;
        let skip: HashSet<usize> = [4, 9].into();
        let o = Options {
            mix: Mix::with_on_time(30),
            ..Options::default()
        };
        let s = schedule(&homes, &skip, t0, duration, &r, 1, &o).unwrap();
        assert_eq!(s.homes.len(), 298);
        assert!(s.of_home(4).is_none() && s.of_home(5).is_some());
        assert!(s.slots >= 5, "{} slots", s.slots);
        assert!(s.last_due_ms <= t0 + duration - 30 * S);
        for b in Behaviour::ALL {
            assert!(s.homes.iter().any(|x| x.occurrence.behaviour == b), "{b:?}");
        }
        let [providers, carers, plans] = s.registry();
        assert!(providers.starts_with("provider_id,name,phone\nP1,"));
        assert!(carers.lines().count() > 3);
        assert_eq!(plans.lines().count(), 299);
        for x in &s.homes {
            let o = &x.occurrence;
            let hp = &x.visits.plans[0];
            let (w0, w1) = o.window;
            assert!(w0 >= t0 + 3 * MIN && w0 % MIN == 0);
            assert!(plans.contains(&format!(
                "{},{},{},daily,",
                hp.plan.plan_id, x.visits.elder_id, hp.plan.provider_id
            )));
            // Judged in time: the visit's last alert before the end.
            let done = o.check_out.unwrap_or(0).max(o.check_in.unwrap_or(0)) + margin;
            assert!(done <= s.last_due_ms && w1 <= s.last_due_ms, "{o:?}");
            if let Some(i) = o.check_in {
                let closes =
                    i + (i64::from(v.max_visit_s) * S).max(3 * i64::from(hp.plan.length_min) * MIN);
                assert!(o.check_out.is_some() || closes <= s.last_due_ms);
                match o.behaviour {
                    Behaviour::Late => {
                        assert!(i > w1 + 20 * S && i < w1 + i64::from(v.late_max_s) * S)
                    }
                    _ => assert!(i >= w0 && i <= w1 - 20 * S, "{o:?}"),
                }
            }
            if let (Some(i), Some(out)) = (o.check_in, o.check_out) {
                let len = out - i;
                let planned = i64::from(hp.plan.length_min) * MIN;
                let short = len * 100 < planned * i64::from(v.short_pct);
                assert_eq!(short, o.behaviour == Behaviour::Short, "{o:?}");
            }
            // Through the door within the margin of each tag read.
            if o.behaviour.enters() {
                let (enter, leave) = (o.enter.unwrap(), o.leave.unwrap());
                if let Some(i) = o.check_in {
                    assert!(i - enter > 0 && i - enter <= margin);
                }
                if let Some(out) = o.check_out {
                    assert!(leave - out > 0 && leave - out < margin);
                }
            }
            let (from, to) = s.protected(x);
            assert!(from <= w0 - 2 * MIN && to >= w1);
            let home = &homes[x.home - 1];
            let msgs = messages(x, home);
            let tags = msgs
                .iter()
                .filter(|m| {
                    matches!(
                        &m.body,
                        Payload::Json {
                            stream: "event",
                            ..
                        }
                    )
                })
                .count();
            let want = usize::from(o.check_in.is_some()) + usize::from(o.check_out.is_some());
            assert_eq!(tags, want);
            for m in &msgs {
                let Payload::Json { body, .. } = &m.body else {
                    panic!("JSON")
                };
                assert_eq!(body["ts"], m.at_ms);
                if body["type"] == "visit" {
                    assert_eq!(m.device, crate::life::BTN);
                    assert_eq!(body["carer"], hp.carer_id.as_str());
                }
            }
        }
    }

    #[test]
    fn a_script_visits_its_homes_as_told_all_in_the_first_window() {
        let r = rules();
        let homes = crate::homes(30, 1);
        let t0 = 1_795_395_617_000;
        let script = vec![
            (22, Behaviour::Late),
            (20, Behaviour::OnTime),
            (21, Behaviour::Missed),
        ];
        let o = Options {
            providers: 1,
            window_min: 1,
            length_min: 1,
            lead_ms: 10 * S,
            scripted: script.clone(),
            ..Options::default()
        };
        let skip: HashSet<usize> = [3, 4].into();
        let s = schedule(&homes, &skip, t0, 3600 * S, &r, 1, &o).unwrap();
        assert_eq!(s.slots, 1);
        assert_eq!(s.providers.len(), 1);
        let got: Vec<(usize, Behaviour)> = s
            .homes
            .iter()
            .map(|v| (v.home, v.occurrence.behaviour))
            .collect();
        assert_eq!(got, script);
        let carers: HashSet<&str> = s
            .homes
            .iter()
            .map(|v| v.occurrence.carer_id.as_str())
            .collect();
        assert_eq!(carers.len(), 3);
        let first = (t0 + 10 * S) / MIN * MIN + MIN;
        for v in &s.homes {
            assert_eq!(v.occurrence.window, (first, first + MIN));
            let due = alerts_due(&v.occurrence, &r);
            let kinds: Vec<AlertKind> = due.iter().map(|(k, _)| *k).collect();
            let want = match v.occurrence.behaviour {
                Behaviour::Late => {
                    vec![
                        AlertKind::VisitMissed,
                        AlertKind::Visit,
                        AlertKind::FollowUp,
                    ]
                }
                Behaviour::OnTime => vec![AlertKind::Visit, AlertKind::FollowUp],
                _ => vec![AlertKind::VisitMissed],
            };
            assert_eq!(kinds, want);
            assert!(due.iter().all(|(_, t)| *t <= s.last_due_ms));
        }
        // A scripted home must exist and have no episode.
        for bad in [vec![(3, Behaviour::Short)], vec![(31, Behaviour::Short)]] {
            let o = Options {
                scripted: bad,
                ..o.clone()
            };
            assert!(schedule(&homes, &skip, t0, 3600 * S, &r, 1, &o).is_err());
        }
    }

    #[test]
    fn a_visit_is_exact_only_with_what_its_behaviour_calls_for() {
        let r = rules();
        let homes = crate::homes(40, 1);
        let t0 = 1_795_395_600_000;
        let o = Options::default();
        let s = schedule(&homes, &HashSet::new(), t0, 1200 * S, &r, 2, &o).unwrap();
        // Hear exactly what each visit calls for.
        let mut heard = Vec::new();
        for x in &s.homes {
            let o = &x.occurrence;
            let b = o.behaviour;
            let h = |kind: &str, subject: String| Heard {
                elder_id: o.elder_id.clone(),
                kind: kind.into(),
                subject,
                queue: "supervision".into(),
                ..Heard::default()
            };
            if let Some(flags) = b.expected_flags() {
                let mut a = h("visit", o.visit_subject());
                a.recorded = flags.is_empty();
                a.summary = if flags.is_empty() {
                    "Visit by carer C (meals) 15:04–15:06, borne out".into()
                } else {
                    let f: Vec<&str> = flags.iter().map(|f| f.as_str()).collect();
                    format!("Visit by carer C (meals) flagged: {} (why)", f.join(", "))
                };
                heard.push(a);
            }
            if b.expects_missed() {
                let mut a = h("visit_missed", o.visit_id.clone());
                a.queue = "provider".into();
                a.cleared = b == Behaviour::Late;
                heard.push(a);
            }
            if b.expects_follow_up() {
                heard.push(h("follow_up", o.visit_id.clone()));
            }
        }
        let sc = score(&s, &heard);
        let t = sc.total();
        assert_eq!((sc.not_exact, t.false_flags, sc.missing_alerts), (0, 0, 0));
        assert_eq!(t.found, t.expected);
        assert_eq!(t.exact, 40);
        // A false flag, a missing visit_missed and an inactivity alert.
        let i = heard
            .iter()
            .position(|a| a.kind == "visit" && a.recorded)
            .unwrap();
        heard[i].recorded = false;
        heard[i].summary = "Visit flagged: uncorroborated (x)".into();
        let j = heard.iter().position(|a| a.kind == "visit_missed").unwrap();
        heard.remove(j);
        heard.push(Heard {
            elder_id: "E00001".into(),
            kind: "inactivity".into(),
            queue: "hotline".into(),
            ..Heard::default()
        });
        let sc = score(&s, &heard);
        let t = sc.total();
        assert_eq!(t.false_flags, 1);
        assert_eq!(t.found + 1, t.expected);
        assert_eq!(sc.missing_alerts, 1);
        assert_eq!(sc.not_exact, 2);
        assert_eq!(sc.others.get("inactivity"), Some(&1));
        let _ = sc.to_json(&s);
    }
}
