use super::measure::{self, Outcome};
use super::plan::*;
use super::*;
use eldercare_model::{Body, Reading};

fn cfg(homes: usize, days: u32, drifting: usize, kinds: &[DriftKind]) -> Config {
    Config {
        homes,
        days,
        drifting,
        seed: 7,
        rules: Rules::defaults(),
        kinds: kinds.to_vec(),
        onset: (28, 45),
        intervals: Intervals::coarse(),
        tick_ms: 30 * S,
        threads: 1,
    }
}

fn drift(kind: DriftKind, onset_day: u32, magnitude: f64) -> Drift {
    Drift {
        kind,
        onset_day,
        ramp_days: kind.ramp_days(),
        magnitude,
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn readings(plan: &Plan, home: &Home) -> Vec<Reading> {
    let ids = home.devices.iter().map(|d| d.device_id.clone()).collect();
    let mut em = Emitter::new(
        plan,
        ids,
        home.location,
        Intervals::coarse(),
        StdRng::seed_from_u64(3),
    );
    let mut out = Vec::new();
    em.play(i64::MAX, &mut out);
    out
}

/// Night-time bathroom visits as the devices tell them: bathroom motion
/// between leaving bed and getting back in, during the night's sleep
/// (from the first getting in after 18:00 to the last getting up).
fn observed_visits(rs: &[Reading], plan: &Plan) -> Vec<u32> {
    plan.days
        .iter()
        .map(|t| {
            // The night of day d starts in its evening (the tail of the
            // night before day 0 counts for no day).
            let evening = EPOCH + i64::from(t.day) * DAY + 12 * HOUR;
            let bed = plan
                .segs
                .iter()
                .find(|s| s.day == t.day && s.night && s.start >= evening)
                .map(|s| s.start)
                .unwrap();
            let rise = plan
                .segs
                .iter()
                .rev()
                .find(|s| s.day == t.day && s.night)
                .map(|s| s.end)
                .unwrap();
            let mut visits = 0;
            let mut out_of_bed = false;
            let mut seen_bath = false;
            for r in rs.iter().filter(|r| r.ts_ms >= bed && r.ts_ms < rise) {
                match &r.body {
                    Body::Sleep(s) if s.in_bed => {
                        if out_of_bed && seen_bath {
                            visits += 1;
                        }
                        out_of_bed = false;
                        seen_bath = false;
                    }
                    Body::Sleep(_) => out_of_bed = true,
                    Body::Motion(m) if out_of_bed && m.room == "bathroom" => seen_bath = true,
                    _ => {}
                }
            }
            visits
        })
        .collect()
}

#[test]
fn nightly_bathroom_visits_of_a_drifting_home_rise_as_injected() {
    let c = cfg(3, 60, 0, &[]);
    let home = &crate::homes(3, 7)[1];
    let d = drift(DriftKind::Nocturia, 30, 2.5);
    let plan = plan_home(&c, home, Some(d));
    let before = mean(
        plan.days[2..30]
            .iter()
            .map(|t| t.value(Metric::NightBathroomVisits)),
    );
    let after = mean(
        plan.days[37..60]
            .iter()
            .map(|t| t.value(Metric::NightBathroomVisits)),
    );
    let rise = after - before;
    assert!(
        (1.5..=3.5).contains(&rise),
        "visits {before:.2} -> {after:.2} (usual {:.2})",
        plan.normal.visits
    );
    // Ramping over the week: the first night is barely touched.
    assert!((d.share(30) - 1.0 / 7.0).abs() < 1e-9 && d.share(36) == 1.0 && d.share(29) == 0.0);
    // And the devices say so, night by night.
    let rs = readings(&plan, home);
    let seen = observed_visits(&rs, &plan);
    let planned: Vec<u32> = plan.days.iter().map(|t| t.night_bathroom_visits).collect();
    assert_eq!(seen, planned);
}

#[test]
fn a_quiet_home_stays_within_its_own_normal() {
    let c = cfg(20, 60, 0, &[]);
    for home in &crate::homes(20, 7) {
        let plan = plan_home(&c, home, None);
        let n = &plan.normal;
        assert_eq!(plan.days.len(), 60);
        let ordinary: Vec<&DayTruth> = plan.days.iter().filter(|t| t.odd == 0).collect();
        assert!(ordinary.len() >= 40, "{} ordinary days", ordinary.len());
        assert!(plan.days.iter().all(|t| t.drift_share == 0.0));
        let visits = mean(
            ordinary
                .iter()
                .map(|t| t.value(Metric::NightBathroomVisits)),
        );
        assert!((visits - n.visits).abs() < 0.6, "{visits} vs {}", n.visits);
        for t in &ordinary {
            // Rise within 2.5 sd and the weekend's lie-in.
            let dev = t.rise_time_min - n.rise_min;
            assert!(
                dev.abs() <= 2.5 * n.rise_sd_min + n.weekend_shift_min + 1.0,
                "home {} day {} rises {dev:.0} min off",
                home.index,
                t.day
            );
            assert!((t.resting_rr - n.rr).abs() <= 1.3, "rr {}", t.resting_rr);
            assert!((t.resting_hr - n.hr).abs() <= 3.8, "hr {}", t.resting_hr);
            let tib = t.time_in_bed_min / 60.0;
            assert!((tib - n.in_bed_h).abs() < 2.0, "in bed {tib:.1} h");
        }
        // Weekday and weekend differ only by the elder's own shift.
        let rise = |weekend: bool| {
            mean(
                ordinary
                    .iter()
                    .filter(|t| (t.day % 7 == 4 || t.day % 7 == 5) == weekend)
                    .map(|t| t.rise_time_min),
            )
        };
        assert!((rise(true) - rise(false) - n.weekend_shift_min).abs() < 20.0);
        // Segments are contiguous and cover the run.
        assert_eq!(plan.segs[0].start, EPOCH);
        assert!(plan.segs.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(plan.segs.last().unwrap().end, plan.end);
    }
}

#[test]
fn elders_differ() {
    let c = cfg(30, 3, 0, &[]);
    let normals: Vec<Normal> = crate::homes(30, 7)
        .iter()
        .map(|h| plan_home(&c, h, None).normal)
        .collect();
    let spread = |f: fn(&Normal) -> f64| {
        let v: Vec<f64> = normals.iter().map(f).collect();
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(spread(|n| n.rise_min) > 90.0);
    assert!(spread(|n| n.bed_min()) > 90.0);
    assert!(spread(|n| n.visits) > 1.0);
    assert!(spread(|n| n.hr) > 8.0);
    assert!(spread(|n| n.rr) > 2.0);
    assert!(spread(|n| n.activity) > 0.2);
    assert!(normals.iter().any(|n| n.walks == 0.0) && normals.iter().any(|n| n.walks > 1.0));
}

#[test]
fn activity_and_breathing_drift_as_injected() {
    let c = cfg(2, 60, 0, &[]);
    let home = &crate::homes(2, 7)[0];
    let less = plan_home(&c, home, Some(drift(DriftKind::LessActive, 30, 0.4)));
    let em_days = {
        let ids = home.devices.iter().map(|d| d.device_id.clone()).collect();
        let mut em = Emitter::new(
            &less,
            ids,
            home.location,
            Intervals::coarse(),
            StdRng::seed_from_u64(1),
        );
        let mut out = Vec::new();
        em.play(i64::MAX, &mut out);
        em.day_motions
    };
    let ordinary = |from: usize, to: usize, f: &dyn Fn(&DayTruth) -> f64| {
        mean(less.days[from..to].iter().filter(|t| t.odd == 0).map(f))
    };
    let before = ordinary(0, 30, &|t| f64::from(em_days[t.day as usize]));
    let after = ordinary(40, 60, &|t| f64::from(em_days[t.day as usize]));
    assert!(
        after < before * 0.8 && after > before * 0.4,
        "PIR motions a day {before:.0} -> {after:.0}"
    );
    let moving_before = ordinary(0, 30, &|t| t.active_min);
    let moving_after = ordinary(40, 60, &|t| t.active_min);
    assert!(moving_after < moving_before * 0.75);

    let rr = plan_home(&c, home, Some(drift(DriftKind::BreathingUp, 30, 4.0)));
    let rs = readings(&rr, home);
    // Breathing rate in bed, as the sleep sensor reports it.
    let night_rr = |from: u32, to: u32| {
        let segs: Vec<(i64, i64)> = rr
            .segs
            .iter()
            .filter(|s| s.night && s.day >= from && s.day < to)
            .filter(|s| rr.days[s.day as usize].odd == 0)
            .map(|s| (s.start, s.end))
            .collect();
        mean(rs.iter().filter_map(|r| match &r.body {
            Body::Sleep(s)
                if s.in_bed && segs.iter().any(|&(a, b)| r.ts_ms >= a && r.ts_ms < b) =>
            {
                s.rr.map(f64::from)
            }
            _ => None,
        }))
    };
    let up = night_rr(40, 60) - night_rr(0, 30);
    assert!((3.0..=5.0).contains(&up), "rr up by {up:.2}");
}

#[test]
fn shifted_nights_move_their_own_metric_only() {
    let c = cfg(2, 60, 0, &[]);
    let home = &crate::homes(2, 7)[1];
    let quiet = plan_home(&c, home, None);
    let later = plan_home(&c, home, Some(drift(DriftKind::LaterRise, 30, 75.0)));
    let more = plan_home(&c, home, Some(drift(DriftKind::MoreInBed, 30, 90.0)));
    let avg = |p: &Plan, m: Metric, from: usize, to: usize| {
        mean(
            p.days[from..to]
                .iter()
                .filter(|t| t.odd == 0)
                .map(|t| t.value(m)),
        )
    };
    let change = |p: &Plan, m: Metric| avg(p, m, 40, 60) - avg(p, m, 0, 30);
    let base_rise = change(&quiet, Metric::RiseTime);
    let base_bed = change(&quiet, Metric::TimeInBed);
    assert!((change(&later, Metric::RiseTime) - base_rise - 75.0).abs() < 25.0);
    assert!((change(&later, Metric::TimeInBed) - base_bed).abs() < 25.0);
    assert!((change(&more, Metric::TimeInBed) - base_bed - 90.0).abs() < 25.0);
    assert!((change(&more, Metric::RiseTime) - base_rise).abs() < 25.0);
}

#[test]
fn drifts_are_assigned_in_turn_within_their_ranges() {
    let kinds = [
        DriftKind::Nocturia,
        DriftKind::LessActive,
        DriftKind::BreathingUp,
    ];
    let c = cfg(50, 60, 12, &kinds);
    let a = assign(&c);
    assert_eq!(a, assign(&c), "the same seed, the same drifts");
    let ds: Vec<Drift> = a.iter().flatten().copied().collect();
    assert_eq!(ds.len(), 12);
    for k in kinds {
        assert_eq!(ds.iter().filter(|d| d.kind == k).count(), 4);
    }
    for d in &ds {
        let (lo, hi) = d.kind.magnitude_range();
        assert!((28..=45).contains(&d.onset_day));
        assert!(d.magnitude >= lo && d.magnitude <= hi);
    }
    let other = Config { seed: 8, ..c };
    assert_ne!(a, assign(&other));
}

fn raised(metric: &str, day: f64) -> Raised {
    Raised {
        kind: "trend".into(),
        subject: Some(metric.into()),
        at_ms: EPOCH + (day * DAY as f64) as i64,
    }
}

fn run_of(home: usize, drift: Option<Drift>, trends: Vec<Raised>, others: Vec<Raised>) -> HomeRun {
    HomeRun {
        home,
        elder_id: format!("E{home:05}"),
        normal: Normal::draw(&mut StdRng::seed_from_u64(1)),
        drift,
        trends,
        others,
        readings: 0,
        days: (0..60)
            .map(|day| DayTruth {
                day,
                odd: if day == 20 { VISITOR } else { 0 },
                ..DayTruth::default()
            })
            .collect(),
    }
}

#[test]
fn trend_alerts_are_matched_to_drifts() {
    let runs = vec![
        // Caught 4.5 days in, raised again later, and once too early.
        run_of(
            1,
            Some(drift(DriftKind::Nocturia, 30, 2.0)),
            vec![
                raised("night_bathroom_visits", 34.5),
                raised("night_bathroom_visits", 20.5),
                raised("night_bathroom_visits", 40.0),
            ],
            vec![],
        ),
        // Missed; the alert on another metric is false.
        run_of(
            2,
            Some(drift(DriftKind::BreathingUp, 35, 4.0)),
            vec![raised("day_activity", 50.0)],
            vec![],
        ),
        // A quiet home: every trend alert is false; other alerts counted.
        run_of(
            3,
            None,
            vec![raised("resting_hr", 21.2)],
            vec![
                Raised {
                    kind: "inactivity".into(),
                    subject: None,
                    at_ms: EPOCH + 3 * DAY,
                },
                Raised {
                    kind: "device_offline".into(),
                    subject: Some("gps-00003".into()),
                    at_ms: EPOCH + 4 * DAY,
                },
            ],
        ),
    ];
    let s = measure::score(&runs, 60);
    assert_eq!(s.outcomes.len(), 2);
    let o: &Outcome = &s.outcomes[0];
    assert_eq!(o.metric, "night_bathroom_visits");
    assert_eq!(o.detected_at_ms, Some(EPOCH + 34 * DAY + DAY / 2));
    assert!((o.delay_days().unwrap() - 4.5).abs() < 1e-9);
    assert_eq!(o.repeats, 1);
    assert_eq!(s.outcomes[1].detected_at_ms, None);
    assert_eq!(s.outcomes[1].delay_days(), None);
    let why: Vec<(usize, &str, &str)> = s
        .false_alerts
        .iter()
        .map(|f| (f.home, f.metric.as_str(), f.why))
        .collect();
    assert_eq!(
        why,
        [
            (1, "night_bathroom_visits", "before onset"),
            (2, "day_activity", "no drift"),
            (3, "resting_hr", "no drift"),
        ]
    );
    // Day 20 was a visitor day: the early alert and the quiet home's say so.
    assert_eq!(s.false_alerts[0].odd_days, ["visitor"]);
    assert!(s.false_alerts[1].odd_days.is_empty());
    assert_eq!(s.resident_days(), 180);
    assert!((s.false_per_100_resident_days() - 3.0 * 100.0 / 180.0).abs() < 1e-9);
    assert_eq!(s.others["inactivity"], 1);
    assert_eq!(s.others["device_offline"], 1);
    let j = s.to_json();
    assert_eq!(j["false_trend_alerts"]["count"], 3);
    assert_eq!(j["other_alerts"]["count"], 2);
    let all = j["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "all")
        .unwrap();
    assert_eq!(all["injected"], 2);
    assert_eq!(all["detected"], 1);
    assert_eq!(all["delay_days_p50"], 4.5);
}

#[test]
fn the_readings_are_what_the_devices_would_send() {
    // Each reading, sent as its device would in JSON, decodes to itself.
    let c = cfg(1, 3, 0, &[]);
    let home = &crate::homes(1, 7)[0];
    let plan = plan_home(&c, home, None);
    let rs = readings(&plan, home);
    let mut streams = std::collections::BTreeSet::new();
    for r in &rs {
        let mut body = serde_json::to_value(&r.body).unwrap();
        body["ts"] = r.ts_ms.into();
        body["seq"] = r.seq.into();
        let topic = format!("eldercare/v1/{}/{}", r.device_id, r.stream().as_str());
        let back = eldercare_protocol::decode(&topic, body.to_string().as_bytes(), None, r.ts_ms)
            .unwrap_or_else(|e| panic!("{topic} {body} refused: {e:?}"));
        assert_eq!(&back, r);
        streams.insert(r.stream().as_str());
    }
    assert_eq!(
        streams.into_iter().collect::<Vec<_>>(),
        ["location", "motion", "sleep", "status", "vitals"]
    );
    assert!(rs.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
}

#[test]
fn two_weeks_of_quiet_life_raise_nothing() {
    let c = cfg(6, 14, 0, &[]);
    let hs = crate::homes(6, 7);
    for h in &hs {
        let run = run_home(&c, h, None);
        assert_eq!(run.others, [], "home {}", h.index);
        assert!(run.trends.is_empty());
        assert!(run.readings > 14 * 5000, "{} readings", run.readings);
    }
}
