//! What the home has shown, and up to when: the clock of the rules that
//! infer from absence (out of bed too long, inactivity).
//!
//! Silence is not evidence. "No movement for four hours" can only be
//! concluded up to the newest moment some device of the home was heard
//! from: a home whose power or network is cut stops that clock, so those
//! rules wait instead of raising, and readings uploaded late move it
//! through the past, so the rules judge the late readings on their own
//! time. A gap in what the home showed (every device silent longer than
//! it may be) is blind: it does not count as time without activity, and
//! neither do the first moments after it, while the devices report in
//! again.

use crate::state::{DeviceSlot, ElderSlot};
use eldercare_model::{DeviceKind, EpochMs};

/// Blind stretches kept per elder: enough for the inactivity rule's
/// longest window; forgetting the oldest only counts it again.
const BLIND_KEPT: usize = 4;

#[derive(Debug, Clone, Default)]
pub(crate) struct Evidence {
    /// Newest event time shown by any device of the home (last wills,
    /// which say nothing of the person, excluded), never ahead of the
    /// engine clock.
    pub(crate) until: Option<EpochMs>,
    /// Evidence time at which the absence rules next need a look.
    pub(crate) due: EpochMs,
    /// Stretches the home could not be seen, each with its settling time
    /// after, oldest first.
    pub(crate) blind: Vec<(EpochMs, EpochMs)>,
    /// Engine time the latest late reading arrived.
    pub(crate) late_at: Option<EpochMs>,
}

impl Evidence {
    /// The time the absence rules judge at: the newest evidence.
    pub(crate) fn judge_at(&self, now: EpochMs) -> Option<EpochMs> {
        self.until.map(|u| u.min(now))
    }

    /// The end of the blind stretch `t` falls in, if any.
    pub(crate) fn blind_until(&self, t: EpochMs) -> Option<EpochMs> {
        self.blind
            .iter()
            .find(|&&(from, to)| from <= t && t < to)
            .map(|w| w.1)
    }
}

/// A device of the elder showed something at event time `ts`. A gap since
/// the previous evidence longer than `silent_ms` (the longest any device
/// of the home may stay silent: its heartbeat and grace) was blind, and
/// so is `settle_ms` after it.
pub(crate) fn observe(
    e: &mut ElderSlot,
    ts: EpochMs,
    now: EpochMs,
    silent_ms: i64,
    settle_ms: i64,
) {
    let ts = ts.min(now);
    let Some(until) = e.seen.until else {
        e.seen.until = Some(ts);
        return;
    };
    if ts <= until {
        return;
    }
    if ts - until > silent_ms {
        if e.seen.blind.len() >= BLIND_KEPT {
            e.seen.blind.remove(0);
        }
        e.seen.blind.push((until, ts + settle_ms));
    }
    e.seen.until = Some(ts);
}

/// The longest any device of the elder may stay silent before it counts
/// as offline: its heartbeat and the grace.
pub(crate) fn longest_silence(e: &ElderSlot, devices: &[DeviceSlot], grace_ms: i64) -> i64 {
    e.devices
        .iter()
        .map(|&d| devices[d as usize].heartbeat_ms)
        .max()
        .unwrap_or(0)
        + grace_ms
}

/// Whether nothing can be heard from a device now: it is silent itself,
/// or it was last heard before the elder's gateway (which may carry it)
/// fell silent.
pub(crate) fn device_blind(e: &ElderSlot, devices: &[DeviceSlot], d: &DeviceSlot) -> bool {
    if d.silent_since.is_some() {
        return true;
    }
    d.kind != DeviceKind::Gateway
        && gateway_silent_since(e, devices).is_some_and(|g| d.last_heard <= g)
}

/// Since when the elder's gateway has been silent, if it is.
pub(crate) fn gateway_silent_since(e: &ElderSlot, devices: &[DeviceSlot]) -> Option<EpochMs> {
    e.devices
        .iter()
        .map(|&d| &devices[d as usize])
        .filter(|d| d.kind == DeviceKind::Gateway)
        .find_map(|d| d.silent_since)
}
