//! `out_of_bed_too_long`: left bed at night and not back.

use crate::RECHECK_MS;
use crate::config::RuleConfig;
use crate::decision::{Decision, timer_trigger};
use crate::evidence::device_blind;
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::minutes;
use eldercare_model::{AlertKind, EpochMs, Reading, Severity, Text};

/// Tracks in/out of bed; true when the person just got into bed.
pub(crate) fn bed(e: &mut ElderSlot, r: &Reading, in_bed: bool, cfg: &RuleConfig) -> bool {
    if e.bed_ts.is_some_and(|t| r.ts_ms < t) {
        return false;
    }
    e.bed_ts = Some(r.ts_ms);
    let was = e.in_bed.replace(in_bed);
    match (was, in_bed) {
        (Some(false), true) => {
            e.left_bed = None;
            e.out_of_bed_done = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
            return true;
        }
        (Some(true), false) => {
            e.left_bed = Some(Box::new(r.clone()));
            e.out_of_bed_done = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
            e.seen.due = e
                .seen
                .due
                .min(r.ts_ms + i64::from(cfg.out_of_bed.after_s) * 1000);
        }
        _ => {}
    }
    false
}

/// Judged at `now`, the newest time the home has shown evidence for.
pub(crate) fn out_of_bed(
    e: &mut ElderSlot,
    devices: &[DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    if e.out_of_bed_done || e.in_bed != Some(false) {
        return;
    }
    let Some(left) = e.left_bed.as_deref() else {
        return;
    };
    let left_at = left.ts_ms;
    let c = &e.cfg.out_of_bed;
    let deadline = left_at + i64::from(c.after_s) * 1000;
    if !e.clock.is_night(left_at) {
        e.out_of_bed_done = true;
        return;
    }
    if now < deadline {
        *due = (*due).min(deadline);
        return;
    }
    if !e.clock.is_night(now) {
        // Night is over: the person got up for the day.
        e.out_of_bed_done = true;
        return;
    }
    // Blind: just back from a gap in what the home showed (its devices
    // still reporting in), or the bed sensor cannot be heard (itself
    // silent, or behind a silent gateway). Not being seen in bed is then
    // no evidence of not being in bed.
    if let Some(end) = e.seen.blind_until(now) {
        *due = (*due).min(end);
        return;
    }
    let bed_blind = e
        .devices
        .iter()
        .map(|&d| &devices[d as usize])
        .find(|d| *d.id == *left.device_id)
        .is_none_or(|d| device_blind(e, devices, d));
    if e.home_offline || bed_blind {
        *due = (*due).min(now + RECHECK_MS);
        return;
    }
    let moving_window = i64::from(c.moving_window_s) * 1000;
    let moved = e.last_motion.filter(|&m| m >= left_at);
    if let Some(m) = moved
        && now - m < moving_window
    {
        // Up and about the home, not lying somewhere.
        *due = (*due).min(m + moving_window);
        return;
    }
    e.out_of_bed_done = true;
    let since = e.clock.hhmm(left_at);
    let gone = minutes(now - left_at);
    let (severity, summary) = if let Some(m) = moved.filter(|_| e.last_motion_bathroom) {
        let last = e.clock.hhmm(m);
        (
            Severity::Critical,
            Text::new(
                format!(
                    "Out of bed at night since {since} ({}); last movement in the bathroom at {last} and nothing since: possible fall",
                    gone.en
                ),
                format!(
                    "夜间 {since} 离床已 {}；{last} 最后在卫生间有活动，此后无任何活动：可能跌倒",
                    gone.zh
                ),
            ),
        )
    } else {
        let tail = if let Some(m) = moved {
            let last = e.clock.hhmm(m);
            Text::new(
                format!("no movement since {last}"),
                format!("{last} 后无活动"),
            )
        } else {
            Text::new("no movement seen since", "此后未检测到活动")
        };
        (
            Severity::High,
            Text::new(
                format!(
                    "Out of bed at night since {since} ({}) and not back; {}",
                    gone.en, tail.en
                ),
                format!("夜间 {since} 离床已 {} 未回床；{}", gone.zh, tail.zh),
            ),
        )
    };
    let device = left.device_id.clone();
    let reading = left.clone();
    let mut t = timer_trigger(
        e,
        &device,
        AlertKind::OutOfBedTooLong,
        severity,
        now,
        summary,
    );
    t.readings = vec![reading];
    t.window = Some((left_at, now));
    out.push(Decision::Raise(t));
}
