//! The operator API's registry writes and telemetry queries on SQLite.
//! Kept apart from the ingest and alert paths of `sqlite.rs`; the trait
//! methods there only delegate here.
use super::{SqliteStore, bind_elder, corrupt, device_from_row, elder_from_row, now_ms};
use crate::{
    DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, HOUR_MS, ReadingQuery, ReadingRecord,
    ReadingSubject, Result, VitalsHour, vital_columns,
};
use eldercare_model::{Device, Elder, EpochMs, Stream};
use sqlx::{QueryBuilder, Row, Sqlite};

/// A foreign key refused the write: the device names no registered elder.
fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

fn reading_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ReadingRecord> {
    let stream: String = r.try_get("stream")?;
    let seq: Option<i64> = r.try_get("seq")?;
    Ok(ReadingRecord {
        id: r.try_get("id")?,
        elder_id: r.try_get("elder_id")?,
        device_id: r.try_get("device_id")?,
        stream: Stream::parse(&stream).ok_or_else(|| corrupt(format!("stream {stream}")))?,
        ts_ms: r.try_get("ts")?,
        seq: seq.map(|s| s as u64),
        json: r.try_get("body")?,
    })
}

/// `rowid` is not declared, so it is read under a name of our own.
const READING_COLUMNS: &str = "rowid AS id, elder_id, device_id, stream, ts, seq, body";

