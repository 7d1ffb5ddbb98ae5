//! Providers, their carers, each home's visit plans, and what every
//! planned visit turns out to be: the ground truth of a `visits` run.
//!
//! Each planned occurrence (a plan's window on one day) gets one
//! [`Behaviour`] drawn from the seed, and with it the times the carer's
//! tag is read, when they come in and leave, where they move about, and
//! the flags docs/visits.md says the engine must put on it.
use crate::drift::plan::{DAY, MIN, S, TZ_OFFSET};
use eldercare_model::VisitFlag;
use eldercare_rules::PlanProfile;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

/// What a carer does about one planned visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behaviour {
    /// Walks in through the entrance, checks in inside the window, moves
    /// about the kitchen, bathroom and living room, stays the planned
    /// length (±10 %), checks out and leaves through the entrance.
    OnTime,
    /// The same, checking in 10–90 min after the window closed.
    Late,
    /// The same, staying 15–40 % of the planned length.
    Short,
    /// Never comes.
    Missed,
    /// The tag is read from outside the door, in and (the planned length
    /// later) out: nobody enters the home.
    Outside,
    /// Comes and works as on time, and forgets to check out.
    NoCheckOut,
    /// Comes and works as on time, forgets to check in, checks out.
    NoCheckIn,
}

impl Behaviour {
    pub const ALL: [Behaviour; 7] = [
        Behaviour::OnTime,
        Behaviour::Late,
        Behaviour::Short,
        Behaviour::Missed,
        Behaviour::Outside,
        Behaviour::NoCheckOut,
        Behaviour::NoCheckIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::OnTime => "on_time",
            Behaviour::Late => "late",
            Behaviour::Short => "short",
            Behaviour::Missed => "missed",
            Behaviour::Outside => "outside",
            Behaviour::NoCheckOut => "no_check_out",
            Behaviour::NoCheckIn => "no_check_in",
        }
    }

    /// The flags of its `visit` alert (none for a visit borne out; `None`
    /// when there is no `visit` alert at all: a missed visit).
    pub fn expected_flags(self) -> Option<Vec<VisitFlag>> {
        match self {
            Behaviour::OnTime => Some(vec![]),
            Behaviour::Late => Some(vec![VisitFlag::Late]),
            Behaviour::Short => Some(vec![VisitFlag::Short]),
            Behaviour::Outside => Some(vec![VisitFlag::Uncorroborated]),
            Behaviour::NoCheckOut => Some(vec![VisitFlag::NoCheckOut]),
            Behaviour::NoCheckIn => Some(vec![VisitFlag::NoCheckIn]),
            Behaviour::Missed => None,
        }
    }

    /// A `visit_missed` is raised at the window's close: left open when
    /// nobody checks in, resolved (`cleared`) by a late check-in (or a
    /// check-out with no check-in after the close: see
    /// [`Occurrence::expects_missed`]).
    pub fn expects_missed(self) -> bool {
        matches!(self, Behaviour::Missed | Behaviour::Late)
    }

    /// Checked in and out: a follow-up call is raised.
    pub fn expects_follow_up(self) -> bool {
        matches!(
            self,
            Behaviour::OnTime | Behaviour::Late | Behaviour::Short | Behaviour::Outside
        )
    }

    /// The carer is in the home (footprints).
    pub fn enters(self) -> bool {
        !matches!(self, Behaviour::Missed | Behaviour::Outside)
    }
}

/// How often each behaviour is drawn, in percent (any total).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(Behaviour, u32)>);

impl Default for Mix {
    /// 70 % on time, the rest spread.
    fn default() -> Mix {
        Mix(vec![
            (Behaviour::OnTime, 70),
            (Behaviour::Late, 6),
            (Behaviour::Short, 6),
            (Behaviour::Missed, 5),
            (Behaviour::Outside, 6),
            (Behaviour::NoCheckOut, 4),
            (Behaviour::NoCheckIn, 3),
        ])
    }
}

impl Mix {
    /// The default mix with `on_time_pct` percent on time, the others
    /// keeping their proportions (in hundredths of a percent).
    pub fn with_on_time(on_time_pct: u32) -> Mix {
        let mut mix = Mix::default();
        let pct = on_time_pct.min(100);
        let rest: u32 = mix.0.iter().skip(1).map(|(_, w)| w).sum();
        mix.0[0].1 = pct * 100;
        for (_, w) in mix.0.iter_mut().skip(1) {
            *w = *w * (100 - pct) * 100 / rest.max(1);
        }
        mix
    }

    pub fn draw(&self, rng: &mut StdRng) -> Behaviour {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.random_range(0..total.max(1));
        for &(b, w) in &self.0 {
            if x < w {
                return b;
            }
            x -= w;
        }
        Behaviour::OnTime
    }
}

