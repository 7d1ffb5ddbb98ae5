//! The readings of a home with carers' visits: the elder's ordinary
//! life as `drift` plans and plays it ([`crate::drift::plan`],
//! [`crate::drift::emit`]), kept in and up around each visit, and the
//! carer's own footprints and tag reads.
//!
//! What the home's sensors can tell a carer from the elder by is the
//! entrance at the check-in and check-out, and motion while the elder is
//! in bed or out (docs/visits.md). So the elder's plan is adjusted
//! around every planned visit: from 45 min before its window (or the
//! carer's arrival) to 20 min after its close (or the carer's leaving),
//! the elder is at home and up, moving about the living room and
//! kitchen: no walk out through the entrance, no getting into or out of
//! bed. Elders stay in for a planned visit. Their devices report as
//! always (status every 5 min), so the home is never blind.
use super::plan::Occurrence;
use crate::drift::plan::{Act, BATHROOM, DAY, ENTRANCE, KITCHEN, LIVING, MIN, Plan, Seg};
use crate::life::{BTN, PIR, ROOMS};
use eldercare_model::{Body, DeviceEvent, EventType, Motion, Reading, VisitAction};
use rand::Rng;
use rand::rngs::StdRng;

/// Moves a plan made from [`crate::drift::plan::EPOCH`] by `shift_ms`
/// (whole weeks, so its weekdays stay), and cuts what lies before
/// `from`.
pub fn shift(mut plan: Plan, shift_ms: i64, from: i64) -> Plan {
    debug_assert_eq!(shift_ms.rem_euclid(7 * DAY), 0);
    for s in &mut plan.segs {
        s.start += shift_ms;
        s.end += shift_ms;
    }
    plan.end += shift_ms;
    plan.segs.retain(|s| s.end > from);
    if let Some(first) = plan.segs.first_mut() {
        first.start = first.start.max(from);
    }
    plan
}

/// Merges overlapping spans (sorted by start).
pub fn merge(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The plan with the elder at home and up, moving about, over each of
/// `spans` (merged, sorted): what lies inside them is replaced.
pub fn keep_in(plan: Plan, spans: &[(i64, i64)], rng: &mut StdRng) -> Plan {
    let mut segs: Vec<Seg> = Vec::with_capacity(plan.segs.len() + spans.len() * 8);
    let mut k = 0;
    for s in &plan.segs {
        let mut t = s.start;
        while t < s.end {
            while k < spans.len() && spans[k].1 <= t {
                k += 1;
            }
            match spans.get(k) {
                Some(&(a, b)) if a <= t => {
                    // Inside: up and about until the span's end (or the
                    // segment's, the next one carries on).
                    let end = b.min(s.end);
                    let mut x = t;
                    while x < end {
                        let y = (x + rng.random_range(5 * MIN..15 * MIN)).min(end);
                        let room = if rng.random_bool(0.6) {
                            LIVING
                        } else {
                            KITCHEN
                        };
                        segs.push(Seg {
                            start: x,
                            end: y,
                            act: Act::Room { room, moving: true },
                            night: false,
                            ..*s
                        });
                        x = y;
                    }
                    t = end;
                }
                Some(&(a, _)) if a < s.end => {
                    segs.push(Seg {
                        start: t,
                        end: a,
                        ..*s
                    });
                    t = a;
                }
                _ => {
                    segs.push(Seg { start: t, ..*s });
                    t = s.end;
                }
            }
        }
    }
    Plan { segs, ..plan }
}

/// The carer's readings for one visit: entrance motion on the way in
/// and out, motion where they work, the tag read in and out (by the
/// home's button, `ids[BTN]`). `ids`: the home's device ids in
/// [`crate::life`]'s positions.
pub fn carer_readings(o: &Occurrence, ids: &[String], out: &mut Vec<Reading>) {
    let motion = |at: i64, room: usize| Reading {
        device_id: ids[PIR + room].clone(),
        seq: None,
        ts_ms: at,
        body: Body::Motion(Motion {
            room: ROOMS[room].to_string(),
            motion: true,
        }),
    };
    let tag = |at: i64, action: VisitAction| Reading {
        device_id: ids[BTN].clone(),
        seq: None,
        ts_ms: at,
        body: Body::Event(DeviceEvent {
            kind: EventType::Visit,
            confidence: None,
            carer: Some(o.carer_id.clone()),
            action: Some(action),
        }),
    };
    if let Some(t) = o.enter {
        out.push(motion(t, ENTRANCE));
    }
    if let Some(t) = o.check_in {
        out.push(tag(t, VisitAction::In));
    }
    for &(t, room) in &o.footprints {
        debug_assert!(room == BATHROOM || room == LIVING || room == KITCHEN);
        out.push(motion(t, room));
    }
    if let Some(t) = o.check_out {
        out.push(tag(t, VisitAction::Out));
    }
    if let Some(t) = o.leave {
        out.push(motion(t, ENTRANCE));
    }
}
