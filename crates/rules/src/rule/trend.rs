//! `trend`: each elder's own normal. Thresholds catch the emergency that
//! is happening now; what comes before it is often slow (night-time
//! bathroom visits rising days before a urinary infection is diagnosed,
//! breathing in bed creeping up, the days getting stiller). Per elder, a
//! few figures are kept for each day (noon to noon, local time), and a
//! figure beyond the elder's own usual range for days running raises a
//! `trend` alert on the care queue, never the hotline, with the evidence.
//!
//! The usual range is learned from the elder's last `window_days` days
//! with data: the median, plus or minus `k` robust standard deviations
//! (1.4826 x the median absolute deviation), and never narrower than the
//! figure's `min_spread`. A day the home was not heard for much of, or a
//! night nobody was in bed, is not a day of data: silence is not a quiet
//! day.
//!
//! State per elder: seven rings of at most `window_days` numbers (f32)
//! and one day's running counts, about 1 KB at 28 days.

use crate::config::{RuleConfig, TrendRule};
use crate::decision::{Decision, Record, Update, timer_trigger};
use crate::state::ElderSlot;
use crate::text::distance_m;
use eldercare_model::{AlertKind, Body, EpochMs, Reading, Severity, Text};
use serde::{Deserialize, Serialize};

const MIN_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MIN_MS;
/// A care day starts at local noon: a night is never cut in two.
const DAY_START_MS: i64 = 12 * 60 * MIN_MS;
/// Bathroom motion less than this after the previous is the same visit.
const VISIT_GAP_MS: i64 = 10 * MIN_MS;
/// Sleep readings further apart than this say nothing of the time between.
const BED_GAP_MS: i64 = 10 * MIN_MS;
/// Getting up for the day: leaving bed after this local time...
const RISE_FROM_MS: i64 = 3 * 60 * MIN_MS;
/// ...and staying up at least this long.
const RISE_STAY_MS: i64 = 60 * MIN_MS;
/// A GPS fix further than this from home is out of home (indoor fixes
/// wander a few tens of metres).
const OUT_M: f64 = 100.0;
/// In-bed readings of a night needed for a resting heart or breathing rate.
const RESTING_MIN_READINGS: u32 = 30;

/// One daily figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    NightBathroomVisits,
    TimeInBed,
    RiseTime,
    DayActivity,
    TimeOut,
    RestingHr,
    RestingRr,
}

/// Which way a change counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Above,
    Below,
    Either,
}

pub(crate) const METRICS: [Metric; 7] = [
    Metric::NightBathroomVisits,
    Metric::TimeInBed,
    Metric::RiseTime,
    Metric::DayActivity,
    Metric::TimeOut,
    Metric::RestingHr,
    Metric::RestingRr,
];

impl Metric {
    /// The alert's subject.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Metric::NightBathroomVisits => "night_bathroom_visits",
            Metric::TimeInBed => "time_in_bed",
            Metric::RiseTime => "rise_time",
            Metric::DayActivity => "day_activity",
            Metric::TimeOut => "time_out",
            Metric::RestingHr => "resting_hr",
            Metric::RestingRr => "resting_rr",
        }
    }

    fn name(self) -> Text {
        let (en, zh) = match self {
            Metric::NightBathroomVisits => ("Night-time bathroom visits", "夜间如厕次数"),
            Metric::TimeInBed => ("Time in bed (min)", "卧床时间（分钟）"),
            Metric::RiseTime => ("Time of getting up", "起床时间"),
            Metric::DayActivity => ("Daytime movement (PIR motions)", "白天活动（红外感应次数）"),
            Metric::TimeOut => ("Time out of home (min)", "外出时间（分钟）"),
            Metric::RestingHr => ("Resting pulse in bed (bpm)", "卧床静息脉搏（次/分）"),
            Metric::RestingRr => ("Breathing rate in bed (/min)", "卧床呼吸频率（次/分）"),
        };
        Text::new(en, zh)
    }

    fn side(self) -> Side {
        match self {
            Metric::NightBathroomVisits | Metric::RestingHr | Metric::RestingRr => Side::Above,
            Metric::DayActivity | Metric::TimeOut => Side::Below,
            Metric::TimeInBed | Metric::RiseTime => Side::Either,
        }
    }

    /// Days judged together: time out of home follows walks and errands
    /// that come every few days, so one day says little.
    fn smooth_days(self) -> usize {
        match self {
            Metric::TimeOut => 3,
            _ => 1,
        }
    }

    /// `min_spread` is a fraction of the median, not a number of units.
    fn relative(self) -> bool {
        matches!(self, Metric::DayActivity | Metric::TimeOut)
    }

    fn rule(self, cfg: &RuleConfig) -> &TrendRule {
        let t = &cfg.trends;
        match self {
            Metric::NightBathroomVisits => &t.night_bathroom_visits,
            Metric::TimeInBed => &t.time_in_bed,
            Metric::RiseTime => &t.rise_time,
            Metric::DayActivity => &t.day_activity,
            Metric::TimeOut => &t.time_out,
            Metric::RestingHr => &t.resting_hr,
            Metric::RestingRr => &t.resting_rr,
        }
    }

    fn show(self, v: f32) -> String {
        match self {
            Metric::RiseTime => {
                let m = v.round() as i64;
                format!("{:02}:{:02}", m / 60, m % 60)
            }
            Metric::RestingHr | Metric::RestingRr => format!("{v:.1}"),
            _ => format!("{v:.0}"),
        }
    }
}

