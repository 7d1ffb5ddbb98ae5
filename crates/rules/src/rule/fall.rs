//! `fall`: raised at once; movement soon after says the person is up.

use crate::config::RuleConfig;
use crate::decision::{Decision, Update, trigger};
use crate::state::{ElderSlot, FallState};
use eldercare_model::{AlertKind, EpochMs, Reading, Severity, Text};

pub(crate) fn fall(
    e: &mut ElderSlot,
    r: &Reading,
    confidence: Option<f64>,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let mut summary = match confidence {
        Some(c) => Text::new(
            format!("Fall detected (confidence {:.0} %)", c * 100.0),
            format!("检测到跌倒（置信度 {:.0}%）", c * 100.0),
        ),
        None => Text::new("Fall detected", "检测到跌倒"),
    };
    let base = summary.clone();
    // Motion may have arrived before the fall event did.
    let up = e.last_motion.filter(|&m| up_after_fall(r.ts_ms, m, cfg));
    if let Some(m) = up {
        summary = up_summary(&base, (m - r.ts_ms) / 1000);
    }
    e.fall = Some(Box::new(FallState {
        at: r.ts_ms,
        up: up.is_some(),
        summary: base,
    }));
    out.push(Decision::Raise(trigger(
        e,
        r,
        AlertKind::Fall,
        Severity::Critical,
        summary,
    )));
}

pub(crate) fn up_after_fall(fall_at: EpochMs, motion_at: EpochMs, cfg: &RuleConfig) -> bool {
    motion_at > fall_at + i64::from(cfg.fall.settle_s) * 1000
        && motion_at <= fall_at + i64::from(cfg.fall.up_window_s) * 1000
}

pub(crate) fn up_summary(base: &Text, after_s: i64) -> Text {
    Text::new(
        format!(
            "{}; movement {after_s} s later: the person appears to be up",
            base.en
        ),
        format!("{}；{after_s} 秒后检测到活动：老人似乎已起身", base.zh),
    )
}

/// Motion (or getting into bed) after a fall: say the person seems up.
pub(crate) fn moved_after_fall(
    e: &mut ElderSlot,
    r: &Reading,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let Some(f) = e.fall.as_mut() else {
        return;
    };
    if f.up || !up_after_fall(f.at, r.ts_ms, cfg) {
        return;
    }
    f.up = true;
    let summary = up_summary(&f.summary, (r.ts_ms - f.at) / 1000);
    out.push(Decision::Update(Update {
        elder_id: e.id.to_string(),
        kind: AlertKind::Fall,
        subject: None,
        note: summary.clone(),
        summary: Some(summary),
        at_ms: r.ts_ms,
        readings: vec![r.clone()],
    }));
}
