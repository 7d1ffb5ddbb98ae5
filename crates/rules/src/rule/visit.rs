//! `visit`, `visit_missed`, `follow_up`: carers' visits to an elder,
//! checked in and out by a tag read at the home (or the provider's system
//! through the API), borne out or not by the home's own sensors.
//!
//! A check-in is matched to the day's window of a plan of the carer's
//! provider (from `early_s` before it opens to `late_max_s` after it
//! closed); signs that someone besides the elder was there are gathered
//! while the visit is open and for `margin_s` after the check-out; then
//! the visit is recorded (borne out, nothing to flag) or raised for the
//! supervisor with its flags, and a follow-up call is raised. A plan's
//! window that closes with no check-in raises `visit_missed`: to the
//! provider, or to the hotline for an elder who lives alone or is frail
//! and whom nothing else shows well. See docs/visits.md.

use crate::config::RuleConfig;
use crate::decision::{Decision, Record, Resolve, Trigger, timer_trigger};
use crate::local::{LocalClock, date};
use crate::profile::PlanProfile;
use crate::rule::inactivity::pirs_blind;
use crate::state::{DeviceSlot, ElderSlot};
use crate::text::minutes;
use eldercare_model::{
    AlertKind, Body, DeviceKind, EpochMs, EventType, Queue, Reading, Severity, SignKind, Text,
    VisitAction, VisitFlag, VisitInfo, VisitSign,
};
use serde::{Deserialize, Serialize};

/// How many days back a plan's windows are looked at after a long gap.
const LOOKBACK_DAYS: i64 = 8;

/// What the engine keeps of an elder's visits and check-ins; allocated
/// for elders with a plan, a check-in window, or a carer at the door.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Visits {
    pub(crate) plans: Vec<PlanProfile>,
    /// Per plan (same order), the close of the latest window judged.
    pub(crate) judged: Vec<EpochMs>,
    /// Visits checked in and not yet out.
    pub(crate) open: Vec<Open>,
    /// Checked out, gathering signs until `margin_s` after.
    pub(crate) closing: Vec<Open>,
    /// Planned visits with a check-in, until their late limit passes.
    pub(crate) visited: Vec<(String, EpochMs)>,
    /// Planned visits raised as missed, until their late limit passes.
    pub(crate) missed: Vec<(String, EpochMs)>,
    pub(crate) last_entrance: Option<EpochMs>,
    /// The latest sign of ordinary life.
    pub(crate) life: Option<Life>,
    /// The close of the latest check-in window judged.
    pub(crate) check_in_judged: Option<EpochMs>,
    /// The window of an open `check_in_missed`.
    pub(crate) check_in_open: Option<(EpochMs, EpochMs)>,
}

/// A visit in progress (or closing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Open {
    pub(crate) info: VisitInfo,
    /// Engine time to close it as not checked out.
    pub(crate) close_at: EpochMs,
    /// The home's motion sensors were not heard at some point.
    pub(crate) blind: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LifeKind {
    Motion,
    Bed,
    Button,
    Visit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Life {
    pub(crate) at: EpochMs,
    pub(crate) kind: LifeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) room: Option<String>,
}

impl Life {
    pub(crate) fn text(&self, clock: &mut LocalClock) -> Text {
        let (at, day) = (clock.hhmm(self.at), date(clock.day_of(self.at)));
        let room = self.room.as_deref().unwrap_or("?");
        match self.kind {
            LifeKind::Motion => Text::new(
                format!("motion in the {room} at {at} on {day}"),
                format!("{day} {at} {room} 有活动"),
            ),
            LifeKind::Bed => Text::new(
                format!("getting into or out of bed at {at} on {day}"),
                format!("{day} {at} 上下床"),
            ),
            LifeKind::Button => Text::new(
                format!("a button press at {at} on {day}"),
                format!("{day} {at} 按键"),
            ),
            LifeKind::Visit => Text::new(
                format!("a carer's visit at {at} on {day}"),
                format!("{day} {at} 护理员上门"),
            ),
        }
    }
}

