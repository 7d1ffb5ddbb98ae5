//! `device_offline` and `home_offline`: silence past heartbeat and grace.

use crate::decision::{Decision, Outcome, Resolve, timer_trigger};
use crate::evidence::gateway_silent_since;
use crate::rule::inactivity::pirs_blind;
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::kind_name;
use eldercare_model::{AlertKind, DeviceKind, EpochMs, Severity, Text};

/// A silent device is heard again: clear what its silence raised.
pub(crate) fn heard_again(
    e: &mut ElderSlot,
    devices: &mut [DeviceSlot],
    d: u32,
    now: EpochMs,
    out: &mut Vec<Decision>,
) {
    let at = e.clock.hhmm(now);
    let grace = i64::from(e.cfg.offline.grace_s) * 1000;
    let pirs_were_blind = devices[d as usize].kind == DeviceKind::Pir && pirs_blind(e, devices);
    let gateway = devices[d as usize].kind == DeviceKind::Gateway;
    let dev = &mut devices[d as usize];
    let silent_from = dev.silent_since.unwrap_or(now).min(dev.last_heard);
    dev.silent_since = None;
    if pirs_were_blind {
        // No motion sensor could be heard: that stretch, and the moments
        // the others take to report in, are no evidence of stillness.
        e.seen.blind.push((silent_from, now + grace));
        if e.seen.blind.len() > 4 {
            e.seen.blind.remove(0);
        }
    }
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
    if gateway && !e.home_offline {
        // The devices it carries reconnect through it over the next
        // moments: a fresh grace each.
        for &o in &e.devices {
            let od = &mut devices[o as usize];
            if od.silent_since.is_some() {
                od.silent_since = Some(now);
            }
        }
        e.due = e.due.min(now + grace);
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
        e.due = e.due.min(now + grace);
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
        append(&mut t.summary, &blind_rules(e, devices, None));
        t.window = Some((silent_from, now));
        out.push(Decision::Raise(t));
        return;
    }
    // Devices behind a silent gateway are not reported one by one: the
    // gateway's alert names them.
    let gateway_since = gateway_silent_since(e, devices);
    let carried: Vec<u32> = match gateway_since {
        Some(g) => e
            .devices
            .iter()
            .copied()
            .filter(|&d| {
                let dev = &devices[d as usize];
                dev.kind != DeviceKind::Gateway && dev.silent_since.is_some() && dev.last_heard <= g
            })
            .collect(),
        None => Vec::new(),
    };
    for d in ready {
        if carried.contains(&d) {
            devices[d as usize].offline_raised = true;
            continue;
        }
        let gateway = devices[d as usize].kind == DeviceKind::Gateway;
        let blind = gateway.then(|| blind_rules(e, devices, Some(&carried)));
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
        if let Some(blind) = blind {
            append(&mut t.summary, &blind);
        }
        out.push(Decision::Raise(t));
    }
}

/// What cannot be judged while the home (or, with `carried`, the devices a
/// silent gateway carries) cannot be heard: said on the offline alert, so
/// the operator knows what the silence hides.
fn blind_rules(e: &ElderSlot, devices: &[DeviceSlot], carried: Option<&[u32]>) -> Text {
    let of = |d: u32| &devices[d as usize];
    let cut: Vec<u32> = match carried {
        Some(c) => c.to_vec(),
        None => e.devices.clone(),
    };
    let has = |k: DeviceKind| cut.iter().any(|&d| of(d).kind == k);
    let (mut en, mut zh) = (Vec::new(), Vec::new());
    if has(DeviceKind::SleepSensor) {
        en.push("out of bed too long");
        zh.push("夜间离床");
    }
    if has(DeviceKind::Pir) && (carried.is_none() || pirs_blind(e, devices)) {
        en.push("inactivity");
        zh.push("长时间无活动");
    }
    let mut t = Text::default();
    if let Some(c) = carried.filter(|c| !c.is_empty()) {
        let ids: Vec<&str> = c.iter().map(|&d| &*of(d).id).collect();
        t = Text::new(
            format!(
                "; the {} devices it carries are silent with it ({})",
                c.len(),
                ids.join(", ")
            ),
            format!(
                "；其转发的 {} 台设备随之离线（{}）",
                c.len(),
                ids.join("、")
            ),
        );
    }
    if !en.is_empty() {
        t.en.push_str(&format!("; not judged until heard: {}", en.join(", ")));
        t.zh.push_str(&format!("；恢复通信前不判断：{}", zh.join("、")));
    }
    t
}

fn append(summary: &mut Text, more: &Text) {
    summary.en.push_str(&more.en);
    summary.zh.push_str(&more.zh);
}
