//! `check_in_missed`: the daily "are you well?" check-in of an elder who
//! opted in. Any sign of ordinary life in the window counts (motion,
//! getting into or out of bed, a button press, a carer's visit); none by
//! its close raises an alert on the hotline with the last sign of life.
//!
//! The window's close is judged on the engine clock: a person who lives
//! alone and shows nothing is called, even when the home is not heard
//! (the summary says so: the signs may be waiting in an offline gateway).
//! A sign of the window that arrives late is noted on the alert.

use crate::decision::{Decision, timer_trigger};
use crate::rule::visit::Visits;
use crate::state::{DeviceSlot, ElderSlot};
use eldercare_model::{AlertKind, EpochMs, Severity, Text};

pub(crate) fn tick(
    e: &mut ElderSlot,
    v: &mut Visits,
    devices: &[DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    let Some((start, end)) = e.check_in else {
        return;
    };
    let judged = *v.check_in_judged.get_or_insert(now);
    let today = e.clock.day_of(now);
    for day in e.clock.day_of(judged).max(today - 1)..=today + 1 {
        let (from, to) = (e.clock.at_minute(day, start), e.clock.at_minute(day, end));
        if to <= judged {
            continue;
        }
        if to > now {
            *due = (*due).min(to);
            return;
        }
        v.check_in_judged = Some(to);
        if v.life.as_ref().is_some_and(|l| (from..=to).contains(&l.at)) {
            continue;
        }
        v.check_in_open = Some((from, to));
        out.push(Decision::Raise(missed(e, v, devices, (from, to), now)));
    }
}

fn missed(
    e: &mut ElderSlot,
    v: &Visits,
    devices: &[DeviceSlot],
    (from, to): (EpochMs, EpochMs),
    now: EpochMs,
) -> crate::decision::Trigger {
    let (f, t) = (e.clock.hhmm(from), e.clock.hhmm(to));
    let last = match &v.life {
        Some(l) => {
            let x = l.text(&mut e.clock);
            (
                format!("last sign of life: {}", x.en),
                format!("最后生活迹象：{}", x.zh),
            )
        }
        None => ("no sign of life seen yet".into(), "尚无生活迹象".into()),
    };
    let silent = e.home_offline || crate::rule::inactivity::pirs_blind(e, devices);
    let (blind_en, blind_zh) = if silent {
        (
            "; the home's sensors are not heard, so signs of life may not have arrived",
            "；家中设备无法感知，生活迹象可能尚未上传",
        )
    } else {
        ("", "")
    };
    let first = e
        .devices
        .first()
        .map(|&d| devices[d as usize].id.to_string())
        .unwrap_or_default();
    let mut trig = timer_trigger(
        e,
        &first,
        AlertKind::CheckInMissed,
        Severity::High,
        now,
        Text::new(
            format!(
                "No sign of life in the daily check-in window {f}–{t} ({}{blind_en})",
                last.0
            ),
            format!(
                "每日平安签到时段 {f}–{t} 内无生活迹象（{}{blind_zh}）",
                last.1
            ),
        ),
    );
    trig.window = Some((from, to));
    trig
}
