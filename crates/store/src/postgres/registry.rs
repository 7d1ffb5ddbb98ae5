//! Elders and devices on PostgreSQL: the import's upserts, the rule
//! engine's reloads and the operator API's writes and paged lists, with
//! the SQLite backend's answers.
use super::{PgStore, corrupt, now_ms};
use crate::{DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, Result};
use eldercare_model::{Device, DeviceKind, Elder, EpochMs};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

/// A foreign key refused the write: the device names no registered elder.
pub(super) fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

const ELDER_COLUMNS: &str = "elder_id, name, phone, address, district, community, home_lat, \
     home_lon, safe_radius_m, flags, timezone, night_start, night_end, contact_name, \
     contact_phone, check_in";

const DEVICE_COLUMNS: &str =
    "device_id, kind, elder_id, room, heartbeat_s, secret_salt, secret_hash";

pub(super) fn elder_from_row(r: &PgRow) -> Result<Elder> {
    let flags: String = r.try_get("flags")?;
    Ok(Elder {
        elder_id: r.try_get("elder_id")?,
        name: r.try_get("name")?,
        phone: r.try_get("phone")?,
        address: r.try_get("address")?,
        district: r.try_get("district")?,
        community: r.try_get("community")?,
        home_lat: r.try_get("home_lat")?,
        home_lon: r.try_get("home_lon")?,
        safe_radius_m: r.try_get("safe_radius_m")?,
        flags: flags
            .split(';')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        timezone: r.try_get("timezone")?,
        night_start: r.try_get("night_start")?,
        night_end: r.try_get("night_end")?,
        contact_name: r.try_get("contact_name")?,
        contact_phone: r.try_get("contact_phone")?,
        check_in: r.try_get("check_in")?,
    })
}

pub(super) fn device_from_row(r: &PgRow) -> Result<Device> {
    let kind: String = r.try_get("kind")?;
    let hb: i64 = r.try_get("heartbeat_s")?;
    Ok(Device {
        device_id: r.try_get("device_id")?,
        kind: DeviceKind::parse(&kind).ok_or_else(|| corrupt(format!("device kind {kind}")))?,
        elder_id: r.try_get("elder_id")?,
        room: r.try_get("room")?,
        heartbeat_s: u32::try_from(hb).unwrap_or(u32::MAX),
        secret_salt: r.try_get("secret_salt")?,
        secret_hash: r.try_get("secret_hash")?,
    })
}

/// Binds an elder's fields in [`ELDER_COLUMNS`] order, then `updated_at`.
fn bind_elder<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    e: &'q Elder,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(&e.elder_id)
        .bind(&e.name)
        .bind(&e.phone)
        .bind(&e.address)
        .bind(&e.district)
        .bind(&e.community)
        .bind(e.home_lat)
        .bind(e.home_lon)
        .bind(e.safe_radius_m)
        .bind(e.flags.join(";"))
        .bind(&e.timezone)
        .bind(&e.night_start)
        .bind(&e.night_end)
        .bind(&e.contact_name)
        .bind(&e.contact_phone)
        .bind(&e.check_in)
        .bind(now_ms())
}

impl PgStore {
    pub(super) async fn pg_upsert_elder(&self, e: &Elder) -> Result<bool> {
        // `xmax = 0` only on a freshly inserted row: whether it was new,
        // in the same statement (SQLite asks first; here one round trip).
        let q = sqlx::query(
            "INSERT INTO elders (elder_id, name, phone, address, district, community, home_lat,
                home_lon, safe_radius_m, flags, timezone, night_start, night_end, contact_name,
                contact_phone, check_in, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
             ON CONFLICT (elder_id) DO UPDATE SET name=excluded.name, phone=excluded.phone,
                address=excluded.address, district=excluded.district,
                community=excluded.community, home_lat=excluded.home_lat,
                home_lon=excluded.home_lon, safe_radius_m=excluded.safe_radius_m,
                flags=excluded.flags, timezone=excluded.timezone,
                night_start=excluded.night_start, night_end=excluded.night_end,
                contact_name=excluded.contact_name, contact_phone=excluded.contact_phone,
                check_in=excluded.check_in, updated_at=excluded.updated_at
             RETURNING (xmax = 0) AS inserted",
        );
        let row = bind_elder(q, e).fetch_one(&self.pool).await?;
        Ok(row.try_get("inserted")?)
    }

