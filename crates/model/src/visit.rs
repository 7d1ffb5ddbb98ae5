//! Carers' home visits: the providers and carers of the registry, each
//! elder's visit plans, and what is known of one visit (see
//! `docs/visits.md`).
use crate::EpochMs;
use serde::{Deserialize, Serialize};

/// A home-care service provider paid by the city for carers' visits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provider {
    pub provider_id: String,
    pub name: String,
    /// The provider's duty phone, for the hotline.
    pub phone: Option<String>,
}

/// A carer of a provider. `name` is personal data: never log it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Carer {
    pub carer_id: String,
    pub provider_id: String,
    pub name: String,
}

/// A recurring visit to one elder by one provider: on `days`, a carer
/// checks in between `window_start` and `window_end` (the elder's local
/// time, `HH:MM`) and stays about `length_min`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VisitPlan {
    pub plan_id: String,
    pub elder_id: String,
    pub provider_id: String,
    /// `daily`, or weekdays: `mon,wed,fri`.
    pub days: String,
    pub window_start: String,
    pub window_end: String,
    pub length_min: u32,
    /// What the visit is for: `bathing`, `meals`, `cleaning`,
    /// `medication`, or the provider's own word.
    pub service: String,
}

/// The weekdays a plan's `days` names, Monday = 0; `None` when it does
/// not parse.
pub fn plan_days(days: &str) -> Option<[bool; 7]> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days = days.trim();
    if days.eq_ignore_ascii_case("daily") {
        return Some([true; 7]);
    }
    let mut out = [false; 7];
    for d in days.split(',') {
        let d = d.trim().to_ascii_lowercase();
        out[NAMES.iter().position(|n| *n == d)?] = true;
    }
    out.iter().any(|&d| d).then_some(out)
}

/// A carer's tag read at the door (or the provider's system): in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitAction {
    In,
    Out,
}

impl VisitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VisitAction::In => "in",
            VisitAction::Out => "out",
        }
    }

    pub fn parse(s: &str) -> Option<VisitAction> {
        match s {
            "in" => Some(VisitAction::In),
            "out" => Some(VisitAction::Out),
            _ => None,
        }
    }
}

/// What the supervisor is shown about a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitFlag {
    /// Checked in after the end of the plan's window.
    Late,
    /// Much shorter than planned.
    Short,
    /// The home's sensors were heard and showed no sign of anyone there.
    Uncorroborated,
    /// The home's sensors were not heard during the visit: nothing to
    /// bear it out or against it.
    Unverified,
    /// A check-out with no check-in before it.
    NoCheckIn,
    /// Checked in and never out.
    NoCheckOut,
}

impl VisitFlag {
    pub const ALL: [VisitFlag; 6] = [
        VisitFlag::Late,
        VisitFlag::Short,
        VisitFlag::Uncorroborated,
        VisitFlag::Unverified,
        VisitFlag::NoCheckIn,
        VisitFlag::NoCheckOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VisitFlag::Late => "late",
            VisitFlag::Short => "short",
            VisitFlag::Uncorroborated => "uncorroborated",
            VisitFlag::Unverified => "unverified",
            VisitFlag::NoCheckIn => "no_check_in",
            VisitFlag::NoCheckOut => "no_check_out",
        }
    }

    pub fn parse(s: &str) -> Option<VisitFlag> {
        VisitFlag::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A sign in the home's sensors that someone besides the elder was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignKind {
    /// Motion at the entrance around the check-in or check-out.
    Entrance,
    /// Motion outside the bedroom while the elder was in bed.
    MotionWhileInBed,
    /// Motion at home while the elder's watch placed them outside.
    MotionWhileAway,
    /// The elder got out of (or into) bed during the visit.
    BedChange,
}

impl SignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignKind::Entrance => "entrance",
            SignKind::MotionWhileInBed => "motion_while_in_bed",
            SignKind::MotionWhileAway => "motion_while_away",
            SignKind::BedChange => "bed_change",
        }
    }
}

/// One sign, with when and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitSign {
    pub kind: SignKind,
    pub at: EpochMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// What is known of one visit, carried by its `visit`, `visit_missed`
/// and `follow_up` alerts. Ids only: names and phones stay in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VisitInfo {
    /// `{elder}/{plan}/{local date}` for a planned visit,
    /// `{elder}/{carer}/{check-in ms}` for one outside any plan.
    pub visit_id: String,
    pub provider_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The elder's local date of the visit (`YYYY-MM-DD`): the plan's day,
    /// or the check-in's. Reports count a month by it.
    pub day: String,
    /// The plan's window that day, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(EpochMs, EpochMs)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in: Option<EpochMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_out: Option<EpochMs>,
    /// The device that read the carer's tag, or `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<VisitFlag>,
    /// What the home's sensors showed of someone being there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signs: Vec<VisitSign>,
}

impl VisitInfo {
    /// Minutes between check-in and check-out, when both are known.
    pub fn length_min(&self) -> Option<f64> {
        let (i, o) = self.check_in.zip(self.check_out)?;
        Some((o - i) as f64 / 60_000.0)
    }

    pub fn has(&self, f: VisitFlag) -> bool {
        self.flags.contains(&f)
    }
}
