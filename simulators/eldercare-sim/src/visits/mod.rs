//! `eldercare-sim visits`: carers' visits to many homes over a month,
//! with the truth of each one known, fast-forwarded through the real
//! rule engine in process, to show that every missed, late, short and
//! uncorroborated visit is flagged, that nothing else is, and that a
//! provider's month counted from the alerts is its ground truth.
//!
//! [`plan`] draws the providers and carers, each home's plans and what
//! every planned visit turns out to be; [`emit`] plays the elder's
//! ordinary life (as `drift` does, kept in and up around each visit)
//! and the carers' footprints and tag reads; [`run`] feeds them into one
//! [`Engine`] per home on simulated time, on a few threads, and
//! [`desk`] makes the decisions into alerts, with a hotline answering
//! the follow-up calls; [`measure`] scores the alerts against the truth
//! and counts each provider's month both ways.
pub mod desk;
pub mod emit;
pub mod live;
pub mod measure;
pub mod plan;

use crate::Home;
use crate::drift::emit::{Emitter, Intervals};
use crate::drift::plan::{Bounds, DAY, EPOCH, Normal, Plan as LifePlan};
use eldercare_model::{Alert, AlertKind, DeviceKind, Reading};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, PlanProfile, Rules};
use plan::{HomeVisits, Mix, Occurrence, Provider};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    pub homes: usize,
    /// The first local day (days since 1970-01-01, Asia/Shanghai).
    pub first_day: i64,
    pub days: u32,
    pub providers: usize,
    pub seed: u64,
    pub rules: Rules,
    pub mix: Mix,
    pub intervals: Intervals,
    /// The engine is ticked this often (simulated time).
    pub tick_ms: i64,
    pub threads: usize,
}

impl Config {
    /// Local midnight of the first day.
    pub fn start(&self) -> i64 {
        plan::midnight_of(self.first_day)
    }

    /// Local midnight after the last day.
    pub fn end(&self) -> i64 {
        plan::midnight_of(self.first_day + i64::from(self.days))
    }
}

/// One home's run.
#[derive(Debug, Clone)]
pub struct HomeRun {
    pub home: usize,
    pub elder_id: String,
    pub visits: HomeVisits,
    pub occurrences: Vec<Occurrence>,
    /// Every alert, as it stands at the end.
    pub alerts: Vec<Alert>,
    pub readings: u64,
}

pub(crate) fn home_rng(seed: u64, home: usize, salt: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (home as u64).wrapping_mul(0x1000_0001)
            ^ salt.wrapping_mul(0x5851_f42d_4c95_7f2d),
    )
}

/// The elder's life over the run, kept in and up around the visits.
fn life_plan(cfg: &Config, home: &Home, protect: &[(i64, i64)]) -> LifePlan {
    let mut rng = home_rng(cfg.seed, home.index, 3);
    let normal = Normal::draw(&mut rng);
    let b = Bounds::for_rules(cfg.rules.global(), home.safe_radius_m);
    // Planned from the Monday on or before the first day, so its
    // weekends fall on weekends, then moved into place.
    let back = plan::weekday(cfg.first_day) as i64;
    let monday = cfg.start() - back * DAY;
    let life = LifePlan::new(&mut rng, normal, None, cfg.days + back as u32, &b);
    let life = emit::shift(life, monday - EPOCH, cfg.start());
    emit::keep_in(life, protect, &mut rng)
}

fn engine_for(
    cfg: &Config,
    home: &Home,
    normal: &Normal,
    hv: &HomeVisits,
    ps: &[Provider],
) -> Engine {
    let start = cfg.start();
    let mut e = Engine::new(cfg.rules.clone());
    let mut p = ElderProfile::new(home.elder_id.clone());
    (p.night_start_min, p.night_end_min) = normal.night_window();
    p.home = Some(home.location);
    p.safe_radius_m = Some(home.safe_radius_m);
    p.alone_or_frail = hv.alone_or_frail;
    p.check_in = hv.check_in;
    e.upsert_elder(&p, start);
    for d in &home.devices {
        if let Some(kind) = DeviceKind::parse(d.kind) {
            e.upsert_device(
                &DeviceProfile {
                    device_id: d.device_id.clone(),
                    elder_id: home.elder_id.clone(),
                    kind,
                    heartbeat_s: home.heartbeat_s,
                },
                start,
            );
        }
    }
    let pairs = plan::carer_pairs(ps);
    e.set_carers(pairs.iter().map(|(c, p)| (c.as_str(), p.as_str())));
    e.set_visit_plans(&home.elder_id, plans_of(hv), start);
    e
}

fn plans_of(hv: &HomeVisits) -> Vec<PlanProfile> {
    hv.plans.iter().map(|h| h.plan.clone()).collect()
}

/// The truth of one home: its plans and every visit.
pub fn truth_of(cfg: &Config, home: &Home, ps: &[Provider]) -> (HomeVisits, Vec<Occurrence>) {
    let mut rng = home_rng(cfg.seed, home.index, 1);
    let hv = plan::home_visits(&mut rng, &home.elder_id, ps);
    let days = cfg.first_day..cfg.first_day + i64::from(cfg.days);
    let occ = plan::occurrences(&mut rng, &hv, days, &cfg.mix);
    (hv, occ)
}

