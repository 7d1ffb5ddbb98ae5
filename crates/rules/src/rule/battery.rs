//! `low_battery`: raised at a low level, cleared once charged.

use crate::config::RuleConfig;
use crate::decision::{Decision, Outcome, Resolve, trigger};
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::kind_name;
use eldercare_model::{AlertKind, Reading, Severity, Text};

pub(crate) fn battery(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    pct: u32,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let c = &cfg.battery;
    if pct <= c.low_pct && !dev.battery_low {
        dev.battery_low = true;
        let mut t = trigger(
            e,
            r,
            AlertKind::LowBattery,
            Severity::Low,
            Text::new(
                format!("Battery of {} ({}) at {pct} %", dev.id, dev.kind.as_str()),
                format!("设备 {}（{}）电量 {pct}%", dev.id, kind_name(dev.kind).zh),
            ),
        );
        t.subject = Some(dev.id.to_string());
        out.push(Decision::Raise(t));
    } else if pct >= c.clear_pct && dev.battery_low {
        dev.battery_low = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::LowBattery,
            subject: Some(dev.id.to_string()),
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("Battery back at {pct} %"),
                format!("电量已恢复至 {pct}%"),
            ),
            at_ms: r.ts_ms,
        }));
    }
}
