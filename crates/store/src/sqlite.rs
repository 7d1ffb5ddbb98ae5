//! The embedded default backend: one SQLite file in the data directory,
//! in WAL mode so `eldercare import` can write while the server runs.
use crate::refusal::{self, RefusedRow};
use crate::{
    AlertLog, AlertQuery, ChainReport, DEAD_LETTER_CAPACITY, DeadLetters, NewAlertEvent, Registry,
    Result, StoreError, StoredReading, Telemetry,
};
use crate::{
    DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, ReadingQuery, ReadingRecord, VitalsHour,
};
use async_trait::async_trait;
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, AlertKind, Carer, DeadLetter, Device, DeviceKind, Elder,
    EpochMs, Provider, Severity, Silence, VisitPlan,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

mod registry_api;
mod visits;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn severity_rank(s: Severity) -> i64 {
    s as i64
}

impl SqliteStore {
    /// Opens (creating when missing) `eldercare.db` in `dir` and migrates it.
    pub async fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let url = format!("sqlite://{}", dir.join("eldercare.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns, so an alert event
            // or a batch of readings (and the intake position stored with
            // it) survives a power loss, and the intake log may forget
            // what is stored. NORMAL would roll the newest commits back.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_reading(conn: &mut sqlx::SqliteConnection, r: &StoredReading) -> Result<()> {
    sqlx::query(
        "INSERT INTO readings (device_id, elder_id, stream, ts, seq, body) VALUES (?,?,?,?,?,?)",
    )
    .bind(&r.reading.device_id)
    .bind(&r.elder_id)
    .bind(r.reading.stream().as_str())
    .bind(r.reading.ts_ms)
    .bind(r.reading.seq.map(|s| s as i64))
    .bind(r.reading.body.to_json())
    .execute(conn)
    .await?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn elder_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Elder> {
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

/// Binds an elder's fields in the elders table's column order
/// (`elder_id` first), then `updated_at`: one list for every write.
pub(crate) fn bind_elder<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    e: &'q Elder,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
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

fn device_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Device> {
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

fn event_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AlertEvent> {
    let kind: String = r.try_get("kind")?;
    let alert: String = r.try_get("alert")?;
    let seq: i64 = r.try_get("seq")?;
    Ok(AlertEvent {
        seq: seq as u64,
        kind: AlertEventKind::parse(&kind).ok_or_else(|| corrupt(format!("event kind {kind}")))?,
        alert: serde_json::from_str(&alert).map_err(corrupt)?,
        actor: r.try_get("actor")?,
        at: r.try_get("at")?,
        note: r.try_get("note")?,
        hash: r.try_get("hash")?,
    })
}

fn silence_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Silence> {
    let kind: String = r.try_get("kind")?;
    Ok(Silence {
        id: r.try_get("id")?,
        kind: AlertKind::parse(&kind).ok_or_else(|| corrupt(format!("silence kind {kind}")))?,
        elder_id: r.try_get("elder_id")?,
        device_id: r.try_get("device_id")?,
        reason: r.try_get("reason")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        until: r.try_get("until")?,
        ended_at: r.try_get("ended_at")?,
    })
}

fn alert_from_body(body: &str) -> Result<Alert> {
    serde_json::from_str(body).map_err(corrupt)
}

#[async_trait]
impl Registry for SqliteStore {
    async fn upsert_elder(&self, e: &Elder) -> Result<bool> {
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM elders WHERE elder_id = ?")
            .bind(&e.elder_id)
            .fetch_optional(&self.pool)
            .await?;
        bind_elder(
            sqlx::query(
                "INSERT INTO elders (elder_id, name, phone, address, district, community, home_lat,
                home_lon, safe_radius_m, flags, timezone, night_start, night_end, contact_name,
                contact_phone, check_in, updated_at)
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
             ON CONFLICT(elder_id) DO UPDATE SET name=excluded.name, phone=excluded.phone,
                address=excluded.address, district=excluded.district, community=excluded.community,
                home_lat=excluded.home_lat, home_lon=excluded.home_lon,
                safe_radius_m=excluded.safe_radius_m, flags=excluded.flags,
                timezone=excluded.timezone, night_start=excluded.night_start,
                night_end=excluded.night_end, contact_name=excluded.contact_name,
                contact_phone=excluded.contact_phone, check_in=excluded.check_in,
                updated_at=excluded.updated_at",
            ),
            e,
        )
        .execute(&self.pool)
        .await?;
        Ok(existed.is_none())
    }

    async fn upsert_device(&self, d: &Device) -> Result<bool> {
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM devices WHERE device_id = ?")
            .bind(&d.device_id)
            .fetch_optional(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO devices (device_id, kind, elder_id, room, heartbeat_s, secret_salt,
                secret_hash, updated_at)
             VALUES (?,?,?,?,?,?,?,?)
             ON CONFLICT(device_id) DO UPDATE SET kind=excluded.kind, elder_id=excluded.elder_id,
                room=excluded.room, heartbeat_s=excluded.heartbeat_s,
                secret_salt=excluded.secret_salt, secret_hash=excluded.secret_hash,
                updated_at=excluded.updated_at",
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
        .await?;
        Ok(existed.is_none())
    }

    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
        let row = sqlx::query("SELECT * FROM elders WHERE elder_id = ?")
            .bind(elder_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(elder_from_row).transpose()
    }

    async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
        let row = sqlx::query("SELECT * FROM devices WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
        let rows = sqlx::query("SELECT * FROM elders WHERE updated_at >= ? ORDER BY elder_id")
            .bind(changed_since.unwrap_or(i64::MIN))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(elder_from_row).collect()
    }

    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
        let rows = sqlx::query("SELECT * FROM devices WHERE updated_at >= ? ORDER BY device_id")
            .bind(changed_since.unwrap_or(i64::MIN))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    // The operator API's registry: see `sqlite/registry_api.rs`.

    async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
        self.api_insert_elder(elder).await
    }

    async fn update_elder(&self, elder: &Elder) -> Result<bool> {
        self.api_update_elder(elder).await
    }

    async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        self.api_delete_elder(elder_id).await
    }

    async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
        self.api_query_elders(query).await
    }

    async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.api_insert_device(device).await
    }

    async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
        self.api_update_device(device).await
    }

