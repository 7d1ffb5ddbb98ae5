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
                contact_phone, updated_at)
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
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
                updated_at=?16
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
            "DELETE FROM elders WHERE elder_id = ?
             AND NOT EXISTS (SELECT 1 FROM devices WHERE elder_id = ?)",
        )
        .bind(elder_id)
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
            if devices > 0 {
                ElderDeletion::HasDevices(u32::try_from(devices).unwrap_or(u32::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoredReading};
    use eldercare_model::{Body, DeviceKind, Reading, Status, Vitals};

    fn elder(id: &str, district: &str) -> Elder {
        Elder {
            elder_id: id.into(),
            name: format!("Name {id}"),
            district: Some(district.into()),
            timezone: "Asia/Shanghai".into(),
            night_start: "21:00".into(),
            night_end: "07:00".into(),
            ..Default::default()
        }
    }

    fn device(id: &str, elder_id: &str) -> Device {
        Device {
            device_id: id.into(),
            kind: DeviceKind::VitalBand,
            elder_id: elder_id.into(),
            room: None,
            heartbeat_s: 300,
            secret_salt: "salt".into(),
            secret_hash: "hash".into(),
        }
    }

    #[tokio::test]
    async fn registry_writes_answer_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        assert!(s.insert_elder(&elder("E1", "D1")).await.unwrap());
        assert!(!s.insert_elder(&elder("E1", "D9")).await.unwrap());
        assert_eq!(
            s.get_elder("E1")
                .await
                .unwrap()
                .unwrap()
                .district
                .as_deref(),
            Some("D1")
        );
        assert!(!s.update_elder(&elder("E9", "D1")).await.unwrap());
        assert!(s.update_elder(&elder("E1", "D2")).await.unwrap());
        assert_eq!(
            s.get_elder("E1")
                .await
                .unwrap()
                .unwrap()
                .district
                .as_deref(),
            Some("D2")
        );

        assert_eq!(
            s.insert_device(&device("b1", "NOBODY")).await.unwrap(),
            DeviceWrite::UnknownElder
        );
        assert_eq!(
            s.insert_device(&device("b1", "E1")).await.unwrap(),
            DeviceWrite::Written
        );
        assert_eq!(
            s.insert_device(&device("b1", "E1")).await.unwrap(),
            DeviceWrite::AlreadyExists
        );
        let mut moved = device("b1", "NOBODY");
        assert_eq!(
            s.update_device(&moved).await.unwrap(),
            DeviceWrite::UnknownElder
        );
        moved.elder_id = "E1".into();
        moved.heartbeat_s = 60;
        moved.secret_hash = "ignored".into();
        assert_eq!(s.update_device(&moved).await.unwrap(), DeviceWrite::Written);
        let got = s.get_device("b1").await.unwrap().unwrap();
        assert_eq!(
            (got.heartbeat_s, got.secret_hash.as_str()),
            (60, "hash"),
            "an update keeps the secret"
        );
        assert_eq!(
            s.update_device(&device("b9", "E1")).await.unwrap(),
            DeviceWrite::NotFound
        );
        assert!(s.set_device_secret("b1", "s2", "h2").await.unwrap());
        assert!(!s.set_device_secret("b9", "s2", "h2").await.unwrap());
        assert_eq!(s.get_device("b1").await.unwrap().unwrap().secret_hash, "h2");

        assert_eq!(
            s.delete_elder("E1").await.unwrap(),
            ElderDeletion::HasDevices(1)
        );
        assert_eq!(s.delete_elder("E9").await.unwrap(), ElderDeletion::NotFound);
        assert!(s.delete_device("b1").await.unwrap());
        assert!(!s.delete_device("b1").await.unwrap());
        assert_eq!(s.delete_elder("E1").await.unwrap(), ElderDeletion::Deleted);
        assert!(s.get_elder("E1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn registry_lists_filter_and_page_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        for (id, d) in [("E3", "D1"), ("E1", "D1"), ("E2", "D2"), ("E4", "D1")] {
            s.insert_elder(&elder(id, d)).await.unwrap();
        }
        let ids = |v: Vec<Elder>| v.into_iter().map(|e| e.elder_id).collect::<Vec<_>>();
        let q = ElderQuery {
            district: Some("D1".into()),
            limit: 2,
            ..Default::default()
        };
        assert_eq!(ids(s.query_elders(&q).await.unwrap()), ["E1", "E3"]);
        let q = ElderQuery {
            after: Some("E3".into()),
            ..q
        };
        assert_eq!(ids(s.query_elders(&q).await.unwrap()), ["E4"]);
        for (d, e) in [("b2", "E2"), ("b1", "E1"), ("b3", "E1")] {
            s.insert_device(&device(d, e)).await.unwrap();
        }
        let q = DeviceQuery {
            elder_id: Some("E1".into()),
            after: None,
            limit: 10,
        };
        let devs: Vec<String> = s
            .query_devices(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(devs, ["b1", "b3"]);
    }

    #[tokio::test]
    async fn readings_page_both_ways_and_latest_is_per_device_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        s.insert_elder(&elder("E1", "D1")).await.unwrap();
        s.insert_device(&device("band", "E1")).await.unwrap();
        s.insert_device(&device("pir", "E1")).await.unwrap();
        let vitals = |ts: i64, hr: u32| StoredReading {
            elder_id: "E1".into(),
            reading: Reading {
                device_id: "band".into(),
                seq: None,
                ts_ms: ts,
                body: Body::Vitals(Vitals {
                    hr: Some(hr),
                    ..Default::default()
                }),
            },
        };
        let status = |dev: &str, ts: i64, pct: u32| StoredReading {
            elder_id: "E1".into(),
            reading: Reading {
                device_id: dev.into(),
                seq: None,
                ts_ms: ts,
                body: Body::Status(Status {
                    battery_pct: Some(pct),
                    ..Default::default()
                }),
            },
        };
        // Two readings share ts 2000: paging must neither skip nor repeat one.
        s.insert_readings(&[
            vitals(1000, 70),
            vitals(2000, 71),
            vitals(2000, 72),
            vitals(3000, 73),
            status("band", 1500, 90),
            status("pir", 500, 40),
            status("pir", 2500, 39),
        ])
        .await
        .unwrap();
        let mut q = ReadingQuery {
            subject: ReadingSubject::Device("band".into()),
            from: Some(1000),
            to: Some(3000),
            streams: vec![Stream::Vitals],
            newest_first: true,
            after: None,
            limit: 2,
        };
        let mut seen = Vec::new();
        loop {
            let page = s.query_readings(&q).await.unwrap();
            seen.extend(page.iter().map(|r| r.json.clone()));
            match page.last() {
                Some(r) if page.len() == 2 => q.after = Some((r.ts_ms, r.id)),
                _ => break,
            }
        }
        assert_eq!(
            seen,
            [r#"{"hr":72}"#, r#"{"hr":71}"#, r#"{"hr":70}"#],
            "to is exclusive"
        );
        let q = ReadingQuery {
            subject: ReadingSubject::Elder("E1".into()),
            from: None,
            to: None,
            streams: vec![],
            newest_first: false,
            after: None,
            limit: 3,
        };
        let first: Vec<i64> = s
            .query_readings(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| r.ts_ms)
            .collect();
        assert_eq!(first, [500, 1000, 1500]);

        let latest = s.latest_readings("E1").await.unwrap();
        let got: Vec<(&str, &str, i64)> = latest
            .iter()
            .map(|r| (r.device_id.as_str(), r.stream.as_str(), r.ts_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("band", "status", 1500),
                ("pir", "status", 2500),
                ("band", "vitals", 3000)
            ]
        );
        assert!(s.latest_readings("NOBODY").await.unwrap().is_empty());
    }
}
