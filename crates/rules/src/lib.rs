//! The streaming rule engine: a pure state machine that judges each
//! *person* from all of their devices and says which alerts to raise,
//! update or clear.
//!
//! The engine is told the registry ([`Engine::upsert_elder`],
//! [`Engine::upsert_device`]), then fed validated readings
//! ([`Engine::on_reading`]) and clock ticks ([`Engine::tick`]); it answers
//! with [`Decision`]s. It does no I/O and never reads a clock: durations
//! within a signal (a pulse held high, breathing absent) run on the device
//! clock of the readings, and timers (out of bed, inactivity, offline) on
//! the clock the caller passes in, so tests drive time and nothing sleeps.
//!
//! State is one fixed-size slot per elder and per device; nothing keeps a
//! history. Folding repeats into an open alert is the alert desk's job;
//! the engine only avoids re-raising a condition it already reported and
//! that has not cleared (with hysteresis, so a value at a threshold does
//! not flap).
//!
//! Modules: `engine` holds the registry and routes readings and ticks;
//! `rule/` has one file per rule (`rule/out_of_bed.rs` is out of bed too
//! long, and so on); `hold` is holding a condition over event time;
//! `state` the fixed-size state per elder and device; `decision` what
//! the engine answers; `profile` what it is told of the registry;
//! `config` is the rule file (global and per-elder settings); `local`
//! converts event time to the elder's local time and night window;
//! `snapshot` carries the engine's state over a restart
//! ([`Engine::snapshot`], [`Engine::restore`]) without counting the time
//! the server was down as silence ([`Engine::resume_after_gap`]).
#![forbid(unsafe_code)]

mod config;
mod decision;
mod engine;
mod evidence;
mod hold;
mod late;
mod local;
mod profile;
mod rule;
mod snapshot;
mod state;
mod text;

pub use config::{
    BatteryRules, FallRules, GeofenceRules, InactivityRules, LateRules, News2Rules,
    NoBreathingRules, OfflineRules, OutOfBedRules, RuleConfig, Rules, RulesError, SosRules,
    TrendRule, TrendRules, VisitRules, VitalRules,
};
pub use decision::{Decision, Outcome, Record, Resolve, Trigger, Update};
pub use engine::Engine;
pub use local::{parse_hhmm, parse_window};
pub use profile::{DeviceProfile, ElderProfile, PlanProfile};
pub use snapshot::{EngineSnapshot, RestoreReport};

use eldercare_model::EpochMs;

/// How often a suppressed timer (in bed, away, moving about) is looked at again.
pub(crate) const RECHECK_MS: i64 = 60_000;
/// How many blind stretches (server down) the engine remembers for the
/// inactivity rule. Restarts are rare: forgetting the oldest only counts
/// it again for a person without activity since before it.
pub(crate) const BLIND_KEPT: usize = 8;
