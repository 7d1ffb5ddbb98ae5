//! The demo's carers' home visits: one provider's carers in a few homes
//! of their own, each doing one thing a supervisor must see, played by
//! the simulator's visits ([`eldercare_sim::visits::live`]) with the
//! `[visits]` section of deploy/demo-rules.toml: one-minute windows and
//! one-minute visits, every alert due within four minutes.
use eldercare_model::AlertKind;
use eldercare_rules::RuleConfig;
use eldercare_sim::visits::live;
use eldercare_sim::visits::plan::Behaviour;
use eldercare_sim::{Home, Night};
use std::collections::HashSet;

const MIN: i64 = 60_000;
/// Every window opens on the first whole minute at least this long into
/// the run (the plans are registered by then), so by 70 s in.
pub(super) const LEAD_MS: i64 = 10_000;
/// The plans' check-in windows and lengths, minutes (the least a plan
/// can say).
const WINDOW_MIN: u32 = 1;
const LENGTH_MIN: u32 = 1;

/// One scripted visit: the home, what its carer does, and what the
/// demo's operator should see of it.
pub(super) struct ScriptedVisit {
    pub home: usize,
    pub what: Behaviour,
    pub expect: &'static str,
}

const fn visit(home: usize, what: Behaviour, expect: &'static str) -> ScriptedVisit {
    ScriptedVisit { home, what, expect }
}

/// The visits, each in a home of its own with no episode.
pub(super) const VISITS: [ScriptedVisit; 4] = [
    visit(
        20,
        Behaviour::OnTime,
        "visit recorded (borne out at the entrance), then its follow_up call",
    ),
    visit(
        21,
        Behaviour::Short,
        "visit flagged short (supervision), then its follow_up call",
    ),
    visit(
        22,
        Behaviour::Late,
        "visit_missed at the close, cleared by the check-in 30 s later; visit flagged late, then its follow_up call",
    ),
    visit(
        23,
        Behaviour::Missed,
        "visit_missed MEDIUM on the provider queue: nobody came",
    ),
];

/// The scripted visits whose homes are in a fleet of `homes`.
pub(super) fn in_fleet(homes: usize) -> Vec<&'static ScriptedVisit> {
    VISITS.iter().filter(|v| v.home <= homes).collect()
}

/// What the simulator is told of the visits (none: no carers).
pub(super) fn options(visits: &[&ScriptedVisit]) -> Option<live::Options> {
    (!visits.is_empty()).then(|| live::Options {
        providers: 1,
        window_min: WINDOW_MIN,
        length_min: LENGTH_MIN,
        lead_ms: LEAD_MS,
        scripted: visits.iter().map(|v| (v.home, v.what)).collect(),
        ..live::Options::default()
    })
}

/// Carers come by day: the visited homes' night starts hours from
/// `now_ms`, and a home whose clock is about to pass midnight is moved
/// an hour west, so no window crosses it. Call before registering.
pub(super) fn stage(homes: &mut [Home], visits: &[&ScriptedVisit], now_ms: i64) {
    for v in visits {
        let h = &mut homes[v.home - 1];
        let local_min = (now_ms.div_euclid(MIN) + i64::from(h.utc_offset_h) * 60).rem_euclid(1440);
        if local_min >= 23 * 60 + 50 {
            h.utc_offset_h -= 1;
        }
        h.night = Night::not_covering(now_ms, h.utc_offset_h);
    }
}

/// For each visit, the provider, carer and service, and the latest its
/// alerts are due, seconds after a run starting at `now_ms`: its window
/// opening as late as it may (`LEAD_MS` and a minute in). The carers'
/// times within a window come from `seed` alone, so this is the run's.
pub(super) fn latest_due(
    homes: &[Home],
    visits: &[&ScriptedVisit],
    rules: &RuleConfig,
    seed: u64,
    now_ms: i64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let Some(o) = options(visits) else {
        return Ok(Vec::new());
    };
    let t0 = now_ms.div_euclid(MIN) * MIN - LEAD_MS;
    let s = live::schedule(homes, &HashSet::new(), t0, 3_600_000, rules, seed, &o)?;
    Ok(s.homes
        .iter()
        .map(|v| {
            let o = &v.occurrence;
            let due = live::alerts_due(o, rules)
                .iter()
                .map(|(_, t)| *t)
                .max()
                .unwrap_or(o.window.1);
            let who = format!("{}, carer {}, {}", o.provider_id, o.carer_id, o.service);
            (who, ((due - t0) as u64).div_ceil(1000))
        })
        .collect())
}

