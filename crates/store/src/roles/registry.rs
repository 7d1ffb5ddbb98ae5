use crate::{DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, Result};
use async_trait::async_trait;
use eldercare_model::{Carer, Device, Elder, EpochMs, Provider, VisitPlan};

/// The registry: elders and the devices that watch them, with the
/// devices' secret hashes. Read by the MQTT guard (a device's secret),
/// the rule engine (full listings, then deltas) and the alert desk (the
/// community an alert is filed under); written by registry import and
/// the operator API.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Inserts or updates an elder; `true` when it was new.
    async fn upsert_elder(&self, elder: &Elder) -> Result<bool>;
    /// Inserts or updates a device; `true` when it was new.
    async fn upsert_device(&self, device: &Device) -> Result<bool>;
    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>>;
    /// The elder, possibly as of the last registry read (a cache may
    /// answer without a round trip to the database): for what may lag a
    /// registry change by a refresh, such as the community an alert is
    /// filed under, on a path that must not wait.
    async fn get_elder_recent(&self, elder_id: &str) -> Result<Option<Elder>> {
        self.get_elder(elder_id).await
    }
    async fn get_device(&self, device_id: &str) -> Result<Option<Device>>;
    /// The registry, for the rule engine: everything, or only the entries
    /// written at or after `changed_since` (server time).
    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>>;
    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>>;

    // The registry of the operator API.

    /// Adds an elder; `false`, with nothing written, when the id exists.
    async fn insert_elder(&self, elder: &Elder) -> Result<bool>;
    /// Replaces an elder; `false` when there is none with its id.
    async fn update_elder(&self, elder: &Elder) -> Result<bool>;
    /// Deletes an elder, unless devices still watch them or visit plans
    /// are still for them.
    async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion>;
    /// Elders in id order, filtered and paged.
    async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>>;
    /// Adds a device: [`DeviceWrite::Written`], `AlreadyExists` or `UnknownElder`.
    async fn insert_device(&self, device: &Device) -> Result<DeviceWrite>;
    /// Updates a device's kind, elder, room and heartbeat but never its
    /// secret (see [`Registry::set_device_secret`]): `Written`, `NotFound`
    /// or `UnknownElder`.
    async fn update_device(&self, device: &Device) -> Result<DeviceWrite>;
    /// Replaces a device's secret hash; `false` when there is no such device.
    async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool>;
    /// Deletes a device; `false` when there was none. Its readings stay.
    async fn delete_device(&self, device_id: &str) -> Result<bool>;
    /// Devices in id order, filtered and paged.
    async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>>;

    // Carers' visits (docs/visits.md): providers, their carers, and each
    // elder's visit plans. Listings are whole: there are few of them.

    /// Inserts or updates a provider; `true` when it was new.
    async fn upsert_provider(&self, p: &Provider) -> Result<bool>;
    /// Deletes a provider; `false` when there was none. Refused with
    /// [`StoreError::RegistryConflict`](crate::StoreError::RegistryConflict), nothing deleted,
    /// while carers or visit plans still name it.
    async fn delete_provider(&self, provider_id: &str) -> Result<bool>;
    /// Every provider, in id order.
    async fn list_providers(&self) -> Result<Vec<Provider>>;
    /// Inserts or updates a carer; `true` when it was new. A carer naming
    /// no registered provider is refused with
    /// [`StoreError::RegistryConflict`](crate::StoreError::RegistryConflict).
    async fn upsert_carer(&self, c: &Carer) -> Result<bool>;
    /// Deletes a carer; `false` when there was none. Their visits, kept
    /// as readings and alerts, stay.
    async fn delete_carer(&self, carer_id: &str) -> Result<bool>;
    /// Every carer, in id order.
    async fn list_carers(&self) -> Result<Vec<Carer>>;
    /// Inserts or updates a visit plan; `true` when it was new. A plan
    /// naming no registered elder or provider is refused with
    /// [`StoreError::RegistryConflict`](crate::StoreError::RegistryConflict).
    async fn upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool>;
    /// Deletes a visit plan; `false` when there was none.
    async fn delete_visit_plan(&self, plan_id: &str) -> Result<bool>;
    /// Every visit plan, in id order.
    async fn list_visit_plans(&self) -> Result<Vec<VisitPlan>>;
}
