//! What `eldercare backtest` prints: counts per alert kind for each side,
//! and the alerts one side has that the other has not, as a table for a
//! person or one JSON object for a script (`--json`). Pure: the sides in,
//! text out.
use super::replay::{AlertRow, only_in};
use eldercare_model::EpochMs;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything the report is made of.
#[derive(Debug, Clone)]
pub struct Report {
    pub from: EpochMs,
    pub to: EpochMs,
    pub tolerance_ms: i64,
    pub tick_ms: i64,
    /// Elders replayed.
    pub elders: usize,
    /// Readings judged by the candidate's replay.
    pub readings: u64,
    /// Stored readings of devices the registry no longer gives the elder
    /// they were stored under: not replayed.
    pub skipped: u64,
    pub candidate_file: String,
    pub baseline_file: Option<String>,
    /// The alert log's alerts raised in the range.
    pub actual: Vec<AlertRow>,
    /// The baseline's replay, with `--against`.
    pub baseline: Option<Vec<AlertRow>>,
    pub candidate: Vec<AlertRow>,
}

/// Alerts of a kind on each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub actual: usize,
    pub baseline: Option<usize>,
    pub candidate: usize,
}

fn rfc3339(ms: EpochMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

impl Report {
    /// Alerts per kind on each side, kinds in name order.
    pub fn counts(&self) -> BTreeMap<&'static str, Counts> {
        let mut by_kind: BTreeMap<&'static str, Counts> = BTreeMap::new();
        let empty = Counts {
            baseline: self.baseline.is_some().then_some(0),
            ..Counts::default()
        };
        for a in &self.actual {
            by_kind.entry(a.kind.as_str()).or_insert(empty).actual += 1;
        }
        for a in &self.candidate {
            by_kind.entry(a.kind.as_str()).or_insert(empty).candidate += 1;
        }
        for a in self.baseline.iter().flatten() {
            if let Some(n) = &mut by_kind.entry(a.kind.as_str()).or_insert(empty).baseline {
                *n += 1;
            }
        }
        by_kind
    }

    /// The comparisons, each as (title, this side's name, the other's,
    /// alerts only in this side).
    fn differences(&self) -> Vec<(&'static str, &'static str, Vec<&AlertRow>)> {
        let tol = self.tolerance_ms;
        let mut out = vec![
            (
                "candidate",
                "actual",
                only_in(&self.candidate, &self.actual, tol),
            ),
            (
                "actual",
                "candidate",
                only_in(&self.actual, &self.candidate, tol),
            ),
        ];
        if let Some(base) = &self.baseline {
            out.push(("candidate", "baseline", only_in(&self.candidate, base, tol)));
            out.push(("baseline", "candidate", only_in(base, &self.candidate, tol)));
        }
        out
    }

    /// The table for a person.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "backtest {} .. {}: {} elders, {} readings replayed ({} skipped), tick {} s, same alert within {} s",
            rfc3339(self.from),
            rfc3339(self.to),
            self.elders,
            self.readings,
            self.skipped,
            self.tick_ms / 1000,
            self.tolerance_ms / 1000,
        );
        let _ = writeln!(s, "candidate: {}", self.candidate_file);
        if let Some(b) = &self.baseline_file {
            let _ = writeln!(s, "baseline:  {b}");
        }
        let _ = writeln!(s);
        let counts = self.counts();
        let width = counts.keys().map(|k| k.len()).max().unwrap_or(0).max(5);
        let has_base = self.baseline.is_some();
        let _ = write!(s, "{:<width$}  {:>7}", "kind", "actual");
        if has_base {
            let _ = write!(s, "  {:>8}", "baseline");
        }
        let _ = writeln!(s, "  {:>9}", "candidate");
        let mut total = Counts {
            baseline: has_base.then_some(0),
            ..Counts::default()
        };
        let rows = counts.iter().map(|(k, c)| (*k, *c));
        for (kind, c) in rows {
            total.actual += c.actual;
            total.candidate += c.candidate;
            if let (Some(t), Some(n)) = (&mut total.baseline, c.baseline) {
                *t += n;
            }
            count_line(&mut s, kind, c, width);
        }
        count_line(&mut s, "total", total, width);
        for (side, other, only) in self.differences() {
            let _ = writeln!(s);
            if only.is_empty() {
                let _ = writeln!(s, "Only in the {side}, not in the {other}: none");
                continue;
            }
            let _ = writeln!(
                s,
                "Only in the {side}, not in the {other} ({}):",
                only.len()
            );
            for a in only {
                let _ = writeln!(
                    s,
                    "  {}  {}  {}  {}  {}  {}{}",
                    a.elder_id,
                    a.kind.as_str(),
                    a.subject.as_deref().unwrap_or("-"),
                    rfc3339(a.at_ms),
                    a.severity.as_str().to_lowercase(),
                    a.summary_en,
                    if a.occurrences > 1 {
                        format!(" (×{})", a.occurrences)
                    } else {
                        String::new()
                    },
                );
            }
        }
        s
    }

    /// One JSON object for a script: times in RFC 3339 UTC, enums in
    /// lower case, `baseline` fields null without `--against`.
    pub fn json(&self) -> Value {
        let kinds: Vec<Value> = self
            .counts()
            .into_iter()
            .map(|(k, c)| {
                json!({
                    "kind": k,
                    "actual": c.actual,
                    "baseline": c.baseline,
                    "candidate": c.candidate,
                })
            })
            .collect();
        let mut only = serde_json::Map::new();
        for (side, other, rows) in self.differences() {
            only.insert(
                format!("{side}_not_{other}"),
                rows.into_iter().map(alert_json).collect(),
            );
        }
        json!({
            "from": rfc3339(self.from),
            "to": rfc3339(self.to),
            "tolerance_s": self.tolerance_ms / 1000,
            "tick_s": self.tick_ms / 1000,
            "elders": self.elders,
            "readings": self.readings,
            "skipped_readings": self.skipped,
            "candidate_file": self.candidate_file,
            "baseline_file": self.baseline_file,
            "kinds": kinds,
            "only": only,
        })
    }
}

