//! What a provider delivered in a month, and what an elder received,
//! worked out from the alerts the rule engine keeps of each visit.
//!
//! # The visits
//!
//! A *visit* is a `visit_id` (`{elder}/{plan}/{YYYY-MM-DD}` for a planned
//! visit, `{elder}/{carer}/{check-in ms}` for one outside any plan). Its
//! alerts are of three kinds, each carrying the visit's [`VisitInfo`]:
//!
//! - `visit`: the carer's check-in and/or check-out, with its flags;
//! - `visit_missed`: nobody checked in by the end of the plan's window;
//!   when the carer then arrives late it is resolved `cleared` and a
//!   `visit` alert with the same id and the flag `late` follows;
//! - `follow_up`: the call to the elder afterwards, resolved `satisfied`,
//!   `complaint` or `no_answer`.
//!
//! A visit belongs to a month by [`VisitInfo::day`], the elder's local
//! date, never by when its alerts were raised. Should one visit have
//! several alerts of one kind, the latest written (`updated_at`) counts.
//!
//! Each visit in the report has exactly one [`VisitStatus`]:
//!
//! | status       | when                                                     |
//! |--------------|----------------------------------------------------------|
//! | `on_time`    | a `visit` alert with a check-in, a plan, no flag `late`  |
//! | `late`       | a `visit` alert with a check-in and the flag `late`      |
//! | `unplanned`  | a `visit` alert with a check-in and no plan              |
//! | `no_check_in`| a `visit` alert without a check-in (only a check-out)    |
//! | `missed`     | a `visit_missed` alert and no `visit` alert for the id   |
//!
//! The counts of [`Counts`] follow from the statuses, so they add up:
//! `planned = on_time + late + missed + planned visits with no check-in`,
//! `done = on_time + late + unplanned`, and `planned + unplanned` is
//! every visit in the report. A late visit is done and late, never missed.
use crate::Month;
use eldercare_model::{Alert, AlertKind, AlertState, EpochMs, Outcome, VisitFlag, VisitInfo};
use serde::Serialize;
use std::collections::BTreeMap;

/// How a visit went, one per visit (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    OnTime,
    Late,
    Unplanned,
    NoCheckIn,
    Missed,
}

impl VisitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VisitStatus::OnTime => "on_time",
            VisitStatus::Late => "late",
            VisitStatus::Unplanned => "unplanned",
            VisitStatus::NoCheckIn => "no_check_in",
            VisitStatus::Missed => "missed",
        }
    }

    /// The carer came and checked in.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            VisitStatus::OnTime | VisitStatus::Late | VisitStatus::Unplanned
        )
    }
}

/// Where the follow-up call of a visit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUp {
    /// No `follow_up` alert for the visit (yet).
    None,
    /// Raised and not resolved with a follow-up outcome.
    Open,
    Satisfied,
    Complaint,
    NoAnswer,
}

impl FollowUp {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUp::None => "",
            FollowUp::Open => "open",
            FollowUp::Satisfied => "satisfied",
            FollowUp::Complaint => "complaint",
            FollowUp::NoAnswer => "no_answer",
        }
    }

    /// The state of a `follow_up` alert: its outcome once resolved with
    /// one of the three follow-up outcomes, open otherwise.
    fn of(a: &Alert) -> FollowUp {
        let outcome = a.outcome.as_deref().and_then(Outcome::parse);
        match (a.state, outcome) {
            (AlertState::Resolved, Some(Outcome::Satisfied)) => FollowUp::Satisfied,
            (AlertState::Resolved, Some(Outcome::Complaint)) => FollowUp::Complaint,
            (AlertState::Resolved, Some(Outcome::NoAnswer)) => FollowUp::NoAnswer,
            _ => FollowUp::Open,
        }
    }
}

/// One visit of a report: ids only, no names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitRow {
    pub visit_id: String,
    pub elder_id: String,
    pub provider_id: String,
    /// The elder's local date of the visit, `YYYY-MM-DD`.
    pub day: String,
    pub plan_id: Option<String>,
    pub service: Option<String>,
    pub carer_id: Option<String>,
    pub status: VisitStatus,
    pub check_in: Option<EpochMs>,
    pub check_out: Option<EpochMs>,
    /// Whole minutes from check-in to check-out, when both are known.
    pub length_min: Option<u32>,
    pub planned_min: Option<u32>,
    pub flags: Vec<VisitFlag>,
    pub follow_up: FollowUp,
    /// The `visit` (or, for a missed visit, `visit_missed`) alert.
    pub alert_id: String,
    /// The `follow_up` alert, when there is one.
    pub follow_up_alert_id: Option<String>,
}

