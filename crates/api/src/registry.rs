//! `eldercare.v1.RegistryService`: elders and devices, bulk import,
//! device secret rotation, and the providers, carers and visit plans of
//! carers' home visits.
//!
//! Every record is checked by the registry import's own row validation
//! (`eldercare_store::import`): a message is turned into the row an
//! imported file would hold, so the API and `eldercare import` accept and
//! refuse exactly the same things, with the same messages.
//!
//! Names, phones and addresses (an elder's, a carer's, a provider's) are
//! personal data: nothing here logs them, and log lines name only ids and
//! the acting operator.
use crate::auth::{Action, Auth, Principal};
use eldercare_model::{self as m, RegistryChange};
use eldercare_proto::v1 as pb;
use eldercare_store::import::{self, ImportError, ListKind, Row};
use eldercare_store::{
    DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, Store, StoreError, generate_secret,
    hash_secret,
};
use pb::registry_service_server::RegistryService;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

/// Largest page a list call returns.
pub(crate) const MAX_PAGE: u32 = 1000;
/// Page size when the request gives none.
pub(crate) const DEFAULT_PAGE: u32 = 100;

/// Closes a device's live MQTT sessions. The broker's guard implements it;
/// the API knows only this, so it does not depend on the broker.
pub trait DeviceSessions: Send + Sync + 'static {
    /// Closes every open session of `device_id` at once; returns how many.
    fn disconnect(&self, device_id: &str) -> usize;
}

/// What the registry and telemetry services need from the rest of the
/// server.
#[derive(Clone)]
pub struct RegistryHandles {
    pub store: Arc<dyn Store>,
    /// Ends the sessions of a device whose secret was rotated or which was
    /// deleted.
    pub sessions: Arc<dyn DeviceSessions>,
    /// Tells the rule engine what changed, at once.
    pub changes: mpsc::Sender<RegistryChange>,
}

pub struct Registry {
    h: RegistryHandles,
    auth: Auth,
}

impl Registry {
    pub fn new(h: RegistryHandles, auth: Auth) -> Registry {
        Registry { h, auth }
    }

    async fn changed(&self, change: RegistryChange) {
        // Fails only once the ingest loop has stopped, at shutdown.
        if self.h.changes.send(change).await.is_err() {
            debug!("Registry change not applied: the ingest loop has stopped.");
        }
    }
}

fn unavailable(e: StoreError) -> Status {
    Status::unavailable(e.to_string())
}

/// Page size: unset means the default; more than [`MAX_PAGE`] is refused.
pub(crate) fn page_size(n: u32) -> Result<u32, Status> {
    match n {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "page_size {n} is too large: at most {MAX_PAGE}"
        ))),
    }
}

