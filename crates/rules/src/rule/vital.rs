//! `vital_out_of_range`, one parameter: a NEWS2 red-band value held.

use crate::config::{RuleConfig, VitalRules};
use crate::decision::{Decision, trigger};
use crate::hold::{HoldRule, Level, Signal};
use crate::state::{DeviceSlot, ElderSlot, Latest};
use eldercare_model::{AlertKind, Reading, Severity, Text};

/// The five NEWS2 parameters the devices measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    Pulse = 0,
    Spo2 = 1,
    Resp = 2,
    Sys = 3,
    Temp = 4,
}

pub(crate) const PARAMS: [Param; 5] = [
    Param::Pulse,
    Param::Spo2,
    Param::Resp,
    Param::Sys,
    Param::Temp,
];

impl Param {
    /// The signal a device holds this parameter's condition on.
    pub(crate) fn signal(self) -> Signal {
        match self {
            Param::Pulse => Signal::Pulse,
            Param::Spo2 => Signal::Spo2,
            Param::Resp => Signal::Resp,
            Param::Sys => Signal::Sys,
            Param::Temp => Signal::Temp,
        }
    }

    pub(crate) fn name(self) -> Text {
        let (en, zh) = match self {
            Param::Pulse => ("pulse", "脉搏"),
            Param::Spo2 => ("SpO2", "血氧"),
            Param::Resp => ("respiration", "呼吸"),
            Param::Sys => ("systolic pressure", "收缩压"),
            Param::Temp => ("temperature", "体温"),
        };
        Text::new(en, zh)
    }

    pub(crate) fn value(self, v: f64) -> Text {
        match self {
            Param::Pulse => Text::new(format!("{v:.0} bpm"), format!("{v:.0} 次/分")),
            Param::Spo2 => Text::new(format!("{v:.0} %"), format!("{v:.0}%")),
            Param::Resp => Text::new(format!("{v:.0} /min"), format!("{v:.0} 次/分")),
            Param::Sys => Text::new(format!("{v:.0} mmHg"), format!("{v:.0} mmHg")),
            Param::Temp => Text::new(format!("{v:.1} °C"), format!("{v:.1}°C")),
        }
    }

    /// The NEWS2 score of one observation (RCP 2017, chart 1; SpO2
    /// scale 1, on air).
    pub(crate) fn news2(self, v: f64) -> u32 {
        match self {
            Param::Resp => match v {
                v if v <= 8.0 => 3,
                v if v <= 11.0 => 1,
                v if v <= 20.0 => 0,
                v if v <= 24.0 => 2,
                _ => 3,
            },
            Param::Spo2 => match v {
                v if v <= 91.0 => 3,
                v if v <= 93.0 => 2,
                v if v <= 95.0 => 1,
                _ => 0,
            },
            Param::Sys => match v {
                v if v <= 90.0 => 3,
                v if v <= 100.0 => 2,
                v if v <= 110.0 => 1,
                v if v < 220.0 => 0,
                _ => 3,
            },
            Param::Pulse => match v {
                v if v <= 40.0 => 3,
                v if v <= 50.0 => 1,
                v if v <= 90.0 => 0,
                v if v <= 110.0 => 1,
                v if v <= 130.0 => 2,
                _ => 3,
            },
            Param::Temp => match v {
                v if v <= 35.0 => 3,
                v if v <= 36.0 => 1,
                v if v <= 38.0 => 0,
                v if v <= 39.0 => 1,
                _ => 2,
            },
        }
    }

