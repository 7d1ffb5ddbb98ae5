//! Registry import: the city's elder and device lists, and the providers,
//! carers and visit plans of carers' home visits (registry-import.md), as
//! CSV with a header row or as JSON lines with the same field names.
//! The header (or the first object's fields) tells which list a file is.
//! Each row is checked on its own; a bad row is refused with its line
//! number and reason, and the others are imported.
use crate::{DeviceWrite, Registry, StoreError, generate_secret, hash_secret, verify_secret};
use eldercare_model::{Carer, Device, DeviceKind, Elder, Provider, VisitPlan, plan_days};
use std::collections::{BTreeMap, BTreeSet};

/// Which registry list a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Elders,
    Devices,
    Providers,
    Carers,
    VisitPlans,
}

impl ListKind {
    /// Where a list goes when several are loaded together: each after the
    /// lists its rows name (a device its elder, a carer their provider, a
    /// plan its elder and provider).
    pub fn load_order(self) -> u8 {
        match self {
            ListKind::Elders => 0,
            ListKind::Providers => 1,
            ListKind::Carers => 2,
            ListKind::VisitPlans => 3,
            ListKind::Devices => 4,
        }
    }

    /// Whether the list is one of carers' visits (providers, carers, plans).
    pub fn is_visits(self) -> bool {
        matches!(
            self,
            ListKind::Providers | ListKind::Carers | ListKind::VisitPlans
        )
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    pub updated: usize,
    /// `(line number, reason)` of each refused row.
    pub refused: Vec<(usize, String)>,
    /// Secrets generated for devices listed without one: shown once, never stored.
    pub generated_secrets: Vec<(String, String)>,
    /// Devices already registered that the file gave a different secret:
    /// their old secret no longer works, so their open sessions should end.
    pub rekeyed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error(
        "the header names no registry list: neither an elders list (elder_id, name), a devices list (device_id, kind, elder_id), a providers list (provider_id, name), a carers list (carer_id, provider_id, name) nor a visit plans list (plan_id, elder_id, provider_id, ...)"
    )]
    UnknownList,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One row of a registry list: field name to non-empty value. The operator
/// API builds the same rows from its messages, so both paths are checked
/// by the same code and agree on every rule and message.
pub type Row = BTreeMap<String, String>;

/// The fields of an elders row, in the order of registry-import.md.
pub const ELDER_FIELDS: [&str; 16] = [
    "elder_id",
    "name",
    "phone",
    "address",
    "district",
    "community",
    "home_lat",
    "home_lon",
    "safe_radius_m",
    "flags",
    "timezone",
    "night_start",
    "night_end",
    "contact_name",
    "contact_phone",
    "check_in",
];

/// The fields of a devices row, `secret` aside.
pub const DEVICE_FIELDS: [&str; 5] = ["device_id", "kind", "elder_id", "room", "heartbeat_s"];

/// Reads rows from CSV or JSON-lines text. Line numbers are 1-based lines
/// of the file (the CSV header is line 1).
/// `(line number, the row or why it could not be read)`.
type NumberedRow = (usize, Result<Row, String>);

pub fn rows(text: &str) -> Result<Vec<NumberedRow>, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let row = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l)
                    .map_err(|e| format!("malformed JSON: {e}"))
                    .map(|m| {
                        m.into_iter()
                            .filter_map(|(k, v)| match v {
                                serde_json::Value::Null => None,
                                // As in CSV: trimmed, and a blank value is
                                // no value (a blank `secret` must get a
                                // generated one, never become the secret).
                                serde_json::Value::String(s) => {
                                    let v = s.trim();
                                    (!v.is_empty()).then(|| (k, v.to_string()))
                                }
                                other => Some((k, other.to_string())),
                            })
                            .collect()
                    });
                (i + 1, row)
            })
            .collect());
    }
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| ImportError::Read(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut out = Vec::new();
    for rec in rdr.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                let row = headers
                    .iter()
                    .zip(r.iter())
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(h, v)| (h.clone(), v.trim().to_string()))
                    .collect();
                out.push((line, Ok(row)));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                out.push((line, Err(format!("malformed CSV: {e}"))));
            }
        }
    }
    // An empty file still has a header telling its kind.
    if out.is_empty() {
        out.push((
            1,
            Ok(headers.into_iter().map(|h| (h, String::new())).collect()),
        ));
        out.pop();
    }
    Ok(out)
}

