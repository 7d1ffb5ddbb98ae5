//! Local copies for when the database is unreachable: what the
//! [`SpoolingStore`](crate::SpoolingStore) last read of the registry and
//! of the alert desk's state, kept in its directory so that a server
//! started during an outage can still authenticate devices, attribute
//! their messages and know which alerts are open.
//!
//! Two files, each rewritten whole and atomically (a temporary file,
//! synced, renamed over the old one; mode 0600, as the devices' secret
//! hashes and the elders' personal data are in them, exactly as in the
//! SQLite backend's database in the same data directory):
//!
//! - `registry.json`: elders and devices. A full listing the database
//!   answers (`list_*(None)`) replaces the copy; a delta
//!   (`list_*(Some(t))`), a single read (`get_*`) and this process's own
//!   registry writes update it; a device or elder the database says is
//!   gone is removed.
//! - `desk.json`: the unresolved alerts (replaced by every
//!   `unresolved_alerts()` the database answers, then kept up to date from
//!   every alert event appended, stored or spooled) and the silences not
//!   yet over (from `silences()` answers and `insert_silence`).
//!
//! Changes are made in memory and written by [`LocalCopies::save`], which
//! the spool's drain calls every second and at shutdown; a change not yet
//! saved when the process dies is lost, and the copy is then that much
//! older (for open alerts, events still in the spool are applied again
//! when it is opened). The copies are a cache: a damaged file is logged
//! and ignored, never fatal.
use crate::{DeviceQuery, ElderQuery, Result, StoreError};
use eldercare_model::{Alert, AlertState, Device, DeviceKind, Elder, EpochMs, Silence};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

pub(crate) const REGISTRY_FILE: &str = "registry.json";
pub(crate) const DESK_FILE: &str = "desk.json";

/// An elder as the copy keeps them (the model type is not serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LocalElder {
    name: String,
    phone: Option<String>,
    address: Option<String>,
    district: Option<String>,
    community: Option<String>,
    home_lat: Option<f64>,
    home_lon: Option<f64>,
    safe_radius_m: Option<f64>,
    flags: Vec<String>,
    timezone: String,
    night_start: String,
    night_end: String,
    contact_name: Option<String>,
    contact_phone: Option<String>,
    /// Absent from copies written before elders had it.
    #[serde(default)]
    check_in: Option<String>,
}

impl LocalElder {
    fn of(e: &Elder) -> LocalElder {
        LocalElder {
            name: e.name.clone(),
            phone: e.phone.clone(),
            address: e.address.clone(),
            district: e.district.clone(),
            community: e.community.clone(),
            home_lat: e.home_lat,
            home_lon: e.home_lon,
            safe_radius_m: e.safe_radius_m,
            flags: e.flags.clone(),
            timezone: e.timezone.clone(),
            night_start: e.night_start.clone(),
            night_end: e.night_end.clone(),
            contact_name: e.contact_name.clone(),
            contact_phone: e.contact_phone.clone(),
            check_in: e.check_in.clone(),
        }
    }

