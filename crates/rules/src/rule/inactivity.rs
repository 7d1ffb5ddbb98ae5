//! `inactivity`: no movement at home for hours of daytime.

use crate::RECHECK_MS;
use crate::config::RuleConfig;
use crate::decision::{Decision, timer_trigger};
use crate::evidence::device_blind;
use crate::rule::fall::moved_after_fall;
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::minutes;
use eldercare_model::{AlertKind, DeviceKind, EpochMs, Reading, Severity, Text};

pub(crate) fn motion(
    e: &mut ElderSlot,
    r: &Reading,
    room: &str,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    if e.last_motion.is_none_or(|m| r.ts_ms >= m) {
        e.last_motion = Some(r.ts_ms);
        e.last_motion_bathroom = cfg
            .out_of_bed
            .bathroom_rooms
            .iter()
            .any(|b| b.eq_ignore_ascii_case(room));
    }
    if r.ts_ms > e.activity_at {
        e.activity_at = r.ts_ms;
        e.inactivity_raised = false;
    }
    moved_after_fall(e, r, cfg, out);
}

/// Daytime of the stretch without activity, up to `now`, that fell in a
/// blind window (the server down, or the home or its motion sensors not
/// heard): not evidence of anything, so not counted. Windows of both kinds
/// may overlap; each moment counts once.
pub(crate) fn blind_day_ms(e: &mut ElderSlot, server: &[(EpochMs, EpochMs)], now: EpochMs) -> i64 {
    let since = e.activity_at;
    let mut w: Vec<(EpochMs, EpochMs)> = server
        .iter()
        .chain(&e.seen.blind)
        .map(|&(from, to)| (from.max(since), to.min(now)))
        .filter(|w| w.1 > w.0)
        .collect();
    w.sort_unstable();
    let (mut sum, mut reach) = (0, EpochMs::MIN);
    for (from, to) in w {
        let from = from.max(reach);
        if to > from {
            sum += e.clock.day_ms_between(from, to);
        }
        reach = reach.max(to);
    }
    sum
}

pub(crate) fn inactivity(
    e: &mut ElderSlot,
    devices: &[DeviceSlot],
    blind: &[(EpochMs, EpochMs)],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    if e.inactivity_raised {
        return;
    }
    let Some(pir) = e
        .devices
        .iter()
        .map(|&d| &devices[d as usize])
        .find(|d| d.kind == DeviceKind::Pir)
    else {
        return;
    };
    // A carer's visit in progress: motion is not only the elder's, and
    // someone is with them.
    if e.in_bed == Some(true) || e.away || crate::rule::visit::in_progress(e) {
        *due = (*due).min(now + RECHECK_MS);
        return;
    }
    // Blind: the home is offline, every motion sensor is silent (or behind
    // a silent gateway), or the home is just back from a gap and its
    // devices are still reporting in. No motion from sensors that say
    // nothing at all is no evidence that the person is not moving (the
    // offline rules report the silence).
    if let Some(end) = e.seen.blind_until(now) {
        *due = (*due).min(end);
        return;
    }
    if e.home_offline || pirs_blind(e, devices) {
        *due = (*due).min(now + RECHECK_MS);
        return;
    }
    let after = i64::from(e.cfg.inactivity.after_s) * 1000;
    let unseen = blind_day_ms(e, blind, now);
    let deadline = e.clock.after_day_ms(e.activity_at, after + unseen);
    if now < deadline {
        *due = (*due).min(deadline);
        return;
    }
    e.inactivity_raised = true;
    let quiet = minutes(e.clock.day_ms_between(e.activity_at, now) - unseen);
    let last = e.clock.hhmm(e.activity_at);
    let (en_unseen, zh_unseen) = if unseen >= 60_000 {
        let m = minutes(unseen);
        (
            format!(
                "; {} while the system was down or the home not heard not counted",
                m.en
            ),
            format!("；系统停机或家中设备无法感知的 {} 未计入", m.zh),
        )
    } else {
        (String::new(), String::new())
    };
    let pir_id = pir.id.to_string();
    let mut t = timer_trigger(
        e,
        &pir_id,
        AlertKind::Inactivity,
        Severity::High,
        now,
        Text::new(
            format!(
                "No movement at home for {} of daytime (last activity at {last}{en_unseen})",
                quiet.en
            ),
            format!(
                "白天在家 {} 无活动（最后一次活动 {last}{zh_unseen}）",
                quiet.zh
            ),
        ),
    );
    t.window = Some((e.activity_at, now));
    out.push(Decision::Raise(t));
}

/// Whether no motion sensor of the home can be heard.
pub(crate) fn pirs_blind(e: &ElderSlot, devices: &[DeviceSlot]) -> bool {
    e.devices
        .iter()
        .map(|&d| &devices[d as usize])
        .filter(|d| d.kind == DeviceKind::Pir)
        .all(|d| device_blind(e, devices, d))
}
