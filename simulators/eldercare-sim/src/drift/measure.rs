//! Matching `trend` alerts to the injected drifts: for each drift, the
//! first `trend` alert of its home and metric at or after its onset
//! detects it (the delay counted from the onset day's midnight); every
//! other `trend` alert is false (a metric with no drift in that home,
//! or before the drift began). Repeats after a detection are counted,
//! not held against the engine. Other alerts are counted by kind: a
//! quiet life should raise none.
use super::plan::{DAY, EPOCH, Metric, odd_names};
use super::{HomeRun, Raised};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What became of one injected drift.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub home: usize,
    pub elder_id: String,
    pub kind: &'static str,
    pub metric: &'static str,
    pub onset_day: u32,
    pub magnitude: f64,
    pub ramp_days: u32,
    /// The first matching `trend` alert.
    pub detected_at_ms: Option<i64>,
    /// Later `trend` alerts of the same home and metric.
    pub repeats: u32,
}

impl Outcome {
    pub fn delay_days(&self) -> Option<f64> {
        let onset = EPOCH + i64::from(self.onset_day) * DAY;
        self.detected_at_ms.map(|t| (t - onset) as f64 / DAY as f64)
    }
}

/// A `trend` alert with no drift behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct FalseAlert {
    pub home: usize,
    pub metric: String,
    pub at_ms: i64,
    /// `no drift` (none on this metric in this home) or `before onset`.
    pub why: &'static str,
    /// Odd days among the day of the alert and the three before it.
    pub odd_days: Vec<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct Score {
    pub homes: usize,
    pub days: u32,
    pub outcomes: Vec<Outcome>,
    pub false_alerts: Vec<FalseAlert>,
    /// Alerts of every other kind, by kind.
    pub others: BTreeMap<String, u64>,
    /// The first few of them: (home, alert).
    pub other_examples: Vec<(usize, Raised)>,
}

impl Score {
    pub fn resident_days(&self) -> u64 {
        self.homes as u64 * u64::from(self.days)
    }

    pub fn false_per_100_resident_days(&self) -> f64 {
        self.false_alerts.len() as f64 * 100.0 / self.resident_days().max(1) as f64
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
        let mut outcome = run.drift.map(|d| Outcome {
            home: run.home,
            elder_id: run.elder_id.clone(),
            kind: d.kind.name(),
            metric: d.kind.metric().key(),
            onset_day: d.onset_day,
            magnitude: d.magnitude,
            ramp_days: d.ramp_days,
            detected_at_ms: None,
            repeats: 0,
        });
        let mut trends = run.trends.clone();
        trends.sort_by_key(|t| t.at_ms);
        for t in &trends {
            let metric = t.subject.clone().unwrap_or_default();
            let why = match (&mut outcome, run.drift) {
                (Some(o), Some(d)) if o.metric == metric => {
                    if t.at_ms < d.onset_ms() {
                        Some("before onset")
                    } else if o.detected_at_ms.is_none() {
                        o.detected_at_ms = Some(t.at_ms);
                        None
                    } else {
                        o.repeats += 1;
                        None
                    }
                }
                _ => Some("no drift"),
            };
            if let Some(why) = why {
                let day = ((t.at_ms - EPOCH).div_euclid(DAY)).max(0) as u32;
                let mut odd: Vec<&'static str> = run
                    .days
                    .iter()
                    .filter(|x| x.day + 3 >= day && x.day <= day)
                    .flat_map(|x| odd_names(x.odd))
                    .collect();
                odd.sort_unstable();
                odd.dedup();
                s.false_alerts.push(FalseAlert {
                    home: run.home,
                    metric,
                    at_ms: t.at_ms,
                    why,
                    odd_days: odd,
                });
            }
        }
        s.outcomes.extend(outcome);
        for o in &run.others {
            *s.others.entry(o.kind.clone()).or_default() += 1;
            if s.other_examples.len() < 20 {
                s.other_examples.push((run.home, o.clone()));
            }
        }
    }
    s
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Per drift kind (and `all`): injected, detected, delays.
fn by_kind(outcomes: &[Outcome]) -> Vec<(String, String, usize, usize, Vec<f64>)> {
    let mut kinds: Vec<(&str, &str)> = outcomes.iter().map(|o| (o.kind, o.metric)).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let row = |name: &str, metric: &str, os: Vec<&Outcome>| {
        let mut delays: Vec<f64> = os.iter().filter_map(|o| o.delay_days()).collect();
        delays.sort_by(f64::total_cmp);
        (
            name.to_string(),
            metric.to_string(),
            os.len(),
            delays.len(),
            delays,
        )
    };
    let mut rows: Vec<_> = kinds
        .iter()
        .map(|(k, m)| row(k, m, outcomes.iter().filter(|o| o.kind == *k).collect()))
        .collect();
    rows.push(row("all", "", outcomes.iter().collect()));
    rows
}

impl Score {
    pub fn to_json(&self) -> Value {
        let kinds: Vec<Value> = by_kind(&self.outcomes)
            .into_iter()
            .map(|(k, m, n, det, delays)| {
                json!({
                    "kind": k, "metric": m, "injected": n, "detected": det,
                    "delay_days_p50": percentile(&delays, 50.0),
                    "delay_days_max": delays.last(),
                })
            })
            .collect();
        let mut false_by_metric: BTreeMap<&str, u64> = BTreeMap::new();
        for f in &self.false_alerts {
            *false_by_metric.entry(f.metric.as_str()).or_default() += 1;
        }
        json!({
            "homes": self.homes,
            "days": self.days,
            "resident_days": self.resident_days(),
            "drifts": self.outcomes.iter().map(|o| json!({
                "home": o.home, "elder_id": o.elder_id, "kind": o.kind,
                "metric": o.metric, "onset_day": o.onset_day,
                "magnitude": (o.magnitude * 100.0).round() / 100.0,
                "ramp_days": o.ramp_days,
                "detected": o.detected_at_ms.is_some(),
                "detected_at_ms": o.detected_at_ms,
                "delay_days": o.delay_days().map(|d| (d * 100.0).round() / 100.0),
                "repeats": o.repeats,
            })).collect::<Vec<_>>(),
            "by_kind": kinds,
            "false_trend_alerts": {
                "count": self.false_alerts.len(),
                "per_100_resident_days": self.false_per_100_resident_days(),
                "by_metric": false_by_metric,
                "alerts": self.false_alerts.iter().map(|f| json!({
                    "home": f.home, "metric": f.metric, "at_ms": f.at_ms,
                    "day": (f.at_ms - EPOCH) as f64 / DAY as f64,
                    "why": f.why, "odd_days": f.odd_days,
                })).collect::<Vec<_>>(),
            },
            "other_alerts": {
                "count": self.others.values().sum::<u64>(),
                "by_kind": self.others,
                "examples": self.other_examples.iter().map(|(h, r)| json!({
                    "home": h, "kind": r.kind, "subject": r.subject,
                    "day": (r.at_ms - EPOCH) as f64 / DAY as f64,
                })).collect::<Vec<_>>(),
            },
        })
    }

