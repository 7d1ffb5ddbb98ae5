use crate::refusal::{self, RefusedRow};
use crate::{ReadingQuery, ReadingRecord, Result, StoredReading, VitalsHour};
use async_trait::async_trait;
use eldercare_model::EpochMs;

/// Telemetry: the readings devices send, written in batches by the
/// broker's writer with the intake log position they cover, and read by
/// the operator API.
#[async_trait]
pub trait Telemetry: Send + Sync + 'static {
    /// Writes a batch of readings, all or nothing.
    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()>;

    /// Writes `readings` and records `intake_pos` (the intake log position
    /// of the newest message this batch covers) in the same transaction.
    /// Rows the database refuses for their content (see
    /// [`StoreError::is_refusal`]) are left out and returned, in batch
    /// order; the rest are stored. An unreachable database is an `Err` as
    /// before, and then nothing is stored and no position recorded.
    ///
    /// Positions only grow: a smaller `intake_pos` than the one recorded
    /// leaves the recorded one. Recording `p` says that every message up
    /// to `p` is stored (or refused): callers pass positions in the
    /// order of the intake log, and after a crash replay what follows
    /// [`Telemetry::intake_position`]. A position beyond `i64::MAX` is
    /// refused with [`StoreError::OutOfRange`] and nothing is written.
    ///
    /// The default, for stores without a position of their own, writes
    /// with [`Telemetry::insert_readings`], splitting the batch to leave
    /// the refused rows out (each piece its own write: not atomic), and
    /// records nothing.
    ///
    /// [`StoreError::is_refusal`]: crate::StoreError::is_refusal
    /// [`StoreError::OutOfRange`]: crate::StoreError::OutOfRange
    async fn insert_readings_at(
        &self,
        readings: &[StoredReading],
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        let _ = intake_pos;
        let done = refusal::isolate(self, readings).await;
        match done.error {
            Some(e) => Err(e),
            None => Ok(done.refused),
        }
    }

    /// The intake position recorded with the newest stored batch; `None`
    /// if never. The default, for stores that record none, is `None`.
    async fn intake_position(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// As [`Telemetry::insert_readings_at`], for one of several intake
    /// logs (a cluster's partitions): `intake_pos` is recorded for `key`
    /// alone. The default records nothing, as that of `insert_readings_at`.
    async fn insert_readings_keyed(
        &self,
        readings: &[StoredReading],
        key: &str,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        let _ = (key, intake_pos);
        let done = refusal::isolate(self, readings).await;
        match done.error {
            Some(e) => Err(e),
            None => Ok(done.refused),
        }
    }

    /// The position recorded for the intake log `key`; `None` if never.
    async fn keyed_position(&self, key: &str) -> Result<Option<u64>> {
        let _ = key;
        Ok(None)
    }

    // The telemetry of the operator API.

    /// Stored readings of an elder or a device, filtered and paged.
    async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>>;
    /// The newest stored reading of each stream of each device now
    /// registered to the elder, attributed to that elder.
    async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>>;
    /// An elder's `vitals` readings aggregated by UTC hour, for the hours
    /// starting in `[from, to)` (both whole hours), oldest first; hours
    /// without a vitals reading are absent. Read from the continuous
    /// aggregate `vitals_hourly` on TimescaleDB, so years stay cheap.
    async fn vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>>;
}
