//! `device_offline` and `home_offline`: silence past heartbeat and grace.

use crate::decision::{Decision, Outcome, Resolve, timer_trigger};
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::kind_name;
use eldercare_model::{AlertKind, EpochMs, Severity, Text};

/// A silent device is heard again: clear what its silence raised.
pub(crate) fn heard_again(
    e: &mut ElderSlot,
    devices: &mut [DeviceSlot],
    d: u32,
    now: EpochMs,
    out: &mut Vec<Decision>,
) {
    let at = e.clock.hhmm(now);
    let dev = &mut devices[d as usize];
    dev.silent_since = None;
    if dev.offline_raised {
        dev.offline_raised = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::DeviceOffline,
            subject: Some(dev.id.to_string()),
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("Device heard again at {at}"),
                format!("设备于 {at} 恢复通信"),
            ),
            at_ms: now,
        }));
    }
    if e.home_offline {
        e.home_offline = false;
        out.push(Decision::Resolve(Resolve {
            elder_id: e.id.to_string(),
            kind: AlertKind::HomeOffline,
            subject: None,
            outcome: Outcome::Cleared,
            note: Text::new(
                format!("The home's devices are heard again from {at}"),
                format!("家中设备自 {at} 起恢复通信"),
            ),
            at_ms: now,
        }));
        // The others reconnect over the next moments: give them a fresh
        // grace rather than one alert each.
        for &o in &e.devices {
            let od = &mut devices[o as usize];
            if od.silent_since.is_some() {
                od.silent_since = Some(now);
            }
        }
        e.due = e.due.min(now + i64::from(e.cfg.offline.grace_s) * 1000);
    }
}

pub(crate) fn offline(
    e: &mut ElderSlot,
    devices: &mut [DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    if e.devices.is_empty() {
        return;
    }
    let grace = i64::from(e.cfg.offline.grace_s) * 1000;
    let mut all_silent = true;
    let mut all_past_grace = true;
    let mut ready: Vec<u32> = Vec::new();
    let mut silent_from = EpochMs::MAX;
    for &d in &e.devices {
        let dev = &mut devices[d as usize];
        let since = match dev.silent_since {
            Some(s) => s,
            None => {
                let deadline = dev.last_heard + dev.heartbeat_ms;
                if now < deadline {
                    all_silent = false;
                    *due = (*due).min(deadline);
                    continue;
                }
                *dev.silent_since.insert(deadline)
            }
        };
        silent_from = silent_from.min(since);
        if now < since + grace {
            all_past_grace = false;
            *due = (*due).min(since + grace);
        } else if !dev.offline_raised {
            ready.push(d);
        }
    }
    if e.home_offline || ready.is_empty() {
        return;
    }
    if all_silent && e.devices.len() > 1 {
        if !all_past_grace {
            // Wait for the rest of the home: one alert, not one per device.
            return;
        }
        e.home_offline = true;
        let n = e.devices.len();
        let at = e.clock.hhmm(silent_from);
        let first = devices[e.devices[0] as usize].id.to_string();
        let mut t = timer_trigger(
            e,
            &first,
            AlertKind::HomeOffline,
            Severity::Low,
            now,
            Text::new(
                format!("All {n} devices of the home silent since {at}: power or network cut?"),
                format!("家中全部 {n} 台设备自 {at} 起离线：可能断电或断网"),
            ),
        );
        t.window = Some((silent_from, now));
        out.push(Decision::Raise(t));
        return;
    }
    for d in ready {
        let dev = &mut devices[d as usize];
        dev.offline_raised = true;
        let since = dev.silent_since.unwrap_or(now);
        let at = e.clock.hhmm(since);
        let name = kind_name(dev.kind);
        let mut t = timer_trigger(
            e,
            &dev.id,
            AlertKind::DeviceOffline,
            Severity::Low,
            now,
            Text::new(
                format!("Device {} ({}) silent since {at}", dev.id, name.en),
                format!("设备 {}（{}）自 {at} 起离线", dev.id, name.zh),
            ),
        );
        t.subject = Some(dev.id.to_string());
        t.window = Some((since, now));
        out.push(Decision::Raise(t));
    }
}