impl Visits {
    /// The plans the registry holds now; a plan seen before keeps what
    /// was judged of it, a new one starts at `now` (its past windows are
    /// not judged).
    pub(crate) fn set_plans(&mut self, plans: Vec<PlanProfile>, now: EpochMs) {
        let judged = plans
            .iter()
            .map(|p| {
                self.plans
                    .iter()
                    .position(|o| o.plan_id == p.plan_id)
                    .and_then(|i| self.judged.get(i).copied())
                    .unwrap_or(now)
            })
            .collect();
        self.plans = plans;
        self.judged = judged;
    }
}

/// The plan window `day` (a local day number) holds for a plan, if any.
fn window(clock: &mut LocalClock, p: &PlanProfile, day: i64) -> Option<(EpochMs, EpochMs)> {
    p.days[crate::local::weekday(day)].then(|| {
        (
            clock.at_minute(day, p.start_min),
            clock.at_minute(day, p.end_min),
        )
    })
}

/// The allocated visit state of an elder.
pub(crate) fn state(e: &mut ElderSlot) -> &mut Visits {
    e.visits.get_or_insert_with(Default::default)
}

/// Whether a carer's visit is in progress (the inactivity rule waits).
pub(crate) fn in_progress(e: &ElderSlot) -> bool {
    e.visits.as_ref().is_some_and(|v| !v.open.is_empty())
}

/// Looks at a reading for visits and signs of life: called before the
/// other rules, so `in_bed` and `away` are still what they were.
pub(crate) fn observe(
    e: &mut ElderSlot,
    r: &Reading,
    carers: &dyn Fn(&str) -> Option<String>,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    if let Body::Event(ev) = &r.body
        && ev.kind == EventType::Visit
        && let (Some(carer), Some(action)) = (&ev.carer, ev.action)
    {
        let provider = carers(carer).unwrap_or_default();
        check(e, r.ts_ms, carer, &provider, action, &r.device_id, cfg, out);
        return;
    }
    let Some(v) = e.visits.as_mut() else {
        return;
    };
    let life = match &r.body {
        Body::Motion(m) if m.motion => {
            let entrance = cfg
                .visits
                .entrance_rooms
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&m.room));
            if entrance {
                v.last_entrance = v.last_entrance.max(Some(r.ts_ms));
            }
            let bedroom = cfg
                .visits
                .bedroom_rooms
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&m.room));
            let margin = i64::from(cfg.visits.margin_s) * 1000;
            for o in v.open.iter_mut().chain(v.closing.iter_mut()) {
                let (Some(i), left) = (o.info.check_in, o.info.check_out) else {
                    continue;
                };
                let near = |t: EpochMs| (r.ts_ms - t).abs() <= margin;
                if entrance && (near(i) || left.is_some_and(near)) {
                    sign(&mut o.info, SignKind::Entrance, r.ts_ms, &m.room);
                }
                let during = r.ts_ms >= i && left.is_none_or(|o| r.ts_ms <= o);
                if during && e.in_bed == Some(true) && !bedroom {
                    sign(&mut o.info, SignKind::MotionWhileInBed, r.ts_ms, &m.room);
                }
                if during && e.away {
                    sign(&mut o.info, SignKind::MotionWhileAway, r.ts_ms, &m.room);
                }
            }
            Some((LifeKind::Motion, Some(m.room.clone())))
        }
        Body::Sleep(s) if e.in_bed.is_some_and(|b| b != s.in_bed) => {
            for o in v.open.iter_mut() {
                if o.info.check_in.is_some_and(|i| r.ts_ms >= i) {
                    sign(&mut o.info, SignKind::BedChange, r.ts_ms, "bed");
                }
            }
            Some((LifeKind::Bed, None))
        }
        Body::Event(ev) if matches!(ev.kind, EventType::Sos | EventType::CheckIn) => {
            Some((LifeKind::Button, None))
        }
        _ => None,
    };
    if let Some((kind, room)) = life {
        alive(e, r.ts_ms, kind, room, out);
    }
}

/// Keeps the first sign of each kind.
fn sign(info: &mut VisitInfo, kind: SignKind, at: EpochMs, room: &str) {
    if info.signs.iter().all(|s| s.kind != kind) {
        info.signs.push(VisitSign {
            kind,
            at,
            room: Some(room.to_string()),
        });
    }
}

