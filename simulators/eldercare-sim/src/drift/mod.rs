//! `eldercare-sim drift`: weeks of ordinary life in many homes, with a
//! slow drift injected in some, fast-forwarded through the real rule
//! engine in process, to measure how well its per-elder baselines catch
//! a drift (and how often they cry wolf).
//!
//! [`plan`] draws each elder's normal and lays out their days and nights
//! (with noise, weekends, odd days and the drift) as segments of what
//! they do, with the daily aggregates as ground truth; [`emit`] turns a
//! plan into the readings the home's devices send; [`run`] feeds them
//! into one [`Engine`] per home, ticking it on simulated time, on a few
//! threads; [`measure`] matches the `trend` alerts to the drifts.
pub mod emit;
pub mod measure;
pub mod plan;

use crate::Home;
use eldercare_model::DeviceKind;
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, Rules};
use emit::{Emitter, Intervals};
use plan::{Bounds, DayTruth, Drift, DriftKind, EPOCH, HOUR, Normal, Plan};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    pub homes: usize,
    /// Days of life per home.
    pub days: u32,
    /// Homes with a drift (each one drift).
    pub drifting: usize,
    pub seed: u64,
    pub rules: Rules,
    /// Drifts to inject, in turn over the drifting homes.
    pub kinds: Vec<DriftKind>,
    /// Onset days are drawn from this range (inclusive).
    pub onset: (u32, u32),
    pub intervals: Intervals,
    /// The engine is ticked this often (simulated time).
    pub tick_ms: i64,
    pub threads: usize,
}

/// An alert the engine raised, with the engine time it was decided at.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub kind: String,
    pub subject: Option<String>,
    pub at_ms: i64,
}

/// One home's run.
#[derive(Debug, Clone)]
pub struct HomeRun {
    pub home: usize,
    pub elder_id: String,
    pub normal: Normal,
    pub drift: Option<Drift>,
    /// `trend` alerts raised.
    pub trends: Vec<Raised>,
    /// Every other alert raised.
    pub others: Vec<Raised>,
    pub readings: u64,
    pub days: Vec<DayTruth>,
}

fn home_rng(seed: u64, home: usize, salt: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (home as u64).wrapping_mul(0x1000_0001) ^ salt,
    )
}

/// The drift of each home (by position), from the seed: `drifting` homes
/// drawn at random, the kinds in turn over them, onset and size drawn
/// from their ranges.
pub fn assign(cfg: &Config) -> Vec<Option<Drift>> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xd21f_7000);
    let mut order: Vec<usize> = (0..cfg.homes).collect();
    order.shuffle(&mut rng);
    let mut out = vec![None; cfg.homes];
    if cfg.kinds.is_empty() {
        return out;
    }
    for (j, &h) in order.iter().take(cfg.drifting).enumerate() {
        let kind = cfg.kinds[j % cfg.kinds.len()];
        let (lo, hi) = kind.magnitude_range();
        out[h] = Some(Drift {
            kind,
            onset_day: rng.random_range(cfg.onset.0..=cfg.onset.1),
            ramp_days: kind.ramp_days(),
            magnitude: rng.random_range(lo..=hi),
        });
    }
    out
}

/// The elder's normal and plan.
pub fn plan_home(cfg: &Config, home: &Home, drift: Option<Drift>) -> Plan {
    let mut rng = home_rng(cfg.seed, home.index, 1);
    let mut normal = Normal::draw(&mut rng);
    if drift.is_some_and(|d| d.kind == DriftKind::StaysIn) && normal.walks < 0.8 {
        // Staying in is only seen in someone who goes out.
        normal.walks = rng.random_range(0.8..1.5);
    }
    let b = Bounds::for_rules(cfg.rules.global(), home.safe_radius_m);
    Plan::new(&mut rng, normal, drift, cfg.days, &b)
}

fn engine_for(cfg: &Config, home: &Home, normal: &Normal) -> Engine {
    let mut e = Engine::new(cfg.rules.clone());
    let mut p = ElderProfile::new(home.elder_id.clone());
    (p.night_start_min, p.night_end_min) = normal.night_window();
    p.home = Some(home.location);
    p.safe_radius_m = Some(home.safe_radius_m);
    e.upsert_elder(&p, EPOCH);
    for d in &home.devices {
        if let Some(kind) = DeviceKind::parse(d.kind) {
            e.upsert_device(
                &DeviceProfile {
                    device_id: d.device_id.clone(),
                    elder_id: home.elder_id.clone(),
                    kind,
                    heartbeat_s: home.heartbeat_s,
                },
                EPOCH,
            );
        }
    }
    e
}

/// Plays one home's weeks through its own engine.
pub fn run_home(cfg: &Config, home: &Home, drift: Option<Drift>) -> HomeRun {
    let plan = plan_home(cfg, home, drift);
    let mut engine = engine_for(cfg, home, &plan.normal);
    let ids = home.devices.iter().map(|d| d.device_id.clone()).collect();
    let mut em = Emitter::new(
        &plan,
        ids,
        home.location,
        cfg.intervals,
        home_rng(cfg.seed, home.index, 2),
    );
    let tick = cfg.tick_ms.max(1);
    let mut next_tick = EPOCH + tick;
    let (mut trends, mut others) = (Vec::new(), Vec::new());
    let mut keep = |ds: &mut Vec<Decision>, now: i64| {
        for d in ds.drain(..) {
            if let Decision::Raise(t) = d {
                let r = Raised {
                    kind: t.kind.as_str().to_string(),
                    subject: t.subject,
                    at_ms: now,
                };
                if r.kind == "trend" {
                    trends.push(r);
                } else {
                    others.push(r);
                }
            }
        }
    };
    let (mut buf, mut ds) = (Vec::new(), Vec::new());
    let mut readings = 0u64;
    let mut until = EPOCH;
    while !em.done() {
        until += 6 * HOUR;
        buf.clear();
        em.play(until, &mut buf);
        readings += buf.len() as u64;
        for r in &buf {
            while next_tick <= r.ts_ms {
                engine.tick_into(next_tick, &mut ds);
                keep(&mut ds, next_tick);
                next_tick += tick;
            }
            engine.on_reading_into(r, r.ts_ms, &mut ds);
            keep(&mut ds, r.ts_ms);
        }
    }
    while next_tick <= plan.end {
        engine.tick_into(next_tick, &mut ds);
        keep(&mut ds, next_tick);
        next_tick += tick;
    }
    let mut days = plan.days.clone();
    for t in &mut days {
        t.pir_motions = em.day_motions[t.day as usize];
    }
    HomeRun {
        home: home.index,
        elder_id: home.elder_id.clone(),
        normal: plan.normal.clone(),
        drift,
        trends,
        others,
        readings,
        days,
    }
}

/// Every home, on `cfg.threads` threads; `progress` is told how many
/// homes are done.
pub fn run(cfg: &Config, progress: &(dyn Fn(usize) + Sync)) -> Vec<HomeRun> {
    let homes = crate::homes(cfg.homes, cfg.seed);
    let drifts = assign(cfg);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<HomeRun>>> = Mutex::new(vec![None; homes.len()]);
    std::thread::scope(|s| {
        for _ in 0..cfg.threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(h) = homes.get(i) else { break };
                    let r = run_home(cfg, h, drifts[i]);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests;
