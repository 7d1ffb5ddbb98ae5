//! From a target rate (`--rate`, messages/s for the whole fleet) to the
//! devices' intervals, and, after a run, why the rate offered fell short
//! of it.
//!
//! What a home sends is not proportional to one interval: the sleep
//! sensor reports only while someone is in bed, the GPS watch ten times
//! as often outdoors, PIR sensors only in the room the person moves
//! about, and which of these hold depends on the time of day. So the
//! intervals are not derived from an average day: [`plan`] plays a
//! sample of the fleet over the run's own window ([`HomeSim`], pure) at
//! candidate intervals and adjusts them until the planned rate is the
//! target, keeping every device under a ceiling (servers limit each
//! session's rate). When even the ceiling cannot make the target, the
//! plan says so and by how much, and how many homes would.
//!
//! [`Shortfall`] is the other end: what the run measured (messages sent
//! in the window, time the publishing tasks spent behind schedule and on
//! what), judged into a reason.
use crate::Home;
use crate::life::{HomeSim, Intervals};
use eldercare_rules::RuleConfig;

/// Messages each evaluation of a candidate plays at most: a sample of
/// the homes is taken to stay near it (~0.3 s of CPU).
const SAMPLE_MESSAGES: f64 = 150_000.0;
/// Runs longer than this are sampled in slices of [`SLICE_MS`] across
/// the run, the time of day changing what homes send.
const ONE_WINDOW_MS: i64 = 30_000;
const SLICE_MS: i64 = 10_000;
/// Close enough: whole-millisecond intervals move the rate in steps.
pub const TOLERANCE: f64 = 0.01;

/// How the fleet reports to offer a target rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub intervals: Intervals,
    pub target_per_s: f64,
    /// What the homes send at these intervals, over the run's window.
    pub planned_per_s: f64,
    /// The most any device sends, messages/s (below `device_max`).
    pub busiest_device_per_s: f64,
    pub device_max_per_s: f64,
    /// The most the homes can send with no device above `device_max`:
    /// `Some` only when that is short of the target.
    pub ceiling_per_s: Option<f64>,
    /// Homes that would reach the target (when the ceiling falls short).
    pub homes_needed: Option<usize>,
}

/// A stretch of the run the plan plays: `[from, to)`, standing for
/// `weight_ms` of the run; `warm`: its devices long on (played from
/// before it), else starting at `from` as the run's do.
#[derive(Debug, Clone, Copy)]
struct Slice {
    from: i64,
    to: i64,
    weight_ms: i64,
    warm: bool,
}

/// What a sample of homes sends at `iv` over the slices: (messages/s
/// for the whole fleet, the busiest device's messages/s).
fn measure(
    homes: &[Home],
    seed: u64,
    rules: &RuleConfig,
    iv: Intervals,
    slices: &[Slice],
    stride: usize,
) -> (f64, f64) {
    // Played from this long before a warm slice: the longest interval
    // (status; the GPS indoors), at most 20 min.
    let warm = (iv.status_ms.max(10 * iv.gps_ms) + 3000).min(20 * 60_000);
    let mut weighted = 0.0;
    let mut sampled = 0usize;
    let mut busiest: f64 = 0.0;
    let mut out = Vec::new();
    for h in homes.iter().step_by(stride) {
        sampled += 1;
        for sl in slices {
            let from = if sl.warm { sl.from - warm } else { sl.from };
            let mut s = HomeSim::new(h, seed, rules, iv, from, &[]);
            if from < sl.from {
                s.advance(sl.from, &mut out);
            }
            out.clear();
            s.advance(sl.to, &mut out);
            let secs = (sl.to - sl.from) as f64 / 1000.0;
            weighted += out.len() as f64 / secs * sl.weight_ms as f64;
            let mut per_device = vec![0usize; h.devices.len()];
            for m in &out {
                per_device[m.device] += 1;
            }
            let top = per_device.iter().copied().max().unwrap_or(0);
            busiest = busiest.max(top as f64 / secs);
        }
    }
    let total_ms: i64 = slices.iter().map(|s| s.weight_ms).sum();
    let per_home = weighted / total_ms.max(1) as f64 / sampled.max(1) as f64;
    (per_home * homes.len() as f64, busiest)
}

