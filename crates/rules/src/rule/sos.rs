//! `sos`: a press raises at once; a cancel within the window resolves it.

use crate::config::RuleConfig;
use crate::decision::{Decision, Outcome, Resolve, Update};
use crate::state::ElderSlot;
use eldercare_model::{AlertKind, Reading, Text};

pub(crate) fn sos_cancel(
    e: &mut ElderSlot,
    r: &Reading,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let Some(at) = e.sos_at else {
        return;
    };
    let after_s = (r.ts_ms - at) / 1000;
    if r.ts_ms >= at && r.ts_ms - at <= i64::from(cfg.sos.cancel_window_s) * 1000 {
        e.sos_at = None;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::Sos,
            subject: None,
            outcome: Outcome::FalseAlarm,
            note: Text::new(
                format!("Cancelled on the device {after_s} s after the press"),
                format!("老人在按下后 {after_s} 秒于设备上取消"),
            ),
            at_ms: r.ts_ms,
        }));
    } else if r.ts_ms >= at {
        out.push(Decision::Update(Update {
            elder_id: e.id.to_string(),
            kind: AlertKind::Sos,
            subject: None,
            summary: None,
            note: Text::new(
                format!(
                    "Cancel pressed {after_s} s after the SOS, too late to cancel it automatically"
                ),
                format!("老人在呼叫 {after_s} 秒后按下取消，已超过自动取消时限"),
            ),
            at_ms: r.ts_ms,
            readings: vec![r.clone()],
        }));
    }
}