    fn elder(&self, elder_id: &str) -> Elder {
        Elder {
            elder_id: elder_id.to_string(),
            name: self.name.clone(),
            phone: self.phone.clone(),
            address: self.address.clone(),
            district: self.district.clone(),
            community: self.community.clone(),
            home_lat: self.home_lat,
            home_lon: self.home_lon,
            safe_radius_m: self.safe_radius_m,
            flags: self.flags.clone(),
            timezone: self.timezone.clone(),
            night_start: self.night_start.clone(),
            night_end: self.night_end.clone(),
            contact_name: self.contact_name.clone(),
            contact_phone: self.contact_phone.clone(),
            check_in: self.check_in.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LocalDevice {
    kind: DeviceKind,
    elder_id: String,
    room: Option<String>,
    heartbeat_s: u32,
    secret_salt: String,
    secret_hash: String,
}

impl LocalDevice {
    fn of(d: &Device) -> LocalDevice {
        LocalDevice {
            kind: d.kind,
            elder_id: d.elder_id.clone(),
            room: d.room.clone(),
            heartbeat_s: d.heartbeat_s,
            secret_salt: d.secret_salt.clone(),
            secret_hash: d.secret_hash.clone(),
        }
    }

    fn device(&self, device_id: &str) -> Device {
        Device {
            device_id: device_id.to_string(),
            kind: self.kind,
            elder_id: self.elder_id.clone(),
            room: self.room.clone(),
            heartbeat_s: self.heartbeat_s,
            secret_salt: self.secret_salt.clone(),
            secret_hash: self.secret_hash.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    elders: BTreeMap<String, LocalElder>,
    devices: BTreeMap<String, LocalDevice>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Desk {
    /// Unresolved alerts by id.
    alerts: BTreeMap<String, Alert>,
    /// Silences not yet over, by id.
    silences: BTreeMap<String, Silence>,
}

/// Which half of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    Elders,
    Devices,
}

#[derive(Default)]
struct State {
    /// `None` until a copy is loaded or something is read: then a
    /// fallback has nothing to answer with.
    registry: Option<Registry>,
    desk: Option<Desk>,
    registry_dirty: bool,
    desk_dirty: bool,
    /// A full listing of that half was answered from the copy: the next
    /// delta asked of the database is widened to a full listing, so
    /// changes made while this process could not see the database are
    /// not missed.
    widen: [bool; 2],
}

pub(crate) struct LocalCopies {
    dir: PathBuf,
    state: Mutex<State>,
    /// One save at a time: two would write the same temporary files.
    saving: tokio::sync::Mutex<()>,
}

/// Reads a copy; absent is `None`, damaged is `None` and a warning (the
/// copy is a cache, and the database will fill it again).
fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Cannot read a local copy; ignoring it.");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "A local copy is damaged; ignoring it.");
            None
        }
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: a temporary
/// file (mode 0600), synced, renamed over the old one, the directory
/// synced.
pub(crate) fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let err = |source| StoreError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

fn page<T>(items: impl Iterator<Item = T>, limit: u32) -> Vec<T> {
    items.take(limit as usize).collect()
}

impl LocalCopies {
    /// Loads the copies kept in `dir`, if any.
    pub fn open(dir: &Path) -> LocalCopies {
        let state = State {
            registry: load(&dir.join(REGISTRY_FILE)),
            desk: load(&dir.join(DESK_FILE)),
            ..Default::default()
        };
        LocalCopies {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            saving: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn registry<R>(&self, f: impl FnOnce(&mut Registry) -> (R, bool)) -> R {
        let mut st = self.lock();
        let (r, changed) = f(st.registry.get_or_insert_with(Registry::default));
        st.registry_dirty |= changed;
        r
    }

    fn desk<R>(&self, f: impl FnOnce(&mut Desk) -> R) -> R {
        let mut st = self.lock();
        st.desk_dirty = true;
        f(st.desk.get_or_insert_with(Desk::default))
    }

    // The registry.

    /// What the database answered for one device (`None`: no such device).
    pub fn device_read(&self, device_id: &str, d: Option<&Device>) {
        self.registry(|r| match d {
            Some(d) => {
                let new = LocalDevice::of(d);
                let changed = r.devices.get(device_id) != Some(&new);
                if changed {
                    r.devices.insert(device_id.to_string(), new);
                }
                ((), changed)
            }
            None => ((), r.devices.remove(device_id).is_some()),
        });
    }

    pub fn elder_read(&self, elder_id: &str, e: Option<&Elder>) {
        self.registry(|r| match e {
            Some(e) => {
                let new = LocalElder::of(e);
                let changed = r.elders.get(elder_id) != Some(&new);
                if changed {
                    r.elders.insert(elder_id.to_string(), new);
                }
                ((), changed)
            }
            None => ((), r.elders.remove(elder_id).is_some()),
        });
    }

    /// A listing the database answered: the whole half when `full`, else
    /// the entries changed since some time.
    pub fn devices_listed(&self, full: bool, list: &[Device]) {
        self.registry(|r| {
            let new: BTreeMap<String, LocalDevice> = list
                .iter()
                .map(|d| (d.device_id.clone(), LocalDevice::of(d)))
                .collect();
            if full {
                let changed = r.devices != new;
                r.devices = new;
                return ((), changed);
            }
            let mut changed = false;
            for (id, d) in new {
                if r.devices.get(&id) != Some(&d) {
                    r.devices.insert(id, d);
                    changed = true;
                }
            }
            ((), changed)
        });
    }

    pub fn elders_listed(&self, full: bool, list: &[Elder]) {
        self.registry(|r| {
            let new: BTreeMap<String, LocalElder> = list
                .iter()
                .map(|e| (e.elder_id.clone(), LocalElder::of(e)))
                .collect();
            if full {
                let changed = r.elders != new;
                r.elders = new;
                return ((), changed);
            }
            let mut changed = false;
            for (id, e) in new {
                if r.elders.get(&id) != Some(&e) {
                    r.elders.insert(id, e);
                    changed = true;
                }
            }
            ((), changed)
        });
    }

    /// A device this process wrote. `keep_secret`: the write left the
    /// secret as it was (an update), so the copy's stays too.
    pub fn device_written(&self, d: &Device, keep_secret: bool) {
        self.registry(|r| {
            let mut new = LocalDevice::of(d);
            if keep_secret {
                match r.devices.get(&d.device_id) {
                    Some(old) => {
                        new.secret_salt = old.secret_salt.clone();
                        new.secret_hash = old.secret_hash.clone();
                    }
                    // Without the secret the copy cannot authenticate it:
                    // leave it to the next read.
                    None => return ((), false),
                }
            }
            let changed = r.devices.get(&d.device_id) != Some(&new);
            r.devices.insert(d.device_id.clone(), new);
            ((), changed)
        });
    }

    pub fn device_secret(&self, device_id: &str, salt: &str, hash: &str) {
        self.registry(|r| match r.devices.get_mut(device_id) {
            Some(d) => {
                d.secret_salt = salt.to_string();
                d.secret_hash = hash.to_string();
                ((), true)
            }
            None => ((), false),
        });
    }

    pub fn elder_written(&self, e: &Elder) {
        self.elder_read(&e.elder_id, Some(e));
    }

    pub fn device(&self, device_id: &str) -> Option<Device> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        r.devices.get(device_id).map(|d| d.device(device_id))
    }

    pub fn elder(&self, elder_id: &str) -> Option<Elder> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        r.elders.get(elder_id).map(|e| e.elder(elder_id))
    }

    /// The whole half, `None` when there is no copy.
    pub fn devices(&self) -> Option<Vec<Device>> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        Some(r.devices.iter().map(|(id, d)| d.device(id)).collect())
    }

    pub fn elders(&self) -> Option<Vec<Elder>> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        Some(r.elders.iter().map(|(id, e)| e.elder(id)).collect())
    }

    /// [`Registry::query_devices`](crate::Registry::query_devices) over the copy.
    pub fn query_devices(&self, q: &DeviceQuery) -> Option<Vec<Device>> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        let after = q.after.as_deref().unwrap_or("");
        let items = r
            .devices
            .iter()
            .filter(|(id, _)| q.after.is_none() || id.as_str() > after)
            .filter(|(_, d)| q.elder_id.as_ref().is_none_or(|e| *e == d.elder_id))
            .map(|(id, d)| d.device(id));
        Some(page(items, q.limit))
    }

    pub fn query_elders(&self, q: &ElderQuery) -> Option<Vec<Elder>> {
        let st = self.lock();
        let r = st.registry.as_ref()?;
        let after = q.after.as_deref().unwrap_or("");
        let items = r
            .elders
            .iter()
            .filter(|(id, _)| q.after.is_none() || id.as_str() > after)
            .filter(|(_, e)| q.district.is_none() || e.district == q.district)
            .filter(|(_, e)| q.community.is_none() || e.community == q.community)
            .map(|(id, e)| e.elder(id));
        Some(page(items, q.limit))
    }

    /// Whether the next delta of `half` is to be asked as a full listing.
    pub fn widen(&self, half: Half) -> bool {
        self.lock().widen[half as usize]
    }

    pub fn set_widen(&self, half: Half, on: bool) {
        self.lock().widen[half as usize] = on;
    }

    // The desk.

    /// Every unresolved alert, as the database answered.
    pub fn alerts_listed(&self, list: &[Alert]) {
        self.desk(|d| d.alerts = list.iter().map(|a| (a.id.clone(), a.clone())).collect());
    }

    /// An alert's new state, from an event appended (stored or spooled).
    pub fn alert_changed(&self, a: &Alert) {
        self.desk(|d| {
            if a.state == AlertState::Resolved {
                d.alerts.remove(&a.id);
            } else {
                d.alerts.insert(a.id.clone(), a.clone());
            }
        });
    }

    pub fn unresolved(&self) -> Option<Vec<Alert>> {
        let st = self.lock();
        Some(st.desk.as_ref()?.alerts.values().cloned().collect())
    }

    pub fn alert(&self, id: &str) -> Option<Alert> {
        self.lock().desk.as_ref()?.alerts.get(id).cloned()
    }

    /// Silences the database answered; those over at `now` are left out.
    pub fn silences_listed(&self, list: &[Silence], now: EpochMs) {
        self.desk(|d| {
            d.silences = list
                .iter()
                .filter(|s| !over(s, now))
                .map(|s| (s.id.clone(), s.clone()))
                .collect();
        });
    }

    pub fn silence_written(&self, s: &Silence) {
        self.desk(|d| {
            d.silences.insert(s.id.clone(), s.clone());
        });
    }

    /// The silences active at `t`, `None` when there is no copy.
    pub fn silences_at(&self, t: EpochMs) -> Option<Vec<Silence>> {
        let st = self.lock();
        let d = st.desk.as_ref()?;
        Some(
            d.silences
                .values()
                .filter(|s| s.active_at(t))
                .cloned()
                .collect(),
        )
    }

    /// Writes the copies changed since the last save. On failure they
    /// stay marked, for the next save.
    pub async fn save(&self, now: EpochMs) -> Result<()> {
        let _one = self.saving.lock().await;
        let (registry, desk) = {
            let mut st = self.lock();
            let registry = match (st.registry_dirty, &st.registry) {
                (true, Some(r)) => Some(serde_json::to_vec(r).map_err(corrupt)?),
                _ => None,
            };
            if let Some(d) = st.desk.as_mut() {
                d.silences.retain(|_, s| !over(s, now));
            }
            let desk = match (st.desk_dirty, &st.desk) {
                (true, Some(d)) => Some(serde_json::to_vec(d).map_err(corrupt)?),
                _ => None,
            };
            st.registry_dirty = false;
            st.desk_dirty = false;
            (registry, desk)
        };
        if registry.is_none() && desk.is_none() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let (reg_done, desk_done) = (registry.is_some(), desk.is_some());
        let written = tokio::task::spawn_blocking(move || -> Result<()> {
            if let Some(b) = registry {
                write_private(&dir, REGISTRY_FILE, &b)?;
            }
            if let Some(b) = desk {
                write_private(&dir, DESK_FILE, &b)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("saving a local copy: {e}"))));
        if written.is_err() {
            let mut st = self.lock();
            st.registry_dirty |= reg_done;
            st.desk_dirty |= desk_done;
        }
        written
    }
}

/// Whether a silence is over for good at `now` (ended, or past its end).
fn over(s: &Silence, now: EpochMs) -> bool {
    s.until <= now || s.ended_at.is_some_and(|e| e <= now)
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}