/// A sign of ordinary life at `at`: remembered, and noted on an open
/// `check_in_missed` whose window it falls in (late readings).
fn alive(
    e: &mut ElderSlot,
    at: EpochMs,
    kind: LifeKind,
    room: Option<String>,
    out: &mut Vec<Decision>,
) {
    let Some(v) = e.visits.as_mut() else {
        return;
    };
    if v.life.as_ref().is_none_or(|l| at >= l.at) {
        v.life = Some(Life { at, kind, room });
    }
    if let Some((from, to)) = v.check_in_open
        && (from..=to).contains(&at)
    {
        v.check_in_open = None;
        let life = v.life.clone();
        if let Some(l) = life {
            let t = l.text(&mut e.clock);
            out.push(Decision::Update(crate::decision::Update {
                elder_id: e.id.to_string(),
                kind: AlertKind::CheckInMissed,
                subject: None,
                summary: None,
                note: Text::new(
                    format!("A sign of life in the window arrived late: {}", t.en),
                    format!("迟到的数据显示窗口内有生活迹象：{}", t.zh),
                ),
                at_ms: at,
                readings: Vec::new(),
            }));
        }
    }
}

/// A carer's tag read: in or out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    e: &mut ElderSlot,
    at: EpochMs,
    carer: &str,
    provider: &str,
    action: VisitAction,
    via: &str,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    state(e);
    match action {
        VisitAction::In => check_in(e, at, carer, provider, via, cfg, out),
        VisitAction::Out => check_out(e, at, carer, provider, via, cfg, out),
    }
    alive(e, at, LifeKind::Visit, None, out);
}

fn check_in(
    e: &mut ElderSlot,
    at: EpochMs,
    carer: &str,
    provider: &str,
    via: &str,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let vc = &cfg.visits;
    let v = e.visits.as_mut().expect("allocated by check");
    if v.open
        .iter()
        .any(|o| o.info.carer_id.as_deref() == Some(carer))
    {
        // A second read of the same tag: the visit is in progress.
        return;
    }
    let (early, late) = (
        i64::from(vc.early_s) * 1000,
        i64::from(vc.late_max_s) * 1000,
    );
    let best = match_plan(&mut e.clock, v, &e.id, provider, at, early, late);
    let mut info = VisitInfo {
        provider_id: provider.to_string(),
        carer_id: Some(carer.to_string()),
        check_in: Some(at),
        via: Some(via.to_string()),
        ..VisitInfo::default()
    };
    let mut planned = None;
    if let Some((i, day, w)) = best {
        planned = Some(v.plans[i].length_min);
        if stand_for_plan(v, &mut info, &e.id, (i, day, w), late) {
            let hhmm = e.clock.hhmm(at);
            let by = minutes((at - w.1).max(0));
            out.push(Decision::Resolve(Resolve {
                elder_id: e.id.to_string(),
                kind: AlertKind::VisitMissed,
                subject: Some(info.visit_id.clone()),
                outcome: crate::decision::Outcome::Cleared,
                note: if at > w.1 {
                    Text::new(
                        format!("Carer {carer} checked in at {hhmm}, {} late", by.en),
                        format!("护理员 {carer} 于 {hhmm} 签到，迟到 {}", by.zh),
                    )
                } else {
                    Text::new(
                        format!("Carer {carer}'s check-in at {hhmm}, in the window, arrived late"),
                        format!("护理员 {carer} 在时段内 {hhmm} 的签到迟到上传"),
                    )
                },
                at_ms: at,
            }));
        }
    } else {
        info.visit_id = format!("{}/{carer}/{at}", e.id);
        info.day = date(e.clock.day_of(at));
    }
    if let Some(t) = v.last_entrance
        && (at - t).abs() <= i64::from(vc.margin_s) * 1000
    {
        sign(&mut info, SignKind::Entrance, t, "entrance");
    }
    let longest =
        (i64::from(vc.max_visit_s) * 1000).max(i64::from(planned.unwrap_or(0)) * 3 * 60_000);
    v.open.push(Open {
        info,
        close_at: at + longest,
        blind: false,
    });
    e.due = e.due.min(at + longest);
}

