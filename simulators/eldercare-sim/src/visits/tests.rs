use super::measure::{self, Counts};
use super::plan::*;
use super::*;
use crate::drift::plan::{Act, HOUR, MIN};

fn cfg(homes: usize, days: u32) -> Config {
    Config {
        homes,
        // 2026-11-23, a Monday.
        first_day: local_day(EPOCH),
        days,
        providers: 3,
        seed: 7,
        rules: Rules::defaults(),
        mix: Mix::default(),
        intervals: Intervals::coarse(),
        tick_ms: 30_000,
        threads: 2,
    }
}

#[test]
fn every_flag_is_found_none_is_false_and_the_months_match_the_truth() {
    let c = cfg(20, 7);
    let runs = run(&c, &|_| {});
    let s = measure::score(&runs, c.days);
    let t = s.total();
    assert!(t.visits >= 100, "{} visits", t.visits);
    // Every behaviour drawn at least once in 20 homes × 7 days.
    for b in Behaviour::ALL {
        assert!(
            s.by_behaviour.get(&b).is_some_and(|r| r.visits > 0),
            "{b:?}"
        );
    }
    assert_eq!(s.not_exact, 0, "{:#?}", s.misses);
    assert_eq!(t.found, t.expected);
    assert_eq!(t.false_flags, 0);
    assert_eq!(t.follow_ups_found, t.follow_ups_expected);
    assert_eq!(s.unmatched, 0);
    assert!(
        s.others.is_empty(),
        "{:?} {:#?}",
        s.others,
        s.other_examples
    );
    assert!(s.differences.is_empty(), "{:#?}", s.differences);
    let all = s.truth.values().fold(Counts::default(), |mut a, c| {
        a.planned += c.planned;
        a.missed += c.missed;
        a.follow_ups += c.follow_ups;
        a
    });
    assert_eq!(all.planned, t.visits);
    assert!(all.missed > 0 && all.follow_ups > 0);
}

#[test]
fn a_month_starts_on_its_first_day_and_weekday_plans_keep_to_their_days() {
    // November 2026: the 1st is a Sunday.
    let first = local_day(EPOCH) - 22;
    assert_eq!(date(first), "2026-11-01");
    assert_eq!(weekday(first), 6);
    let ps = providers(2, 10);
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..20 {
        let hv = home_visits(&mut rng, &format!("E{i}"), &ps);
        assert!(!hv.plans.is_empty() && hv.plans.len() <= 2);
        if let [a, b] = &hv.plans[..] {
            assert_ne!(a.carer_id, b.carer_id, "one carer a plan");
        }
        let occ = occurrences(&mut rng, &hv, first..first + 30, &Mix::default());
        for o in &occ {
            let p = hv
                .plans
                .iter()
                .find(|h| h.plan.plan_id == o.plan_id)
                .unwrap();
            let day = local_day(o.window.0);
            assert!(p.plan.days[weekday(day)]);
            assert!(o.day.starts_with("2026-11"), "{}", o.day);
            assert_eq!(o.visit_id, format!("E{i}/{}/{}", o.plan_id, o.day));
        }
    }
}

#[test]
fn the_elder_stays_in_and_up_around_a_visit() {
    let c = cfg(1, 7);
    let home = &crate::homes(1, 7)[0];
    let spans = emit::merge(vec![
        (c.start() + 8 * HOUR, c.start() + 12 * HOUR),
        (c.start() + 11 * HOUR, c.start() + 13 * HOUR),
        (c.start() + DAY + 14 * HOUR, c.start() + DAY + 16 * HOUR),
    ]);
    assert_eq!(spans.len(), 2);
    let plan = life_plan(&c, home, &spans);
    // Contiguous, from the first day's midnight.
    assert_eq!(plan.segs[0].start, c.start());
    for w in plan.segs.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    for s in &plan.segs {
        for &(a, b) in &spans {
            if s.start < b && s.end > a {
                assert!(
                    matches!(s.act, Act::Room { moving: true, .. }),
                    "{:?} in a visit span",
                    s.act
                );
                assert!(s.end - s.start <= 15 * MIN);
            }
        }
    }
}
