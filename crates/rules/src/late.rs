//! Episodes shown by readings that arrived late (a gateway back from an
//! outage uploading what it kept): judged on their own time by every rule,
//! then held until the upload is done, so that an episode the same upload
//! shows already over is recorded for the care managers instead of rung
//! at the hotline, and one still going is raised, marked late.

use crate::decision::{Decision, Record, Trigger};
use crate::state::ElderSlot;
use crate::text::minutes;
use eldercare_model::{AlertKind, Body, EpochMs, Reading, Text};

/// Episodes held per elder at most; an upload showing more raises the
/// rest at once (marked late) rather than grow the state.
const PENDING_KEPT: usize = 8;

/// A late episode waiting for the end of the upload. Kept in the engine
/// snapshot: a restart during the wait must not lose it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub(crate) trigger: Trigger,
    /// What the late data showed after it: the episode over, and how.
    pub(crate) over: Option<Text>,
    /// Changes to it the late data showed.
    #[serde(default)]
    pub(crate) updates: Vec<Decision>,
}

/// Routes the decisions from `start` on: raises whose event time is late
/// are held (or, held already, folded); a resolve or update of a held
/// episode is applied to it. Maintenance alerts pass: they are about
/// devices, judged on arrival.
pub(crate) fn hold_late(
    e: &mut ElderSlot,
    out: &mut Vec<Decision>,
    start: usize,
    now: EpochMs,
    late_ms: i64,
) {
    if out.len() <= start {
        return;
    }
    let decided: Vec<Decision> = out.drain(start..).collect();
    for d in decided {
        match d {
            Decision::Raise(mut t)
                if !t.kind.is_maintenance() && t.record.is_none() && now - t.at_ms >= late_ms =>
            {
                let by = now - t.at_ms;
                t.late_ms = Some(by);
                let m = minutes(by);
                t.summary
                    .en
                    .push_str(&format!(" (shown by readings that arrived {} late)", m.en));
                t.summary
                    .zh
                    .push_str(&format!("（由迟到 {} 的数据显示）", m.zh));
                if !inferred(t.kind) {
                    // What a device said outright (an SOS, a fall, a held
                    // vital sign) is rung at once, marked late: an old SOS
                    // still needs a call, and its cancel, if uploaded too,
                    // resolves it as it would live.
                    out.push(Decision::Raise(t));
                    continue;
                }
                if e.pending.iter().any(|p| same(&p.trigger, &t)) {
                    // A second occurrence in the same upload: the first
                    // already stands for the episode.
                    continue;
                }
                if e.pending.len() >= PENDING_KEPT {
                    out.push(Decision::Raise(t));
                    continue;
                }
                e.pending.push(Pending {
                    trigger: t,
                    over: None,
                    updates: Vec::new(),
                });
            }
            Decision::Resolve(r) => match find(e, r.kind, r.subject.as_deref()) {
                Some(p) => p.over = Some(r.note),
                None => out.push(Decision::Resolve(r)),
            },
            Decision::Update(u) => {
                let over = u.kind == AlertKind::GeofenceExit;
                match find(e, u.kind, u.subject.as_deref()) {
                    Some(p) if over => p.over = Some(u.note),
                    Some(p) => p.updates.push(Decision::Update(u)),
                    None => out.push(Decision::Update(u)),
                }
            }
            d => out.push(d),
        }
    }
}

/// What a late reading shows over that the rules do not resolve
/// themselves: back in bed ends an out-of-bed episode, movement a stretch
/// without activity.
pub(crate) fn ended_by(e: &mut ElderSlot, r: &Reading) {
    if e.pending.is_empty() {
        return;
    }
    let at = e.clock.hhmm(r.ts_ms);
    match &r.body {
        Body::Sleep(s) if s.in_bed => {
            if let Some(p) = find(e, AlertKind::OutOfBedTooLong, None)
                && r.ts_ms > p.trigger.at_ms
            {
                p.over.get_or_insert_with(|| {
                    Text::new(
                        format!("Back in bed at {at}, shown by readings that arrived late"),
                        format!("{at} 已回床（迟到数据显示）"),
                    )
                });
            }
        }
        Body::Motion(m) if m.motion => {
            if let Some(p) = find(e, AlertKind::Inactivity, None)
                && r.ts_ms > p.trigger.at_ms
            {
                p.over.get_or_insert_with(|| {
                    Text::new(
                        format!("Moving again at {at}, shown by readings that arrived late"),
                        format!("{at} 已恢复活动（迟到数据显示）"),
                    )
                });
            }
        }
        _ => {}
    }
}

/// The upload is done: raise what it showed still going, record what it
/// showed over.
pub(crate) fn flush(e: &mut ElderSlot, out: &mut Vec<Decision>) {
    for p in e.pending.drain(..) {
        let mut t = p.trigger;
        if let Some(over) = p.over {
            t.record = Some(Record::OverInLateData(over));
            out.push(Decision::Raise(t));
        } else {
            out.push(Decision::Raise(t));
            out.extend(p.updates);
        }
    }
    e.seen.late_at = None;
}

/// Episodes inferred from absence: held until the upload is done, since
/// the same upload may show them over.
fn inferred(kind: AlertKind) -> bool {
    matches!(kind, AlertKind::OutOfBedTooLong | AlertKind::Inactivity)
}

fn same(a: &Trigger, b: &Trigger) -> bool {
    a.kind == b.kind && a.subject == b.subject
}

fn find<'a>(
    e: &'a mut ElderSlot,
    kind: AlertKind,
    subject: Option<&str>,
) -> Option<&'a mut Pending> {
    e.pending
        .iter_mut()
        .find(|p| p.trigger.kind == kind && p.trigger.subject.as_deref() == subject)
}