/// The nearest window of a plan of `provider` not visited yet that a tag
/// read at `at` may stand for: from `early` before it opens to `late`
/// after it closes. (plan index, local day, window)
fn match_plan(
    clock: &mut LocalClock,
    v: &Visits,
    elder: &str,
    provider: &str,
    at: EpochMs,
    early: i64,
    late: i64,
) -> Option<(usize, i64, (EpochMs, EpochMs))> {
    let today = clock.day_of(at);
    let mut best: Option<(i64, usize, i64, (EpochMs, EpochMs))> = None;
    for (i, p) in v.plans.iter().enumerate() {
        if p.provider_id != provider {
            continue;
        }
        for day in [today - 1, today] {
            let Some(w) = window(clock, p, day) else {
                continue;
            };
            if at < w.0 - early || at > w.1 + late {
                continue;
            }
            let id = planned_id(elder, &p.plan_id, day);
            if v.visited.iter().any(|(x, _)| *x == id) {
                continue;
            }
            let dist = if at < w.0 {
                w.0 - at
            } else {
                (at - w.1).max(0)
            };
            if best.is_none_or(|b| dist < b.0) {
                best = Some((dist, i, day, w));
            }
        }
    }
    best.map(|(_, i, day, w)| (i, day, w))
}

/// Makes `info` the visit of plan `i` on `day` (its window `w`), kept as
/// visited until `late` past the window's close; whether a
/// `visit_missed` raised for it is now to be cleared.
fn stand_for_plan(
    v: &mut Visits,
    info: &mut VisitInfo,
    elder: &str,
    (i, day, w): (usize, i64, (EpochMs, EpochMs)),
    late: i64,
) -> bool {
    let p = &v.plans[i];
    info.visit_id = planned_id(elder, &p.plan_id, day);
    info.plan_id = Some(p.plan_id.clone());
    info.service = Some(p.service.clone());
    info.day = date(day);
    info.window = Some(w);
    info.planned_min = Some(p.length_min);
    v.visited.push((info.visit_id.clone(), w.1 + late));
    match v.missed.iter().position(|(x, _)| *x == info.visit_id) {
        Some(ix) => {
            v.missed.swap_remove(ix);
            true
        }
        None => false,
    }
}

fn planned_id(elder: &str, plan: &str, day: i64) -> String {
    format!("{elder}/{plan}/{}", date(day))
}

fn check_out(
    e: &mut ElderSlot,
    at: EpochMs,
    carer: &str,
    provider: &str,
    via: &str,
    cfg: &RuleConfig,
    out: &mut Vec<Decision>,
) {
    let margin = i64::from(cfg.visits.margin_s) * 1000;
    let v = e.visits.as_mut().expect("allocated by check");
    let Some(ix) = v
        .open
        .iter()
        .position(|o| o.info.carer_id.as_deref() == Some(carer))
    else {
        // Out with no in: flagged at once, for the plan's window it may
        // stand for (a carer who forgot to tap in), or none.
        let vc = &cfg.visits;
        let late = i64::from(vc.late_max_s + vc.max_visit_s) * 1000;
        let early = i64::from(vc.early_s) * 1000;
        let best = match_plan(&mut e.clock, v, &e.id, provider, at, early, late);
        let today = e.clock.day_of(at);
        let mut info = VisitInfo {
            visit_id: format!("{}/{carer}/{at}", e.id),
            provider_id: provider.to_string(),
            carer_id: Some(carer.to_string()),
            day: date(today),
            check_out: Some(at),
            via: Some(via.to_string()),
            flags: vec![VisitFlag::NoCheckIn],
            ..VisitInfo::default()
        };
        if let Some(matched) = best
            && stand_for_plan(v, &mut info, &e.id, matched, late)
        {
            let hhmm = e.clock.hhmm(at);
            out.push(Decision::Resolve(Resolve {
                    elder_id: e.id.to_string(),
                    kind: AlertKind::VisitMissed,
                    subject: Some(info.visit_id.clone()),
                    outcome: crate::decision::Outcome::Cleared,
                    note: Text::new(
                        format!(
                            "Carer {carer} checked out at {hhmm} without checking in: flagged for the supervisor"
                        ),
                        format!("护理员 {carer} 于 {hhmm} 未签到即签退：已提交督导"),
                    ),
                    at_ms: at,
                }));
        }
        raise_visit(e, info, at, out);
        return;
    };
    let mut o = v.open.swap_remove(ix);
    o.info.check_out = Some(at);
    if let Some(t) = v.last_entrance
        && (at - t).abs() <= margin
    {
        sign(&mut o.info, SignKind::Entrance, t, "entrance");
    }
    v.closing.push(o);
    e.due = e.due.min(at + margin);
}

