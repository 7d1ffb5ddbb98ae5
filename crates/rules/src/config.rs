//! The rule file: every threshold and duration of every rule, with a
//! default for each, set globally and overridden per elder.
//!
//! The schema is the set of structs below; `deploy/rules.toml` is the
//! commented reference. Per-elder overrides use the same schema under
//! `[elders."<elder_id>"]` and are merged over the global values, so an
//! override names only what differs:
//!
//! ```toml
//! [vitals]
//! pulse_high = 131
//!
//! [elders."E00042".vitals]   # known atrial fibrillation
//! pulse_high = 150
//! ```
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Why a rule file was refused: the offending key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rule file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rule file is not valid TOML: {0}")]
    Syntax(String),
    #[error("rule file key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `sos`: the SOS button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SosRules {
    /// A `sos_cancel` this many seconds (event time) or less after the
    /// press resolves the alert as a false alarm.
    pub cancel_window_s: u32,
}

impl Default for SosRules {
    fn default() -> Self {
        SosRules {
            cancel_window_s: 30,
        }
    }
}

/// `fall`: the fall detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallRules {
    /// Fall events with a lower detector confidence are ignored.
    pub min_confidence: f64,
    /// Motion within this many seconds after the fall means the person is
    /// up and moving; the alert stays raised but says so.
    pub up_window_s: u32,
    /// Motion in the first seconds after a fall is the fall itself, not
    /// the person getting up.
    pub settle_s: u32,
}

impl Default for FallRules {
    fn default() -> Self {
        FallRules {
            min_confidence: 0.7,
            up_window_s: 60,
            settle_s: 5,
        }
    }
}

/// `vital_out_of_range`, single parameters: the NEWS2 red bands (score 3).
/// A value at or beyond a threshold is abnormal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VitalRules {
    /// Pulse at or below this (beats/min) is abnormal.
    pub pulse_low: u32,
    /// Pulse at or above this (beats/min) is abnormal.
    pub pulse_high: u32,
    /// SpO2 at or below this (%) is abnormal.
    pub spo2_low: u32,
    /// Respiration at or below this (breaths/min) is abnormal.
    pub resp_low: u32,
    /// Respiration at or above this (breaths/min) is abnormal.
    pub resp_high: u32,
    /// Systolic pressure at or below this (mmHg) is abnormal.
    pub sys_low: u32,
    /// Systolic pressure at or above this (mmHg) is abnormal.
    pub sys_high: u32,
    /// Temperature at or below this (°C) is abnormal.
    pub temp_low: f64,
    /// Temperature at or above this (°C) is abnormal.
    pub temp_high: f64,
    /// Seconds of event time an abnormal value must hold before it raises.
    pub hold_s: u32,
    /// Longest gap between two readings (seconds) that does not break a
    /// hold: a missing reading or two is tolerated.
    pub max_gap_s: u32,
    /// After raising, the value must be back inside by the margins below
    /// for this long before a new episode can raise again (hysteresis).
    pub clear_s: u32,
    /// Hysteresis margins, in each parameter's unit.
    pub pulse_margin: u32,
    pub spo2_margin: u32,
    pub resp_margin: u32,
    pub sys_margin: u32,
    pub temp_margin: f64,
}

impl Default for VitalRules {
    fn default() -> Self {
        VitalRules {
            pulse_low: 40,
            pulse_high: 131,
            spo2_low: 91,
            resp_low: 8,
            resp_high: 25,
            sys_low: 90,
            sys_high: 220,
            temp_low: 35.0,
            temp_high: 39.1,
            hold_s: 60,
            max_gap_s: 30,
            clear_s: 60,
            pulse_margin: 5,
            spo2_margin: 2,
            resp_margin: 2,
            sys_margin: 5,
            temp_margin: 0.3,
        }
    }
}

/// `vital_out_of_range`, aggregate: the NEWS2 score over each elder's
/// latest readings from all devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct News2Rules {
    /// Readings older than this (seconds) do not count toward the score.
    pub window_s: u32,
    /// Score at or above this raises HIGH.
    pub high: u32,
    /// Score at or above this raises CRITICAL.
    pub critical: u32,
    /// Seconds of event time the score must stay at or above `high`.
    pub hold_s: u32,
    /// After raising, the score must fall to this or lower before a new
    /// episode can raise again (hysteresis).
    pub clear_at: u32,
}

