//! The streaming rule engine: a pure state machine that judges each
//! elder from their validated readings and says which alerts to raise.
//!
//! Readings go in with the elder they belong to ([`Engine::on_reading`]);
//! [`Trigger`]s come out. The engine does no I/O and never reads a
//! clock: event time comes from the readings, so it can be tested and
//! benchmarked alone. Folding repeats into an open alert is the alert
//! desk's job, not the engine's; the engine only avoids re-triggering
//! for a condition it has already reported and that has not cleared.
#![forbid(unsafe_code)]

use eldercare_model::{AlertKind, Body, EpochMs, EventType, Reading, Severity};
use serde::Deserialize;
use std::collections::HashMap;

/// Rule thresholds. Every field has a default; a config file may set any.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Heart rate below this (beats/min) is abnormal.
    pub hr_low: u32,
    /// Heart rate above this (beats/min) is abnormal.
    pub hr_high: u32,
    /// How long (seconds of event time) an abnormal heart rate must hold
    /// before it raises an alert.
    pub hr_hold_s: u32,
    /// Fall events reported with a confidence below this are ignored.
    pub fall_min_confidence: f64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            hr_low: 40,
            hr_high: 130,
            hr_hold_s: 60,
            fall_min_confidence: 0.7,
        }
    }
}

/// A rule's decision that an alert should be raised (or folded into the
/// open alert of the same kind for the same elder).
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub elder_id: String,
    pub device_id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// Event time of the reading that triggered it.
    pub at_ms: EpochMs,
    /// A sentence an operator reads at a glance.
    pub summary: String,
    /// The readings that triggered it, oldest first.
    pub readings: Vec<Reading>,
}

/// An abnormal condition that must hold for a while before it counts.
#[derive(Debug, Default, Clone)]
struct Hold {
    /// Event time of the first abnormal reading of the current episode.
    since: Option<EpochMs>,
    /// First abnormal reading of the episode, kept as evidence.
    first: Option<Reading>,
    /// Whether this episode has already triggered.
    fired: bool,
}

#[derive(Debug, Default)]
struct ElderState {
    /// Heart-rate hold per source device: a band and a sleep sensor each
    /// hold their own signal, so one cannot cancel the other's episode.
    hr: HashMap<String, HrSignal>,
}

#[derive(Debug, Default)]
struct HrSignal {
    /// Event time of the newest heart-rate reading seen.
    last_ts: Option<EpochMs>,
    hold: Hold,
}

/// The rule engine: one state per elder.
#[derive(Debug, Default)]
pub struct Engine {
    cfg: RuleConfig,
    elders: HashMap<String, ElderState>,
}

impl Engine {
    pub fn new(cfg: RuleConfig) -> Engine {
        Engine {
            cfg,
            elders: HashMap::new(),
        }
    }

    pub fn config(&self) -> &RuleConfig {
        &self.cfg
    }

    /// Number of elders the engine holds state for.
    pub fn elders(&self) -> usize {
        self.elders.len()
    }

    /// Judges one validated reading of `elder_id`'s device.
    pub fn on_reading(&mut self, elder_id: &str, r: &Reading) -> Vec<Trigger> {
        let mut out = Vec::new();
        match &r.body {
            Body::Event(e) => match e.kind {
                EventType::Sos => out.push(trigger(
                    elder_id,
                    r,
                    AlertKind::Sos,
                    Severity::Critical,
                    "SOS button pressed".to_string(),
                )),
                EventType::Fall => {
                    let conf = e.confidence.unwrap_or(1.0);
                    if conf >= self.cfg.fall_min_confidence {
                        let summary = match e.confidence {
                            Some(c) => format!("Fall detected (confidence {:.0} %)", c * 100.0),
                            None => "Fall detected".to_string(),
                        };
                        out.push(trigger(
                            elder_id,
                            r,
                            AlertKind::Fall,
                            Severity::Critical,
                            summary,
                        ));
                    }
                }
                EventType::SosCancel => {}
            },
            Body::Vitals(v) => {
                if let Some(hr) = v.hr {
                    self.heart_rate(elder_id, r, hr, &mut out);
                }
            }
            Body::Sleep(s) => {
                if let (true, Some(hr)) = (s.in_bed, s.hr) {
                    self.heart_rate(elder_id, r, hr, &mut out);
                }
            }
            Body::Motion(_) | Body::Location(_) | Body::Status(_) => {}
        }
        out
    }

    fn heart_rate(&mut self, elder_id: &str, r: &Reading, hr: u32, out: &mut Vec<Trigger>) {
        let cfg = &self.cfg;
        let elder = self.elders.entry(elder_id.to_string()).or_default();
        let sig = elder.hr.entry(r.device_id.clone()).or_default();
        // A late reading cannot reorder an episode that newer readings
        // already shaped; it is stored, but the hold goes by the newest.
        if sig.last_ts.is_some_and(|last| r.ts_ms < last) {
            return;
        }
        sig.last_ts = Some(r.ts_ms);
        let abnormal = hr < cfg.hr_low || hr > cfg.hr_high;
        if !abnormal {
            sig.hold = Hold::default();
            return;
        }
        let st = &mut sig.hold;
        let since = *st.since.get_or_insert(r.ts_ms);
        if st.first.is_none() {
            st.first = Some(r.clone());
        }
        let held_ms = r.ts_ms - since;
        if !st.fired && held_ms >= i64::from(cfg.hr_hold_s) * 1000 {
            st.fired = true;
            let side = if hr > cfg.hr_high {
                format!("above {}", cfg.hr_high)
            } else {
                format!("below {}", cfg.hr_low)
            };
            let mut t = trigger(
                elder_id,
                r,
                AlertKind::VitalOutOfRange,
                Severity::High,
                format!("Heart rate {hr} bpm, {side} for {} s", held_ms / 1000),
            );
            if let Some(first) = st.first.take() {
                t.readings.insert(0, first);
            }
            out.push(t);
        }
    }
}