/// Plays one home's weeks through its own engine.
pub fn run_home(cfg: &Config, home: &Home, ps: &[Provider]) -> HomeRun {
    let (hv, occ) = truth_of(cfg, home, ps);
    let mut protect: Vec<(i64, i64)> = occ
        .iter()
        .map(|o| o.protected(&plan::Timing::month()))
        .collect();
    if let Some((from, to)) = hv.check_in {
        // Up in the daily check-in window too, so it is never missed.
        for d in 0..i64::from(cfg.days) {
            let m = plan::midnight_of(cfg.first_day + d);
            protect.push((m + i64::from(from) * 60_000, m + i64::from(to) * 60_000));
        }
    }
    let protect = emit::merge(protect);
    let life = life_plan(cfg, home, &protect);
    let engine = engine_for(cfg, home, &life.normal, &hv, ps);
    let ids: Vec<String> = home.devices.iter().map(|d| d.device_id.clone()).collect();
    let mut carer = Vec::new();
    for o in &occ {
        emit::carer_readings(o, &ids, &mut carer);
    }
    carer.sort_by_key(|r| r.ts_ms);
    let mut em = Emitter::new(
        &life,
        ids,
        home.location,
        cfg.intervals,
        home_rng(cfg.seed, home.index, 2),
    );
    let book = desk::Book::new(
        Some("Demo District".into()),
        Some(format!("Community {}", (home.index - 1) / 10 + 1)),
    );
    let mut f = Feed {
        engine,
        book,
        calls: Vec::new(),
        by_subject: occ.iter().map(|o| (o.visit_id.as_str(), o)).collect(),
        ds: Vec::new(),
        tick: cfg.tick_ms.max(1),
        next_tick: cfg.start() + cfg.tick_ms.max(1),
        end: cfg.end(),
        elder_id: &hv.elder_id,
        plans_cleared: false,
    };
    let mut buf = Vec::<Reading>::new();
    let mut readings = 0u64;
    let mut ci = 0;
    let mut until = cfg.start();
    while !em.done() {
        until += 6 * crate::drift::plan::HOUR;
        buf.clear();
        em.play(until, &mut buf);
        // The played segments end here: the carers' readings before it
        // go in with these.
        let upto = life
            .segs
            .iter()
            .take_while(|s| s.start < until)
            .last()
            .map_or(until, |s| s.end);
        while ci < carer.len() && carer[ci].ts_ms < upto {
            buf.push(carer[ci].clone());
            ci += 1;
        }
        buf.sort_by_key(|r| r.ts_ms);
        readings += buf.len() as u64;
        for r in &buf {
            f.tick_to(r.ts_ms);
            f.engine.on_reading_into(r, r.ts_ms, &mut f.ds);
            f.keep(r.ts_ms);
        }
    }
    f.tick_to(life.end.max(f.end));
    let alerts = f.book.alerts;
    HomeRun {
        home: home.index,
        elder_id: home.elder_id.clone(),
        visits: hv,
        occurrences: occ,
        alerts,
        readings,
    }
}

/// One home's engine, its alert book and hotline, fed in time order.
struct Feed<'a> {
    engine: Engine,
    book: desk::Book,
    /// Follow-up calls the hotline will make: (at, alert index, outcome).
    calls: Vec<(i64, usize, &'static str)>,
    by_subject: HashMap<&'a str, &'a Occurrence>,
    ds: Vec<Decision>,
    tick: i64,
    next_tick: i64,
    /// Local midnight after the run's last day.
    end: i64,
    elder_id: &'a str,
    plans_cleared: bool,
}

impl Feed<'_> {
    /// Applies the decisions taken at `now`; a follow-up raised is
    /// answered by the hotline when the truth says.
    fn keep(&mut self, now: i64) {
        for d in self.ds.drain(..) {
            let follow_up = match &d {
                Decision::Raise(t) if t.kind == AlertKind::FollowUp => t.subject.clone(),
                _ => None,
            };
            let Some(i) = self.book.apply(d, now) else {
                continue;
            };
            if let Some(o) = follow_up.as_deref().and_then(|s| self.by_subject.get(s))
                && let Some((at, outcome)) = o.call
            {
                self.calls.push((at.max(now), i, outcome));
            }
        }
    }

    /// Ticks the engine up to `upto`, and makes the calls due.
    fn tick_to(&mut self, upto: i64) {
        while self.next_tick <= upto {
            let now = self.next_tick;
            if !self.plans_cleared && now >= self.end {
                // The run's days are over: no windows after them.
                self.engine.set_visit_plans(self.elder_id, Vec::new(), now);
                self.plans_cleared = true;
            }
            self.engine.tick_into(now, &mut self.ds);
            self.keep(now);
            if !self.calls.is_empty() {
                self.calls.sort_by_key(|c| std::cmp::Reverse(c.0));
                while self.calls.last().is_some_and(|c| c.0 <= now) {
                    let (at, i, outcome) = self.calls.pop().expect("a call");
                    self.book.answer(i, at, outcome);
                }
            }
            self.next_tick += self.tick;
        }
    }
}

/// Every home, on `cfg.threads` threads; `progress` is told how many
/// homes are done.
pub fn run(cfg: &Config, progress: &(dyn Fn(usize) + Sync)) -> Vec<HomeRun> {
    let homes = crate::homes(cfg.homes, cfg.seed);
    let ps = plan::providers(cfg.providers, cfg.homes);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<HomeRun>>> = Mutex::new(vec![None; homes.len()]);
    std::thread::scope(|s| {
        for _ in 0..cfg.threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(h) = homes.get(i) else { break };
                    let r = run_home(cfg, h, &ps);
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