/// The slices of a run from `t0` lasting `duration_ms` that the plan
/// plays: the whole run when short; else its first seconds as they are
/// (every device starting up), and the rest as three slices of devices
/// long on, after the start, in the middle and at the end.
fn slices(t0: i64, duration_ms: i64) -> Vec<Slice> {
    let d = duration_ms.max(1);
    if d <= ONE_WINDOW_MS {
        return vec![Slice {
            from: t0,
            to: t0 + d,
            weight_ms: d,
            warm: false,
        }];
    }
    let rest = (d - SLICE_MS) / 3;
    let steady = |from: i64| Slice {
        from,
        to: from + SLICE_MS,
        weight_ms: rest,
        warm: true,
    };
    vec![
        Slice {
            from: t0,
            to: t0 + SLICE_MS,
            weight_ms: SLICE_MS,
            warm: false,
        },
        steady(t0 + SLICE_MS),
        steady(t0 + d / 2),
        steady(t0 + d - SLICE_MS),
    ]
}

/// Intervals at which `homes` send `target` messages/s over the run
/// `[t0, t0 + duration_ms)`, no device above `device_max` messages/s.
/// Pure: the homes are played, not driven. When the target is out of
/// reach the plan holds the fastest intervals and says what they give.
pub fn plan(
    homes: &[Home],
    seed: u64,
    rules: &RuleConfig,
    t0: i64,
    duration_ms: i64,
    target: f64,
    device_max: f64,
) -> Plan {
    let win = slices(t0, duration_ms);
    let secs: f64 = win.iter().map(|s| (s.to - s.from) as f64 / 1000.0).sum();
    let base = Intervals::default();
    let per_home = target / homes.len().max(1) as f64;
    let stride = ((homes.len() as f64 * per_home * secs / SAMPLE_MESSAGES).ceil() as usize)
        .clamp(1, homes.len().max(1));
    let at = |f: f64| {
        let iv = base.scaled(f, device_max);
        let (rate, busiest) = measure(homes, seed, rules, iv, &win, stride);
        (iv, rate, busiest)
    };
    let done = |iv: Intervals, rate: f64, busiest: f64, ceiling: Option<f64>| Plan {
        intervals: iv,
        target_per_s: target,
        planned_per_s: rate,
        busiest_device_per_s: busiest,
        device_max_per_s: device_max,
        ceiling_per_s: ceiling,
        homes_needed: ceiling
            .filter(|c| *c > 0.0)
            .map(|c| (homes.len() as f64 * target / c).ceil() as usize),
    };
    // The fastest the ceiling allows: every interval at its floor.
    let (max_iv, max_rate, max_busiest) = at(1e9);
    if max_rate < target * (1.0 - TOLERANCE) {
        return done(max_iv, max_rate, max_busiest, Some(max_rate));
    }
    // Rate grows with the factor (more messages as intervals shrink), in
    // steps; close in on the target from a bracket, guessing each next
    // factor from the last rate as if it were proportional.
    let (natural_iv, natural, natural_busiest) = at(1.0);
    if natural >= target * (1.0 - TOLERANCE) && natural <= target * (1.0 + TOLERANCE) {
        return done(natural_iv, natural, natural_busiest, None);
    }
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut f = target / natural.max(1e-9);
    let mut best = (natural_iv, natural, natural_busiest);
    let better = |r: f64, b: f64| (r - target).abs() < (b - target).abs();
    for _ in 0..12 {
        let (iv, rate, busiest) = at(f);
        if better(rate, best.1) {
            best = (iv, rate, busiest);
        }
        if (rate - target).abs() <= target * TOLERANCE {
            break;
        }
        if rate < target {
            lo = lo.max(f);
        } else {
            hi = hi.min(f);
        }
        let guess = f * target / rate.max(1e-9);
        f = if guess > lo && guess < hi {
            guess
        } else if hi.is_finite() {
            (lo.max(1e-9) * hi).sqrt()
        } else {
            lo * 2.0
        };
    }
    done(best.0, best.1, best.2, None)
}

/// Where the publishing tasks' time went while they were behind their
/// schedule (more than [`BEHIND_MS`] late), summed over the tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Behind {
    /// Waiting to hand a message to a connection whose QoS 1 in-flight
    /// window was full: waiting for the server's PUBACKs.
    pub puback_wait_s: f64,
    /// Waiting to hand a message to a connection with room in its
    /// window: its event loop had not run (CPU) or its socket was full.
    pub queue_wait_s: f64,
    /// Neither: making the messages and waiting to be scheduled (CPU).
    pub cpu_s: f64,
}

/// A task more than this late is behind; less is timer granularity and
/// scheduling noise.
pub const BEHIND_MS: i64 = 20;

