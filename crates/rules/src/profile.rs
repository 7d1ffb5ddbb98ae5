//! What the engine is told about elders and devices (from the registry).

use crate::local::{parse_hhmm, parse_window};
use eldercare_model::{Device, DeviceKind, Elder, VisitPlan, plan_days};

/// What the engine needs to know about an elder.
#[derive(Debug, Clone, PartialEq)]
pub struct ElderProfile {
    pub elder_id: String,
    pub timezone: chrono_tz::Tz,
    /// Night window, minutes after local midnight.
    pub night_start_min: u16,
    pub night_end_min: u16,
    /// Home location (lat, lon) for the geofence.
    pub home: Option<(f64, f64)>,
    pub safe_radius_m: Option<f64>,
    pub dementia: bool,
    /// Flagged `lives_alone` or `frail`: a missed visit with nothing else
    /// showing them well goes to the hotline.
    pub alone_or_frail: bool,
    /// Daily wellbeing check-in window, minutes after local midnight.
    pub check_in: Option<(u16, u16)>,
}

impl ElderProfile {
    /// Defaults of the registry: Asia/Shanghai, night 21:00-07:00, no geofence.
    pub fn new(elder_id: impl Into<String>) -> ElderProfile {
        ElderProfile {
            elder_id: elder_id.into(),
            timezone: chrono_tz::Asia::Shanghai,
            night_start_min: 21 * 60,
            night_end_min: 7 * 60,
            home: None,
            safe_radius_m: None,
            dementia: false,
            alone_or_frail: false,
            check_in: None,
        }
    }

    /// From the registry entry; a timezone or night window the registry
    /// let through but that does not parse falls back to the default.
    pub fn from_elder(e: &Elder) -> ElderProfile {
        let d = ElderProfile::new(e.elder_id.clone());
        ElderProfile {
            timezone: e.timezone.parse().unwrap_or(d.timezone),
            night_start_min: parse_hhmm(&e.night_start).unwrap_or(d.night_start_min),
            night_end_min: parse_hhmm(&e.night_end).unwrap_or(d.night_end_min),
            home: e.home_lat.zip(e.home_lon),
            safe_radius_m: e.safe_radius_m,
            dementia: e.flags.iter().any(|f| f == "dementia"),
            alone_or_frail: e.flags.iter().any(|f| f == "lives_alone" || f == "frail"),
            check_in: e.check_in.as_deref().and_then(parse_window),
            ..d
        }
    }
}

/// What the engine needs to know about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    pub device_id: String,
    pub elder_id: String,
    pub kind: DeviceKind,
    pub heartbeat_s: u32,
}

impl From<&Device> for DeviceProfile {
    fn from(d: &Device) -> DeviceProfile {
        DeviceProfile {
            device_id: d.device_id.clone(),
            elder_id: d.elder_id.clone(),
            kind: d.kind,
            heartbeat_s: d.heartbeat_s,
        }
    }
}

/// What the engine needs to know about a visit plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanProfile {
    pub plan_id: String,
    pub provider_id: String,
    /// Monday first.
    pub days: [bool; 7],
    /// The window a carer checks in in, minutes after local midnight.
    pub start_min: u16,
    pub end_min: u16,
    pub length_min: u32,
    pub service: String,
}

impl PlanProfile {
    /// From the registry entry; `None` for one whose days or window do
    /// not parse (the registry refuses those).
    pub fn from_plan(p: &VisitPlan) -> Option<PlanProfile> {
        let (start_min, end_min) = (parse_hhmm(&p.window_start)?, parse_hhmm(&p.window_end)?);
        (start_min < end_min).then_some(())?;
        Some(PlanProfile {
            plan_id: p.plan_id.clone(),
            provider_id: p.provider_id.clone(),
            days: plan_days(&p.days)?,
            start_min,
            end_min,
            length_min: p.length_min,
            service: p.service.clone(),
        })
    }
}