/// The kinds of alert a scripted visit raises.
pub(super) fn kinds(what: Behaviour) -> Vec<AlertKind> {
    let mut k = Vec::new();
    if what.expects_missed() {
        k.push(AlertKind::VisitMissed);
    }
    if what.expected_flags().is_some() {
        k.push(AlertKind::Visit);
    }
    if what.expects_follow_up() {
        k.push(AlertKind::FollowUp);
    }
    k
}

/// The visits' lines of the demo's "Scripted" list.
pub(super) fn print(visits: &[&ScriptedVisit], due: &[(String, u64)]) {
    if visits.is_empty() {
        println!("  (carers' visits left out: they need --homes 23 or more.)");
        return;
    }
    println!(
        "Carers' home visits, {WINDOW_MIN}-minute plans; every window opens on the first whole \
         minute {} s or more from now (by +{} s):",
        LEAD_MS / 1000,
        LEAD_MS / 1000 + 60
    );
    for (v, (who, due)) in visits.iter().zip(due) {
        let kinds: Vec<&str> = kinds(v.what).iter().map(|k| k.as_str()).collect();
        println!(
            "  home {:<3} {:<12} -> by +{:>3} s  {} [{who}; {}]",
            v.home,
            v.what.name(),
            due,
            v.expect,
            kinds.join(" + ")
        );
    }
    if visits.len() < VISITS.len() {
        println!(
            "  ({} visits left out: they need --homes 23 or more.)",
            VISITS.len() - visits.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DEMO_RULES, SCRIPT, SEED};
    use super::*;
    use eldercare_rules::Rules;

    #[test]
    fn each_visit_has_a_home_of_its_own_with_no_episode() {
        let episodes: HashSet<usize> = SCRIPT.iter().map(|s| s.home).collect();
        let homes: HashSet<usize> = VISITS.iter().map(|v| v.home).collect();
        assert_eq!(homes.len(), VISITS.len());
        assert!(
            homes
                .iter()
                .all(|h| (1..=50).contains(h) && !episodes.contains(h))
        );
        let whats: HashSet<Behaviour> = VISITS.iter().map(|v| v.what).collect();
        for b in [
            Behaviour::OnTime,
            Behaviour::Short,
            Behaviour::Late,
            Behaviour::Missed,
        ] {
            assert!(whats.contains(&b), "{b:?}");
        }
        assert_eq!(in_fleet(22).len(), 3);
        assert!(options(&in_fleet(19)).is_none());
    }

    #[test]
    fn every_visit_alert_is_due_within_four_minutes() {
        let rules = Rules::parse(DEMO_RULES).unwrap();
        let r = rules.global();
        let visits = in_fleet(50);
        // By day, and a minute before the homes' midnight.
        for now in [1_795_395_617_000, 1_795_363_175_000] {
            let mut homes = eldercare_sim::homes(50, SEED);
            stage(&mut homes, &visits, now);
            let due = latest_due(&homes, &visits, r, SEED, now).unwrap();
            assert_eq!(due.len(), VISITS.len());
            for (v, (who, due)) in visits.iter().zip(&due) {
                assert!(*due <= 240, "home {} ({who}): due at {due} s", v.home);
                assert!(who.starts_with("P1, carer C01"), "{who}");
            }
        }
        // The carers' behaviours are what the demo rules judge them.
        let o = options(&visits).unwrap();
        let homes = eldercare_sim::homes(50, SEED);
        let s = live::schedule(&homes, &HashSet::new(), 0, 3_600_000, r, SEED, &o).unwrap();
        for x in &s.homes {
            let oc = &x.occurrence;
            let planned = i64::from(oc.planned_min) * MIN;
            if let (Some(i), Some(out)) = (oc.check_in, oc.check_out) {
                let short = (out - i) * 100 < planned * i64::from(r.visits.short_pct);
                assert_eq!(short, oc.behaviour == Behaviour::Short, "{oc:?}");
            }
            if oc.behaviour == Behaviour::Late {
                let i = oc.check_in.unwrap();
                assert!(
                    i > oc.window.1 && i - oc.window.1 <= i64::from(r.visits.late_max_s) * 1000
                );
            }
            if oc.behaviour.enters() {
                let margin = i64::from(r.visits.margin_s) * 1000;
                assert!(oc.check_in.unwrap() - oc.enter.unwrap() <= margin);
            }
        }
    }
}
