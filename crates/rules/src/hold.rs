//! Holding a condition over event time, with gaps and hysteresis.

use eldercare_model::{DeviceKind, EpochMs, Reading};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Abnormal,
    /// Normal, but within the hysteresis margin of a threshold.
    Near,
    /// Normal by more than the margin.
    Clear,
}

/// An abnormal condition that must hold for a while before it counts,
/// and clear for a while before it can count again. Times are event
/// time (kept small: there is one per signal of every device of every
/// elder).
#[derive(Debug, Clone, Default)]
pub(crate) struct Hold {
    /// Start of the current abnormal stretch.
    pub(crate) since: Option<EpochMs>,
    /// Newest reading judged.
    pub(crate) last: Option<EpochMs>,
    /// After firing: since when the signal has been clear.
    pub(crate) clear_since: Option<EpochMs>,
    pub(crate) fired: bool,
    /// First abnormal reading of the stretch, kept as evidence.
    pub(crate) first: Option<Box<Reading>>,
}

pub(crate) struct HoldRule {
    pub(crate) hold_ms: i64,
    pub(crate) gap_ms: i64,
    pub(crate) clear_ms: i64,
}

impl Hold {
    /// Judges one reading; returns the start of the stretch when the hold
    /// has just been met.
    pub(crate) fn step(&mut self, r: &Reading, level: Level, rule: &HoldRule) -> Option<EpochMs> {
        let ts = r.ts_ms;
        if let Some(last) = self.last {
            // Late readings are stored but cannot rewrite a stretch that
            // newer readings already shaped.
            if ts < last {
                return None;
            }
            // A signal gone for longer than the clear time ended its episode.
            if self.fired && ts - last > rule.clear_ms.max(rule.gap_ms) {
                *self = Hold::default();
            }
        }
        let continuous = self.last.is_some_and(|last| ts - last <= rule.gap_ms);
        self.last = Some(ts);
        if self.fired {
            if level == Level::Clear {
                let clear_since = match self.clear_since {
                    Some(c) if continuous => c,
                    _ => *self.clear_since.insert(ts),
                };
                if ts - clear_since >= rule.clear_ms {
                    *self = Hold {
                        last: Some(ts),
                        ..Hold::default()
                    };
                }
            } else {
                self.clear_since = None;
            }
            return None;
        }
        if level != Level::Abnormal {
            self.since = None;
            self.first = None;
            return None;
        }
        let since = match self.since {
            Some(s) if continuous => s,
            _ => {
                self.first = Some(Box::new(r.clone()));
                *self.since.insert(ts)
            }
        };
        if ts - since >= rule.hold_ms {
            self.fired = true;
            return Some(since);
        }
        None
    }

    pub(crate) fn reset(&mut self) {
        *self = Hold {
            last: self.last,
            ..Hold::default()
        };
    }
}

/// What a signal hold is about: one NEWS2 parameter, or absent breathing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Pulse,
    Spo2,
    Resp,
    Sys,
    Temp,
    NoBreathing,
}

impl Signal {
    /// Its number in a snapshot (stable: saved snapshots depend on it).
    pub(crate) fn code(self) -> u8 {
        match self {
            Signal::Pulse => 0,
            Signal::Spo2 => 1,
            Signal::Resp => 2,
            Signal::Sys => 3,
            Signal::Temp => 4,
            Signal::NoBreathing => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Signal> {
        BAND.iter().chain(SLEEP).copied().find(|s| s.code() == code)
    }
}

/// The signals a vital-sign band holds, in the order of its holds.
const BAND: &[Signal] = &[
    Signal::Pulse,
    Signal::Spo2,
    Signal::Resp,
    Signal::Sys,
    Signal::Temp,
];
/// The signals a sleep sensor holds, in the order of its holds.
const SLEEP: &[Signal] = &[Signal::Pulse, Signal::Resp, Signal::NoBreathing];

/// Signal holds of a device that measures vital signs, only those its
/// kind can report: a band's five parameters; a sleep sensor's pulse,
/// respiration and breathing.
#[derive(Debug)]
pub(crate) struct Holds {
    signals: &'static [Signal],
    holds: Box<[Hold]>,
}

impl Holds {
    pub(crate) fn for_kind(kind: DeviceKind) -> Option<Holds> {
        let signals = match kind {
            DeviceKind::VitalBand => BAND,
            DeviceKind::SleepSensor => SLEEP,
            _ => return None,
        };
        Some(Holds {
            signals,
            holds: signals.iter().map(|_| Hold::default()).collect(),
        })
    }

    /// Every hold back at its default.
    pub(crate) fn clear(&mut self) {
        for h in self.holds.iter_mut() {
            *h = Hold::default();
        }
    }

    /// The hold of a signal, if the device's kind reports it.
    pub(crate) fn get(&mut self, signal: Signal) -> Option<&mut Hold> {
        let i = self.signals.iter().position(|&s| s == signal)?;
        self.holds.get_mut(i)
    }

    /// Each hold with the signal it is for.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Signal, &Hold)> {
        self.signals.iter().copied().zip(self.holds.iter())
    }
}