impl Default for News2Rules {
    fn default() -> Self {
        News2Rules {
            window_s: 600,
            high: 5,
            critical: 7,
            hold_s: 60,
            clear_at: 3,
        }
    }
}

/// `no_breathing`: the sleep sensor reports rr = 0 while in bed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoBreathingRules {
    /// Seconds of event time with rr = 0 before it raises.
    pub hold_s: u32,
    /// Longest gap between readings (seconds) that does not break the hold.
    pub max_gap_s: u32,
    /// After raising, breathing must be seen this long before a new
    /// episode can raise again.
    pub clear_s: u32,
}

impl Default for NoBreathingRules {
    fn default() -> Self {
        NoBreathingRules {
            hold_s: 20,
            max_gap_s: 15,
            clear_s: 30,
        }
    }
}

/// `out_of_bed_too_long`: out of bed at night and not back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutOfBedRules {
    /// Seconds out of bed, during the night window, before it raises.
    pub after_s: u32,
    /// PIR motion this recent (seconds) means the person is up and about:
    /// not raised.
    pub moving_window_s: u32,
    /// Rooms (PIR `room`) that count as a bathroom: when the last motion
    /// was there and nothing has moved since, the alert is CRITICAL.
    pub bathroom_rooms: Vec<String>,
}

impl Default for OutOfBedRules {
    fn default() -> Self {
        OutOfBedRules {
            after_s: 1800,
            moving_window_s: 300,
            bathroom_rooms: vec!["bathroom".into(), "toilet".into(), "wc".into()],
        }
    }
}

/// `inactivity`: no motion at home in the daytime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InactivityRules {
    /// Seconds of daytime (outside the night window) without motion.
    pub after_s: u32,
}

impl Default for InactivityRules {
    fn default() -> Self {
        InactivityRules { after_s: 4 * 3600 }
    }
}

/// `geofence_exit`: the GPS watch outside the home's safe radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeofenceRules {
    /// Consecutive fixes outside the radius before it raises.
    pub fixes: u32,
    /// Back inside means within the radius less this margin (metres), so
    /// a person at the boundary does not flap in and out.
    pub margin_m: f64,
    /// Fixes less accurate than this (metres) are not judged.
    pub max_accuracy_m: f64,
}

impl Default for GeofenceRules {
    fn default() -> Self {
        GeofenceRules {
            fixes: 2,
            margin_m: 25.0,
            max_accuracy_m: 200.0,
        }
    }
}

/// `device_offline` and `home_offline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineRules {
    /// Seconds a device stays silent past its heartbeat interval (or after
    /// its last will) before it is reported; when every device of a home
    /// is silent by then, one `home_offline` is raised instead.
    pub grace_s: u32,
}

impl Default for OfflineRules {
    fn default() -> Self {
        OfflineRules { grace_s: 60 }
    }
}

/// `low_battery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatteryRules {
    /// Battery at or below this (%) raises.
    pub low_pct: u32,
    /// Battery at or above this (%) clears.
    pub clear_pct: u32,
}

impl Default for BatteryRules {
    fn default() -> Self {
        BatteryRules {
            low_pct: 15,
            clear_pct: 30,
        }
    }
}

/// Readings that arrive late (a gateway back from an outage uploading
/// what it kept) are judged on their own event time by every rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LateRules {
    /// A reading arriving this many seconds or more after its event time
    /// is late: an episode it shows is raised marked late, after the
    /// upload is done, and only if the late data does not already show
    /// it over.
    pub after_s: u32,
    /// The upload is taken as done once no late reading of the elder has
    /// arrived for this many seconds (or a reading of now arrives).
    pub settle_s: u32,
}

impl Default for LateRules {
    fn default() -> Self {
        LateRules {
            after_s: 120,
            settle_s: 10,
        }
    }
}

/// Carers' visits and daily wellbeing check-ins (`rule/visit.rs`,
/// `rule/check_in.rs`; docs/visits.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisitRules {
    /// A check-in this long before a plan's window opens counts for it.
    pub early_s: u32,
    /// A check-in up to this long after the window closed is a late
    /// visit (and resolves the `visit_missed` raised at the close).
    pub late_max_s: u32,
    /// A visit shorter than this share of the plan's length is short.
    pub short_pct: u32,
    /// Motion at the entrance this close to a check-in or check-out
    /// bears the visit out; signs are gathered this long after check-out.
    pub margin_s: u32,
    /// A visit not checked out is closed as `no_check_out` after this
    /// long, or three times the plan's length if that is longer.
    pub max_visit_s: u32,
    /// A sign of ordinary life this recent shows an elder well when a
    /// visit is missed (otherwise, for an elder who lives alone or is
    /// frail, the missed visit goes to the hotline).
    pub well_within_s: u32,
    /// Rooms whose motion sensor watches the door.
    pub entrance_rooms: Vec<String>,
    /// Rooms where the bed is: motion there while the elder is in bed may
    /// be the elder's own.
    pub bedroom_rooms: Vec<String>,
    /// Raise a follow-up call after every visit with a check-in and out.
    pub follow_up: bool,
}

