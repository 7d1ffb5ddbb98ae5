//! `geofence_exit`: GPS fixes outside the safe radius.

use crate::config::RuleConfig;
use crate::decision::{Decision, Update, trigger};
use crate::state::ElderSlot;
use crate::text::distance_m;
use eldercare_model::{AlertKind, Reading, Severity, Text};

pub(crate) fn location(
    e: &mut ElderSlot,
    r: &Reading,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f64>,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    if e.gps_ts.is_some_and(|t| r.ts_ms < t) {
        return;
    }
    e.gps_ts = Some(r.ts_ms);
    let (Some(home), Some(radius)) = (e.home, e.safe_radius_m) else {
        return;
    };
    let c = &cfg.geofence;
    if accuracy_m.is_some_and(|a| a > c.max_accuracy_m) {
        return;
    }
    let dist = distance_m(home, (lat, lon));
    if dist > radius {
        e.away = true;
        e.outside_fixes += 1;
        if e.outside_fixes == 1 {
            e.first_outside = Some(Box::new(r.clone()));
        }
        if e.outside_fixes >= c.fixes && !e.geofence_raised {
            e.geofence_raised = true;
            let night = e.clock.is_night(r.ts_ms);
            let severity = if night {
                Severity::Critical
            } else if e.dementia {
                Severity::High
            } else {
                Severity::Medium
            };
            let n = e.outside_fixes;
            let (en_night, zh_night) = if night {
                (" at night", "夜间")
            } else {
                ("", "")
            };
            let mut t = trigger(
                e,
                r,
                AlertKind::GeofenceExit,
                severity,
                Text::new(
                    format!(
                        "Left the safe zone{en_night}: {dist:.0} m from home (safe radius {radius:.0} m), {n} fixes"
                    ),
                    format!(
                        "{zh_night}离开安全区域：距家 {dist:.0} 米（安全半径 {radius:.0} 米），连续 {n} 次定位"
                    ),
                ),
            );
            if let Some(first) = e.first_outside.take()
                && first.ts_ms < r.ts_ms
            {
                t.window = Some((first.ts_ms, r.ts_ms));
                t.readings.insert(0, *first);
            }
            out.push(Decision::Raise(t));
        }
    } else if dist <= radius - c.margin_m {
        e.outside_fixes = 0;
        e.first_outside = None;
        if e.away {
            e.away = false;
            e.activity_at = e.activity_at.max(r.ts_ms);
            e.inactivity_raised = false;
        }
        if e.geofence_raised {
            e.geofence_raised = false;
            let at = e.clock.hhmm(r.ts_ms);
            let note = Text::new(
                format!("Back inside the safe zone at {at} ({dist:.0} m from home)"),
                format!("{at} 已回到安全区域（距家 {dist:.0} 米）"),
            );
            out.push(Decision::Update(Update {
                elder_id: e.id.to_string(),
                kind: AlertKind::GeofenceExit,
                subject: None,
                summary: None,
                note,
                at_ms: r.ts_ms,
                readings: vec![r.clone()],
            }));
        }
    } else {
        // Inside, but within the margin: neither out nor back.
        e.outside_fixes = 0;
        e.first_outside = None;
    }
}
