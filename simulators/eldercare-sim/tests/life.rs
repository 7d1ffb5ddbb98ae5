//! The signal model against the real rule engine, on simulated time: an
//! ordinary day raises nothing, and each injected episode raises exactly
//! the alert it should, when it should. Every message goes through the
//! device protocol's decoder first, as it would on the wire.
use eldercare_model::{AlertKind, DeviceKind, Stream};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, RuleConfig, Rules};
use eldercare_sim::life::{HomeSim, Intervals, Msg, Payload};
use eldercare_sim::{Home, Inject, homes, stage};
use std::collections::BTreeMap;

const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;
/// 2026-11-23 00:00 in Asia/Shanghai.
const MIDNIGHT: i64 = 1_795_363_200_000;

fn verify_rules() -> Rules {
    Rules::parse(include_str!("../../../deploy/verify-rules.toml")).unwrap()
}

fn engine_for(rules: &Rules, hs: &[Home], now: i64) -> Engine {
    let mut e = Engine::new(rules.clone());
    for h in hs {
        let mut p = ElderProfile::new(h.elder_id.clone());
        p.timezone = eldercare_sim::timezone_name(h.utc_offset_h)
            .parse()
            .unwrap();
        p.night_start_min = eldercare_rules::parse_hhmm(&h.night.start).unwrap();
        p.night_end_min = eldercare_rules::parse_hhmm(&h.night.end).unwrap();
        p.home = Some(h.location);
        p.safe_radius_m = Some(h.safe_radius_m);
        p.dementia = h.flags.contains(&"dementia");
        e.upsert_elder(&p, now);
        for d in &h.devices {
            e.upsert_device(
                &DeviceProfile {
                    device_id: d.device_id.clone(),
                    elder_id: h.elder_id.clone(),
                    kind: DeviceKind::parse(d.kind).unwrap(),
                    heartbeat_s: h.heartbeat_s,
                },
                now,
            );
        }
    }
    e
}

/// What happened in a simulated stretch.
#[derive(Default)]
struct Run {
    /// (time, decision)
    decisions: Vec<(i64, Decision)>,
    by_stream: BTreeMap<String, u64>,
    /// (home index, room) with motion.
    rooms: BTreeMap<(usize, String), u64>,
    /// Per home, milliseconds of sleep reports saying in bed.
    in_bed_reports: BTreeMap<usize, u64>,
    max_gps_dist: BTreeMap<usize, f64>,
    triggers: Vec<(usize, i64)>,
    /// (home index, time) of every message.
    heard: Vec<(usize, i64)>,
}

/// Plays `sims` from `from` to `to` into `engine`, second by second:
/// each message decoded as the server would, then a tick.
fn play(engine: &mut Engine, sims: &mut [HomeSim], from: i64, to: i64) -> Run {
    let mut run = Run::default();
    let mut out: Vec<Msg> = Vec::new();
    let mut t = from;
    while t < to {
        let next = t + S;
        for sim in sims.iter_mut() {
            out.clear();
            sim.advance(next, &mut out);
            let home = sim.home().clone();
            for m in &out {
                assert!(m.at_ms >= t && m.at_ms < next, "message outside its second");
                let dev = &home.devices[m.device];
                let topic = m.body.topic(&dev.device_id);
                let bytes = m.body.bytes(m.at_ms);
                let r = eldercare_protocol::decode(&topic, &bytes, None, m.at_ms)
                    .unwrap_or_else(|e| panic!("{topic} {:?} refused: {e:?}", m.body));
                if m.trigger {
                    run.triggers.push((home.index, m.at_ms));
                }
                run.heard.push((home.index, m.at_ms));
                let stream = r.body.stream();
                *run.by_stream
                    .entry(stream.as_str().to_string())
                    .or_default() += 1;
                if let Payload::Json { body, .. } = &m.body {
                    if stream == Stream::Motion {
                        let room = body["room"].as_str().unwrap().to_string();
                        *run.rooms.entry((home.index, room)).or_default() += 1;
                    }
                    if stream == Stream::Sleep && body["in_bed"] == true {
                        *run.in_bed_reports.entry(home.index).or_default() += 1;
                    }
                    if stream == Stream::Location {
                        let p = (body["lat"].as_f64().unwrap(), body["lon"].as_f64().unwrap());
                        let d = eldercare_sim::life::distance_m(home.location, p);
                        let e = run.max_gps_dist.entry(home.index).or_default();
                        *e = e.max(d);
                    }
                }
                for d in engine.on_reading(&r, m.at_ms) {
                    run.decisions.push((m.at_ms, d));
                }
            }
        }
        for d in engine.tick(next) {
            run.decisions.push((next, d));
        }
        t = next;
    }
    run
}

