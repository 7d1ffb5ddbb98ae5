//! `no_breathing`: in bed with breathing 0, held.

use crate::config::RuleConfig;
use crate::decision::{Decision, trigger};
use crate::hold::{HoldRule, Level, Signal};
use crate::state::{DeviceSlot, ElderSlot};
use eldercare_model::{AlertKind, Reading, Severity, Text};

pub(crate) fn no_breathing(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    level: Level,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let Some(holds) = dev.holds.as_mut() else {
        return;
    };
    let c = &cfg.no_breathing;
    let rule = HoldRule {
        hold_ms: i64::from(c.hold_s) * 1000,
        gap_ms: i64::from(c.max_gap_s) * 1000,
        clear_ms: i64::from(c.clear_s) * 1000,
    };
    let Some(h) = holds.get(Signal::NoBreathing) else {
        return;
    };
    let Some(since) = h.step(r, level, &rule) else {
        return;
    };
    let first = h.first.take();
    let held_s = (r.ts_ms - since) / 1000;
    let mut t = trigger(
        e,
        r,
        AlertKind::NoBreathing,
        Severity::Critical,
        Text::new(
            format!("No breathing detected in bed for {held_s} s"),
            format!("卧床期间 {held_s} 秒未检测到呼吸"),
        ),
    );
    if let Some(first) = first
        && first.ts_ms < r.ts_ms
    {
        t.readings.insert(0, *first);
    }
    t.window = Some((since, r.ts_ms));
    out.push(Decision::Raise(t));
}