/// An id the request must name, checked like an imported one.
fn required_id(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "missing required `{field}`"
        )));
    }
    if !import::valid_id(id) {
        return Err(Status::invalid_argument(format!(
            "`{field}` must be 1 to 64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

/// A list's page token: the last id of the previous page.
fn page_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    if !import::valid_id(token) {
        return Err(Status::invalid_argument("malformed page_token"));
    }
    Ok(Some(token.to_string()))
}

pub(crate) fn elder_to_pb(e: &m::Elder) -> pb::Elder {
    pb::Elder {
        elder_id: e.elder_id.clone(),
        name: e.name.clone(),
        phone: e.phone.clone().unwrap_or_default(),
        address: e.address.clone().unwrap_or_default(),
        district: e.district.clone().unwrap_or_default(),
        community: e.community.clone().unwrap_or_default(),
        home_lat: e.home_lat,
        home_lon: e.home_lon,
        safe_radius_m: e.safe_radius_m,
        flags: e.flags.clone(),
        timezone: e.timezone.clone(),
        night_start: e.night_start.clone(),
        night_end: e.night_end.clone(),
        contact_name: e.contact_name.clone().unwrap_or_default(),
        contact_phone: e.contact_phone.clone().unwrap_or_default(),
        check_in: e.check_in.clone().unwrap_or_default(),
    }
}

fn provider_to_pb(p: &m::Provider) -> pb::Provider {
    pb::Provider {
        provider_id: p.provider_id.clone(),
        name: p.name.clone(),
        phone: p.phone.clone().unwrap_or_default(),
    }
}

fn carer_to_pb(c: &m::Carer) -> pb::Carer {
    pb::Carer {
        carer_id: c.carer_id.clone(),
        provider_id: c.provider_id.clone(),
        name: c.name.clone(),
    }
}

fn plan_to_pb(p: &m::VisitPlan) -> pb::VisitPlan {
    pb::VisitPlan {
        plan_id: p.plan_id.clone(),
        elder_id: p.elder_id.clone(),
        provider_id: p.provider_id.clone(),
        days: p.days.clone(),
        window_start: p.window_start.clone(),
        window_end: p.window_end.clone(),
        length_min: p.length_min,
        service: p.service.clone(),
    }
}

/// A row of `(field, value)` pairs, empty values left out as an empty
/// cell of a file is.
fn row_of<const N: usize>(fields: [(&str, String); N]) -> Row {
    fields
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn provider_row(p: &pb::Provider) -> Row {
    row_of([
        ("provider_id", p.provider_id.clone()),
        ("name", p.name.clone()),
        ("phone", p.phone.clone()),
    ])
}

fn carer_row(c: &pb::Carer) -> Row {
    row_of([
        ("carer_id", c.carer_id.clone()),
        ("provider_id", c.provider_id.clone()),
        ("name", c.name.clone()),
    ])
}

/// A zero length is an empty cell (and so refused as missing).
fn plan_row(p: &pb::VisitPlan) -> Row {
    row_of([
        ("plan_id", p.plan_id.clone()),
        ("elder_id", p.elder_id.clone()),
        ("provider_id", p.provider_id.clone()),
        ("days", p.days.clone()),
        ("window_start", p.window_start.clone()),
        ("window_end", p.window_end.clone()),
        (
            "length_min",
            if p.length_min == 0 {
                String::new()
            } else {
                p.length_min.to_string()
            },
        ),
        ("service", p.service.clone()),
    ])
}

/// A write the store refused for a record it names (deleted since it was
/// checked) is NOT_FOUND, as the check would have answered.
fn write_refused(e: StoreError) -> Status {
    match e {
        StoreError::RegistryConflict(why) => Status::not_found(why),
        e => unavailable(e),
    }
}

fn device_to_pb(d: &m::Device) -> pb::Device {
    pb::Device {
        device_id: d.device_id.clone(),
        kind: d.kind.as_str().to_string(),
        elder_id: d.elder_id.clone(),
        room: d.room.clone().unwrap_or_default(),
        heartbeat_s: d.heartbeat_s,
    }
}

/// The elders row a message stands for: unset and empty fields are left
/// out, as an empty cell of a file is.
fn elder_row(e: &pb::Elder) -> Row {
    let mut row = Row::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            row.insert(k.to_string(), v);
        }
    };
    put("elder_id", e.elder_id.clone());
    put("name", e.name.clone());
    put("phone", e.phone.clone());
    put("address", e.address.clone());
    put("district", e.district.clone());
    put("community", e.community.clone());
    // `f64` prints the shortest text that parses back to the same value.
    put(
        "home_lat",
        e.home_lat.map(|v| v.to_string()).unwrap_or_default(),
    );
    put(
        "home_lon",
        e.home_lon.map(|v| v.to_string()).unwrap_or_default(),
    );
    put(
        "safe_radius_m",
        e.safe_radius_m.map(|v| v.to_string()).unwrap_or_default(),
    );
    put("flags", e.flags.join(";"));
    put("timezone", e.timezone.clone());
    put("night_start", e.night_start.clone());
    put("night_end", e.night_end.clone());
    put("contact_name", e.contact_name.clone());
    put("contact_phone", e.contact_phone.clone());
    put("check_in", e.check_in.clone());
    row
}

/// The devices row a message stands for; a zero heartbeat is an empty cell.
fn device_row(d: &pb::Device) -> Row {
    let mut row = Row::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            row.insert(k.to_string(), v);
        }
    };
    put("device_id", d.device_id.clone());
    put("kind", d.kind.clone());
    put("elder_id", d.elder_id.clone());
    put("room", d.room.clone());
    if d.heartbeat_s != 0 {
        put("heartbeat_s", d.heartbeat_s.to_string());
    }
    row
}