impl Default for VisitRules {
    fn default() -> Self {
        VisitRules {
            early_s: 1800,
            late_max_s: 3 * 3600,
            short_pct: 50,
            margin_s: 300,
            max_visit_s: 4 * 3600,
            well_within_s: 2 * 3600,
            entrance_rooms: ["entrance", "hall", "door", "doorway"]
                .map(String::from)
                .to_vec(),
            bedroom_rooms: vec!["bedroom".into()],
            follow_up: true,
        }
    }
}

/// One trend: a daily figure of the elder's compared with their own usual
/// range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendRule {
    pub enabled: bool,
    /// Recorded for review (born resolved, outcome `recorded`), not raised.
    pub shadow: bool,
    /// The smallest day-to-day spread assumed for an elder, in the
    /// figure's unit (visits, minutes, beats or breaths per minute; for
    /// `day_activity` and `time_out`, a fraction of the median): an elder
    /// whose days are all alike is not alarmed by the first small change.
    pub min_spread: f64,
}

/// `trend`: each elder's own normal, learned from their days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendRules {
    /// Days of history the usual range is learned from.
    pub window_days: u32,
    /// Days with data needed before a metric is judged at all.
    pub min_days: u32,
    /// The last this many days must all lie on the changed side.
    pub days: u32,
    /// A day counts towards a change by how many spreads beyond `k` it lies
    /// from the elder's median (at most 3 a day).
    pub k: f64,
    /// Spreads of evidence, summed over the days, that raise.
    pub h: f64,
    /// The most one day adds, in spreads: one odd day cannot raise alone.
    pub cap: f64,
    /// A day's part of the home's time without a heard device above which
    /// the day is not judged (silence is not a quiet day).
    pub max_unseen: f64,
    pub night_bathroom_visits: TrendRule,
    pub time_in_bed: TrendRule,
    pub rise_time: TrendRule,
    pub day_activity: TrendRule,
    pub time_out: TrendRule,
    pub resting_hr: TrendRule,
    pub resting_rr: TrendRule,
}

fn trend(min_spread: f64) -> TrendRule {
    TrendRule {
        enabled: true,
        shadow: false,
        min_spread,
    }
}

impl Default for TrendRule {
    fn default() -> Self {
        trend(1.0)
    }
}

impl Default for TrendRules {
    fn default() -> Self {
        TrendRules {
            window_days: 28,
            min_days: 14,
            days: 3,
            k: 0.5,
            h: 8.0,
            cap: 2.0,
            max_unseen: 0.2,
            night_bathroom_visits: trend(0.7),
            time_in_bed: trend(25.0),
            rise_time: trend(20.0),
            day_activity: trend(0.08),
            time_out: trend(0.25),
            resting_hr: trend(2.0),
            resting_rr: trend(0.8),
        }
    }
}

/// Every rule's settings, for one elder (or the global defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    pub sos: SosRules,
    pub fall: FallRules,
    pub vitals: VitalRules,
    pub news2: News2Rules,
    pub no_breathing: NoBreathingRules,
    pub out_of_bed: OutOfBedRules,
    pub inactivity: InactivityRules,
    pub geofence: GeofenceRules,
    pub offline: OfflineRules,
    pub battery: BatteryRules,
    pub late: LateRules,
    pub trends: TrendRules,
    pub visits: VisitRules,
}