/// What one day showed so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DayCounts {
    #[serde(default, skip_serializing_if = "zero_u32")]
    bath_visits: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_bath: Option<EpochMs>,
    #[serde(default, skip_serializing_if = "zero_i64")]
    in_bed_ms: i64,
    /// The previous sleep reading: its time and whether in bed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_sleep: Option<(EpochMs, bool)>,
    /// Someone was in bed during the night window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    slept: bool,
    /// Left bed in the morning, not back yet: when, and its minute of the
    /// local day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left_at: Option<(EpochMs, f32)>,
    /// Got up for the day: the minute of the local day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rise: Option<f32>,
    #[serde(default, skip_serializing_if = "zero_u32")]
    motions: u32,
    #[serde(default, skip_serializing_if = "zero_i64")]
    out_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    away_since: Option<EpochMs>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gps: bool,
    #[serde(default, skip_serializing_if = "zero_f64")]
    hr_sum: f64,
    #[serde(default, skip_serializing_if = "zero_u32")]
    hr_n: u32,
    #[serde(default, skip_serializing_if = "zero_f64")]
    rr_sum: f64,
    #[serde(default, skip_serializing_if = "zero_u32")]
    rr_n: u32,
    #[serde(default, skip_serializing_if = "zero_i64")]
    seen_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<EpochMs>,
}

/// One figure's history and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Series {
    /// The last days with data, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<f32>,
    /// The latest days on the watched side of the usual: (day, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    run: Vec<(i64, f32)>,
    /// Evidence of a change accumulated upward and downward, in spreads.
    #[serde(default, skip_serializing_if = "zero_pair")]
    sum: [f32; 2],
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    raised: bool,
    /// Days running back within the usual since it was raised.
    #[serde(default, skip_serializing_if = "zero_u32")]
    back: u32,
    /// Days still changed since it was raised.
    #[serde(default, skip_serializing_if = "zero_u32")]
    held: u32,
    /// The last days' own values, for a figure judged on a few days
    /// together (`Metric::smooth_days`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<f32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Trends {
    /// The care day being counted (days since 1970-01-01 noon, local).
    day: i64,
    counts: DayCounts,
    series: Vec<Series>,
}

fn zero_pair(p: &[f32; 2]) -> bool {
    *p == [0.0, 0.0]
}

fn zero_u32(n: &u32) -> bool {
    *n == 0
}

fn zero_i64(n: &i64) -> bool {
    *n == 0
}

fn zero_f64(n: &f64) -> bool {
    *n == 0.0
}

fn care_day(e: &mut ElderSlot, ts: EpochMs) -> i64 {
    (e.clock.local_ms(ts) - DAY_START_MS).div_euclid(DAY_MS)
}

/// The state, started on the first day it is needed.
fn trends_at(e: &mut ElderSlot, ts: EpochMs) -> &mut Trends {
    let day = care_day(e, ts);
    e.trends.get_or_insert_with(|| {
        Box::new(Trends {
            day,
            counts: DayCounts::default(),
            series: vec![Series::default(); METRICS.len()],
        })
    })
}