    pub(super) async fn pg_upsert_device(&self, d: &Device) -> Result<bool> {
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO devices (device_id, kind, elder_id, room, heartbeat_s, secret_salt,
                secret_hash, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
             ON CONFLICT (device_id) DO UPDATE SET kind=excluded.kind,
                elder_id=excluded.elder_id, room=excluded.room,
                heartbeat_s=excluded.heartbeat_s, secret_salt=excluded.secret_salt,
                secret_hash=excluded.secret_hash, updated_at=excluded.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&d.device_id)
        .bind(d.kind.as_str())
        .bind(&d.elder_id)
        .bind(&d.room)
        .bind(i64::from(d.heartbeat_s))
        .bind(&d.secret_salt)
        .bind(&d.secret_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    pub(super) async fn pg_get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ELDER_COLUMNS} FROM elders WHERE elder_id = $1"
        )))
        .bind(elder_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(elder_from_row).transpose()
    }

    pub(super) async fn pg_get_device(&self, device_id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"
        )))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub(super) async fn pg_list_elders(
        &self,
        changed_since: Option<EpochMs>,
    ) -> Result<Vec<Elder>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ELDER_COLUMNS} FROM elders WHERE updated_at >= $1 ORDER BY elder_id"
        )))
        .bind(changed_since.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(elder_from_row).collect()
    }

    pub(super) async fn pg_list_devices(
        &self,
        changed_since: Option<EpochMs>,
    ) -> Result<Vec<Device>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE updated_at >= $1 ORDER BY device_id"
        )))
        .bind(changed_since.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub(super) async fn pg_insert_elder(&self, e: &Elder) -> Result<bool> {
        let q = sqlx::query(
            "INSERT INTO elders (elder_id, name, phone, address, district, community, home_lat,
                home_lon, safe_radius_m, flags, timezone, night_start, night_end, contact_name,
                contact_phone, check_in, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
             ON CONFLICT (elder_id) DO NOTHING",
        );
        let r = bind_elder(q, e).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_update_elder(&self, e: &Elder) -> Result<bool> {
        // Same bind order as the insert: the id is $1 and updated_at $17.
        let q = sqlx::query(
            "UPDATE elders SET name=$2, phone=$3, address=$4, district=$5, community=$6,
                home_lat=$7, home_lon=$8, safe_radius_m=$9, flags=$10, timezone=$11,
                night_start=$12, night_end=$13, contact_name=$14, contact_phone=$15,
                check_in=$16, updated_at=$17
             WHERE elder_id = $1",
        );
        let r = bind_elder(q, e).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        // One statement sees one snapshot: the delete and the counts agree.
        // A device or plan inserted concurrently for this elder makes the
        // delete fail on the foreign key instead, answered from a recount.
        let r = sqlx::query_as::<_, (i64, i64, i64)>(
            "WITH del AS (
                DELETE FROM elders WHERE elder_id = $1
                AND NOT EXISTS (SELECT 1 FROM devices WHERE elder_id = $1)
                AND NOT EXISTS (SELECT 1 FROM visit_plans WHERE elder_id = $1)
                RETURNING 1)
             SELECT (SELECT COUNT(*) FROM del),
                (SELECT COUNT(*) FROM devices WHERE elder_id = $1),
                (SELECT COUNT(*) FROM visit_plans WHERE elder_id = $1)",
        )
        .bind(elder_id)
        .fetch_one(&self.pool)
        .await;
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        match r {
            Ok((1, _, _)) => Ok(ElderDeletion::Deleted),
            Ok((_, devices, _)) if devices > 0 => Ok(ElderDeletion::HasDevices(count(devices))),
            Ok((_, _, plans)) if plans > 0 => Ok(ElderDeletion::HasVisitPlans(count(plans))),
            Ok(_) => Ok(ElderDeletion::NotFound),
            Err(e) if is_fk_violation(&e) => {
                let (devices, plans) = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT (SELECT COUNT(*) FROM devices WHERE elder_id = $1),
                        (SELECT COUNT(*) FROM visit_plans WHERE elder_id = $1)",
                )
                .bind(elder_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(if devices == 0 && plans > 0 {
                    ElderDeletion::HasVisitPlans(count(plans))
                } else {
                    ElderDeletion::HasDevices(count(devices.max(1)))
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn pg_query_elders(&self, q: &ElderQuery) -> Result<Vec<Elder>> {
        let mut b =
            QueryBuilder::<Postgres>::new(format!("SELECT {ELDER_COLUMNS} FROM elders WHERE true"));
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

    pub(super) async fn pg_insert_device(&self, d: &Device) -> Result<DeviceWrite> {
        let r = sqlx::query(
            "INSERT INTO devices (device_id, kind, elder_id, room, heartbeat_s, secret_salt,
                secret_hash, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
             ON CONFLICT (device_id) DO NOTHING",
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

    pub(super) async fn pg_update_device(&self, d: &Device) -> Result<DeviceWrite> {
        // The secret columns are left alone: only a rotation writes them, so
        // an update racing a rotation can never bring an old secret back.
        let r = sqlx::query(
            "UPDATE devices SET kind=$1, elder_id=$2, room=$3, heartbeat_s=$4, updated_at=$5
             WHERE device_id = $6",
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

    pub(super) async fn pg_set_device_secret(
        &self,
        device_id: &str,
        salt: &str,
        hash: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE devices SET secret_salt=$1, secret_hash=$2, updated_at=$3 WHERE device_id = $4",
        )
        .bind(salt)
        .bind(hash)
        .bind(now_ms())
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_delete_device(&self, device_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM devices WHERE device_id = $1")
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_query_devices(&self, q: &DeviceQuery) -> Result<Vec<Device>> {
        let mut b = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE true"
        ));
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
}