/// Why a run's rate fell short of its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    /// The homes cannot send the target with no device above the ceiling.
    TooFewDevices {
        ceiling_per_s: f64,
        device_max_per_s: f64,
        homes_needed: Option<usize>,
    },
    /// Publishing waited for PUBACKs: the server slowed the devices.
    ServerBackPressure,
    /// The simulator could not make and send the messages in time.
    SimulatorCpu,
}

impl Shortfall {
    /// The reason in a few words, for the summary and the JSON result.
    pub fn reason(&self) -> String {
        match self {
            Shortfall::TooFewDevices {
                ceiling_per_s,
                device_max_per_s,
                homes_needed,
            } => format!(
                "too few devices: the homes send at most {ceiling_per_s:.0} msg/s with no device above {device_max_per_s} msg/s{}",
                homes_needed
                    .map(|n| format!(" (--homes {n} would)"))
                    .unwrap_or_default()
            ),
            Shortfall::ServerBackPressure => "server back-pressure: PUBACK waits".into(),
            Shortfall::SimulatorCpu => "simulator CPU".into(),
        }
    }
}

/// Judges a run: it offered `offered_per_s` against `plan`'s target; the
/// publishing tasks spent `behind` while late. Empty when the offered
/// rate is within [`TOLERANCE`] twice over (1 % for the plan's steps, 1 %
/// for the run) of the target. A plan short of the target is one reason;
/// falling behind the plan is another, put down to PUBACK waits when
/// those took more of the late tasks' time than everything else, else to
/// the simulator's CPU.
pub fn judge(plan: &Plan, offered_per_s: f64, behind: Behind) -> Vec<Shortfall> {
    let mut why = Vec::new();
    let short = |of: f64| offered_per_s < of * (1.0 - 2.0 * TOLERANCE);
    if !short(plan.target_per_s) {
        return why;
    }
    if let Some(c) = plan.ceiling_per_s {
        why.push(Shortfall::TooFewDevices {
            ceiling_per_s: c,
            device_max_per_s: plan.device_max_per_s,
            homes_needed: plan.homes_needed,
        });
    }
    if short(plan.planned_per_s) || why.is_empty() {
        why.push(
            if behind.puback_wait_s > behind.queue_wait_s + behind.cpu_s {
                Shortfall::ServerBackPressure
            } else {
                Shortfall::SimulatorCpu
            },
        );
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_intervals_keep_every_device_under_its_ceiling() {
        let iv = Intervals::default().scaled(1e9, 40.0);
        // 3/4 of 40 msg/s for the main stream, 1/4 for status.
        assert_eq!(iv.vitals_ms, 34);
        assert_eq!(iv.sleep_ms, 34);
        assert_eq!(iv.status_ms, 100);
        assert!(1000.0 / iv.vitals_ms as f64 + 1000.0 / iv.status_ms as f64 <= 40.0);
        // Realistic intervals are far from it.
        assert_eq!(Intervals::default().scaled(1.0, 40.0), Intervals::default());
    }

    #[test]
    fn judged_by_what_the_late_tasks_waited_on() {
        let plan = Plan {
            intervals: Intervals::default(),
            target_per_s: 20_000.0,
            planned_per_s: 20_000.0,
            busiest_device_per_s: 30.0,
            device_max_per_s: 40.0,
            ceiling_per_s: None,
            homes_needed: None,
        };
        let acks = Behind {
            puback_wait_s: 50.0,
            queue_wait_s: 5.0,
            cpu_s: 10.0,
        };
        let cpu = Behind {
            puback_wait_s: 5.0,
            queue_wait_s: 20.0,
            cpu_s: 40.0,
        };
        assert!(judge(&plan, 19_900.0, acks).is_empty());
        assert_eq!(
            judge(&plan, 13_000.0, acks),
            vec![Shortfall::ServerBackPressure]
        );
        assert_eq!(judge(&plan, 13_000.0, cpu), vec![Shortfall::SimulatorCpu]);
        let few = Plan {
            planned_per_s: 15_000.0,
            ceiling_per_s: Some(15_000.0),
            homes_needed: Some(267),
            ..plan
        };
        // Short of the target, and on its own plan: only the devices.
        let why = judge(&few, 14_950.0, cpu);
        assert_eq!(why.len(), 1);
        assert_eq!(
            why[0].reason(),
            "too few devices: the homes send at most 15000 msg/s with no device above 40 msg/s (--homes 267 would)"
        );
        assert_eq!(judge(&few, 10_000.0, cpu).len(), 2);
    }
}