    /// The summary table, on stdout.
    pub fn print(&self) {
        let d = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
        println!();
        println!(
            "{:<14} {:<22} {:>8} {:>8} {:>9} {:>9}",
            "drift", "metric", "injected", "detected", "delay p50", "delay max"
        );
        for (k, m, n, det, delays) in by_kind(&self.outcomes) {
            println!(
                "{:<14} {:<22} {:>8} {:>8} {:>9} {:>9}",
                k,
                m,
                n,
                det,
                d(percentile(&delays, 50.0)),
                d(delays.last().copied())
            );
        }
        println!("(delays in days from the onset day's midnight)");
        println!();
        println!(
            "false trend alerts      {} ({:.2} per 100 resident-days over {} resident-days)",
            self.false_alerts.len(),
            self.false_per_100_resident_days(),
            self.resident_days()
        );
        let mut by_metric: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for f in &self.false_alerts {
            let e = by_metric.entry(f.metric.as_str()).or_default();
            e.0 += 1;
            if !f.odd_days.is_empty() {
                e.1 += 1;
            }
        }
        for (m, (n, odd)) in by_metric {
            println!("  {m:<22} {n} ({odd} after an odd day)");
        }
        let n: u64 = self.others.values().sum();
        println!("other alerts raised     {n}");
        for (k, c) in &self.others {
            println!("  {k:<22} {c}");
        }
    }
}

/// The ground truth per home and day, as CSV.
pub fn truth_csv(runs: &[HomeRun]) -> String {
    let mut s = String::from("home,elder_id,day,weekday,odd,drift,drift_share");
    for m in Metric::ALL {
        s.push(',');
        s.push_str(m.key());
    }
    s.push_str(",active_min\n");
    for r in runs {
        let drift = r.drift.map_or("", |d| d.kind.name());
        for t in &r.days {
            s.push_str(&format!(
                "{},{},{},{},{},{},{:.2}",
                r.home,
                r.elder_id,
                t.day,
                t.day % 7,
                odd_names(t.odd).join(";"),
                drift,
                t.drift_share
            ));
            for m in Metric::ALL {
                s.push_str(&format!(",{:.1}", t.value(m)));
            }
            s.push_str(&format!(",{:.1}\n", t.active_min));
        }
    }
    s
}