/// Applies an update to a stored record's row: the fields the mask names
/// (a named field unset in the update is cleared), or, with no mask,
/// every field. The id names the record and is never changed.
fn merge(
    what: &str,
    stored: Row,
    update: Row,
    mask: Option<&eldercare_proto::wkt::FieldMask>,
    fields: &[&str],
) -> Result<Row, Status> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(update);
    }
    let id_field = fields[0];
    let mut row = stored;
    for p in paths {
        if p == id_field {
            return Err(Status::invalid_argument(format!(
                "update_mask: `{id_field}` names the {what} and cannot be changed"
            )));
        }
        if !fields.contains(&p.as_str()) {
            return Err(Status::invalid_argument(format!(
                "update_mask: unknown {what} field `{p}` (fields: {})",
                fields[1..].join(", ")
            )));
        }
        match update.get(p) {
            Some(v) => row.insert(p.clone(), v.clone()),
            None => row.remove(p),
        };
    }
    Ok(row)
}

fn elder_from_row(row: &Row) -> Result<m::Elder, Status> {
    import::elder_from_row(row).map_err(|why| Status::invalid_argument(format!("elder: {why}")))
}

fn device_from_row(row: &Row) -> Result<import::DeviceFields, Status> {
    import::device_from_row(row).map_err(|why| Status::invalid_argument(format!("device: {why}")))
}

fn unknown_elder(elder_id: &str) -> Status {
    Status::not_found(format!(
        "unknown elder_id `{elder_id}`: no elder with this id is registered"
    ))
}

fn log_write(who: &Principal, action: &str, kind: &str, id: &str) {
    info!(operator = %who.operator_id, action, kind, id, "Registry changed.");
}