/// The visit timers: visits to close, windows closed without a check-in.
pub(crate) fn tick(
    e: &mut ElderSlot,
    devices: &[DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    let Some(mut v) = e.visits.take() else {
        return;
    };
    let cfg = e.cfg.clone();
    let margin = i64::from(cfg.visits.margin_s) * 1000;
    let blind_now = home_blind(e, devices);
    for o in v.open.iter_mut().chain(v.closing.iter_mut()) {
        o.blind |= blind_now;
    }
    // Visits never checked out.
    let mut i = 0;
    while i < v.open.len() {
        if now >= v.open[i].close_at {
            let mut o = v.open.swap_remove(i);
            o.info.flags.push(VisitFlag::NoCheckOut);
            v.closing.push(o);
        } else {
            *due = (*due).min(v.open[i].close_at);
            i += 1;
        }
    }
    // Visits done gathering signs.
    let mut closed = Vec::new();
    v.closing.retain(|o| {
        let end = o.info.check_out.unwrap_or(o.close_at) + margin;
        let done = o.info.has(VisitFlag::NoCheckOut) || now >= end;
        if done {
            closed.push(o.clone());
        } else {
            *due = (*due).min(end);
        }
        !done
    });
    v.visited.retain(|(_, until)| *until > now);
    v.missed.retain(|(_, until)| *until > now);
    missed(e, &mut v, devices, now, due, out);
    crate::rule::check_in::tick(e, &mut v, devices, now, due, out);
    e.visits = Some(v);
    for o in closed {
        finish(e, o, &cfg, out);
    }
}

/// Whether the home cannot show whether anyone is there: offline, every
/// motion sensor silent, or no motion sensor at all.
fn home_blind(e: &ElderSlot, devices: &[DeviceSlot]) -> bool {
    let any_pir = e
        .devices
        .iter()
        .any(|&d| devices[d as usize].kind == DeviceKind::Pir);
    e.home_offline || !any_pir || pirs_blind(e, devices)
}

/// Plan windows that closed by `now` with no check-in.
fn missed(
    e: &mut ElderSlot,
    v: &mut Visits,
    devices: &[DeviceSlot],
    now: EpochMs,
    due: &mut EpochMs,
    out: &mut Vec<Decision>,
) {
    let late = i64::from(e.cfg.visits.late_max_s) * 1000;
    let today = e.clock.day_of(now);
    for i in 0..v.plans.len() {
        let p = v.plans[i].clone();
        let from = v.judged[i];
        let first = e.clock.day_of(from).max(today - LOOKBACK_DAYS);
        for day in first..=today + 1 {
            let Some(w) = window(&mut e.clock, &p, day) else {
                continue;
            };
            if w.1 <= from {
                continue;
            }
            if w.1 > now {
                *due = (*due).min(w.1);
                break;
            }
            v.judged[i] = w.1;
            let id = planned_id(&e.id, &p.plan_id, day);
            if v.visited.iter().any(|(x, _)| *x == id) {
                continue;
            }
            v.missed.push((id.clone(), w.1 + late));
            let info = VisitInfo {
                visit_id: id,
                provider_id: p.provider_id.clone(),
                plan_id: Some(p.plan_id.clone()),
                service: Some(p.service.clone()),
                day: date(day),
                window: Some(w),
                planned_min: Some(p.length_min),
                ..VisitInfo::default()
            };
            out.push(Decision::Raise(missed_trigger(e, v, devices, info, now)));
        }
        // Nothing due within the look-ahead (a plan on one weekday only):
        // look again tomorrow.
        *due = (*due).min(now + 86_400_000);
    }
}

fn missed_trigger(
    e: &mut ElderSlot,
    v: &Visits,
    devices: &[DeviceSlot],
    info: VisitInfo,
    now: EpochMs,
) -> Trigger {
    let w = info.window.unwrap_or((now, now));
    let (from, to) = (e.clock.hhmm(w.0), e.clock.hhmm(w.1));
    let service = info.service.clone().unwrap_or_default();
    let well_ms = i64::from(e.cfg.visits.well_within_s) * 1000;
    let blind = home_blind(e, devices);
    let well = !blind && v.life.as_ref().is_some_and(|l| now - l.at <= well_ms);
    let to_hotline = e.alone_or_frail && !well;
    let last = match &v.life {
        Some(l) => {
            let t = l.text(&mut e.clock);
            (
                format!("last sign of life: {}", t.en),
                format!("最后生活迹象：{}", t.zh),
            )
        }
        None => ("no sign of life seen yet".into(), "尚无生活迹象".into()),
    };
    let (blind_en, blind_zh) = if blind {
        (
            "; the home's sensors are not heard, so a check-in at the door may not have arrived",
            "；家中设备无法感知，门口的签到可能尚未上传",
        )
    } else {
        ("", "")
    };
    let first = e
        .devices
        .first()
        .map(|&d| devices[d as usize].id.to_string())
        .unwrap_or_default();
    let mut t = timer_trigger(
        e,
        &first,
        AlertKind::VisitMissed,
        if to_hotline {
            Severity::High
        } else {
            Severity::Medium
        },
        now,
        Text::new(
            format!(
                "No carer of provider {} checked in for the {service} visit due {from}–{to} ({}{blind_en})",
                info.provider_id, last.0
            ),
            format!(
                "服务商 {} 的护理员未在 {from}–{to} 签到（{}服务；{}{blind_zh}）",
                info.provider_id, service, last.1
            ),
        ),
    );
    t.subject = Some(info.visit_id.clone());
    t.window = info.window;
    t.route = to_hotline.then_some(Queue::Hotline);
    t.visit = Some(Box::new(info));
    t
}

/// A visit done gathering signs: flagged or recorded, then its follow-up.
fn finish(e: &mut ElderSlot, o: Open, cfg: &RuleConfig, out: &mut Vec<Decision>) {
    let mut info = o.info;
    if let (Some((_, end)), Some(i)) = (info.window, info.check_in)
        && i > end
    {
        info.flags.push(VisitFlag::Late);
    }
    if let (Some(len), Some(planned)) = (info.length_min(), info.planned_min)
        && len * 100.0 < f64::from(planned) * f64::from(cfg.visits.short_pct)
    {
        info.flags.push(VisitFlag::Short);
    }
    if info.signs.is_empty() {
        info.flags.push(if o.blind {
            VisitFlag::Unverified
        } else {
            VisitFlag::Uncorroborated
        });
    }
    let at = info.check_out.or(info.check_in).unwrap_or(o.close_at);
    if let Some(out_at) = info.check_out {
        // The carer saw the elder as they left.
        e.activity_at = e.activity_at.max(out_at);
    }
    let follow = cfg.visits.follow_up && info.check_in.is_some() && info.check_out.is_some();
    let copy = follow.then(|| info.clone());
    raise_visit(e, info, at, out);
    if let Some(info) = copy {
        out.push(Decision::Raise(follow_up(e, info, at)));
    }
}

fn raise_visit(e: &mut ElderSlot, info: VisitInfo, at: EpochMs, out: &mut Vec<Decision>) {
    let summary = visit_text(e, &info);
    let via = info.via.clone().unwrap_or_default();
    let mut t = timer_trigger(
        e,
        &via,
        AlertKind::Visit,
        if info.flags.is_empty() {
            Severity::Low
        } else {
            Severity::Medium
        },
        at,
        summary,
    );
    t.subject = Some(info.visit_id.clone());
    t.window = info.check_in.zip(info.check_out);
    if info.flags.is_empty() {
        t.record = Some(Record::Visit);
    }
    t.factors = info
        .signs
        .iter()
        .map(|s| {
            let hhmm = e.clock.hhmm(s.at);
            format!("{} {hhmm}", s.kind.as_str())
        })
        .collect();
    t.visit = Some(Box::new(info));
    out.push(Decision::Raise(t));
}

fn visit_text(e: &mut ElderSlot, info: &VisitInfo) -> Text {
    let carer = info.carer_id.as_deref().unwrap_or("?");
    let service = info.service.as_deref().unwrap_or("unplanned");
    let span = match (info.check_in, info.check_out) {
        (Some(i), Some(o)) => format!("{}–{}", e.clock.hhmm(i), e.clock.hhmm(o)),
        (Some(i), None) => format!("{}–?", e.clock.hhmm(i)),
        (None, Some(o)) => format!("?–{}", e.clock.hhmm(o)),
        (None, None) => "?".into(),
    };
    let length = match (info.length_min(), info.planned_min) {
        (Some(l), Some(p)) => format!(", {l:.0} of {p} min planned"),
        (Some(l), None) => format!(", {l:.0} min"),
        _ => String::new(),
    };
    if info.flags.is_empty() {
        Text::new(
            format!(
                "Visit by carer {carer} ({service}) {span}{length}, borne out by the home's sensors"
            ),
            format!("护理员 {carer} 上门（{service}）{span}{length}，家中传感器佐证"),
        )
    } else {
        let flags: Vec<&str> = info.flags.iter().map(|f| f.as_str()).collect();
        let (why_en, why_zh) = flag_reasons(info);
        Text::new(
            format!(
                "Visit by carer {carer} ({service}) {span}{length} flagged: {} ({why_en})",
                flags.join(", ")
            ),
            format!(
                "护理员 {carer} 上门（{service}）{span}{length} 存疑：{}（{why_zh}）",
                flags.join("、")
            ),
        )
    }
}

fn flag_reasons(info: &VisitInfo) -> (String, String) {
    let mut en = Vec::new();
    let mut zh = Vec::new();
    for f in &info.flags {
        let (a, b) = match f {
            VisitFlag::Late => ("checked in after the window closed", "时段结束后才签到"),
            VisitFlag::Short => ("much shorter than planned", "远短于计划时长"),
            VisitFlag::Uncorroborated => (
                "the home's sensors were heard and showed no one: no motion at the entrance, none while the elder was in bed or out",
                "家中传感器在线但未见他人：门口无活动，卧床或外出时家中无活动",
            ),
            VisitFlag::Unverified => (
                "the home's motion sensors were not heard during the visit",
                "上门期间家中人体传感器无法感知",
            ),
            VisitFlag::NoCheckIn => ("checked out without checking in", "未签到即签退"),
            VisitFlag::NoCheckOut => ("never checked out", "未签退"),
        };
        en.push(a);
        zh.push(b);
    }
    (en.join("; "), zh.join("；"))
}

fn follow_up(e: &mut ElderSlot, info: VisitInfo, at: EpochMs) -> Trigger {
    let carer = info.carer_id.clone().unwrap_or_default();
    let service = info.service.clone().unwrap_or_else(|| "unplanned".into());
    let span = match (info.check_in, info.check_out) {
        (Some(i), Some(o)) => format!("{} {}–{}", info.day, e.clock.hhmm(i), e.clock.hhmm(o)),
        _ => info.day.clone(),
    };
    let via = info.via.clone().unwrap_or_default();
    let mut t = timer_trigger(
        e,
        &via,
        AlertKind::FollowUp,
        Severity::Low,
        at,
        Text::new(
            format!(
                "Follow-up call about the {service} visit by carer {carer} (provider {}) on {span}: did the carer come and stay, was the {service} done, is the elder satisfied?",
                info.provider_id
            ),
            format!(
                "回访：{span} 服务商 {} 护理员 {carer} 的{service}上门——护理员是否到场、服务是否完成、老人是否满意？",
                info.provider_id
            ),
        ),
    );
    t.subject = Some(info.visit_id.clone());
    t.window = info.check_in.zip(info.check_out);
    t.visit = Some(Box::new(info));
    t
}
