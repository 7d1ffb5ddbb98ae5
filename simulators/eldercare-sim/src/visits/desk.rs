//! A minimal alert book: the rule engine's decisions made into
//! [`Alert`]s the way the server's alert desk does (crates/alerts,
//! `DeskState::on_trigger`, `on_update`, `on_resolve`), without storage,
//! silences or escalation; and the follow-up calls of a simulated
//! hotline.
//!
//! A raise of a new `(elder, kind, subject)` opens an alert, a repeat
//! folds into the open one; a trigger with a record is born resolved
//! (outcome `recorded`) beside it. An update notes the open alert; a
//! resolve closes it with its outcome.
use eldercare_model::{Alert, AlertKind, AlertReading, AlertState, Outcome};
use eldercare_rules::Decision;
use std::collections::HashMap;

type Key = (String, AlertKind, Option<String>);

/// One home's alerts, in the order they were raised.
#[derive(Debug, Default)]
pub struct Book {
    pub alerts: Vec<Alert>,
    open: HashMap<Key, usize>,
    /// For the alerts' `district` and `community`, as the registry has them.
    pub district: Option<String>,
    pub community: Option<String>,
}

fn readings(rs: &[eldercare_model::Reading]) -> Vec<AlertReading> {
    rs.iter()
        .map(|r| AlertReading {
            device_id: r.device_id.clone(),
            stream: r.stream(),
            ts_ms: r.ts_ms,
            json: r.body.to_json(),
        })
        .collect()
}

impl Book {
    pub fn new(district: Option<String>, community: Option<String>) -> Book {
        Book {
            district,
            community,
            ..Book::default()
        }
    }

    /// Applies a decision taken at engine time `now`; returns the index
    /// of the alert it raised or changed.
    pub fn apply(&mut self, d: Decision, now: i64) -> Option<usize> {
        match d {
            Decision::Raise(t) => {
                let key = (t.elder_id.clone(), t.kind, t.subject.clone());
                let recorded = t.record.is_some();
                let open = if recorded {
                    None
                } else {
                    self.open.get(&key).copied()
                };
                if let Some(i) = open {
                    let a = &mut self.alerts[i];
                    a.occurrences += 1;
                    a.severity = a.severity.max(t.severity);
                    a.updated_at = now;
                    a.summary = format!("{} (repeated ×{})", t.summary.en, a.occurrences);
                    a.summary_zh = format!("{}（第 {} 次）", t.summary.zh, a.occurrences);
                    a.readings.extend(readings(&t.readings));
                    a.window = match (a.window, t.window) {
                        (Some((f0, t0)), Some((f1, t1))) => Some((f0.min(f1), t0.max(t1))),
                        (w, None) | (None, w) => w,
                    };
                    return Some(i);
                }
                let i = self.alerts.len();
                self.alerts.push(Alert {
                    id: format!("{}-{:05}", t.elder_id, i + 1),
                    elder_id: t.elder_id.clone(),
                    device_id: t.device_id.clone(),
                    kind: t.kind,
                    severity: t.severity,
                    state: if recorded {
                        AlertState::Resolved
                    } else {
                        AlertState::Open
                    },
                    raised_at: t.at_ms,
                    detected_at: now,
                    updated_at: now,
                    summary: t.summary.en.clone(),
                    summary_zh: t.summary.zh.clone(),
                    subject: t.subject.clone(),
                    window: t.window,
                    score: t.score,
                    factors: t.factors.clone(),
                    readings: readings(&t.readings),
                    occurrences: 1,
                    outcome: recorded.then(|| Outcome::Recorded.as_str().to_string()),
                    district: self.district.clone(),
                    community: self.community.clone(),
                    muted: false,
                    silence_id: None,
                    escalations: 0,
                    responder: None,
                    acknowledged_at: None,
                    dispatched_at: None,
                    resolved_at: recorded.then_some(now),
                    late_ms: t.late_ms,
                    recorded,
                    visit: t.visit.clone(),
                    route: t.route,
                });
                if !recorded {
                    self.open.insert(key, i);
                }
                Some(i)
            }
            Decision::Update(u) => {
                let i = *self
                    .open
                    .get(&(u.elder_id.clone(), u.kind, u.subject.clone()))?;
                let a = &mut self.alerts[i];
                match u.summary {
                    Some(s) => {
                        a.summary = s.en;
                        a.summary_zh = s.zh;
                    }
                    None => {
                        a.summary = format!("{}; {}", a.summary, u.note.en);
                        a.summary_zh = format!("{}；{}", a.summary_zh, u.note.zh);
                    }
                }
                a.updated_at = now;
                a.readings.extend(readings(&u.readings));
                Some(i)
            }
            Decision::Resolve(r) => {
                let i = self
                    .open
                    .remove(&(r.elder_id.clone(), r.kind, r.subject.clone()))?;
                let a = &mut self.alerts[i];
                a.updated_at = now;
                a.state = AlertState::Resolved;
                a.outcome = Some(
                    match r.outcome {
                        eldercare_rules::Outcome::FalseAlarm => Outcome::FalseAlarm,
                        eldercare_rules::Outcome::Cleared => Outcome::Cleared,
                    }
                    .as_str()
                    .to_string(),
                );
                a.resolved_at = Some(now);
                Some(i)
            }
        }
    }

    /// The hotline's follow-up call on alert `i` at `at`: taken up and
    /// closed with the elder's answer (`satisfied`, `complaint`,
    /// `no_answer`). Nothing when it is not an open follow-up.
    pub fn answer(&mut self, i: usize, at: i64, outcome: &str) -> bool {
        let Some(a) = self.alerts.get_mut(i) else {
            return false;
        };
        if a.kind != AlertKind::FollowUp || a.state == AlertState::Resolved {
            return false;
        }
        self.open
            .remove(&(a.elder_id.clone(), a.kind, a.subject.clone()));
        a.state = AlertState::Resolved;
        a.acknowledged_at = Some(at);
        a.resolved_at = Some(at);
        a.updated_at = at;
        a.outcome = Some(outcome.to_string());
        true
    }
}