impl SqliteStore {
    pub(super) async fn api_insert_elder(&self, e: &Elder) -> Result<bool> {
        let r = bind_elder(
            sqlx::query(
                "INSERT INTO elders (elder_id, name, phone, address, district, community, home_lat,
                home_lon, safe_radius_m, flags, timezone, night_start, night_end, contact_name,
                contact_phone, check_in, updated_at)
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
             ON CONFLICT(elder_id) DO NOTHING",
            ),
            e,
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn api_update_elder(&self, e: &Elder) -> Result<bool> {
        let r = bind_elder(
            sqlx::query(
                // Numbered: the shared binding puts elder_id first.
                "UPDATE elders SET name=?2, phone=?3, address=?4, district=?5, community=?6,
                home_lat=?7, home_lon=?8, safe_radius_m=?9, flags=?10, timezone=?11,
                night_start=?12, night_end=?13, contact_name=?14, contact_phone=?15,
                check_in=?16, updated_at=?17
             WHERE elder_id = ?1",
            ),
            e,
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn api_delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        // One transaction, so the answer describes the state the delete saw.
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "DELETE FROM elders WHERE elder_id = ?1
             AND NOT EXISTS (SELECT 1 FROM devices WHERE elder_id = ?1)
             AND NOT EXISTS (SELECT 1 FROM visit_plans WHERE elder_id = ?1)",
        )
        .bind(elder_id)
        .execute(&mut *tx)
        .await?;
        let outcome = if r.rows_affected() == 1 {
            ElderDeletion::Deleted
        } else {
            let devices: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE elder_id = ?")
                    .bind(elder_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let plans: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM visit_plans WHERE elder_id = ?")
                    .bind(elder_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if devices > 0 {
                ElderDeletion::HasDevices(u32::try_from(devices).unwrap_or(u32::MAX))
            } else if plans > 0 {
                ElderDeletion::HasVisitPlans(u32::try_from(plans).unwrap_or(u32::MAX))
            } else {
                ElderDeletion::NotFound
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn api_query_elders(&self, q: &ElderQuery) -> Result<Vec<Elder>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT * FROM elders WHERE 1=1");
        if let Some(d) = &q.district {
            b.push(" AND district = ").push_bind(d.clone());
        }
        if let Some(c) = &q.community {
            b.push(" AND community = ").push_bind(c.clone());
        }
        if let Some(a) = &q.after {
            b.push(" AND elder_id > ").push_bind(a.clone());
        }
        b.push(" ORDER BY elder_id LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(elder_from_row).collect()
    }

    pub(super) async fn api_insert_device(&self, d: &Device) -> Result<DeviceWrite> {
        let r = sqlx::query(
            "INSERT INTO devices (device_id, kind, elder_id, room, heartbeat_s, secret_salt,
                secret_hash, updated_at)
             VALUES (?,?,?,?,?,?,?,?)
             ON CONFLICT(device_id) DO NOTHING",
        )
        .bind(&d.device_id)
        .bind(d.kind.as_str())
        .bind(&d.elder_id)
        .bind(&d.room)
        .bind(i64::from(d.heartbeat_s))
        .bind(&d.secret_salt)
        .bind(&d.secret_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => Ok(DeviceWrite::Written),
            Ok(_) => Ok(DeviceWrite::AlreadyExists),
            Err(e) if is_fk_violation(&e) => Ok(DeviceWrite::UnknownElder),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn api_update_device(&self, d: &Device) -> Result<DeviceWrite> {
        // The secret columns are left alone: only a rotation writes them, so
        // an update racing a rotation can never bring an old secret back.
        let r = sqlx::query(
            "UPDATE devices SET kind=?, elder_id=?, room=?, heartbeat_s=?, updated_at=?
             WHERE device_id = ?",
        )
        .bind(d.kind.as_str())
        .bind(&d.elder_id)
        .bind(&d.room)
        .bind(i64::from(d.heartbeat_s))
        .bind(now_ms())
        .bind(&d.device_id)
        .execute(&self.pool)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => Ok(DeviceWrite::Written),
            Ok(_) => Ok(DeviceWrite::NotFound),
            Err(e) if is_fk_violation(&e) => Ok(DeviceWrite::UnknownElder),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn api_set_device_secret(
        &self,
        device_id: &str,
        salt: &str,
        hash: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE devices SET secret_salt=?, secret_hash=?, updated_at=? WHERE device_id = ?",
        )
        .bind(salt)
        .bind(hash)
        .bind(now_ms())
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn api_delete_device(&self, device_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM devices WHERE device_id = ?")
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn api_query_devices(&self, q: &DeviceQuery) -> Result<Vec<Device>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT * FROM devices WHERE 1=1");
        if let Some(e) = &q.elder_id {
            b.push(" AND elder_id = ").push_bind(e.clone());
        }
        if let Some(a) = &q.after {
            b.push(" AND device_id > ").push_bind(a.clone());
        }
        b.push(" ORDER BY device_id LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(device_from_row).collect()
    }

    pub(super) async fn api_query_readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        let mut b = QueryBuilder::<Sqlite>::new(format!("SELECT {READING_COLUMNS} FROM readings"));
        match &q.subject {
            ReadingSubject::Elder(e) => b.push(" WHERE elder_id = ").push_bind(e.clone()),
            ReadingSubject::Device(d) => b.push(" WHERE device_id = ").push_bind(d.clone()),
        };
        if let Some(f) = q.from {
            b.push(" AND ts >= ").push_bind(f);
        }
        if let Some(t) = q.to {
            b.push(" AND ts < ").push_bind(t);
        }
        if !q.streams.is_empty() {
            b.push(" AND stream IN (");
            let mut list = b.separated(", ");
            for s in &q.streams {
                list.push_bind(s.as_str());
            }
            b.push(")");
        }
        // Keyset paging on (ts, rowid): stable while readings arrive, and
        // cheap however deep the page.
        let (cmp, dir) = if q.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((ts, id)) = q.after {
            b.push(format!(" AND (ts {cmp} "))
                .push_bind(ts)
                .push(" OR (ts = ")
                .push_bind(ts)
                .push(format!(" AND rowid {cmp} "))
                .push_bind(id)
                .push("))");
        }
        b.push(format!(" ORDER BY ts {dir}, rowid {dir} LIMIT "))
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(reading_from_row).collect()
    }

    pub(super) async fn api_latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        // One indexed probe per (registered device, stream) pair, instead of
        // grouping over the elder's whole history.
        let streams = Stream::ALL
            .iter()
            .map(|s| format!("('{}')", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut b = QueryBuilder::<Sqlite>::new(format!(
            "WITH streams(stream) AS (VALUES {streams})
             SELECT r.rowid AS id, r.elder_id, r.device_id, r.stream, r.ts, r.seq, r.body
             FROM devices d CROSS JOIN streams s
             JOIN readings r ON r.rowid = (
                SELECT x.rowid FROM readings x
                WHERE x.device_id = d.device_id AND x.stream = s.stream
                  AND x.elder_id = d.elder_id
                ORDER BY x.ts DESC, x.rowid DESC LIMIT 1)
             WHERE d.elder_id = "
        ));
        b.push_bind(elder_id.to_string())
            .push(" ORDER BY r.stream, r.device_id");
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(reading_from_row).collect()
    }

    /// Grouped over the elder's raw readings: the embedded store holds a
    /// home or a small district, where that is quick.
    pub(super) async fn api_vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        let columns = vital_columns(|f| format!("json_extract(body, '$.{f}')"), "REAL");
        // Integer division floors for the non-negative times stored here.
        let sql = format!(
            "SELECT (ts / {HOUR_MS}) * {HOUR_MS} AS hour, count(*) AS readings, {columns}
             FROM readings
             WHERE elder_id = ? AND ts >= ? AND ts < ? AND stream = 'vitals'
             GROUP BY 1 ORDER BY 1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(elder_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| crate::vitals_hour_of(r, r.try_get("hour")?))
            .collect()
    }
}