/// A provider and its carers.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub provider_id: String,
    pub carers: Vec<String>,
}

/// The providers of a run, `P1..PK`, with a few carers each (`C{p}{nn}`:
/// one for about five homes' plans, at least three).
pub fn providers(k: usize, homes: usize) -> Vec<Provider> {
    let per = (homes * 3 / 2 / k.max(1) / 5).max(3);
    (1..=k.max(1))
        .map(|p| Provider {
            provider_id: format!("P{p}"),
            carers: (1..=per).map(|c| format!("C{p:02}{c:03}")).collect(),
        })
        .collect()
}

/// Every `(carer, provider)` pair, for [`eldercare_rules::Engine::set_carers`].
pub fn carer_pairs(ps: &[Provider]) -> Vec<(String, String)> {
    ps.iter()
        .flat_map(|p| p.carers.iter().map(|c| (c.clone(), p.provider_id.clone())))
        .collect()
}

/// One of a home's plans, with the carer the provider sends.
#[derive(Debug, Clone, PartialEq)]
pub struct HomePlan {
    pub plan: PlanProfile,
    pub carer_id: String,
}

/// What the registry says about a home's visits.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeVisits {
    pub elder_id: String,
    pub plans: Vec<HomePlan>,
    /// Flagged `lives_alone` or `frail`.
    pub alone_or_frail: bool,
    /// A daily wellbeing check-in window, local minutes.
    pub check_in: Option<(u16, u16)>,
}

/// Morning and afternoon windows (local minutes): far enough apart that
/// a late visit of the morning (up to 90 min after its close, plus its
/// length) never reaches the afternoon's earliest check-in.
const MORNING: [(u16, u16); 3] = [
    (8 * 60 + 30, 9 * 60),
    (9 * 60, 9 * 60 + 30),
    (10 * 60, 10 * 60 + 30),
];
const AFTERNOON: [(u16, u16); 3] = [
    (14 * 60, 14 * 60 + 30),
    (15 * 60, 15 * 60 + 30),
    (16 * 60, 16 * 60 + 30),
];
pub(crate) const SERVICES: [&str; 4] = ["bathing", "meals", "cleaning", "medication"];
const LENGTHS: [u32; 5] = [30, 45, 60, 75, 90];
const WEEKDAYS: [[bool; 7]; 4] = [
    [true, false, true, false, true, false, false],
    [false, true, false, true, false, true, false],
    [true, false, false, true, false, false, false],
    [true, true, true, true, true, false, false],
];

/// Draws a home's plans: one or two (a morning and an afternoon one),
/// daily or on some weekdays, of providers drawn at random; each plan's
/// carer a different one.
pub fn home_visits(rng: &mut StdRng, elder_id: &str, ps: &[Provider]) -> HomeVisits {
    let n = if rng.random_bool(0.4) { 2 } else { 1 };
    let morning_first = rng.random_bool(0.6);
    let mut plans: Vec<HomePlan> = Vec::new();
    for i in 0..n {
        let slots = if (i == 0) == morning_first {
            &MORNING
        } else {
            &AFTERNOON
        };
        let (start_min, end_min) = *slots.choose(rng).expect("windows");
        let p = &ps[rng.random_range(0..ps.len())];
        let carer = loop {
            let c = p.carers.choose(rng).expect("carers").clone();
            if plans.iter().all(|h| h.carer_id != c) {
                break c;
            }
        };
        let days = if rng.random_bool(0.5) {
            [true; 7]
        } else {
            *WEEKDAYS.choose(rng).expect("weekdays")
        };
        let service = SERVICES.choose(rng).expect("services");
        plans.push(HomePlan {
            plan: PlanProfile {
                plan_id: format!("V{}", i + 1),
                provider_id: p.provider_id.clone(),
                days,
                start_min,
                end_min,
                length_min: *LENGTHS.choose(rng).expect("lengths"),
                service: (*service).to_string(),
            },
            carer_id: carer,
        });
    }
    HomeVisits {
        elder_id: elder_id.to_string(),
        plans,
        alone_or_frail: rng.random_bool(0.4),
        check_in: rng.random_bool(0.25).then_some((8 * 60, 10 * 60 + 30)),
    }
}