impl RuleConfig {
    /// Checks what the types cannot: orders and ranges. `prefix` names
    /// where this config came from in the file.
    fn validate(&self, prefix: &str) -> Result<(), RulesError> {
        let k = |s: &str| format!("{prefix}{s}");
        let v = &self.vitals;
        let lt = |a: f64, b: f64, ka: &str, kb: &str| {
            if a < b {
                Ok(())
            } else {
                Err(invalid(k(ka), format!("must be below `{kb}` ({b})")))
            }
        };
        lt(
            v.pulse_low.into(),
            v.pulse_high.into(),
            "vitals.pulse_low",
            "vitals.pulse_high",
        )?;
        lt(
            v.resp_low.into(),
            v.resp_high.into(),
            "vitals.resp_low",
            "vitals.resp_high",
        )?;
        lt(
            v.sys_low.into(),
            v.sys_high.into(),
            "vitals.sys_low",
            "vitals.sys_high",
        )?;
        lt(
            v.temp_low,
            v.temp_high,
            "vitals.temp_low",
            "vitals.temp_high",
        )?;
        if v.spo2_low > 100 {
            return Err(invalid(k("vitals.spo2_low"), "must be a percentage, 0-100"));
        }
        if !(0.0..=1.0).contains(&self.fall.min_confidence) {
            return Err(invalid(
                k("fall.min_confidence"),
                "must be between 0.0 and 1.0",
            ));
        }
        for (key, val) in [
            ("vitals.hold_s", v.hold_s),
            ("vitals.max_gap_s", v.max_gap_s),
            ("no_breathing.hold_s", self.no_breathing.hold_s),
            ("no_breathing.max_gap_s", self.no_breathing.max_gap_s),
            ("out_of_bed.after_s", self.out_of_bed.after_s),
            ("inactivity.after_s", self.inactivity.after_s),
            ("news2.window_s", self.news2.window_s),
            ("geofence.fixes", self.geofence.fixes),
        ] {
            if val == 0 {
                return Err(invalid(k(key), "must be greater than 0"));
            }
        }
        if self.news2.high == 0 || self.news2.high > self.news2.critical {
            return Err(invalid(
                k("news2.high"),
                format!(
                    "must be between 1 and `news2.critical` ({})",
                    self.news2.critical
                ),
            ));
        }
        if self.news2.clear_at >= self.news2.high {
            return Err(invalid(
                k("news2.clear_at"),
                format!("must be below `news2.high` ({})", self.news2.high),
            ));
        }
        if self.battery.low_pct >= self.battery.clear_pct || self.battery.clear_pct > 100 {
            return Err(invalid(
                k("battery.low_pct"),
                format!(
                    "must be below `battery.clear_pct` ({}), and both at most 100",
                    self.battery.clear_pct
                ),
            ));
        }
        let t = &self.trends;
        if t.days == 0 || t.min_days == 0 || t.window_days < t.min_days || t.window_days > 60 {
            return Err(invalid(
                k("trends.window_days"),
                "days and min_days must be at least 1, min_days <= window_days <= 60",
            ));
        }
        if t.k < 0.0 || t.h <= 0.0 || !(0.0..=1.0).contains(&t.max_unseen) {
            return Err(invalid(
                k("trends.k"),
                "k must be at least 0, h above 0 and max_unseen between 0.0 and 1.0",
            ));
        }
        if self.visits.short_pct > 100 {
            return Err(invalid(k("visits.short_pct"), "must be at most 100"));
        }
        if self.visits.max_visit_s == 0 {
            return Err(invalid(k("visits.max_visit_s"), "must be greater than 0"));
        }
        if self.late.after_s == 0 {
            return Err(invalid(k("late.after_s"), "must be greater than 0"));
        }
        if self.geofence.margin_m < 0.0 || self.geofence.max_accuracy_m <= 0.0 {
            return Err(invalid(
                k("geofence.margin_m"),
                "margin must be >= 0 and max_accuracy_m > 0",
            ));
        }
        Ok(())
    }
}

/// The loaded rule file: global settings and per-elder overrides.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    global: Arc<RuleConfig>,
    elders: HashMap<String, Arc<RuleConfig>>,
}

impl Rules {
    /// Every rule at its default.
    pub fn defaults() -> Rules {
        Rules::default()
    }