#[tonic::async_trait]
impl RegistryService for Registry {
    async fn create_elder(
        &self,
        req: Request<pb::CreateElderRequest>,
    ) -> Result<Response<pb::Elder>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let e = req
            .into_inner()
            .elder
            .ok_or_else(|| Status::invalid_argument("missing required `elder`"))?;
        let elder = elder_from_row(&elder_row(&e))?;
        if !self
            .h
            .store
            .insert_elder(&elder)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::already_exists(format!(
                "elder `{}` already exists",
                elder.elder_id
            )));
        }
        log_write(&who, "create", "elder", &elder.elder_id);
        self.changed(RegistryChange::Elder(elder.elder_id.clone()))
            .await;
        Ok(Response::new(elder_to_pb(&elder)))
    }

    async fn update_elder(
        &self,
        req: Request<pb::UpdateElderRequest>,
    ) -> Result<Response<pb::Elder>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let r = req.into_inner();
        let e = r
            .elder
            .ok_or_else(|| Status::invalid_argument("missing required `elder`"))?;
        required_id("elder_id", &e.elder_id)?;
        let stored = self
            .h
            .store
            .get_elder(&e.elder_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no elder with id `{}`", e.elder_id)))?;
        let row = merge(
            "elder",
            import::elder_to_row(&stored),
            elder_row(&e),
            r.update_mask.as_ref(),
            &import::ELDER_FIELDS,
        )?;
        let elder = elder_from_row(&row)?;
        if !self
            .h
            .store
            .update_elder(&elder)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(format!(
                "no elder with id `{}`",
                elder.elder_id
            )));
        }
        log_write(&who, "update", "elder", &elder.elder_id);
        self.changed(RegistryChange::Elder(elder.elder_id.clone()))
            .await;
        Ok(Response::new(elder_to_pb(&elder)))
    }

    async fn get_elder(
        &self,
        req: Request<pb::GetElderRequest>,
    ) -> Result<Response<pb::Elder>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let id = req.into_inner().elder_id;
        required_id("elder_id", &id)?;
        match self.h.store.get_elder(&id).await.map_err(unavailable)? {
            Some(e) => Ok(Response::new(elder_to_pb(&e))),
            None => Err(Status::not_found(format!("no elder with id `{id}`"))),
        }
    }

    async fn list_elders(
        &self,
        req: Request<pb::ListEldersRequest>,
    ) -> Result<Response<pb::ListEldersResponse>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size)?;
        // One more than the page, to know whether another page follows.
        let mut elders = self
            .h
            .store
            .query_elders(&ElderQuery {
                district: (!r.district.is_empty()).then_some(r.district),
                community: (!r.community.is_empty()).then_some(r.community),
                after: page_token(&r.page_token)?,
                limit: limit + 1,
            })
            .await
            .map_err(unavailable)?;
        let more = elders.len() > limit as usize;
        elders.truncate(limit as usize);
        let next_page_token = match elders.last() {
            Some(e) if more => e.elder_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListEldersResponse {
            elders: elders.iter().map(elder_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_elder(
        &self,
        req: Request<pb::DeleteElderRequest>,
    ) -> Result<Response<pb::DeleteElderResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().elder_id;
        required_id("elder_id", &id)?;
        match self.h.store.delete_elder(&id).await.map_err(unavailable)? {
            ElderDeletion::Deleted => {}
            ElderDeletion::NotFound => {
                return Err(Status::not_found(format!("no elder with id `{id}`")));
            }
            ElderDeletion::HasDevices(n) => {
                return Err(Status::failed_precondition(format!(
                    "elder `{id}` still has {n} device(s); delete them or move them to another elder first"
                )));
            }
            ElderDeletion::HasVisitPlans(n) => {
                return Err(Status::failed_precondition(format!(
                    "elder `{id}` still has {n} visit plan(s); delete them first"
                )));
            }
        }
        log_write(&who, "delete", "elder", &id);
        self.changed(RegistryChange::Elder(id)).await;
        Ok(Response::new(pb::DeleteElderResponse {}))
    }

    async fn create_device(
        &self,
        req: Request<pb::CreateDeviceRequest>,
    ) -> Result<Response<pb::CreateDeviceResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let r = req.into_inner();
        let d = r
            .device
            .ok_or_else(|| Status::invalid_argument("missing required `device`"))?;
        let fields = device_from_row(&device_row(&d))?;
        let generated = r.secret.is_empty().then(generate_secret);
        let (salt, hash) = hash_secret(generated.as_deref().unwrap_or(&r.secret));
        let device = fields.into_device(salt, hash);
        match self
            .h
            .store
            .insert_device(&device)
            .await
            .map_err(unavailable)?
        {
            DeviceWrite::Written => {}
            DeviceWrite::AlreadyExists => {
                return Err(Status::already_exists(format!(
                    "device `{}` already exists",
                    device.device_id
                )));
            }
            DeviceWrite::UnknownElder | DeviceWrite::NotFound => {
                return Err(unknown_elder(&device.elder_id));
            }
        }
        log_write(&who, "create", "device", &device.device_id);
        self.changed(RegistryChange::Device(device.device_id.clone()))
            .await;
        Ok(Response::new(pb::CreateDeviceResponse {
            device: Some(device_to_pb(&device)),
            secret: generated.unwrap_or_default(),
        }))
    }

    async fn update_device(
        &self,
        req: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let r = req.into_inner();
        let d = r
            .device
            .ok_or_else(|| Status::invalid_argument("missing required `device`"))?;
        required_id("device_id", &d.device_id)?;
        let not_found = || Status::not_found(format!("no device with id `{}`", d.device_id));
        let stored = self
            .h
            .store
            .get_device(&d.device_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(not_found)?;
        let row = merge(
            "device",
            import::device_to_row(&stored),
            device_row(&d),
            r.update_mask.as_ref(),
            &import::DEVICE_FIELDS,
        )?;
        // The store never writes the secret on update; these are for show.
        let device = device_from_row(&row)?.into_device(stored.secret_salt, stored.secret_hash);
        match self
            .h
            .store
            .update_device(&device)
            .await
            .map_err(unavailable)?
        {
            DeviceWrite::Written => {}
            DeviceWrite::NotFound | DeviceWrite::AlreadyExists => return Err(not_found()),
            DeviceWrite::UnknownElder => return Err(unknown_elder(&device.elder_id)),
        }
        log_write(&who, "update", "device", &device.device_id);
        self.changed(RegistryChange::Device(device.device_id.clone()))
            .await;
        Ok(Response::new(device_to_pb(&device)))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let id = req.into_inner().device_id;
        required_id("device_id", &id)?;
        match self.h.store.get_device(&id).await.map_err(unavailable)? {
            Some(d) => Ok(Response::new(device_to_pb(&d))),
            None => Err(Status::not_found(format!("no device with id `{id}`"))),
        }
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size)?;
        let mut devices = self
            .h
            .store
            .query_devices(&DeviceQuery {
                elder_id: (!r.elder_id.is_empty()).then_some(r.elder_id),
                after: page_token(&r.page_token)?,
                limit: limit + 1,
            })
            .await
            .map_err(unavailable)?;
        let more = devices.len() > limit as usize;
        devices.truncate(limit as usize);
        let next_page_token = match devices.last() {
            Some(d) if more => d.device_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.iter().map(device_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_device(
        &self,
        req: Request<pb::DeleteDeviceRequest>,
    ) -> Result<Response<pb::DeleteDeviceResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().device_id;
        required_id("device_id", &id)?;
        if !self.h.store.delete_device(&id).await.map_err(unavailable)? {
            return Err(Status::not_found(format!("no device with id `{id}`")));
        }
        // After the store: a device reconnecting now is refused.
        let closed = self.h.sessions.disconnect(&id);
        log_write(&who, "delete", "device", &id);
        self.changed(RegistryChange::Device(id)).await;
        Ok(Response::new(pb::DeleteDeviceResponse {
            sessions_closed: closed as u32,
        }))
    }

    async fn rotate_device_secret(
        &self,
        req: Request<pb::RotateDeviceSecretRequest>,
    ) -> Result<Response<pb::RotateDeviceSecretResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().device_id;
        required_id("device_id", &id)?;
        let secret = generate_secret();
        let (salt, hash) = hash_secret(&secret);
        if !self
            .h
            .store
            .set_device_secret(&id, &salt, &hash)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(format!("no device with id `{id}`")));
        }
        // After the store: a session that logged in with the old secret is
        // closed, and the old secret no longer logs in.
        let closed = self.h.sessions.disconnect(&id);
        log_write(&who, "rotate_secret", "device", &id);
        Ok(Response::new(pb::RotateDeviceSecretResponse {
            device_id: id,
            secret,
            sessions_closed: closed as u32,
        }))
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let text = req.into_inner().text;
        let (kind, report) =
            import::import(self.h.store.as_ref(), &text)
                .await
                .map_err(|e| match e {
                    ImportError::Store(e) => unavailable(e),
                    e @ (ImportError::Read(_) | ImportError::UnknownList) => {
                        Status::invalid_argument(e.to_string())
                    }
                })?;
        // A new secret from the file revokes the old one, as a rotation does.
        for d in &report.rekeyed {
            self.h.sessions.disconnect(d);
        }
        info!(
            operator = %who.operator_id,
            list = ?kind,
            imported = report.imported,
            updated = report.updated,
            refused = report.refused.len(),
            "Registry imported."
        );
        if report.imported + report.updated > 0 {
            self.changed(if kind.is_visits() {
                RegistryChange::Visits
            } else {
                RegistryChange::Many
            })
            .await;
        }
        Ok(Response::new(pb::ImportResponse {
            list: match kind {
                ListKind::Elders => pb::RegistryList::Elders,
                ListKind::Devices => pb::RegistryList::Devices,
                ListKind::Providers => pb::RegistryList::Providers,
                ListKind::Carers => pb::RegistryList::Carers,
                ListKind::VisitPlans => pb::RegistryList::VisitPlans,
            } as i32,
            imported: report.imported as u32,
            updated: report.updated as u32,
            refused: report.refused.len() as u32,
            refused_rows: report
                .refused
                .into_iter()
                .map(|(line, reason)| pb::RefusedRow {
                    line: line as u32,
                    reason,
                })
                .collect(),
            generated_secrets: report
                .generated_secrets
                .into_iter()
                .map(|(device_id, secret)| pb::IssuedSecret { device_id, secret })
                .collect(),
            rekeyed_devices: report.rekeyed,
        }))
    }

    async fn upsert_provider(
        &self,
        req: Request<pb::UpsertProviderRequest>,
    ) -> Result<Response<pb::UpsertProviderResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let p = req
            .into_inner()
            .provider
            .ok_or_else(|| Status::invalid_argument("missing required `provider`"))?;
        let provider = import::provider_from_row(&provider_row(&p))
            .map_err(|why| Status::invalid_argument(format!("provider: {why}")))?;
        let created = self
            .h
            .store
            .upsert_provider(&provider)
            .await
            .map_err(write_refused)?;
        log_write(&who, "upsert", "provider", &provider.provider_id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::UpsertProviderResponse {
            provider: Some(provider_to_pb(&provider)),
            created,
        }))
    }

    async fn list_providers(
        &self,
        req: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let providers = self.h.store.list_providers().await.map_err(unavailable)?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers.iter().map(provider_to_pb).collect(),
        }))
    }

    async fn delete_provider(
        &self,
        req: Request<pb::DeleteProviderRequest>,
    ) -> Result<Response<pb::DeleteProviderResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().provider_id;
        required_id("provider_id", &id)?;
        match self.h.store.delete_provider(&id).await {
            Ok(true) => {}
            Ok(false) => return Err(Status::not_found(format!("no provider with id `{id}`"))),
            Err(StoreError::RegistryConflict(why)) => {
                return Err(Status::failed_precondition(why));
            }
            Err(e) => return Err(unavailable(e)),
        }
        log_write(&who, "delete", "provider", &id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::DeleteProviderResponse {}))
    }

    async fn upsert_carer(
        &self,
        req: Request<pb::UpsertCarerRequest>,
    ) -> Result<Response<pb::UpsertCarerResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let c = req
            .into_inner()
            .carer
            .ok_or_else(|| Status::invalid_argument("missing required `carer`"))?;
        let carer = import::carer_from_row(&carer_row(&c))
            .map_err(|why| Status::invalid_argument(format!("carer: {why}")))?;
        if let Some(why) = import::carer_refs(self.h.store.as_ref(), &carer)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(why));
        }
        let created = self
            .h
            .store
            .upsert_carer(&carer)
            .await
            .map_err(write_refused)?;
        log_write(&who, "upsert", "carer", &carer.carer_id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::UpsertCarerResponse {
            carer: Some(carer_to_pb(&carer)),
            created,
        }))
    }

    async fn list_carers(
        &self,
        req: Request<pb::ListCarersRequest>,
    ) -> Result<Response<pb::ListCarersResponse>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let provider_id = req.into_inner().provider_id;
        let carers = self.h.store.list_carers().await.map_err(unavailable)?;
        Ok(Response::new(pb::ListCarersResponse {
            carers: carers
                .iter()
                .filter(|c| provider_id.is_empty() || c.provider_id == provider_id)
                .map(carer_to_pb)
                .collect(),
        }))
    }

    async fn delete_carer(
        &self,
        req: Request<pb::DeleteCarerRequest>,
    ) -> Result<Response<pb::DeleteCarerResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().carer_id;
        required_id("carer_id", &id)?;
        if !self.h.store.delete_carer(&id).await.map_err(unavailable)? {
            return Err(Status::not_found(format!("no carer with id `{id}`")));
        }
        log_write(&who, "delete", "carer", &id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::DeleteCarerResponse {}))
    }

    async fn upsert_visit_plan(
        &self,
        req: Request<pb::UpsertVisitPlanRequest>,
    ) -> Result<Response<pb::UpsertVisitPlanResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let p = req
            .into_inner()
            .plan
            .ok_or_else(|| Status::invalid_argument("missing required `plan`"))?;
        let plan = import::visit_plan_from_row(&plan_row(&p))
            .map_err(|why| Status::invalid_argument(format!("visit plan: {why}")))?;
        if let Some(why) = import::visit_plan_refs(self.h.store.as_ref(), &plan)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(why));
        }
        let created = self
            .h
            .store
            .upsert_visit_plan(&plan)
            .await
            .map_err(write_refused)?;
        log_write(&who, "upsert", "visit_plan", &plan.plan_id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::UpsertVisitPlanResponse {
            plan: Some(plan_to_pb(&plan)),
            created,
        }))
    }

    async fn list_visit_plans(
        &self,
        req: Request<pb::ListVisitPlansRequest>,
    ) -> Result<Response<pb::ListVisitPlansResponse>, Status> {
        self.auth.check(&req, Action::ReadRegistry)?;
        let r = req.into_inner();
        let plans = self.h.store.list_visit_plans().await.map_err(unavailable)?;
        Ok(Response::new(pb::ListVisitPlansResponse {
            plans: plans
                .iter()
                .filter(|p| r.elder_id.is_empty() || p.elder_id == r.elder_id)
                .filter(|p| r.provider_id.is_empty() || p.provider_id == r.provider_id)
                .map(plan_to_pb)
                .collect(),
        }))
    }

    async fn delete_visit_plan(
        &self,
        req: Request<pb::DeleteVisitPlanRequest>,
    ) -> Result<Response<pb::DeleteVisitPlanResponse>, Status> {
        let who = self.auth.check(&req, Action::WriteRegistry)?;
        let id = req.into_inner().plan_id;
        required_id("plan_id", &id)?;
        if !self
            .h
            .store
            .delete_visit_plan(&id)
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(format!("no visit plan with id `{id}`")));
        }
        log_write(&who, "delete", "visit_plan", &id);
        self.changed(RegistryChange::Visits).await;
        Ok(Response::new(pb::DeleteVisitPlanResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_the_row_a_file_would_hold() {
        let e = pb::Elder {
            elder_id: "E1".into(),
            name: "Someone".into(),
            home_lat: Some(31.230416),
            flags: vec!["lives_alone".into(), "dementia".into()],
            ..Default::default()
        };
        let elder = import::elder_from_row(&elder_row(&e)).unwrap();
        assert_eq!(elder.home_lat, Some(31.230416));
        assert_eq!(elder.flags, ["lives_alone", "dementia"]);
        assert_eq!(elder.timezone, "Asia/Shanghai", "the import's default");
        assert_eq!(elder_to_pb(&elder).night_end, "07:00");
        let bad = pb::Elder {
            home_lat: Some(95.0),
            ..e.clone()
        };
        let err = elder_from_row(&elder_row(&bad)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("home_lat"), "{}", err.message());
    }

    #[test]
    fn an_update_mask_changes_only_what_it_names() {
        let stored = import::elder_to_row(
            &import::elder_from_row(&Row::from([
                ("elder_id".to_string(), "E1".to_string()),
                ("name".to_string(), "Someone".to_string()),
                ("phone".to_string(), "123".to_string()),
                ("district".to_string(), "D1".to_string()),
            ]))
            .unwrap(),
        );
        let update = elder_row(&pb::Elder {
            elder_id: "E1".into(),
            district: "D2".into(),
            ..Default::default()
        });
        let mask = eldercare_proto::wkt::FieldMask {
            paths: vec!["district".into(), "phone".into()],
        };
        let row = merge(
            "elder",
            stored.clone(),
            update.clone(),
            Some(&mask),
            &import::ELDER_FIELDS,
        )
        .unwrap();
        assert_eq!(row.get("district").map(String::as_str), Some("D2"));
        assert_eq!(row.get("name").map(String::as_str), Some("Someone"));
        assert!(!row.contains_key("phone"), "named and unset: cleared");
        let bad = eldercare_proto::wkt::FieldMask {
            paths: vec!["colour".into()],
        };
        let err = merge(
            "elder",
            stored.clone(),
            update.clone(),
            Some(&bad),
            &import::ELDER_FIELDS,
        )
        .unwrap_err();
        assert!(err.message().contains("colour"), "{}", err.message());
        let id = eldercare_proto::wkt::FieldMask {
            paths: vec!["elder_id".into()],
        };
        assert!(merge("elder", stored, update, Some(&id), &import::ELDER_FIELDS).is_err());
    }
}
