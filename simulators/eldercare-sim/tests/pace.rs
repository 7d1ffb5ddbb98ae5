//! The rate plan against what the homes then send: every home played
//! over the whole run at the planned intervals must give the target
//! (N homes x their devices at those intervals = the rate asked), at any
//! time of day, with no device above its ceiling; and a fleet too small
//! for the target says so, and how many homes would do.
use eldercare_rules::Rules;
use eldercare_sim::life::{HomeSim, Intervals};
use eldercare_sim::pace::{self, Shortfall};
use eldercare_sim::{Home, homes};

/// 2026-11-23 16:00 UTC: midnight in Shanghai, where the homes are.
const MIDNIGHT: i64 = 1_795_363_200_000;
const HOUR: i64 = 3_600_000;

/// What every home sends over `[t0, t0 + ms)`: (messages/s, busiest
/// device's messages/s).
fn played(hs: &[Home], iv: Intervals, t0: i64, ms: i64) -> (f64, f64) {
    let rules = (**Rules::defaults().global()).clone();
    let secs = ms as f64 / 1000.0;
    let (mut total, mut busiest) = (0usize, 0f64);
    for h in hs {
        let mut out = Vec::new();
        HomeSim::new(h, 1, &rules, iv, t0, &[]).advance(t0 + ms, &mut out);
        total += out.len();
        let mut per = vec![0usize; h.devices.len()];
        for m in &out {
            per[m.device] += 1;
        }
        busiest = busiest.max(*per.iter().max().unwrap() as f64 / secs);
    }
    (total as f64 / secs, busiest)
}

#[test]
fn the_planned_intervals_send_the_target_at_any_time_of_day() {
    let rules = (**Rules::defaults().global()).clone();
    let hs = homes(200, 1);
    // Asleep (03:00), getting up (07:10), by day (15:00, a walk for
    // some), going to bed (21:10) in Shanghai.
    for at in [3 * HOUR, 7 * HOUR + 600_000, 15 * HOUR, 21 * HOUR + 600_000] {
        let t0 = MIDNIGHT + at;
        let p = pace::plan(&hs, 1, &rules, t0, 60_000, 20_000.0, 40.0);
        assert_eq!(p.ceiling_per_s, None, "at +{}h", at / HOUR);
        let (rate, busiest) = played(&hs, p.intervals, t0, 60_000);
        assert!(
            (rate - 20_000.0).abs() <= 20_000.0 * 2.0 * pace::TOLERANCE,
            "at +{} min: {rate:.0} msg/s with {:?} (planned {:.0})",
            at / 60_000,
            p.intervals,
            p.planned_per_s
        );
        assert!(busiest <= 40.0, "busiest device {busiest:.1} msg/s");
    }
}

#[test]
fn a_low_target_is_met_with_slower_intervals_than_usual() {
    let rules = (**Rules::defaults().global()).clone();
    let hs = homes(100, 1);
    let t0 = MIDNIGHT + 15 * HOUR;
    // Ten minutes: sampled in three slices, the later ones with their
    // devices long on (no start-up reports counted three times).
    let p = pace::plan(&hs, 1, &rules, t0, 600_000, 10.0, 40.0);
    let (rate, _) = played(&hs, p.intervals, t0, 600_000);
    assert!(
        p.intervals.vitals_ms > Intervals::default().vitals_ms,
        "{p:?}"
    );
    assert!(
        (rate - 10.0).abs() <= 10.0 * 0.1,
        "{rate} msg/s, planned {}",
        p.planned_per_s
    );
}

#[test]
fn too_few_homes_are_told_how_many_would_do() {
    let rules = (**Rules::defaults().global()).clone();
    let t0 = MIDNIGHT + 15 * HOUR;
    let p = pace::plan(&homes(20, 1), 1, &rules, t0, 60_000, 20_000.0, 40.0);
    let ceiling = p.ceiling_per_s.expect("20 homes cannot send 20,000 msg/s");
    assert!(ceiling < 20_000.0 && p.planned_per_s == ceiling);
    let need = p.homes_needed.unwrap();
    // Every device at its ceiling: the most there is, per home.
    assert!(need > 20 && need < 1_000, "{need} homes");
    let (rate, busiest) = played(&homes(20, 1), p.intervals, t0, 60_000);
    assert!((rate - ceiling).abs() <= ceiling * 0.03);
    assert!(busiest <= 40.0);
    // And that many do.
    let more = pace::plan(&homes(need, 1), 1, &rules, t0, 60_000, 20_000.0, 40.0);
    assert_eq!(more.ceiling_per_s, None);
    // The run is judged short for the devices, not for itself.
    let why = pace::judge(&p, ceiling, pace::Behind::default());
    assert!(matches!(why[..], [Shortfall::TooFewDevices { .. }]));
}