/// Tells which list `text` is from its header or first object.
pub fn detect(text: &str) -> Result<ListKind, ImportError> {
    let first = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let has = |f: &str| {
        first
            .split([',', '"', ':', '{', '}', ' '])
            .any(|t| t.trim() == f)
    };
    // Plans and carers name elders and providers too: their own id first.
    if has("plan_id") {
        Ok(ListKind::VisitPlans)
    } else if has("carer_id") {
        Ok(ListKind::Carers)
    } else if has("device_id") && has("kind") {
        Ok(ListKind::Devices)
    } else if has("provider_id") && has("name") && !has("elder_id") {
        Ok(ListKind::Providers)
    } else if has("elder_id") && has("name") {
        Ok(ListKind::Elders)
    } else {
        Err(ImportError::UnknownList)
    }
}

fn opt_f64(row: &Row, f: &str, lo: f64, hi: f64) -> Result<Option<f64>, String> {
    match row.get(f) {
        None => Ok(None),
        Some(v) => {
            let x: f64 = v.parse().map_err(|_| format!("`{f}` is not a number"))?;
            if !(lo..=hi).contains(&x) {
                return Err(format!("`{f}` = {x} is outside {lo}–{hi}"));
            }
            Ok(Some(x))
        }
    }
}

fn required<'a>(row: &'a Row, f: &str) -> Result<&'a str, String> {
    row.get(f)
        .map(String::as_str)
        .ok_or_else(|| format!("missing required `{f}`"))
}

fn hhmm(row: &Row, f: &str, default: &str) -> Result<String, String> {
    let v = row.get(f).map(String::as_str).unwrap_or(default);
    chrono::NaiveTime::parse_from_str(v, "%H:%M")
        .map_err(|_| format!("`{f}` = {v:?} is not HH:MM"))?;
    Ok(v.to_string())
}

const FLAGS: [&str; 6] = [
    "lives_alone",
    "dementia",
    "disabled",
    "age80plus",
    "low_income",
    "frail",
];

/// A local time of day, `HH:MM`, as minutes since midnight.
fn minutes(v: &str) -> Option<u32> {
    use chrono::Timelike;
    // `%H:%M` alone also takes `7:5`; the files say HH:MM.
    if v.len() != 5 {
        return None;
    }
    let t = chrono::NaiveTime::parse_from_str(v, "%H:%M").ok()?;
    Some(t.hour() * 60 + t.minute())
}

/// Checks a same-day window `start` < `end`, both `HH:MM`; the error
/// names the fields.
fn window(start_field: &str, start: &str, end_field: &str, end: &str) -> Result<(), String> {
    let s = minutes(start).ok_or_else(|| format!("`{start_field}` = {start:?} is not HH:MM"))?;
    let e = minutes(end).ok_or_else(|| format!("`{end_field}` = {end:?} is not HH:MM"))?;
    if s >= e {
        return Err(format!(
            "`{start_field}` {start} is not before `{end_field}` {end} (a window within one day)"
        ));
    }
    Ok(())
}

/// Checks an elder's `check_in` window, `HH:MM-HH:MM` within one day.
pub fn check_in_window(v: &str) -> Result<(), String> {
    let (start, end) = v
        .split_once('-')
        .ok_or_else(|| format!("`check_in` = {v:?} is not HH:MM-HH:MM"))?;
    window("check_in", start.trim(), "check_in", end.trim())
        .map_err(|why| format!("`check_in` = {v:?}: {why}"))
}