fn raised(run: &Run) -> Vec<(i64, String, AlertKind)> {
    run.decisions
        .iter()
        .filter_map(|(t, d)| match d {
            Decision::Raise(tr) => Some((*t, tr.elder_id.clone(), tr.kind)),
            _ => None,
        })
        .collect()
}

fn ordinary_day(rules: Rules, utc_offset_h: i32) {
    let cfg: RuleConfig = (**rules.global()).clone();
    let mut hs = homes(12, 7);
    for h in &mut hs {
        h.utc_offset_h = utc_offset_h;
    }
    // Elders keep different hours.
    for (i, h) in hs.iter_mut().enumerate() {
        let start = 20 * 60 + 30 * (i as i64 % 6);
        h.night.start = format!("{:02}:{:02}", start / 60 % 24, start % 60);
        h.night.end = format!("{:02}:{:02}", 6 + i % 3, (15 * i) % 60);
    }
    let t0 = MIDNIGHT + 10 * H;
    let mut engine = engine_for(&rules, &hs, t0);
    let mut sims: Vec<HomeSim> = hs
        .iter()
        .map(|h| HomeSim::new(h, 7, &cfg, Intervals::default(), t0, &[]))
        .collect();
    let run = play(&mut engine, &mut sims, t0, t0 + 26 * H);
    assert_eq!(raised(&run), [], "an ordinary day raises nothing");

    // And it was a day of life, not silence.
    for h in &hs {
        let rooms = run.rooms.keys().filter(|(i, _)| *i == h.index).count();
        assert!(rooms >= 4, "home {} moved through {rooms} rooms", h.index);
        // Sleep reports every 5 s: at least 6 hours in bed.
        let in_bed = run.in_bed_reports.get(&h.index).copied().unwrap_or(0);
        assert!(
            in_bed * 5 >= 6 * 3600,
            "home {} in bed {} h",
            h.index,
            in_bed * 5 / 3600
        );
        let far = run.max_gps_dist.get(&h.index).copied().unwrap_or(0.0);
        assert!(far < h.safe_radius_m, "home {} walked {far} m", h.index);
    }
    let walkers = hs
        .iter()
        .filter(|h| run.max_gps_dist.get(&h.index).copied().unwrap_or(0.0) > 100.0)
        .count();
    assert!(walkers >= 3, "{walkers} of 12 went for a walk");
    let bathroom_at_night = run
        .rooms
        .get(&(1, "bathroom".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(bathroom_at_night > 0);
    // Vitals every 10 s from every band, a day and two hours long.
    let vitals = run.by_stream["vitals"];
    assert!(vitals >= 12 * 26 * 360 - 12, "{vitals} vitals readings");
    assert!(run.by_stream["status"] > 0 && run.by_stream["location"] > 0);
}

#[test]
fn an_ordinary_day_raises_nothing_under_the_default_rules() {
    ordinary_day(Rules::defaults(), 8);
}

#[test]
fn an_ordinary_day_raises_nothing_under_the_demo_rules() {
    ordinary_day(
        Rules::parse(include_str!("../../../deploy/demo-rules.toml")).unwrap(),
        8,
    );
}

#[test]
fn an_ordinary_day_raises_nothing_under_the_rehearsal_rules() {
    ordinary_day(verify_rules(), 8);
}

#[test]
fn an_ordinary_day_raises_nothing_in_another_timezone() {
    // Homes at UTC-6 (`--local-hour`): their day, walks and night window
    // follow their own clock, and so does the engine.
    ordinary_day(verify_rules(), -6);
}

/// Each episode alone in a home: exactly its alert, raised when due.
fn each_episode(rules: Rules, utc_offset_h: i32) {
    let cfg: RuleConfig = (**rules.global()).clone();
    for (n, what) in Inject::ALL.into_iter().enumerate() {
        for (label, t0) in [("morning", MIDNIGHT + 10 * H), ("night", MIDNIGHT + 2 * H)] {
            let mut hs = homes(1, 3 + n as u64);
            hs[0].utc_offset_h = utc_offset_h;
            let at = t0 + 40 * MIN;
            stage(&mut hs[0], what, at);
            let mut engine = engine_for(&rules, &hs, t0);
            let mut sim = [HomeSim::new(
                &hs[0],
                3,
                &cfg,
                Intervals::default(),
                t0,
                &[(what, at)],
            )];
            let truth = sim[0].truths().pop().unwrap();
            assert_eq!(truth.expected, what.alert_kind());
            let run = play(&mut engine, &mut sim, t0, truth.end_ms);
            let got = raised(&run);
            let ctx = format!("{what} ({label}): {got:?}, due {}", truth.due_ms - at);
            assert_eq!(got.len(), 1, "{ctx}");
            let (t, elder, kind) = &got[0];
            assert_eq!(
                (elder.as_str(), *kind),
                (hs[0].elder_id.as_str(), truth.expected),
                "{ctx}"
            );
            // Raised when due: on the triggering reading, or at the
            // engine's next one-second tick for a timer; a rule that
            // infers from absence judges at the newest time the home was
            // heard from, so at its first message at or after the deadline.
            let due = if what.infers_from_absence() {
                run.heard
                    .iter()
                    .map(|(_, t)| *t)
                    .filter(|t| *t >= truth.due_ms)
                    .min()
                    .unwrap_or_else(|| panic!("{ctx}: the home fell silent"))
            } else {
                truth.due_ms
            };
            assert!(
                *t >= due && *t <= due + S,
                "{ctx}: raised at {}, due at {}",
                t - at,
                due - at
            );
            let triggers: Vec<i64> = run.triggers.iter().map(|(_, t)| *t).collect();
            match what {
                Inject::DeviceOffline
                | Inject::HomeOffline
                | Inject::OutOfBed
                | Inject::BathroomFall
                | Inject::Inactivity => assert!(triggers.is_empty(), "{ctx}"),
                _ => assert_eq!(
                    triggers,
                    [truth.due_ms],
                    "{ctx}: the trigger is the due reading"
                ),
            }
            let others: Vec<&Decision> = run
                .decisions
                .iter()
                .map(|(_, d)| d)
                .filter(|d| !matches!(d, Decision::Raise(_)))
                .collect();
            match what {
                Inject::SosCancel => assert!(
                    others
                        .iter()
                        .any(|d| matches!(d, Decision::Resolve(r) if r.kind == AlertKind::Sos)),
                    "{ctx}: cancelled"
                ),
                Inject::FallUp => assert!(
                    others
                        .iter()
                        .any(|d| matches!(d, Decision::Update(u) if u.kind == AlertKind::Fall)),
                    "{ctx}: up"
                ),
                Inject::Fall => assert!(others.is_empty(), "{ctx}: {others:?}"),
                _ => {}
            }
        }
    }
}

#[test]
fn each_episode_raises_exactly_its_alert_under_the_default_rules() {
    each_episode(Rules::defaults(), 8);
}

#[test]
fn each_episode_raises_exactly_its_alert_under_the_demo_rules() {
    each_episode(
        Rules::parse(include_str!("../../../deploy/demo-rules.toml")).unwrap(),
        8,
    );
}

#[test]
fn each_episode_raises_exactly_its_alert_under_the_rehearsal_rules() {
    each_episode(verify_rules(), 8);
}

#[test]
fn each_episode_raises_exactly_its_alert_in_another_timezone() {
    each_episode(verify_rules(), -6);
}
