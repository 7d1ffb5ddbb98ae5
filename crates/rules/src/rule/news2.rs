//! `vital_out_of_range`, aggregate: NEWS2 over the elder's latest readings.

use crate::config::RuleConfig;
use crate::decision::{Decision, trigger};
use crate::rule::vital::PARAMS;
use crate::state::ElderSlot;
use eldercare_model::{AlertKind, Reading, Severity, Text};

/// The NEWS2 aggregate over the elder's latest readings from all devices.
pub(crate) fn news2(e: &mut ElderSlot, r: &Reading, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    let c = &cfg.news2;
    let from = r.ts_ms - i64::from(c.window_s) * 1000;
    let mut score = 0;
    for p in PARAMS {
        let l = e.latest[p as usize];
        if l.ts.is_some_and(|t| t >= from) {
            score += p.news2(f64::from(l.value));
        }
    }
    if e.news2_raised.is_some() && score <= c.clear_at {
        e.news2_raised = None;
        e.news2_since = None;
    }
    if score < c.high {
        if e.news2_raised.is_none() {
            e.news2_since = None;
        }
        return;
    }
    let since = *e.news2_since.get_or_insert(r.ts_ms);
    if r.ts_ms - since < i64::from(c.hold_s) * 1000 {
        return;
    }
    let severity = if score >= c.critical {
        Severity::Critical
    } else {
        Severity::High
    };
    if e.news2_raised.is_some_and(|raised| severity <= raised) {
        return;
    }
    e.news2_raised = Some(severity);
    let mut factors = Vec::new();
    let (mut en, mut zh) = (Vec::new(), Vec::new());
    for p in PARAMS {
        let l = e.latest[p as usize];
        if l.ts.is_none_or(|t| t < from) {
            continue;
        }
        let v = f64::from(l.value);
        let s = p.news2(v);
        if s > 0 {
            let (name, val) = (p.name(), p.value(v));
            factors.push(format!("{} {} ({s})", name.en, val.en));
            en.push(format!("{} {} ({s})", name.en, val.en));
            zh.push(format!("{} {} ({s})", name.zh, val.zh));
        }
    }
    let held_s = (r.ts_ms - since) / 1000;
    let mut t = trigger(
        e,
        r,
        AlertKind::VitalOutOfRange,
        severity,
        Text::new(
            format!("NEWS2 score {score}: {}, for {held_s} s", en.join(", ")),
            format!("NEWS2 评分 {score}：{}，持续 {held_s} 秒", zh.join("，")),
        ),
    );
    t.window = Some((since, r.ts_ms));
    t.score = Some(score);
    t.factors = factors;
    out.push(Decision::Raise(t));
}