    /// Where a value stands against the single-parameter thresholds, and
    /// which threshold it crossed.
    pub(crate) fn level(self, c: &VitalRules, v: f64) -> (Level, &'static str, f64) {
        let (low, high, margin) = match self {
            Param::Pulse => (
                Some(f64::from(c.pulse_low)),
                Some(f64::from(c.pulse_high)),
                f64::from(c.pulse_margin),
            ),
            Param::Spo2 => (Some(f64::from(c.spo2_low)), None, f64::from(c.spo2_margin)),
            Param::Resp => (
                Some(f64::from(c.resp_low)),
                Some(f64::from(c.resp_high)),
                f64::from(c.resp_margin),
            ),
            Param::Sys => (
                Some(f64::from(c.sys_low)),
                Some(f64::from(c.sys_high)),
                f64::from(c.sys_margin),
            ),
            Param::Temp => (Some(c.temp_low), Some(c.temp_high), c.temp_margin),
        };
        if let Some(l) = low
            && v <= l
        {
            return (Level::Abnormal, "≤", l);
        }
        if let Some(h) = high
            && v >= h
        {
            return (Level::Abnormal, "≥", h);
        }
        let clear = low.is_none_or(|l| v > l + margin) && high.is_none_or(|h| v < h - margin);
        (if clear { Level::Clear } else { Level::Near }, "", 0.0)
    }
}

pub(crate) fn vital(
    e: &mut ElderSlot,
    dev: &mut DeviceSlot,
    r: &Reading,
    p: Param,
    v: f64,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let l = &mut e.latest[p as usize];
    if l.ts.is_none_or(|t| r.ts_ms >= t) {
        *l = Latest {
            value: v as f32,
            ts: Some(r.ts_ms),
        };
    }
    let Some(holds) = dev.holds.as_mut() else {
        return;
    };
    let c = &cfg.vitals;
    let (level, side, threshold) = p.level(c, v);
    let rule = HoldRule {
        hold_ms: i64::from(c.hold_s) * 1000,
        gap_ms: i64::from(c.max_gap_s) * 1000,
        clear_ms: i64::from(c.clear_s) * 1000,
    };
    let Some(h) = holds.get(p.signal()) else {
        return;
    };
    let Some(since) = h.step(r, level, &rule) else {
        return;
    };
    let first = h.first.take();
    let held_s = (r.ts_ms - since) / 1000;
    let (name, val) = (p.name(), p.value(v));
    let thr = if p == Param::Temp {
        format!("{threshold:.1}")
    } else {
        format!("{threshold:.0}")
    };
    let mut t = trigger(
        e,
        r,
        AlertKind::VitalOutOfRange,
        Severity::High,
        Text::new(
            format!(
                "{} {} ({side}{thr}) for {held_s} s",
                capitalize(&name.en),
                val.en
            ),
            format!("{} {}（{side}{thr}），持续 {held_s} 秒", name.zh, val.zh),
        ),
    );
    if let Some(first) = first
        && first.ts_ms < r.ts_ms
    {
        t.readings.insert(0, *first);
    }
    t.window = Some((since, r.ts_ms));
    t.score = Some(p.news2(v));
    t.factors = vec![format!("{} {} ({})", name.en, val.en, p.news2(v))];
    out.push(Decision::Raise(t));
}

pub(crate) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news2_table_matches_the_chart() {
        assert_eq!(Param::Pulse.news2(40.0), 3);
        assert_eq!(Param::Pulse.news2(41.0), 1);
        assert_eq!(Param::Pulse.news2(90.0), 0);
        assert_eq!(Param::Pulse.news2(111.0), 2);
        assert_eq!(Param::Pulse.news2(131.0), 3);
        assert_eq!(Param::Spo2.news2(91.0), 3);
        assert_eq!(Param::Spo2.news2(93.0), 2);
        assert_eq!(Param::Spo2.news2(96.0), 0);
        assert_eq!(Param::Resp.news2(8.0), 3);
        assert_eq!(Param::Resp.news2(24.0), 2);
        assert_eq!(Param::Resp.news2(25.0), 3);
        assert_eq!(Param::Sys.news2(90.0), 3);
        assert_eq!(Param::Sys.news2(219.0), 0);
        assert_eq!(Param::Sys.news2(220.0), 3);
        assert_eq!(Param::Temp.news2(35.0), 3);
        assert_eq!(Param::Temp.news2(38.5), 1);
        assert_eq!(Param::Temp.news2(39.1), 2);
    }
}