/// How long a carer's movements take around a visit: a month's visits
/// are planned in minutes and hours ([`Timing::month`]); a rehearsal
/// against a real server, in minutes and seconds under a rule file
/// scaled to it ([`Timing::for_rules`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Tag reads and stays fall on whole multiples of this.
    pub grain_ms: i64,
    /// An on-time check-in comes at least this long before the window
    /// closes (so it is in before the close is judged).
    pub close_slack_ms: i64,
    /// A late check-in comes this long after the window closed (range,
    /// inclusive).
    pub late_ms: (i64, i64),
    /// Through the entrance this long before the check-in, and out this
    /// long after the check-out (within the rules' `margin_s`).
    pub enter_ms: i64,
    pub leave_ms: i64,
    /// The first footprint this long after the check-in (range), then
    /// one every `step_ms` (range).
    pub first_ms: (i64, i64),
    pub step_ms: (i64, i64),
    /// The follow-up call this long after the check-out (range).
    pub call_ms: (i64, i64),
    /// The elder stays in and up from this long before the carer's first
    /// sign (or the window) to this long after the last.
    pub protect_ms: (i64, i64),
}

impl Timing {
    /// A month's visits (the `visits` mode): late by 10–90 min, through
    /// the door a minute before the tag, about every 40 s to 3 min in a
    /// room, called back 15 min to 3 h after.
    pub fn month() -> Timing {
        Timing {
            grain_ms: MIN,
            close_slack_ms: 0,
            late_ms: (10 * MIN, 90 * MIN),
            enter_ms: MIN,
            leave_ms: 30 * S,
            first_ms: (30 * S, 90 * S),
            step_ms: (40 * S, 3 * MIN),
            call_ms: (15 * MIN, 180 * MIN),
            protect_ms: (45 * MIN, 20 * MIN),
        }
    }

    /// A rehearsal's visits of a few minutes under `v`: to the second;
    /// late by 30 s to a minute short of `late_max_s`; through the door
    /// within half of `margin_s` of the tag; a footprint every 20–60 s;
    /// the elder in and up from 2 min before to a minute past the margin.
    pub fn for_rules(v: &eldercare_rules::VisitRules) -> Timing {
        let margin = i64::from(v.margin_s) * S;
        let late_max = i64::from(v.late_max_s) * S;
        Timing {
            grain_ms: S,
            close_slack_ms: 20 * S,
            late_ms: (30 * S, (late_max - MIN).max(30 * S)),
            enter_ms: (margin / 2).min(MIN),
            leave_ms: (margin / 2).min(30 * S),
            first_ms: (10 * S, 30 * S),
            step_ms: (20 * S, MIN),
            call_ms: (15 * MIN, 180 * MIN),
            protect_ms: (2 * MIN, margin + MIN),
        }
    }
}

/// One planned occurrence and what became of it: the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// `{elder}/{plan}/{YYYY-MM-DD}`.
    pub visit_id: String,
    pub elder_id: String,
    pub plan_id: String,
    pub provider_id: String,
    pub carer_id: String,
    pub service: String,
    /// Local date `YYYY-MM-DD`.
    pub day: String,
    pub window: (i64, i64),
    pub planned_min: u32,
    pub behaviour: Behaviour,
    /// Tag reads (whole minutes).
    pub check_in: Option<i64>,
    pub check_out: Option<i64>,
    /// The carer through the entrance, in and out (not for `outside`).
    pub enter: Option<i64>,
    pub leave: Option<i64>,
    /// The carer's motion in the home: `(at, room index)`.
    pub footprints: Vec<(i64, usize)>,
    /// The follow-up call: when, and what the elder says (`None`: not
    /// called by the end of the run).
    pub call: Option<(i64, &'static str)>,
}

impl Occurrence {
    /// Minutes between the tag reads, when both were read.
    pub fn minutes(&self) -> Option<i64> {
        Some((self.check_out? - self.check_in?) / MIN)
    }

    /// The span the elder must stay in and up for the home's sensors to
    /// tell only the carer's signs: from `protect_ms.0` (45 min in a
    /// month) before the window (or the carer's arrival) to
    /// `protect_ms.1` (20 min) after the window's close (or their
    /// departure).
    pub fn protected(&self, t: &Timing) -> (i64, i64) {
        let from = [Some(self.window.0), self.enter, self.check_in]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.window.0);
        let to = [Some(self.window.1), self.leave, self.check_out]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.window.1);
        (from - t.protect_ms.0, to + t.protect_ms.1)
    }

    /// The subject of its `visit` alert: the planned id (a check-out with
    /// no check-in stands for the plan's window too).
    pub fn visit_subject(&self) -> String {
        self.visit_id.clone()
    }

    /// Whether a `visit_missed` is raised at the window's close: nobody
    /// checked in by then (a check-out with no check-in at or after the close
    /// resolves it, `cleared`).
    pub fn expects_missed(&self) -> bool {
        self.behaviour.expects_missed()
            || (self.behaviour == Behaviour::NoCheckIn
                && self.check_out.is_some_and(|o| o >= self.window.1))
    }
}

/// The local day number (days since 1970-01-01 in Asia/Shanghai) of `ms`.
pub fn local_day(ms: i64) -> i64 {
    (ms + TZ_OFFSET).div_euclid(DAY)
}

