//! The fixed-size state kept per device and per elder.

use crate::config::RuleConfig;
use crate::evidence::Evidence;
use crate::hold::Holds;
use crate::late::Pending;
use crate::local::LocalClock;
use crate::rule::trend::Trends;
use crate::rule::visit::Visits;
use eldercare_model::{DeviceKind, EpochMs, Reading, Severity, Text};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct DeviceSlot {
    /// Shared with the index's key: one allocation per id.
    pub(crate) id: Arc<str>,
    /// Index of the owning elder; `u32::MAX` for a freed slot.
    pub(crate) elder: u32,
    pub(crate) kind: DeviceKind,
    pub(crate) heartbeat_ms: i64,
    /// Engine time the device was last heard.
    pub(crate) last_heard: EpochMs,
    /// Event time of its newest reading.
    pub(crate) last_ts: Option<EpochMs>,
    /// Since when it counts as silent (heartbeat passed or last will).
    pub(crate) silent_since: Option<EpochMs>,
    pub(crate) offline_raised: bool,
    pub(crate) battery_low: bool,
    pub(crate) holds: Option<Holds>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Latest {
    pub(crate) value: f32,
    pub(crate) ts: Option<EpochMs>,
}

#[derive(Debug)]
pub(crate) struct FallState {
    pub(crate) at: EpochMs,
    pub(crate) up: bool,
    pub(crate) summary: Text,
}

#[derive(Debug)]
pub(crate) struct ElderSlot {
    pub(crate) id: Arc<str>,
    pub(crate) removed: bool,
    pub(crate) cfg: Arc<RuleConfig>,
    pub(crate) clock: LocalClock,
    pub(crate) home: Option<(f64, f64)>,
    pub(crate) safe_radius_m: Option<f64>,
    pub(crate) dementia: bool,
    pub(crate) devices: Vec<u32>,
    /// Next engine time a timer of this elder needs looking at.
    pub(crate) due: EpochMs,

    pub(crate) sos_at: Option<EpochMs>,
    pub(crate) fall: Option<Box<FallState>>,

    pub(crate) latest: [Latest; 5],
    pub(crate) news2_since: Option<EpochMs>,
    /// The highest NEWS2 severity raised in the current episode.
    pub(crate) news2_raised: Option<Severity>,

    pub(crate) in_bed: Option<bool>,
    pub(crate) bed_ts: Option<EpochMs>,
    /// The reading that showed the person leaving bed.
    pub(crate) left_bed: Option<Box<Reading>>,
    /// The out-of-bed episode has been judged (raised, or not a night one).
    pub(crate) out_of_bed_done: bool,

    pub(crate) last_motion: Option<EpochMs>,
    pub(crate) last_motion_bathroom: bool,
    /// Start of the current stretch without activity.
    pub(crate) activity_at: EpochMs,
    pub(crate) inactivity_raised: bool,

    pub(crate) gps_ts: Option<EpochMs>,
    pub(crate) outside_fixes: u32,
    pub(crate) first_outside: Option<Box<Reading>>,
    pub(crate) away: bool,
    pub(crate) geofence_raised: bool,

    pub(crate) home_offline: bool,

    /// What the home has shown, and up to when.
    pub(crate) seen: Evidence,
    /// Episodes shown by late readings, waiting for the upload to end.
    pub(crate) pending: Vec<Pending>,
    /// The elder's daily figures and usual ranges, once there are any.
    pub(crate) trends: Option<Box<Trends>>,
    /// Flagged `lives_alone` or `frail` (from the registry).
    pub(crate) alone_or_frail: bool,
    /// Daily wellbeing check-in window, minutes after local midnight.
    pub(crate) check_in: Option<(u16, u16)>,
    /// Carers' visits and check-ins, for elders with a plan or a window.
    pub(crate) visits: Option<Box<Visits>>,
}