impl VisitRow {
    pub fn is_planned(&self) -> bool {
        self.plan_id.is_some() || self.status == VisitStatus::Missed
    }

    fn has(&self, f: VisitFlag) -> bool {
        self.flags.contains(&f)
    }
}

/// A month's counts. Visits are counted once each, by `visit_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Visits of a plan: every `visit` alert with a `plan_id`, and every
    /// `visit_missed` (late arrivals once, by their id).
    pub planned: u64,
    /// Visits a carer checked in for: `on_time + late + unplanned`.
    pub done: u64,
    /// Done, planned, and not flagged `late`.
    pub on_time: u64,
    /// Done with the flag `late`: checked in after the plan's window
    /// (whether or not a `visit_missed` was raised first).
    pub late: u64,
    /// Planned visits with a `visit_missed` and no `visit` alert: nobody
    /// came, or nobody checked in or out at all.
    pub missed: u64,
    /// Visits with a `visit` alert and no `plan_id`.
    pub unplanned: u64,
    /// Visits (with a `visit` alert) flagged `short`: much shorter than
    /// planned. The flag counts overlap: one visit may be short and
    /// uncorroborated.
    pub short: u64,
    /// Flagged `uncorroborated`: the home's sensors were heard and
    /// showed nobody there.
    pub uncorroborated: u64,
    /// Flagged `unverified`: the home's sensors were not heard.
    pub unverified: u64,
    /// Flagged `no_check_in`: a check-out with no check-in (these are
    /// the visits with status `no_check_in`, neither done nor missed).
    pub no_check_in: u64,
    /// Flagged `no_check_out`: checked in and never out (still done).
    pub no_check_out: u64,
    /// Visits with a `follow_up` alert:
    /// `satisfied + complaint + no_answer + follow_up_open`.
    pub follow_ups: u64,
    pub satisfied: u64,
    pub complaint: u64,
    pub no_answer: u64,
    /// Follow-ups not (yet) resolved with one of the three outcomes.
    pub follow_up_open: u64,
    /// Sum over done visits with a check-in and a check-out of the time
    /// between them, in whole minutes (the total rounded down, not each
    /// visit).
    pub minutes_delivered: u64,
    /// Sum of `planned_min` over planned visits.
    pub minutes_planned: u64,
}

impl Counts {
    /// Counts `rows` (one per visit, as [`rows`] makes them).
    pub fn of(rows: &[VisitRow]) -> Counts {
        let mut c = Counts::default();
        let mut delivered_ms: i64 = 0;
        for r in rows {
            let n = |b: bool| u64::from(b);
            c.planned += n(r.is_planned());
            c.done += n(r.status.is_done());
            c.on_time += n(r.status == VisitStatus::OnTime);
            c.late += n(r.status == VisitStatus::Late);
            c.missed += n(r.status == VisitStatus::Missed);
            c.unplanned += n(r.status != VisitStatus::Missed && r.plan_id.is_none());
            if r.status != VisitStatus::Missed {
                c.short += n(r.has(VisitFlag::Short));
                c.uncorroborated += n(r.has(VisitFlag::Uncorroborated));
                c.unverified += n(r.has(VisitFlag::Unverified));
                c.no_check_in += n(r.status == VisitStatus::NoCheckIn);
                c.no_check_out += n(r.has(VisitFlag::NoCheckOut));
            }
            if r.is_planned() {
                c.minutes_planned += u64::from(r.planned_min.unwrap_or(0));
            }
            if r.status.is_done()
                && let (Some(i), Some(o)) = (r.check_in, r.check_out)
            {
                delivered_ms += (o - i).max(0);
            }
            match r.follow_up {
                FollowUp::None => {}
                f => {
                    c.follow_ups += 1;
                    c.satisfied += n(f == FollowUp::Satisfied);
                    c.complaint += n(f == FollowUp::Complaint);
                    c.no_answer += n(f == FollowUp::NoAnswer);
                    c.follow_up_open += n(f == FollowUp::Open);
                }
            }
        }
        c.minutes_delivered = (delivered_ms / 60_000) as u64;
        c
    }
}