/// Checks an id field: required, 1 to 64 characters of `A-Z a-z 0-9 _ -`.
fn id<'a>(row: &'a Row, f: &str) -> Result<&'a str, String> {
    let v = required(row, f)?;
    if !valid_id(v) {
        return Err(format!(
            "`{f}` must be 1 to 64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    Ok(v)
}

/// Checks a free-text field: at most `max` characters, none of them
/// control characters. The value is never part of the error: names and
/// phones are personal data, and a refused row's reason is printed.
fn text(row: &Row, f: &str, max: usize) -> Result<Option<String>, String> {
    match row.get(f) {
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(format!("`{f}` is longer than {max} characters")),
        Some(v) if v.chars().any(char::is_control) => {
            Err(format!("`{f}` contains a control character"))
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

fn required_text(row: &Row, f: &str, max: usize) -> Result<String, String> {
    text(row, f, max)?.ok_or_else(|| format!("missing required `{f}`"))
}

/// Checks an elders row and builds the elder; the error names the field
/// and why.
pub fn elder_from_row(row: &Row) -> Result<Elder, String> {
    let id = required(row, "elder_id")?;
    if !valid_id(id) {
        return Err("`elder_id` must be 1 to 64 characters of A-Z a-z 0-9 _ -".into());
    }
    let flags: Vec<String> = row
        .get("flags")
        .map(|f| {
            f.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = flags.iter().find(|f| !FLAGS.contains(&f.as_str())) {
        return Err(format!(
            "unknown flag `{bad}` (expected {})",
            FLAGS.join(", ")
        ));
    }
    let timezone = row
        .get("timezone")
        .cloned()
        .unwrap_or_else(|| "Asia/Shanghai".into());
    if !timezone.contains('/') && timezone != "UTC" {
        return Err(format!("`timezone` = {timezone:?} is not an IANA name"));
    }
    Ok(Elder {
        elder_id: id.to_string(),
        name: required(row, "name")?.to_string(),
        phone: row.get("phone").cloned(),
        address: row.get("address").cloned(),
        district: row.get("district").cloned(),
        community: row.get("community").cloned(),
        home_lat: opt_f64(row, "home_lat", -90.0, 90.0)?,
        home_lon: opt_f64(row, "home_lon", -180.0, 180.0)?,
        safe_radius_m: opt_f64(row, "safe_radius_m", 0.0, 1_000_000.0)?,
        flags,
        timezone,
        night_start: hhmm(row, "night_start", "21:00")?,
        night_end: hhmm(row, "night_end", "07:00")?,
        contact_name: row.get("contact_name").cloned(),
        contact_phone: row.get("contact_phone").cloned(),
        check_in: match row.get("check_in") {
            Some(v) => {
                check_in_window(v)?;
                Some(v.clone())
            }
            None => None,
        },
    })
}

/// An elder as a row, the inverse of [`elder_from_row`].
pub fn elder_to_row(e: &Elder) -> Row {
    let mut row = Row::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            row.insert(k.to_string(), v);
        }
    };
    put("elder_id", Some(e.elder_id.clone()));
    put("name", Some(e.name.clone()));
    put("phone", e.phone.clone());
    put("address", e.address.clone());
    put("district", e.district.clone());
    put("community", e.community.clone());
    // `f64` prints the shortest text that parses back to the same value.
    put("home_lat", e.home_lat.map(|v| v.to_string()));
    put("home_lon", e.home_lon.map(|v| v.to_string()));
    put("safe_radius_m", e.safe_radius_m.map(|v| v.to_string()));
    put("flags", Some(e.flags.join(";")));
    put("timezone", Some(e.timezone.clone()));
    put("night_start", Some(e.night_start.clone()));
    put("night_end", Some(e.night_end.clone()));
    put("contact_name", e.contact_name.clone());
    put("contact_phone", e.contact_phone.clone());
    put("check_in", e.check_in.clone());
    row
}

/// The fields of a providers row.
pub const PROVIDER_FIELDS: [&str; 3] = ["provider_id", "name", "phone"];
/// The fields of a carers row.
pub const CARER_FIELDS: [&str; 3] = ["carer_id", "provider_id", "name"];
/// The fields of a visit plans row.
pub const VISIT_PLAN_FIELDS: [&str; 8] = [
    "plan_id",
    "elder_id",
    "provider_id",
    "days",
    "window_start",
    "window_end",
    "length_min",
    "service",
];

/// Checks a providers row and builds the provider.
pub fn provider_from_row(row: &Row) -> Result<Provider, String> {
    Ok(Provider {
        provider_id: id(row, "provider_id")?.to_string(),
        name: required_text(row, "name", 200)?,
        phone: text(row, "phone", 32)?,
    })
}

/// Checks a carers row and builds the carer (all but whether their
/// provider exists, which needs the store: [`carer_refs`]).
pub fn carer_from_row(row: &Row) -> Result<Carer, String> {
    Ok(Carer {
        carer_id: id(row, "carer_id")?.to_string(),
        provider_id: id(row, "provider_id")?.to_string(),
        name: required_text(row, "name", 200)?,
    })
}

/// Checks a visit plans row and builds the plan (all but whether its
/// elder and provider exist: [`visit_plan_refs`]).
pub fn visit_plan_from_row(row: &Row) -> Result<VisitPlan, String> {
    let plan_id = id(row, "plan_id")?.to_string();
    let elder_id = id(row, "elder_id")?.to_string();
    let provider_id = id(row, "provider_id")?.to_string();
    let days = required(row, "days")?;
    if plan_days(days).is_none() {
        return Err(format!(
            "`days` = {days:?} is neither `daily` nor weekdays such as `mon,wed,fri`"
        ));
    }
    let window_start = required(row, "window_start")?;
    let window_end = required(row, "window_end")?;
    window("window_start", window_start, "window_end", window_end)?;
    let l = required(row, "length_min")?;
    let length_min = match l.parse::<u32>() {
        Ok(n) if (1..=720).contains(&n) => n,
        _ => return Err(format!("`length_min` = {l:?} is not 1–720 minutes")),
    };
    let service = required_text(row, "service", 32)?;
    Ok(VisitPlan {
        plan_id,
        elder_id,
        provider_id,
        days: days.to_string(),
        window_start: window_start.to_string(),
        window_end: window_end.to_string(),
        length_min,
        service,
    })
}

/// The providers registered, to check the rows naming them against.
async fn provider_ids(store: &dyn Registry) -> Result<BTreeSet<String>, StoreError> {
    Ok(store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| p.provider_id)
        .collect())
}

/// Why a carer cannot be written, if it names no registered provider.
pub async fn carer_refs(store: &dyn Registry, c: &Carer) -> Result<Option<String>, StoreError> {
    Ok((!provider_ids(store).await?.contains(&c.provider_id))
        .then(|| format!("unknown provider_id `{}`", c.provider_id)))
}

/// Why a plan cannot be written, if it names an elder or a provider that
/// is not registered.
pub async fn visit_plan_refs(
    store: &dyn Registry,
    p: &VisitPlan,
) -> Result<Option<String>, StoreError> {
    plan_refs(store, p, &provider_ids(store).await?).await
}

async fn plan_refs(
    store: &dyn Registry,
    p: &VisitPlan,
    providers: &BTreeSet<String>,
) -> Result<Option<String>, StoreError> {
    if store.get_elder(&p.elder_id).await?.is_none() {
        return Ok(Some(format!("unknown elder_id `{}`", p.elder_id)));
    }
    Ok((!providers.contains(&p.provider_id))
        .then(|| format!("unknown provider_id `{}`", p.provider_id)))
}

/// A devices row, checked; the secret is handled apart.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFields {
    pub device_id: String,
    pub kind: DeviceKind,
    pub elder_id: String,
    pub room: Option<String>,
    pub heartbeat_s: u32,
}

impl DeviceFields {
    /// The device with these fields and the given secret hash.
    pub fn into_device(self, secret_salt: String, secret_hash: String) -> Device {
        Device {
            device_id: self.device_id,
            kind: self.kind,
            elder_id: self.elder_id,
            room: self.room,
            heartbeat_s: self.heartbeat_s,
            secret_salt,
            secret_hash,
        }
    }
}

/// Checks a devices row (all but whether its elder exists, which needs the
/// store); the error names the field and why.
pub fn device_from_row(row: &Row) -> Result<DeviceFields, String> {
    let id = required(row, "device_id")?;
    if !valid_id(id) {
        return Err("`device_id` must be 1 to 64 characters of A-Z a-z 0-9 _ -".into());
    }
    let k = required(row, "kind")?;
    let kind = DeviceKind::parse(k).ok_or_else(|| {
        format!(
            "unknown kind `{k}` (expected sleep_sensor, vital_band, pir, gps_watch, sos_button, gateway)"
        )
    })?;
    let elder_id = required(row, "elder_id")?.to_string();
    let heartbeat_s = match row.get("heartbeat_s") {
        None => 300,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (10..=86_400).contains(&n) => n,
            _ => return Err(format!("`heartbeat_s` = {v:?} is not 10–86400 seconds")),
        },
    };
    if let Some(room) = row.get("room")
        && room.chars().count() > 32
    {
        return Err("`room` is longer than 32 characters".into());
    }
    Ok(DeviceFields {
        device_id: id.to_string(),
        kind,
        elder_id,
        room: row.get("room").cloned(),
        heartbeat_s,
    })
}

/// A device as a row (without its secret), the inverse of [`device_from_row`].
pub fn device_to_row(d: &Device) -> Row {
    let mut row = Row::from([
        ("device_id".to_string(), d.device_id.clone()),
        ("kind".to_string(), d.kind.as_str().to_string()),
        ("elder_id".to_string(), d.elder_id.clone()),
        ("heartbeat_s".to_string(), d.heartbeat_s.to_string()),
    ]);
    if let Some(room) = d.room.clone().filter(|r| !r.is_empty()) {
        row.insert("room".to_string(), room);
    }
    row
}

/// Whether `id` is a valid elder or device id: 1 to 64 characters of
/// `A-Z a-z 0-9 _ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Imports one registry file's text into `store`.
pub async fn import(
    store: &dyn Registry,
    text: &str,
) -> Result<(ListKind, ImportReport), ImportError> {
    let kind = detect(text)?;
    let mut report = ImportReport::default();
    // Few providers: read once per file.
    let providers = match kind {
        ListKind::Carers | ListKind::VisitPlans => provider_ids(store).await?,
        _ => BTreeSet::new(),
    };
    for (line, row) in rows(text)? {
        let row = match row {
            Ok(r) => r,
            Err(reason) => {
                report.refused.push((line, reason));
                continue;
            }
        };
        let outcome = match kind {
            ListKind::Elders => match elder_from_row(&row) {
                Ok(e) => store.upsert_elder(&e).await.map(Some)?,
                Err(reason) => {
                    report.refused.push((line, reason));
                    None
                }
            },
            ListKind::Providers => match provider_from_row(&row) {
                Ok(p) => store.upsert_provider(&p).await.map(Some)?,
                Err(reason) => {
                    report.refused.push((line, reason));
                    None
                }
            },
            ListKind::Carers => match carer_from_row(&row) {
                Ok(c) if !providers.contains(&c.provider_id) => {
                    report
                        .refused
                        .push((line, format!("unknown provider_id `{}`", c.provider_id)));
                    None
                }
                Ok(c) => written(store.upsert_carer(&c).await, line, &mut report)?,
                Err(reason) => {
                    report.refused.push((line, reason));
                    None
                }
            },
            ListKind::VisitPlans => match visit_plan_from_row(&row) {
                Ok(p) => match plan_refs(store, &p, &providers).await? {
                    Some(reason) => {
                        report.refused.push((line, reason));
                        None
                    }
                    None => written(store.upsert_visit_plan(&p).await, line, &mut report)?,
                },
                Err(reason) => {
                    report.refused.push((line, reason));
                    None
                }
            },
            ListKind::Devices => match device_row(store, &row).await? {
                Ok(DeviceRow {
                    device,
                    generated,
                    kept_secret,
                    rekeyed,
                }) => {
                    // A device keeping its secret is updated without
                    // writing the secret back, so a rotation racing the
                    // import is never undone.
                    let new = if kept_secret
                        && store.update_device(&device).await? == DeviceWrite::Written
                    {
                        false
                    } else {
                        store.upsert_device(&device).await?
                    };
                    if let Some(s) = generated {
                        report.generated_secrets.push((device.device_id.clone(), s));
                    }
                    if rekeyed {
                        report.rekeyed.push(device.device_id.clone());
                    }
                    Some(new)
                }
                Err(reason) => {
                    report.refused.push((line, reason));
                    None
                }
            },
        };
        match outcome {
            Some(true) => report.imported += 1,
            Some(false) => report.updated += 1,
            None => {}
        }
    }
    Ok((kind, report))
}

/// A write's outcome; a row the store refused for what it names (its
/// provider deleted since it was checked) is refused like any bad row.
fn written(
    r: Result<bool, StoreError>,
    line: usize,
    report: &mut ImportReport,
) -> Result<Option<bool>, StoreError> {
    match r {
        Ok(new) => Ok(Some(new)),
        Err(StoreError::RegistryConflict(reason)) => {
            report.refused.push((line, reason));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A checked device row, ready to write.
struct DeviceRow {
    device: Device,
    /// The secret generated for a new device listed without one.
    generated: Option<String>,
    /// The device exists and keeps the secret it has.
    kept_secret: bool,
    /// The device exists and the row gives it a different secret.
    rekeyed: bool,
}

/// A device row, or the reason it is refused. An empty `secret` keeps the
/// secret of a device already registered, and generates one for a new one;
/// a `secret` equal to the registered one keeps it too (re-importing the
/// same file changes nothing).
async fn device_row(
    store: &dyn Registry,
    row: &Row,
) -> Result<Result<DeviceRow, String>, StoreError> {
    let fields = match device_from_row(row) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if store.get_elder(&fields.elder_id).await?.is_none() {
        return Ok(Err(format!("unknown elder_id `{}`", fields.elder_id)));
    }
    let existing = store.get_device(&fields.device_id).await?;
    let given = row.get("secret");
    let (salt, hash, generated, kept_secret, rekeyed) = match (given, existing) {
        (Some(s), Some(ex)) if verify_secret(s, &ex.secret_salt, &ex.secret_hash) => {
            (ex.secret_salt, ex.secret_hash, None, true, false)
        }
        (Some(s), existing) => {
            let (salt, hash) = hash_secret(s);
            (salt, hash, None, false, existing.is_some())
        }
        (None, Some(ex)) => (ex.secret_salt, ex.secret_hash, None, true, false),
        (None, None) => {
            let s = generate_secret();
            let (salt, hash) = hash_secret(&s);
            (salt, hash, Some(s), false, false)
        }
    };
    Ok(Ok(DeviceRow {
        device: fields.into_device(salt, hash),
        generated,
        kept_secret,
        rekeyed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    #[tokio::test]
    async fn imports_rows_and_refuses_bad_ones_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let elders = "elder_id,name,address,flags,night_start\n\
                      E1,\"Wang, Li\",\"1 Road, Flat 2\",lives_alone;dementia,22:00\n\
                      E2,,x,,\n\
                      E3,Zhao,,party,\n\
                      bad id,Qian,,,\n";
        let (kind, r) = import(&store, elders).await.unwrap();
        assert_eq!(kind, ListKind::Elders);
        assert_eq!(r.imported, 1);
        let lines: Vec<usize> = r.refused.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(r.refused[0].1.contains("name"));
        let e = store.get_elder("E1").await.unwrap().unwrap();
        assert_eq!(e.name, "Wang, Li");
        assert_eq!(e.flags, vec!["lives_alone", "dementia"]);

        let devices = "device_id,kind,elder_id,room,secret\n\
                       btn-1,sos_button,E1,,pw1\n\
                       pir-1,pir,E1,bathroom,\n\
                       x-1,toaster,E1,,\n\
                       btn-9,sos_button,NOBODY,,\n";
        let (kind, r) = import(&store, devices).await.unwrap();
        assert_eq!(kind, ListKind::Devices);
        assert_eq!((r.imported, r.updated, r.refused.len()), (2, 0, 2));
        assert!(r.refused[1].1.contains("unknown elder_id"));
        assert_eq!(r.generated_secrets.len(), 1);
        let d = store.get_device("btn-1").await.unwrap().unwrap();
        assert!(crate::verify_secret("pw1", &d.secret_salt, &d.secret_hash));

        // Idempotent: the same rows again update.
        let (_, r) = import(&store, devices).await.unwrap();
        assert_eq!((r.imported, r.updated), (0, 2));
        assert!(r.generated_secrets.is_empty(), "existing secret kept");
        assert!(r.rekeyed.is_empty(), "the same secret is no new secret");
        let kept = store.get_device("btn-1").await.unwrap().unwrap();
        assert_eq!(kept.secret_hash, d.secret_hash, "not even re-salted");

        // A different secret for a registered device is reported, so its
        // sessions can be closed.
        let (_, r) = import(
            &store,
            "device_id,kind,elder_id,secret\nbtn-1,sos_button,E1,pw2\n",
        )
        .await
        .unwrap();
        assert_eq!(
            (r.updated, r.rekeyed.as_slice()),
            (1, ["btn-1".to_string()].as_slice())
        );
        let d = store.get_device("btn-1").await.unwrap().unwrap();
        assert!(crate::verify_secret("pw2", &d.secret_salt, &d.secret_hash));

        let jsonl = "{\"elder_id\": \"E5\", \"name\": \"Sun\", \"home_lat\": 31.2}\n";
        let (kind, r) = import(&store, jsonl).await.unwrap();
        assert_eq!((kind, r.imported), (ListKind::Elders, 1));

        // JSON lines follow the CSV rules: a blank secret is no secret (one
        // is generated; the empty password never logs in), a blank name
        // is missing, a blank night_start takes the default.
        let jsonl = "{\"device_id\": \"band-4\", \"kind\": \"vital_band\", \"elder_id\": \"E5\", \"secret\": \"  \"}\n";
        let (_, r) = import(&store, jsonl).await.unwrap();
        assert_eq!((r.imported, r.generated_secrets.len()), (1, 1));
        let d = store.get_device("band-4").await.unwrap().unwrap();
        assert!(!crate::verify_secret("", &d.secret_salt, &d.secret_hash));
        assert!(!crate::verify_secret("  ", &d.secret_salt, &d.secret_hash));
        let jsonl = "{\"elder_id\": \"E6\", \"name\": \"\"}\n{\"elder_id\": \"E7\", \"name\": \"Li\", \"night_start\": \"\"}\n";
        let (_, r) = import(&store, jsonl).await.unwrap();
        assert_eq!(r.imported, 1);
        assert!(r.refused[0].1.contains("name"), "{:?}", r.refused);
    }

    #[tokio::test]
    async fn imports_providers_carers_and_plans_checking_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let elders = "elder_id,name,flags,check_in\n\
                      E1,Wang,frail,08:00-10:00\n\
                      E2,Li,,10:00-09:00\n\
                      E3,Zhao,,\n";
        let (_, r) = import(&store, elders).await.unwrap();
        assert_eq!(r.imported, 2);
        assert_eq!(r.refused[0].0, 3);
        assert!(r.refused[0].1.contains("check_in"), "{:?}", r.refused);
        let e = store.get_elder("E1").await.unwrap().unwrap();
        assert_eq!(e.check_in.as_deref(), Some("08:00-10:00"));
        assert_eq!(e.flags, ["frail"]);
        assert_eq!(store.get_elder("E3").await.unwrap().unwrap().check_in, None);

        let providers = "provider_id,name,phone\nP1,Sunshine Care,021-555\nbad id,X,\n";
        let (kind, r) = import(&store, providers).await.unwrap();
        assert_eq!(
            (kind, r.imported, r.refused.len()),
            (ListKind::Providers, 1, 1)
        );

        let carers = "carer_id,provider_id,name\nC1,P1,Zhang\nC2,P9,Qian\nC3,P1,\n";
        let (kind, r) = import(&store, carers).await.unwrap();
        assert_eq!((kind, r.imported), (ListKind::Carers, 1));
        assert_eq!(r.refused[0], (3, "unknown provider_id `P9`".to_string()));
        assert!(r.refused[1].1.contains("name"));

        let plans = "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
                     V1,E1,P1,\"mon,wed,fri\",09:00,11:00,60,bathing\n\
                     V2,E1,P1,daily,12:00,11:00,60,meals\n\
                     V3,E1,P1,someday,09:00,11:00,60,meals\n\
                     V4,E1,P1,daily,09:00,11:00,0,meals\n\
                     V5,E9,P1,daily,09:00,11:00,30,meals\n\
                     V6,E1,P1,daily,09:00,11:00,30,\n\
                     V7,E1,P1,daily,09:00,11:00,30,a service name far too long to be one\n";
        let (kind, r) = import(&store, plans).await.unwrap();
        assert_eq!((kind, r.imported), (ListKind::VisitPlans, 1));
        let lines: Vec<usize> = r.refused.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{:?}", r.refused);
        for (want, (_, why)) in [
            "window_start",
            "days",
            "length_min",
            "unknown elder_id",
            "service",
            "service",
        ]
        .iter()
        .zip(&r.refused)
        {
            assert!(why.contains(want), "{why}");
        }
        let plans = store.list_visit_plans().await.unwrap();
        assert_eq!(plans[0].days, "mon,wed,fri");
        assert_eq!(plans[0].length_min, 60);
        // Idempotent.
        let (_, r) = import(&store, carers).await.unwrap();
        assert_eq!(r.updated, 1);
    }
}