    async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
        self.api_set_device_secret(device_id, salt, hash).await
    }

    async fn delete_device(&self, device_id: &str) -> Result<bool> {
        self.api_delete_device(device_id).await
    }

    async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        self.api_query_devices(query).await
    }

    async fn upsert_provider(&self, p: &Provider) -> Result<bool> {
        self.visits_upsert_provider(p).await
    }

    async fn delete_provider(&self, provider_id: &str) -> Result<bool> {
        self.visits_delete_provider(provider_id).await
    }

    async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.visits_list_providers().await
    }

    async fn upsert_carer(&self, c: &Carer) -> Result<bool> {
        self.visits_upsert_carer(c).await
    }

    async fn delete_carer(&self, carer_id: &str) -> Result<bool> {
        self.visits_delete_carer(carer_id).await
    }

    async fn list_carers(&self) -> Result<Vec<Carer>> {
        self.visits_list_carers().await
    }

    async fn upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool> {
        self.visits_upsert_plan(p).await
    }

    async fn delete_visit_plan(&self, plan_id: &str) -> Result<bool> {
        self.visits_delete_plan(plan_id).await
    }

    async fn list_visit_plans(&self) -> Result<Vec<VisitPlan>> {
        self.visits_list_plans().await
    }
}

impl SqliteStore {
    /// Writes readings and records the position of the intake log, or of
    /// the log `key`, in the same transaction.
    async fn insert_with_progress(
        &self,
        readings: &[StoredReading],
        key: Option<&str>,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        let pos = i64::try_from(intake_pos).map_err(|_| {
            StoreError::OutOfRange(format!("intake position {intake_pos} is beyond an INTEGER"))
        })?;
        let mut refused = Vec::new();
        let mut tx = self.pool.begin().await?;
        for (index, r) in readings.iter().enumerate() {
            if let Some(reason) = refusal::unstorable(r) {
                refused.push(RefusedRow { index, reason });
                continue;
            }
            match insert_reading(&mut tx, r).await {
                Ok(()) => {}
                Err(e) if e.is_refusal() => refused.push(RefusedRow {
                    index,
                    reason: refusal::refusal_reason(&e),
                }),
                Err(e) => return Err(e),
            }
        }
        match key {
            None => {
                sqlx::query("UPDATE intake_progress SET pos = max(coalesce(pos, ?1), ?1)")
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(key) => {
                sqlx::query(
                    "INSERT INTO intake_progress_keyed (key, pos) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET pos = max(pos, excluded.pos)",
                )
                .bind(key)
                .bind(pos)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        refusal::note_refused(&refused, readings.len());
        Ok(refused)
    }
}

#[async_trait]
impl Telemetry for SqliteStore {
    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for r in readings {
            insert_reading(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Readings no backend stores ([`refusal::unstorable`]) are left out
    /// first, so this backend refuses what PostgreSQL does. The rest go in
    /// one transaction with the position, one INSERT each: a statement
    /// the database refuses (a constraint, a trigger's `RAISE(ABORT)`, a
    /// value too big) aborts only itself, under SQLite's default ABORT
    /// resolution, keeping the transaction and the rows before it. So
    /// every reading is its own piece already and nothing needs
    /// splitting. (Nothing here uses `ON CONFLICT ROLLBACK` or
    /// `RAISE(ROLLBACK)`, which would end the transaction.)
    async fn insert_readings_at(
        &self,
        readings: &[StoredReading],
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        self.insert_with_progress(readings, None, intake_pos).await
    }

    async fn insert_readings_keyed(
        &self,
        readings: &[StoredReading],
        key: &str,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        self.insert_with_progress(readings, Some(key), intake_pos)
            .await
    }

    async fn keyed_position(&self, key: &str) -> Result<Option<u64>> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT pos FROM intake_progress_keyed WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(pos.map(|p| p as u64))
    }

    async fn intake_position(&self) -> Result<Option<u64>> {
        let pos: Option<i64> = sqlx::query_scalar("SELECT pos FROM intake_progress")
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        Ok(pos.map(|p| p as u64))
    }

    // The operator API's telemetry: see `sqlite/registry_api.rs`.

    async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        self.api_query_readings(query).await
    }

    async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        self.api_latest_readings(elder_id).await
    }

    async fn vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        self.api_vitals_hourly(elder_id, from, to).await
    }
}

#[async_trait]
impl AlertLog for SqliteStore {
    async fn append_alert_event(&self, ev: NewAlertEvent) -> Result<AlertEvent> {
        let body = serde_json::to_string(&ev.alert).map_err(corrupt)?;
        // BEGIN IMMEDIATE takes the write lock up front, so the seq read
        // below cannot race another writer.
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result: Result<AlertEvent> = async {
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM alert_events ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?;
            let (last, prev_hash) = last.unwrap_or((0, String::new()));
            let seq = last + 1;
            let a = &ev.alert;
            let hash = crate::event_hash(
                &prev_hash,
                seq as u64,
                ev.kind,
                &a.id,
                &ev.actor,
                ev.at,
                ev.note.as_deref(),
                &body,
            );
            sqlx::query(
                "INSERT INTO alerts (id, elder_id, kind, severity, state, raised_at, updated_at, body, community)
                 VALUES (?,?,?,?,?,?,?,?,?)
                 ON CONFLICT(id) DO UPDATE SET severity=excluded.severity, state=excluded.state,
                    updated_at=excluded.updated_at, body=excluded.body, community=excluded.community",
            )
            .bind(&a.id)
            .bind(&a.elder_id)
            .bind(a.kind.as_str())
            .bind(severity_rank(a.severity))
            .bind(a.state.as_str())
            .bind(a.raised_at)
            .bind(a.updated_at)
            .bind(&body)
            .bind(&a.community)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO alert_events (seq, alert_id, kind, actor, at, note, alert, hash, decision)
                 VALUES (?,?,?,?,?,?,?,?,?)",
            )
            .bind(seq)
            .bind(&a.id)
            .bind(ev.kind.as_str())
            .bind(&ev.actor)
            .bind(ev.at)
            .bind(&ev.note)
            .bind(&body)
            .bind(&hash)
            .bind(ev.decision.map(|d| d as i64))
            .execute(&mut *conn)
            .await
            .map_err(|e| crate::decision_kept(e, ev.decision))?;
            Ok(AlertEvent {
                seq: seq as u64,
                kind: ev.kind,
                alert: ev.alert.clone(),
                actor: ev.actor.clone(),
                at: ev.at,
                note: ev.note.clone(),
                hash,
            })
        }
        .await;
        match result {
            Ok(e) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(e)
            }
            Err(err) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(err)
            }
        }
    }

    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
        let rows = sqlx::query("SELECT * FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_seq(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM alert_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last as u64)
    }

    async fn last_decision(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(decision), 0) FROM alert_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last as u64)
    }

    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(alert_from_body).transpose()
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>> {
        let mut sql = String::from("SELECT body FROM alerts WHERE 1=1");
        if !q.states.is_empty() {
            sql.push_str(" AND state IN (");
            sql.push_str(&vec!["?"; q.states.len()].join(","));
            sql.push(')');
        }
        if q.min_severity.is_some() {
            sql.push_str(" AND severity >= ?");
        }
        if q.elder_id.is_some() {
            sql.push_str(" AND elder_id = ?");
        }
        if q.community.is_some() {
            sql.push_str(" AND community = ?");
        }
        if !q.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            sql.push_str(&vec!["?"; q.kinds.len()].join(","));
            sql.push(')');
        }
        if q.raised_from.is_some() {
            sql.push_str(" AND raised_at >= ?");
        }
        if q.raised_to.is_some() {
            sql.push_str(" AND raised_at < ?");
        }
        if q.after.is_some() {
            sql.push_str(" AND (raised_at < ? OR (raised_at = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY raised_at DESC, id DESC LIMIT ?");
        // Only fixed fragments are appended above; every value is bound.
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for s in &q.states {
            query = query.bind(s.as_str());
        }
        if let Some(s) = q.min_severity {
            query = query.bind(severity_rank(s));
        }
        if let Some(e) = &q.elder_id {
            query = query.bind(e);
        }
        if let Some(c) = &q.community {
            query = query.bind(c);
        }
        for k in &q.kinds {
            query = query.bind(k.as_str());
        }
        if let Some(f) = q.raised_from {
            query = query.bind(f);
        }
        if let Some(t) = q.raised_to {
            query = query.bind(t);
        }
        if let Some((ts, id)) = &q.after {
            query = query.bind(ts).bind(ts).bind(id);
        }
        let rows = query.bind(i64::from(q.limit)).fetch_all(&self.pool).await?;
        rows.iter().map(|b| alert_from_body(b)).collect()
    }

    async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
        let rows = sqlx::query("SELECT * FROM alert_events WHERE alert_id = ? ORDER BY seq")
            .bind(alert_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn verify_chain(&self) -> Result<ChainReport> {
        let mut walk = crate::ChainWalk::default();
        loop {
            let rows = sqlx::query(
                "SELECT seq, alert_id, kind, actor, at, note, alert, hash FROM alert_events
                 WHERE seq > ? ORDER BY seq LIMIT 1000",
            )
            .bind(walk.after() as i64)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(walk.report);
            }
            for r in &rows {
                let seq: i64 = r.try_get("seq")?;
                let note: Option<String> = r.try_get("note")?;
                walk.check(crate::ChainLink {
                    seq: seq as u64,
                    kind: &r.try_get::<String, _>("kind")?,
                    alert_id: &r.try_get::<String, _>("alert_id")?,
                    actor: &r.try_get::<String, _>("actor")?,
                    at: r.try_get("at")?,
                    note: note.as_deref(),
                    alert_json: &r.try_get::<String, _>("alert")?,
                    hash: &r.try_get::<String, _>("hash")?,
                });
            }
        }
    }

    async fn insert_silence(&self, s: &Silence) -> Result<()> {
        sqlx::query(
            "INSERT INTO silences (id, kind, elder_id, device_id, reason, created_by, created_at, until, ended_at)
             VALUES (?,?,?,?,?,?,?,?,?)
             ON CONFLICT(id) DO UPDATE SET until=excluded.until, ended_at=excluded.ended_at",
        )
        .bind(&s.id)
        .bind(s.kind.as_str())
        .bind(&s.elder_id)
        .bind(&s.device_id)
        .bind(&s.reason)
        .bind(&s.created_by)
        .bind(s.created_at)
        .bind(s.until)
        .bind(s.ended_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
        let rows = match active_at {
            Some(t) => {
                sqlx::query(
                    "SELECT * FROM silences WHERE created_at <= ? AND until > ?
                   AND (ended_at IS NULL OR ended_at > ?) ORDER BY created_at",
                )
                .bind(t)
                .bind(t)
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM silences ORDER BY created_at")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(silence_from_row).collect()
    }

    async fn unresolved_alerts(&self) -> Result<Vec<Alert>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM alerts WHERE state != 'RESOLVED'")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|b| alert_from_body(b)).collect()
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (received_at, topic, sender, reason, detail, payload)
             VALUES (?,?,?,?,?,?) RETURNING id",
        )
        .bind(dl.received_at)
        .bind(&dl.topic)
        .bind(&dl.sender)
        .bind(&dl.reason)
        .bind(&dl.detail)
        .bind(&dl.payload)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dead_letters WHERE id <= ?")
            .bind(id - DEAD_LETTER_CAPACITY)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get("id")?,
                    received_at: r.try_get("received_at")?,
                    topic: r.try_get("topic")?,
                    sender: r.try_get("sender")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{AlertState, Severity};

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            elder_id: "E1".into(),
            device_id: "btn-1".into(),
            kind: AlertKind::Sos,
            severity: Severity::Critical,
            state: AlertState::Open,
            raised_at: 1,
            detected_at: 1,
            updated_at: 1,
            summary: "SOS".into(),
            summary_zh: String::new(),
            subject: None,
            window: None,
            score: None,
            factors: Vec::new(),
            readings: Vec::new(),
            occurrences: 1,
            outcome: None,
            district: None,
            community: Some("C1".into()),
            muted: false,
            silence_id: None,
            escalations: 0,
            responder: None,
            acknowledged_at: None,
            dispatched_at: None,
            resolved_at: None,
            late_ms: None,
            recorded: false,
            visit: None,
            route: None,
        }
    }

    #[tokio::test]
    async fn the_event_log_is_a_hash_chain_and_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let mut hashes = Vec::new();
        for (i, id) in ["a1", "a2", "a1", "a3"].iter().enumerate() {
            let ev = s
                .append_alert_event(NewAlertEvent {
                    kind: AlertEventKind::Raised,
                    alert: alert(id),
                    actor: String::new(),
                    at: i as i64,
                    note: None,
                    decision: None,
                })
                .await
                .unwrap();
            assert_eq!(ev.hash.len(), 64);
            hashes.push(ev.hash);
        }
        assert_eq!(s.events_after(0, 10).await.unwrap()[1].hash, hashes[1]);
        let ok = s.verify_chain().await.unwrap();
        assert_eq!((ok.checked, ok.first_break), (4, None));
        assert_eq!(s.events_of_alert("a1").await.unwrap().len(), 2);

        // Someone edits who acted on event 3.
        sqlx::query("UPDATE alert_events SET actor = 'nobody' WHERE seq = 3")
            .execute(&s.pool)
            .await
            .unwrap();
        let bad = s.verify_chain().await.unwrap();
        assert_eq!(bad.first_break.map(|b| b.0), Some(3));
        // Rewriting its hash too breaks the link to event 4.
        let forged = crate::event_hash(
            &hashes[1],
            3,
            AlertEventKind::Raised,
            "a1",
            "nobody",
            2,
            None,
            &serde_json::to_string(&alert("a1")).unwrap(),
        );
        sqlx::query("UPDATE alert_events SET hash = ? WHERE seq = 3")
            .bind(&forged)
            .execute(&s.pool)
            .await
            .unwrap();
        let bad = s.verify_chain().await.unwrap();
        assert_eq!(bad.first_break.map(|b| b.0), Some(4));
        // A deleted event is a gap.
        sqlx::query("DELETE FROM alert_events WHERE seq = 2")
            .execute(&s.pool)
            .await
            .unwrap();
        let bad = s.verify_chain().await.unwrap();
        assert_eq!(bad.first_break.map(|b| b.0), Some(2));
    }

    #[tokio::test]
    async fn silences_are_kept_and_listed_while_active() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).await.unwrap();
        let mut sil = Silence {
            id: "s1".into(),
            kind: AlertKind::DeviceOffline,
            elder_id: None,
            device_id: Some("gps-1".into()),
            reason: "device being replaced".into(),
            created_by: "op-1".into(),
            created_at: 100,
            until: 200,
            ended_at: None,
        };
        s.insert_silence(&sil).await.unwrap();
        assert_eq!(s.silences(Some(150)).await.unwrap(), vec![sil.clone()]);
        assert!(s.silences(Some(200)).await.unwrap().is_empty());
        sil.ended_at = Some(120);
        s.insert_silence(&sil).await.unwrap();
        assert!(s.silences(Some(150)).await.unwrap().is_empty());
        assert_eq!(s.silences(None).await.unwrap().len(), 1);
    }
}