/// What one provider delivered in one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderMonth {
    pub provider_id: String,
    pub month: Month,
    pub counts: Counts,
    /// Per elder (by id), their visits by day.
    pub elders: Vec<ElderVisits>,
}

/// One elder's visits within a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElderVisits {
    pub elder_id: String,
    pub visits: Vec<VisitRow>,
}

impl ProviderMonth {
    /// The report of `provider_id` for `month`, from any alerts: only
    /// those of kinds `visit`, `visit_missed` and `follow_up` whose visit
    /// is the provider's and falls in the month count.
    pub fn compute(provider_id: &str, month: Month, alerts: &[Alert]) -> ProviderMonth {
        let all = rows(alerts, |_, v| {
            v.provider_id == provider_id && month.holds_day(&v.day)
        });
        let counts = Counts::of(&all);
        let mut by_elder: BTreeMap<String, Vec<VisitRow>> = BTreeMap::new();
        for r in all {
            by_elder.entry(r.elder_id.clone()).or_default().push(r);
        }
        ProviderMonth {
            provider_id: provider_id.to_string(),
            month,
            counts,
            elders: by_elder
                .into_iter()
                .map(|(elder_id, visits)| ElderVisits { elder_id, visits })
                .collect(),
        }
    }

    /// Every visit of the report, by elder and then by day.
    pub fn visits(&self) -> impl Iterator<Item = &VisitRow> {
        self.elders.iter().flat_map(|e| e.visits.iter())
    }
}

/// The visits one elder received in one month, from every provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElderMonth {
    pub elder_id: String,
    pub month: Month,
    pub counts: Counts,
    /// By day, then visit id.
    pub visits: Vec<VisitRow>,
}

impl ElderMonth {
    pub fn compute(elder_id: &str, month: Month, alerts: &[Alert]) -> ElderMonth {
        let visits = rows(alerts, |a, v| {
            a.elder_id == elder_id && month.holds_day(&v.day)
        });
        ElderMonth {
            elder_id: elder_id.to_string(),
            month,
            counts: Counts::of(&visits),
            visits,
        }
    }
}

/// The latest of two alerts of one visit and kind.
fn newer<'a>(a: &'a Alert, b: &'a Alert) -> &'a Alert {
    if (b.updated_at, b.raised_at, &b.id) > (a.updated_at, a.raised_at, &a.id) {
        b
    } else {
        a
    }
}