fn count_line(s: &mut String, kind: &str, c: Counts, width: usize) {
    let _ = write!(s, "{kind:<width$}  {:>7}", c.actual);
    if let Some(b) = c.baseline {
        let _ = write!(s, "  {b:>8}");
    }
    let _ = writeln!(s, "  {:>9}", c.candidate);
}

fn alert_json(a: &AlertRow) -> Value {
    json!({
        "elder_id": a.elder_id,
        "kind": a.kind.as_str(),
        "subject": a.subject,
        "at": rfc3339(a.at_ms),
        "severity": a.severity.as_str().to_lowercase(),
        "summary_en": a.summary_en,
        "occurrences": a.occurrences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{AlertKind, Severity};

    const T0: EpochMs = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn row(elder: &str, kind: AlertKind, at: EpochMs) -> AlertRow {
        AlertRow {
            elder_id: elder.into(),
            kind,
            subject: None,
            at_ms: at,
            last_ms: at,
            window: None,
            severity: Severity::High,
            summary_en: format!("{} of {elder}", kind.as_str()),
            occurrences: 1,
        }
    }

    fn report(baseline: Option<Vec<AlertRow>>) -> Report {
        Report {
            from: T0,
            to: T0 + 86_400_000,
            tolerance_ms: 600_000,
            tick_ms: 10_000,
            elders: 2,
            readings: 42,
            skipped: 1,
            candidate_file: "cand.toml".into(),
            baseline_file: baseline.as_ref().map(|_| "base.toml".into()),
            actual: vec![row("E1", AlertKind::Fall, T0 + 1000)],
            baseline,
            candidate: vec![
                row("E1", AlertKind::Fall, T0 + 2000),
                row("E2", AlertKind::VitalOutOfRange, T0 + 3000),
            ],
        }
    }

    #[test]
    fn counts_and_differences_with_a_baseline() {
        let r = report(Some(vec![row("E1", AlertKind::Fall, T0)]));
        let c = r.counts();
        assert_eq!(
            c["fall"],
            Counts {
                actual: 1,
                baseline: Some(1),
                candidate: 1
            }
        );
        assert_eq!(
            c["vital_out_of_range"],
            Counts {
                actual: 0,
                baseline: Some(0),
                candidate: 1
            }
        );
        let j = r.json();
        assert_eq!(j["from"], "2026-01-01T00:00:00Z");
        assert_eq!(j["readings"], 42);
        let only = &j["only"];
        for (key, want) in [
            ("candidate_not_actual", vec!["E2"]),
            ("actual_not_candidate", vec![]),
            ("candidate_not_baseline", vec!["E2"]),
            ("baseline_not_candidate", vec![]),
        ] {
            let got: Vec<&str> = only[key]
                .as_array()
                .unwrap_or_else(|| panic!("no {key} in {only}"))
                .iter()
                .map(|a| a["elder_id"].as_str().unwrap())
                .collect();
            assert_eq!(got, want, "{key}");
        }
        assert_eq!(
            only["candidate_not_actual"][0]["kind"],
            "vital_out_of_range"
        );
        assert_eq!(only["candidate_not_actual"][0]["severity"], "high");
        assert_eq!(
            only["candidate_not_actual"][0]["at"],
            "2026-01-01T00:00:03Z"
        );
        let t = r.text();
        assert!(t.contains("baseline:  base.toml"), "{t}");
        let line = t
            .lines()
            .find(|l| l.starts_with("vital_out_of_range"))
            .unwrap();
        let nums: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(nums, ["0", "0", "1"], "{t}");
        assert!(
            t.contains("Only in the candidate, not in the baseline (1):\n  E2  vital_out_of_range  -  2026-01-01T00:00:03Z  high  vital_out_of_range of E2\n"),
            "{t}"
        );
        assert!(
            t.contains("Only in the baseline, not in the candidate: none"),
            "{t}"
        );
    }

    #[test]
    fn without_a_baseline_its_column_and_lists_are_absent() {
        let r = report(None);
        assert_eq!(r.counts()["fall"].baseline, None);
        let j = r.json();
        assert!(j["kinds"][0]["baseline"].is_null(), "{j}");
        assert!(j["baseline_file"].is_null());
        assert!(j["only"].get("candidate_not_baseline").is_none(), "{j}");
        let t = r.text();
        assert!(!t.contains("baseline"), "{t}");
        let total = t.lines().find(|l| l.starts_with("total")).unwrap();
        let nums: Vec<&str> = total.split_whitespace().skip(1).collect();
        assert_eq!(nums, ["1", "2"], "{t}");
    }
}