/// Counts what a reading shows towards its day. Readings of a day already
/// judged are too late for it and left out.
pub(crate) fn on_reading(e: &mut ElderSlot, r: &Reading, gap_ms: i64, cfg: &RuleConfig) {
    let ts = r.ts_ms;
    let day = care_day(e, ts);
    if trends_at(e, ts).day > day {
        return;
    }
    let night = e.clock.is_night(ts);
    let ms_of_day = e.clock.ms_of_day(ts);
    // A carer moving about the home is not the elder's own activity: a
    // daily visit would raise the figure, or hide the elder's decline.
    let visited = crate::rule::visit::in_progress(e);
    let home = e.home;
    let bathroom = |room: &str| {
        cfg.out_of_bed
            .bathroom_rooms
            .iter()
            .any(|b| b.eq_ignore_ascii_case(room))
    };
    let Some(t) = e.trends.as_deref_mut() else {
        return;
    };
    // Judging the days before happens on the clock (`roll`); a reading of
    // a later day only arrives first when the clock has not moved yet.
    if day > t.day {
        return;
    }
    let c = &mut t.counts;
    if let Some(l) = c.last_seen
        && ts > l
        && ts - l <= gap_ms
    {
        c.seen_ms += ts - l;
    }
    c.last_seen = Some(c.last_seen.map_or(ts, |l| l.max(ts)));
    match &r.body {
        Body::Motion(m) if m.motion => {
            if night && bathroom(&m.room) {
                if c.last_bath.is_none_or(|l| ts - l > VISIT_GAP_MS) {
                    c.bath_visits += 1;
                }
                c.last_bath = Some(c.last_bath.map_or(ts, |l| l.max(ts)));
            }
            if !night && !visited {
                c.motions += 1;
            }
        }
        Body::Sleep(s) => {
            if let Some((prev, was_in)) = c.last_sleep
                && ts >= prev
            {
                if was_in && ts - prev <= BED_GAP_MS {
                    c.in_bed_ms += ts - prev;
                }
                let morning = (RISE_FROM_MS..DAY_START_MS).contains(&ms_of_day);
                if was_in && !s.in_bed && morning && c.rise.is_none() {
                    c.left_at = Some((ts, (ms_of_day / MIN_MS) as f32));
                }
                if !was_in
                    && s.in_bed
                    && let Some((left, minute)) = c.left_at.take()
                    && ts - left >= RISE_STAY_MS
                {
                    c.rise = Some(minute);
                }
            }
            c.last_sleep = Some((ts, s.in_bed));
            if s.in_bed && night {
                c.slept = true;
                if let Some(hr) = s.hr.filter(|&h| h > 0) {
                    c.hr_sum += f64::from(hr);
                    c.hr_n += 1;
                }
                if let Some(rr) = s.rr.filter(|&v| v > 0) {
                    c.rr_sum += f64::from(rr);
                    c.rr_n += 1;
                }
            }
        }
        Body::Location(l) => {
            c.gps = true;
            let away = home.is_some_and(|h| distance_m(h, (l.lat, l.lon)) > OUT_M)
                && l.accuracy_m
                    .is_none_or(|a| a <= cfg.geofence.max_accuracy_m);
            match (away, c.away_since) {
                (true, None) => c.away_since = Some(ts),
                (false, Some(since)) => {
                    c.out_ms += ts - since;
                    c.away_since = None;
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Judges every day that ended by `now` (evidence time).
pub(crate) fn roll(e: &mut ElderSlot, device_id: &str, now: EpochMs, out: &mut Vec<Decision>) {
    let day = care_day(e, now);
    let Some(t) = e.trends.as_deref() else {
        return;
    };
    if day <= t.day {
        return;
    }
    let cfg = e.cfg.clone();
    let Some(mut t) = e.trends.take() else {
        return;
    };
    let end = now;
    let figures = figures(&mut t.counts, end, &cfg, e.home.is_some());
    for (i, m) in METRICS.into_iter().enumerate() {
        let rule = m.rule(&cfg);
        if !rule.enabled {
            continue;
        }
        if let Some(v) = figures[i] {
            let s = &mut t.series[i];
            s.recent.push(v);
            if s.recent.len() > m.smooth_days() {
                s.recent.remove(0);
            }
            let v = s.recent.iter().sum::<f32>() / s.recent.len() as f32;
            judge(e, s, m, rule, t.day, v, device_id, now, out);
        }
    }
    // A day is judged once; days with nothing at all in between are not
    // days of data.
    let carried_away = t.counts.away_since.map(|_| now);
    let carried_sleep = t.counts.last_sleep;
    t.counts = DayCounts {
        away_since: carried_away,
        last_sleep: carried_sleep,
        last_seen: Some(now),
        ..DayCounts::default()
    };
    t.day = day;
    e.trends = Some(t);
}

/// The day's figures, `None` where the day says nothing of one.
fn figures(c: &mut DayCounts, end: EpochMs, cfg: &RuleConfig, has_home: bool) -> [Option<f32>; 7] {
    if (c.seen_ms as f64) < (1.0 - cfg.trends.max_unseen) * DAY_MS as f64 {
        // The home was not heard for much of the day.
        return [None; 7];
    }
    if let Some((left, minute)) = c.left_at
        && c.rise.is_none()
        && end - left >= RISE_STAY_MS
    {
        c.rise = Some(minute);
    }
    if let Some(since) = c.away_since {
        c.out_ms += (end - since).max(0);
    }
    let night = |v: f32| c.slept.then_some(v);
    let mean = |sum: f64, n: u32| {
        (c.slept && n >= RESTING_MIN_READINGS).then(|| (sum / f64::from(n)) as f32)
    };
    [
        night(c.bath_visits as f32),
        night((c.in_bed_ms / MIN_MS) as f32),
        c.rise.filter(|_| c.slept),
        Some(c.motions as f32),
        (has_home && c.gps).then_some((c.out_ms / MIN_MS) as f32),
        mean(c.hr_sum, c.hr_n),
        mean(c.rr_sum, c.rr_n),
    ]
}

/// Where a day's figure stands against the elder's usual: each day adds
/// how many of the elder's own spreads it lies beyond `k` spreads from
/// their median (at most 3 a day, so one odd day cannot raise alone),
/// and a day on the other side takes it back (a CUSUM). Evidence of `h`
/// spreads, with the last `days` days all on the watched side, raises.
#[allow(clippy::too_many_arguments)]
fn judge(
    e: &mut ElderSlot,
    s: &mut Series,
    m: Metric,
    rule: &TrendRule,
    day: i64,
    v: f32,
    device_id: &str,
    now: EpochMs,
    out: &mut Vec<Decision>,
) {
    let c = &e.cfg.trends;
    let (window, min_days, days) = (c.window_days as usize, c.min_days as usize, c.days);
    let (k, h, cap) = (c.k as f32, c.h as f32, c.cap as f32);
    let learn = |s: &mut Series, v: f32| {
        s.values.push(v);
        if s.values.len() > window {
            s.values.remove(0);
        }
    };
    let Some(usual) = Usual::of(&s.values, m, rule).filter(|_| s.values.len() >= min_days) else {
        learn(s, v);
        return;
    };
    let z = (v - usual.median) / usual.spread;
    // Only ordinary days are learnt: a change under way does not become
    // the usual while it is watched.
    if z.abs() < 2.0 {
        learn(s, v);
    }
    let watched = [m.side() != Side::Below, m.side() != Side::Above];
    for (i, sign) in [1.0f32, -1.0].into_iter().enumerate() {
        s.sum[i] = if watched[i] {
            (s.sum[i] + (sign * z).clamp(-cap, cap) - k).max(0.0)
        } else {
            0.0
        };
    }
    let update = |note: Text| {
        Decision::Update(Update {
            elder_id: e.id.to_string(),
            kind: AlertKind::Trend,
            subject: Some(m.key().to_string()),
            summary: None,
            note,
            at_ms: now,
            readings: Vec::new(),
        })
    };
    // The run: the latest days beyond k spreads on one watched side.
    let side = if z > 0.0 { 0 } else { 1 };
    let beyond = watched[side] && z.abs() > k;
    if beyond {
        if s.run
            .first()
            .is_some_and(|&(_, f)| (f > usual.median) != (v > usual.median))
        {
            s.run.clear();
        }
        s.run.push((day, v));
        if s.run.len() > 7 {
            s.run.remove(0);
        }
    } else {
        s.run.clear();
    }
    if s.raised {
        if beyond {
            s.back = 0;
            s.held += 1;
        } else {
            s.back += 1;
        }
        if s.back >= days {
            s.raised = false;
            s.back = 0;
            s.held = 0;
            s.sum = [0.0, 0.0];
            out.push(update(Text::new(
                format!(
                    "{}: back within the usual range for {days} days",
                    m.name().en
                ),
                format!("{}：已连续 {days} 天回到平常范围", m.name().zh),
            )));
        } else if s.held as usize >= window {
            // Changed for a whole window: the elder's normal now.
            s.values.clear();
            s.run.clear();
            s.sum = [0.0, 0.0];
            s.raised = false;
            s.held = 0;
            out.push(update(Text::new(
                format!(
                    "{}: changed for {window} days running; learning it as this elder's usual range from now",
                    m.name().en
                ),
                format!("{}：已连续 {window} 天改变，此后以此为本人平常范围", m.name().zh),
            )));
        }
        return;
    }
    if s.sum[side] < h || (s.run.len() as u32) < days {
        return;
    }
    s.raised = true;
    out.push(Decision::Raise(raise(
        e, s, m, rule, &usual, device_id, now,
    )));
    s.run.clear();
    s.sum = [0.0, 0.0];
}

/// The elder's usual for a figure, from the days before: the median and
/// the spread (1.4826 x the median absolute deviation, a standard
/// deviation robust to odd days), never below the figure's `min_spread`.
struct Usual {
    median: f32,
    spread: f32,
    days: usize,
}

impl Usual {
    fn of(values: &[f32], m: Metric, rule: &TrendRule) -> Option<Usual> {
        if values.is_empty() {
            return None;
        }
        let median = median_of(values.to_vec());
        let mad = median_of(values.iter().map(|v| (v - median).abs()).collect());
        let floor = if m.relative() {
            rule.min_spread * f64::from(median)
        } else {
            rule.min_spread
        };
        let spread = (1.4826 * f64::from(mad)).max(floor).max(1e-3) as f32;
        Some(Usual {
            median,
            spread,
            days: values.len(),
        })
    }
}

fn median_of(mut v: Vec<f32>) -> f32 {
    v.sort_unstable_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn raise(
    e: &mut ElderSlot,
    s: &Series,
    m: Metric,
    rule: &TrendRule,
    usual: &Usual,
    device_id: &str,
    now: EpochMs,
) -> crate::decision::Trigger {
    let name = m.name();
    let days = s.run.len();
    let up = s.run.last().is_some_and(|r| r.1 > usual.median);
    let vals: Vec<String> = s.run.iter().map(|&(_, v)| m.show(v)).collect();
    let (lo, hi) = (
        m.show((usual.median - 2.0 * usual.spread).max(0.0)),
        m.show(usual.median + 2.0 * usual.spread),
    );
    let (en_dir, zh_dir) = if up {
        ("above", "高于")
    } else {
        ("below", "低于")
    };
    let summary = Text::new(
        format!(
            "{} {en_dir} this elder's usual for {days} days running: {} (usual {lo}-{hi}, median {}, from {} days)",
            name.en,
            vals.join(", "),
            m.show(usual.median),
            usual.days
        ),
        format!(
            "{}连续 {days} 天{zh_dir}本人平常水平：{}（平常 {lo}-{hi}，中位数 {}，基于 {} 天）",
            name.zh,
            vals.join("、"),
            m.show(usual.median),
            usual.days
        ),
    );
    let mut t = timer_trigger(
        e,
        device_id,
        AlertKind::Trend,
        Severity::Medium,
        now,
        summary,
    );
    t.subject = Some(m.key().to_string());
    let from = s.run.first().map_or(now, |&(day, _)| {
        // Local noon of the run's first day, as UTC (offset at `now`).
        let offset = e.clock.local_ms(now) - now;
        day * DAY_MS + DAY_START_MS - offset
    });
    t.window = Some((from, now));
    t.factors = s
        .run
        .iter()
        .map(|&(day, v)| format!("day {}: {}", day_label(day), m.show(v)))
        .chain(std::iter::once(format!(
            "usual {lo}-{hi} (median {}, {} days)",
            m.show(usual.median),
            usual.days
        )))
        .collect();
    if rule.shadow {
        t.record = Some(Record::Shadow);
    }
    t
}

/// The local date a care day starts on.
fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS + DAY_START_MS)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}