/// One row per visit among the `alerts` that `keep` accepts, ordered by
/// elder, day and visit id. A `follow_up` for a visit with neither a
/// `visit` nor a `visit_missed` alert among them makes no row.
pub fn rows(alerts: &[Alert], keep: impl Fn(&Alert, &VisitInfo) -> bool) -> Vec<VisitRow> {
    #[derive(Default)]
    struct Seen<'a> {
        visit: Option<&'a Alert>,
        missed: Option<&'a Alert>,
        follow_up: Option<&'a Alert>,
    }
    let mut by_id: BTreeMap<&str, Seen> = BTreeMap::new();
    for a in alerts {
        let Some(v) = a.visit.as_deref() else {
            continue;
        };
        if !a.kind.is_per_visit() || !keep(a, v) {
            continue;
        }
        let seen = by_id.entry(v.visit_id.as_str()).or_default();
        let slot = match a.kind {
            AlertKind::Visit => &mut seen.visit,
            AlertKind::VisitMissed => &mut seen.missed,
            _ => &mut seen.follow_up,
        };
        *slot = Some(slot.map_or(a, |s| newer(s, a)));
    }
    let mut out: Vec<VisitRow> = by_id
        .into_values()
        .filter_map(|s| {
            let (a, status) = match (s.visit, s.missed) {
                (Some(a), _) => {
                    let v = a.visit.as_deref()?;
                    let status = if v.check_in.is_none() {
                        VisitStatus::NoCheckIn
                    } else if v.has(VisitFlag::Late) {
                        VisitStatus::Late
                    } else if v.plan_id.is_some() {
                        VisitStatus::OnTime
                    } else {
                        VisitStatus::Unplanned
                    };
                    (a, status)
                }
                (None, Some(m)) => (m, VisitStatus::Missed),
                (None, None) => return None,
            };
            let v = a.visit.as_deref()?;
            Some(VisitRow {
                visit_id: v.visit_id.clone(),
                elder_id: a.elder_id.clone(),
                provider_id: v.provider_id.clone(),
                day: v.day.clone(),
                plan_id: v.plan_id.clone(),
                service: v.service.clone(),
                carer_id: v.carer_id.clone(),
                status,
                check_in: v.check_in,
                check_out: v.check_out,
                length_min: v.length_min().map(|m| m.max(0.0) as u32),
                planned_min: v.planned_min,
                flags: v.flags.clone(),
                follow_up: s.follow_up.map_or(FollowUp::None, FollowUp::of),
                alert_id: a.id.clone(),
                follow_up_alert_id: s.follow_up.map(|f| f.id.clone()),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.elder_id, &a.day, &a.visit_id).cmp(&(&b.elder_id, &b.day, &b.visit_id)));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use eldercare_model::Severity;

    /// 2026-11-01T00:00:00Z.
    pub const NOV: EpochMs = 1_793_491_200_000;
    const MIN: EpochMs = 60_000;
    const DAY: EpochMs = 86_400_000;

    pub fn info(visit_id: &str, provider: &str, day: &str) -> VisitInfo {
        let plan = visit_id.split('/').nth(1).filter(|p| p.starts_with('p'));
        VisitInfo {
            visit_id: visit_id.into(),
            provider_id: provider.into(),
            plan_id: plan.map(str::to_string),
            service: plan.map(|_| "bathing".to_string()),
            day: day.into(),
            planned_min: plan.map(|_| 60),
            ..Default::default()
        }
    }

    pub fn alert(id: &str, kind: AlertKind, elder: &str, v: VisitInfo) -> Alert {
        Alert {
            id: id.into(),
            elder_id: elder.into(),
            device_id: String::new(),
            kind,
            severity: Severity::Low,
            state: AlertState::Open,
            raised_at: NOV,
            detected_at: NOV,
            updated_at: NOV,
            summary: String::new(),
            summary_zh: String::new(),
            subject: Some(v.visit_id.clone()),
            window: None,
            score: None,
            factors: vec![],
            readings: vec![],
            occurrences: 1,
            outcome: None,
            district: None,
            community: None,
            muted: false,
            silence_id: None,
            escalations: 0,
            responder: None,
            acknowledged_at: None,
            dispatched_at: None,
            resolved_at: None,
            late_ms: None,
            recorded: false,
            visit: Some(Box::new(v)),
            route: None,
        }
    }

    fn resolved(mut a: Alert, outcome: &str, at: EpochMs) -> Alert {
        a.state = AlertState::Resolved;
        a.outcome = Some(outcome.into());
        a.resolved_at = Some(at);
        a.updated_at = at;
        a
    }

    /// A visit checked in at `in_min` minutes after the day's start and
    /// out `len` minutes later (no check-out when `len` is `None`).
    fn came(
        mut v: VisitInfo,
        day_ix: i64,
        in_min: i64,
        len: Option<i64>,
        carer: &str,
    ) -> VisitInfo {
        let t = NOV + day_ix * DAY + in_min * MIN;
        v.carer_id = Some(carer.into());
        v.check_in = Some(t);
        v.check_out = len.map(|l| t + l * MIN);
        v
    }

    fn flagged(mut v: VisitInfo, flags: &[VisitFlag]) -> VisitInfo {
        v.flags = flags.to_vec();
        v
    }

    /// Provider P1's November 2026, with a visit of every kind, and
    /// alerts that must not count.
    pub fn november() -> Vec<Alert> {
        use AlertKind::{FollowUp as F, Visit as V, VisitMissed as M};
        use VisitFlag::*;
        let on_time = came(
            info("e1/p1/2026-11-02", "P1", "2026-11-02"),
            1,
            600,
            Some(60),
            "c1",
        );
        let late_missed = info("e1/p1/2026-11-03", "P1", "2026-11-03");
        let late = flagged(came(late_missed.clone(), 2, 630, Some(30), "c1"), &[Late]);
        let short = flagged(
            came(
                info("e2/p2/2026-11-05", "P1", "2026-11-05"),
                4,
                600,
                Some(10),
                "c2",
            ),
            &[Short, Uncorroborated],
        );
        let unverified = flagged(
            came(
                info("e2/p2/2026-11-06", "P1", "2026-11-06"),
                5,
                600,
                Some(45),
                "c2",
            ),
            &[Unverified],
        );
        let unplanned = came(
            info("e2/c9/1793966400000", "P1", "2026-11-07"),
            6,
            0,
            Some(20),
            "c9",
        );
        let mut no_in = flagged(info("e2/p2/2026-11-08", "P1", "2026-11-08"), &[NoCheckIn]);
        no_in.check_out = Some(NOV + 7 * DAY + 700 * MIN);
        let no_out = flagged(
            came(
                info("e2/p2/2026-11-09", "P1", "2026-11-09"),
                8,
                600,
                None,
                "c2",
            ),
            &[NoCheckOut],
        );
        vec![
            resolved(alert("a1", V, "e1", on_time.clone()), "recorded", NOV + DAY),
            alert("f1-old", F, "e1", on_time.clone()),
            resolved(alert("f1", F, "e1", on_time), "satisfied", NOV + 2 * DAY),
            resolved(
                alert("m2", M, "e1", late_missed),
                "cleared",
                NOV + 2 * DAY + 630 * MIN,
            ),
            alert("a2", V, "e1", late.clone()),
            resolved(alert("f2", F, "e1", late), "complaint", NOV + 3 * DAY),
            alert("m3", M, "e1", info("e1/p1/2026-11-04", "P1", "2026-11-04")),
            alert("a4", V, "e2", short.clone()),
            resolved(alert("f4", F, "e2", short), "no_answer", NOV + 5 * DAY),
            alert("a5", V, "e2", unverified.clone()),
            alert("f5", F, "e2", unverified),
            resolved(alert("a6", V, "e2", unplanned), "recorded", NOV + 6 * DAY),
            alert("a7", V, "e2", no_in),
            alert("a8", V, "e2", no_out),
            // Not P1's, not November's, not a visit.
            resolved(
                alert(
                    "x1",
                    V,
                    "e1",
                    came(
                        info("e1/q1/2026-11-02", "P2", "2026-11-02"),
                        1,
                        900,
                        Some(30),
                        "d1",
                    ),
                ),
                "recorded",
                NOV + DAY,
            ),
            alert(
                "x2",
                V,
                "e1",
                came(
                    info("e1/p1/2026-10-31", "P1", "2026-10-31"),
                    0,
                    0,
                    Some(60),
                    "c1",
                ),
            ),
            alert("x3", M, "e1", info("e1/p1/2026-12-01", "P1", "2026-12-01")),
            Alert {
                visit: None,
                ..alert("x4", AlertKind::Fall, "e1", info("", "P1", "2026-11-02"))
            },
        ]
    }

    fn nov() -> Month {
        Month::parse("2026-11").unwrap()
    }

    #[test]
    fn every_count_of_a_providers_month() {
        let r = ProviderMonth::compute("P1", nov(), &november());
        let want = Counts {
            planned: 7,
            done: 6,
            on_time: 4,
            late: 1,
            missed: 1,
            unplanned: 1,
            short: 1,
            uncorroborated: 1,
            unverified: 1,
            no_check_in: 1,
            no_check_out: 1,
            follow_ups: 4,
            satisfied: 1,
            complaint: 1,
            no_answer: 1,
            follow_up_open: 1,
            minutes_delivered: 60 + 30 + 10 + 45 + 20,
            minutes_planned: 7 * 60,
        };
        assert_eq!(r.counts, want);
        let c = &r.counts;
        assert_eq!(c.planned, c.on_time + c.late + c.missed + c.no_check_in);
        assert_eq!(c.done, c.on_time + c.late + c.unplanned);
        assert_eq!(
            c.follow_ups,
            c.satisfied + c.complaint + c.no_answer + c.follow_up_open
        );
        assert_eq!(r.visits().count() as u64, c.planned + c.unplanned);
    }

    #[test]
    fn a_late_arrival_is_done_and_late_never_missed() {
        let r = ProviderMonth::compute("P1", nov(), &november());
        let late: Vec<_> = r
            .visits()
            .filter(|v| v.visit_id == "e1/p1/2026-11-03")
            .collect();
        assert_eq!(late.len(), 1, "one row for the visit_missed and the visit");
        assert_eq!(late[0].status, VisitStatus::Late);
        assert_eq!(late[0].alert_id, "a2");
        assert_eq!(late[0].carer_id.as_deref(), Some("c1"));
        assert_eq!(late[0].length_min, Some(30));
        assert_eq!(late[0].follow_up, FollowUp::Complaint);
        let missed: Vec<_> = r
            .visits()
            .filter(|v| v.status == VisitStatus::Missed)
            .collect();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].visit_id, "e1/p1/2026-11-04");
        assert_eq!(missed[0].alert_id, "m3");
        assert_eq!(missed[0].follow_up, FollowUp::None);
    }

    #[test]
    fn each_follow_up_outcome_lands_on_its_visit_and_the_latest_alert_counts() {
        let r = ProviderMonth::compute("P1", nov(), &november());
        let fu = |id: &str| r.visits().find(|v| v.visit_id == id).unwrap().follow_up;
        assert_eq!(
            fu("e1/p1/2026-11-02"),
            FollowUp::Satisfied,
            "f1 is newer than f1-old"
        );
        assert_eq!(fu("e2/p2/2026-11-05"), FollowUp::NoAnswer);
        assert_eq!(fu("e2/p2/2026-11-06"), FollowUp::Open);
        assert_eq!(fu("e2/c9/1793966400000"), FollowUp::None);
        let row = r
            .visits()
            .find(|v| v.visit_id == "e1/p1/2026-11-02")
            .unwrap();
        assert_eq!(row.follow_up_alert_id.as_deref(), Some("f1"));
    }

    #[test]
    fn a_follow_up_resolved_otherwise_stays_open() {
        let mut alerts = november();
        for a in &mut alerts {
            if a.id == "f5" {
                *a = resolved(a.clone(), "false_alarm", NOV + 9 * DAY);
            }
        }
        let r = ProviderMonth::compute("P1", nov(), &alerts);
        assert_eq!(r.counts.follow_up_open, 1);
    }

    #[test]
    fn visits_are_grouped_by_elder_then_day() {
        let r = ProviderMonth::compute("P1", nov(), &november());
        let elders: Vec<_> = r.elders.iter().map(|e| e.elder_id.as_str()).collect();
        assert_eq!(elders, ["e1", "e2"]);
        let days: Vec<_> = r.elders[1].visits.iter().map(|v| v.day.as_str()).collect();
        assert_eq!(
            days,
            [
                "2026-11-05",
                "2026-11-06",
                "2026-11-07",
                "2026-11-08",
                "2026-11-09"
            ]
        );
        let statuses: Vec<_> = r.elders[1].visits.iter().map(|v| v.status).collect();
        use VisitStatus::*;
        assert_eq!(statuses, [OnTime, OnTime, Unplanned, NoCheckIn, OnTime]);
    }

    #[test]
    fn an_elders_month_counts_every_provider() {
        let r = ElderMonth::compute("e1", nov(), &november());
        let ids: Vec<_> = r.visits.iter().map(|v| v.visit_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "e1/p1/2026-11-02",
                "e1/q1/2026-11-02",
                "e1/p1/2026-11-03",
                "e1/p1/2026-11-04"
            ]
        );
        assert_eq!(
            (r.counts.planned, r.counts.done, r.counts.missed),
            (3, 3, 1)
        );
        assert_eq!(r.counts.unplanned, 1, "q1 is not a plan id in these tests");
        assert_eq!(r.counts.minutes_delivered, 60 + 30 + 30);
    }

    #[test]
    fn another_month_or_provider_is_empty() {
        let r = ProviderMonth::compute("P3", nov(), &november());
        assert_eq!(r.counts, Counts::default());
        assert!(r.elders.is_empty());
        let dec = ProviderMonth::compute("P1", Month::parse("2026-12").unwrap(), &november());
        assert_eq!((dec.counts.planned, dec.counts.missed), (1, 1));
    }
}