fn trigger(
    elder_id: &str,
    r: &Reading,
    kind: AlertKind,
    severity: Severity,
    summary: String,
) -> Trigger {
    Trigger {
        elder_id: elder_id.to_string(),
        device_id: r.device_id.clone(),
        kind,
        severity,
        at_ms: r.ts_ms,
        summary,
        readings: vec![r.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{DeviceEvent, Sleep, Vitals};

    fn vitals(ts_ms: i64, hr: u32) -> Reading {
        Reading {
            device_id: "band-1".into(),
            seq: None,
            ts_ms,
            body: Body::Vitals(Vitals {
                hr: Some(hr),
                ..Default::default()
            }),
        }
    }

    fn event(kind: EventType, confidence: Option<f64>) -> Reading {
        Reading {
            device_id: "btn-1".into(),
            seq: None,
            ts_ms: 1_000,
            body: Body::Event(DeviceEvent { kind, confidence }),
        }
    }

    #[test]
    fn sos_and_fall_are_critical_at_once() {
        let mut e = Engine::default();
        let t = e.on_reading("e1", &event(EventType::Sos, None));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].kind, t[0].severity),
            (AlertKind::Sos, Severity::Critical)
        );
        let t = e.on_reading("e1", &event(EventType::Fall, Some(0.9)));
        assert_eq!(
            (t[0].kind, t[0].severity),
            (AlertKind::Fall, Severity::Critical)
        );
        assert!(
            e.on_reading("e1", &event(EventType::Fall, Some(0.5)))
                .is_empty()
        );
        assert!(
            e.on_reading("e1", &event(EventType::SosCancel, None))
                .is_empty()
        );
    }

    #[test]
    fn heart_rate_must_hold_for_sixty_seconds_of_event_time() {
        let mut e = Engine::default();
        assert!(e.on_reading("e1", &vitals(0, 150)).is_empty());
        assert!(e.on_reading("e1", &vitals(30_000, 150)).is_empty());
        assert!(e.on_reading("e1", &vitals(59_999, 150)).is_empty());
        let t = e.on_reading("e1", &vitals(60_000, 155));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].kind, t[0].severity),
            (AlertKind::VitalOutOfRange, Severity::High)
        );
        assert_eq!(t[0].readings.len(), 2, "first and triggering reading kept");
        // Still abnormal: the same episode does not trigger again.
        assert!(e.on_reading("e1", &vitals(90_000, 150)).is_empty());
        // Back to normal, then a new episode triggers again.
        assert!(e.on_reading("e1", &vitals(100_000, 80)).is_empty());
        assert!(e.on_reading("e1", &vitals(110_000, 35)).is_empty());
        assert_eq!(e.on_reading("e1", &vitals(170_000, 35)).len(), 1);
    }

    #[test]
    fn a_normal_reading_breaks_the_hold() {
        let mut e = Engine::default();
        e.on_reading("e1", &vitals(0, 140));
        e.on_reading("e1", &vitals(30_000, 90));
        assert!(e.on_reading("e1", &vitals(61_000, 140)).is_empty());
        assert!(e.on_reading("e1", &vitals(120_000, 140)).is_empty());
        assert_eq!(e.on_reading("e1", &vitals(121_000, 140)).len(), 1);
    }

    #[test]
    fn boundaries_are_normal_and_elders_are_separate() {
        let mut e = Engine::default();
        e.on_reading("e1", &vitals(0, 130));
        assert!(e.on_reading("e1", &vitals(70_000, 40)).is_empty());
        e.on_reading("e2", &vitals(0, 131));
        assert!(e.on_reading("e1", &vitals(80_000, 131)).is_empty());
        assert_eq!(e.on_reading("e2", &vitals(60_000, 131)).len(), 1);
    }

    #[test]
    fn late_readings_do_not_rewind_the_hold() {
        let mut e = Engine::default();
        e.on_reading("e1", &vitals(100_000, 150));
        assert!(e.on_reading("e1", &vitals(10_000, 150)).is_empty());
        assert_eq!(e.on_reading("e1", &vitals(160_000, 150)).len(), 1);
    }

    #[test]
    fn a_normal_reading_from_another_device_does_not_cancel_a_hold() {
        let mut e = Engine::default();
        let bed = Reading {
            device_id: "bed-1".into(),
            seq: None,
            ts_ms: 30_000,
            body: Body::Sleep(Sleep {
                in_bed: true,
                hr: Some(60),
                rr: Some(14),
                movement: None,
            }),
        };
        e.on_reading("e1", &vitals(0, 150));
        e.on_reading("e1", &bed);
        assert_eq!(e.on_reading("e1", &vitals(60_000, 150)).len(), 1);
    }

    #[test]
    fn sleep_sensor_heart_rate_counts_when_in_bed() {
        let mut e = Engine::default();
        let bed = |ts, hr| Reading {
            device_id: "bed-1".into(),
            seq: None,
            ts_ms: ts,
            body: Body::Sleep(Sleep {
                in_bed: true,
                hr: Some(hr),
                rr: Some(14),
                movement: None,
            }),
        };
        e.on_reading("e1", &bed(0, 30));
        assert_eq!(e.on_reading("e1", &bed(60_000, 30)).len(), 1);
    }
}