/// Local midnight of a local day number.
pub fn midnight_of(day: i64) -> i64 {
    day * DAY - TZ_OFFSET
}

/// A local day number as `YYYY-MM-DD`.
pub fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Monday = 0.
pub fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// The occurrences of a home's plans on local days `days`, each with
/// its behaviour and the carer's movements.
pub fn occurrences(
    rng: &mut StdRng,
    hv: &HomeVisits,
    days: std::ops::Range<i64>,
    mix: &Mix,
) -> Vec<Occurrence> {
    let mut out = Vec::new();
    for day in days {
        for hp in &hv.plans {
            let p = &hp.plan;
            if !p.days[weekday(day)] {
                continue;
            }
            let m = midnight_of(day);
            let window = (
                m + i64::from(p.start_min) * MIN,
                m + i64::from(p.end_min) * MIN,
            );
            let behaviour = mix.draw(rng);
            let t = Timing::month();
            out.push(occurrence(rng, hv, hp, &date(day), window, behaviour, &t));
        }
    }
    out
}

/// One occurrence of plan `hp` of a home on local date `day`
/// (`YYYY-MM-DD`), its window `window`, as `behaviour` makes it: the
/// carer's tag reads, movements and follow-up call, timed by `t`.
pub fn occurrence(
    rng: &mut StdRng,
    hv: &HomeVisits,
    hp: &HomePlan,
    day: &str,
    window: (i64, i64),
    behaviour: Behaviour,
    t: &Timing,
) -> Occurrence {
    let p = &hp.plan;
    let g = t.grain_ms.max(1);
    // The plan's length in grains.
    let planned = i64::from(p.length_min) * MIN / g;
    let in_window = |rng: &mut StdRng| {
        window.0 + rng.random_range(0..((window.1 - window.0 - t.close_slack_ms) / g).max(1)) * g
    };
    let about = |rng: &mut StdRng| (planned as f64 * rng.random_range(0.9..1.1)).round() as i64;
    let (arrive, stay) = match behaviour {
        Behaviour::Missed => (None, 0),
        Behaviour::Late => (
            Some(window.1 + rng.random_range(t.late_ms.0 / g..=t.late_ms.1 / g) * g),
            about(rng),
        ),
        Behaviour::Short => (
            Some(in_window(rng)),
            ((planned as f64 * rng.random_range(0.15..0.40)).round() as i64).max(1),
        ),
        _ => (Some(in_window(rng)), about(rng)),
    };
    let mut o = Occurrence {
        visit_id: format!("{}/{}/{}", hv.elder_id, p.plan_id, day),
        elder_id: hv.elder_id.clone(),
        plan_id: p.plan_id.clone(),
        provider_id: p.provider_id.clone(),
        carer_id: hp.carer_id.clone(),
        service: p.service.clone(),
        day: day.to_string(),
        window,
        planned_min: p.length_min,
        behaviour,
        check_in: None,
        check_out: None,
        enter: None,
        leave: None,
        footprints: Vec::new(),
        call: None,
    };
    let Some(t_in) = arrive else {
        return o;
    };
    let t_out = t_in + stay * g;
    o.check_in = (behaviour != Behaviour::NoCheckIn).then_some(t_in);
    o.check_out = (behaviour != Behaviour::NoCheckOut).then_some(t_out);
    if behaviour.enters() {
        // Through the entrance just before the tag (a minute in a
        // month), out just after; moving about in between.
        o.enter = Some(t_in - t.enter_ms);
        o.leave = Some(t_out + t.leave_ms);
        let mut at = t_in + rng.random_range(t.first_ms.0..t.first_ms.1);
        let mut room = *[1usize, 2, 3].choose(rng).expect("rooms");
        while at < t_out - t.first_ms.0 {
            o.footprints.push((at, room));
            if rng.random_bool(0.3) {
                room = *[1usize, 2, 3].choose(rng).expect("rooms");
            }
            at += rng.random_range(t.step_ms.0..t.step_ms.1);
        }
    }
    if behaviour.expects_follow_up() {
        // The hotline calls some minutes after the follow-up is raised
        // (5 min after the check-out); a few are not called in the run.
        let bad = matches!(behaviour, Behaviour::Short | Behaviour::Outside);
        let r = rng.random_range(0..100);
        let outcome = match (bad, r) {
            (_, 0..2) => None,
            (false, 2..86) | (true, 2..42) => Some("satisfied"),
            (false, 86..92) | (true, 42..86) => Some("complaint"),
            _ => Some("no_answer"),
        };
        o.call = outcome.map(|x| {
            (
                t_out + rng.random_range(t.call_ms.0 / MIN..t.call_ms.1 / MIN) * MIN,
                x,
            )
        });
    }
    o
}