    /// Global settings only.
    pub fn from_config(cfg: RuleConfig) -> Result<Rules, RulesError> {
        cfg.validate("")?;
        Ok(Rules {
            global: Arc::new(cfg),
            elders: HashMap::new(),
        })
    }

    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Rules::parse(&text)
    }

    /// Parses a rule file; any unknown key, wrong type or invalid value is
    /// refused with its full key.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        let elders = match table.remove("elders") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(invalid("elders", "must be a table of elder ids")),
        };
        let global: RuleConfig = from_table(table.clone(), "")?;
        global.validate("")?;
        let mut out = Rules {
            global: Arc::new(global),
            elders: HashMap::new(),
        };
        for (id, over) in elders {
            let prefix = format!("elders.{id}.");
            let toml::Value::Table(over) = over else {
                return Err(invalid(format!("elders.{id}"), "must be a table"));
            };
            let mut merged = table.clone();
            merge(&mut merged, over);
            let cfg: RuleConfig = from_table(merged, &prefix)?;
            cfg.validate(&prefix)?;
            out.elders.insert(id, Arc::new(cfg));
        }
        Ok(out)
    }

    pub fn global(&self) -> &Arc<RuleConfig> {
        &self.global
    }

    /// The settings that apply to one elder.
    pub fn for_elder(&self, elder_id: &str) -> &Arc<RuleConfig> {
        self.elders.get(elder_id).unwrap_or(&self.global)
    }

    /// Elders with their own overrides.
    pub fn overridden(&self) -> usize {
        self.elders.len()
    }
}

/// Deserializes with the failing key named in full.
fn from_table(t: toml::Table, prefix: &str) -> Result<RuleConfig, RulesError> {
    // serde_path_to_error tracks the key path that toml's own error
    // messages leave out for values deserialized from a table.
    serde_path_to_error::deserialize(toml::Value::Table(t)).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            match prefix.trim_end_matches('.') {
                "" => "(top level)".to_string(),
                p => p.to_string(),
            }
        } else {
            format!("{prefix}{path}")
        };
        invalid(key, e.into_inner().to_string())
    })
}

/// Deep-merges `over` into `base`: tables merge, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let r = Rules::parse("").unwrap();
        assert_eq!(**r.global(), RuleConfig::default());
    }

    #[test]
    fn per_elder_overrides_merge_over_global() {
        let r = Rules::parse(
            "[vitals]\npulse_high = 140\nhold_s = 30\n[elders.E1.vitals]\npulse_high = 150\n",
        )
        .unwrap();
        assert_eq!(r.global().vitals.pulse_high, 140);
        let e1 = r.for_elder("E1");
        assert_eq!(e1.vitals.pulse_high, 150);
        assert_eq!(e1.vitals.hold_s, 30, "unnamed keys come from the global");
        assert_eq!(r.for_elder("E2").vitals.pulse_high, 140);
    }

    fn refused(text: &str) -> (String, String) {
        match Rules::parse(text) {
            Err(RulesError::Invalid { key, reason }) => (key, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn bad_files_name_the_key_and_why() {
        let (k, why) = refused("[vitals]\npulse_hi = 140\n");
        assert_eq!(k, "vitals.pulse_hi");
        assert!(why.contains("unknown field `pulse_hi`"), "{why}");
        let (k, why) = refused("[vitals]\nhold_s = \"a minute\"\n");
        assert_eq!(k, "vitals.hold_s");
        assert!(why.contains("invalid type"), "{why}");
        let (k, _) = refused("[vitals]\npulse_low = 150\n");
        assert_eq!(k, "vitals.pulse_low");
        let (k, why) = refused("[elders.E7.battery]\nlow_pct = 40\n");
        assert_eq!(k, "elders.E7.battery.low_pct");
        assert!(why.contains("clear_pct"), "{why}");
        let (k, _) = refused("[elders.E7.fall]\nmin_confidence = 2.0\n");
        assert_eq!(k, "elders.E7.fall.min_confidence");
        let (k, why) = refused("[nonsense]\n");
        assert_eq!(k, "nonsense");
        assert!(why.contains("unknown field `nonsense`"), "{why}");
        assert!(matches!(
            Rules::parse("[vitals"),
            Err(RulesError::Syntax(_))
        ));
    }
}

#[cfg(test)]
mod reference {
    use super::*;

    /// deploy/rules.toml documents every key at its default: keep it so.
    #[test]
    fn the_reference_file_is_the_defaults() {
        let r = Rules::parse(include_str!("../../../deploy/rules.toml")).unwrap();
        assert_eq!(**r.global(), RuleConfig::default());
        let text = include_str!("../../../deploy/rules.toml");
        let uncommented: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = toml::from_str(&uncommented).unwrap();
        let defaults = toml::Table::try_from(RuleConfig::default()).unwrap();
        for (section, keys) in &defaults {
            let toml::Value::Table(keys) = keys else {
                continue;
            };
            for key in keys.keys() {
                assert!(
                    table.get(section).and_then(|s| s.get(key)).is_some(),
                    "deploy/rules.toml does not document {section}.{key}"
                );
            }
        }
    }
}
