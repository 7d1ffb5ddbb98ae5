//! Alerts, their gap-free hash-chained event log, silences and dead
//! letters on PostgreSQL.
use super::{PgStore, corrupt};
use crate::{AlertQuery, ChainReport, DEAD_LETTER_CAPACITY, NewAlertEvent, Result};
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, AlertKind, DeadLetter, EpochMs, Severity, Silence,
};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

fn severity_rank(s: Severity) -> i16 {
    s as i16
}

fn alert_from_body(body: &str) -> Result<Alert> {
    serde_json::from_str(body).map_err(corrupt)
}

const EVENT_COLUMNS: &str = "seq, alert_id, kind, actor, at, note, alert, hash";

fn event_from_row(r: &PgRow) -> Result<AlertEvent> {
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

fn silence_from_row(r: &PgRow) -> Result<Silence> {
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

const SILENCE_COLUMNS: &str =
    "id, kind, elder_id, device_id, reason, created_by, created_at, until, ended_at";

fn chained_hash(prev: &str, seq: i64, ev: &NewAlertEvent, body: &str) -> String {
    crate::event_hash(
        prev,
        seq as u64,
        ev.kind,
        &ev.alert.id,
        &ev.actor,
        ev.at,
        ev.note.as_deref(),
        body,
    )
}

fn saved(seq: i64, ev: NewAlertEvent, hash: String) -> AlertEvent {
    AlertEvent {
        seq: seq as u64,
        kind: ev.kind,
        alert: ev.alert,
        actor: ev.actor,
        at: ev.at,
        note: ev.note,
        hash,
    }
}

impl PgStore {
    fn cached_head(&self) -> Option<(i64, String)> {
        self.chain_head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_cached_head(&self, head: Option<(i64, String)>) {
        *self.chain_head.lock().unwrap_or_else(|p| p.into_inner()) = head;
    }

    /// Appends an event to the chain. An alert's path to the hotline
    /// waits on this, so the usual case is one statement, one round trip
    /// (its commit included): with the head this process last wrote, the
    /// head's update is guarded by its old seq and hash, and the two
    /// inserts take their row from that update. If another writer moved
    /// the head meanwhile, nothing is written and the append is done
    /// again under the head's row lock.
    pub(super) async fn pg_append_alert_event(&self, ev: NewAlertEvent) -> Result<AlertEvent> {
        let body = serde_json::to_string(&ev.alert).map_err(corrupt)?;
        if let Some((head_seq, head_hash)) = self.cached_head() {
            let seq = head_seq + 1;
            let hash = chained_hash(&head_hash, seq, &ev, &body);
            let written: i64 = sqlx::query_scalar(
                "WITH h AS (
                    UPDATE alert_chain_head SET seq = $10, hash = $15
                    WHERE seq = $10 - 1 AND hash = $16
                    RETURNING seq),
                 a AS (
                    INSERT INTO alerts (id, elder_id, kind, severity, state, raised_at, updated_at,
                        body, community)
                    SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9 FROM h
                    ON CONFLICT (id) DO UPDATE SET severity=excluded.severity, state=excluded.state,
                        updated_at=excluded.updated_at, body=excluded.body,
                        community=excluded.community),
                 e AS (
                    INSERT INTO alert_events (seq, alert_id, kind, actor, at, note, alert, hash,
                        decision)
                    SELECT $10, $1, $11, $12, $13, $14, $8, $15, $17 FROM h)
                 SELECT count(*) FROM h",
            )
            .bind(&ev.alert.id)
            .bind(&ev.alert.elder_id)
            .bind(ev.alert.kind.as_str())
            .bind(severity_rank(ev.alert.severity))
            .bind(ev.alert.state.as_str())
            .bind(ev.alert.raised_at)
            .bind(ev.alert.updated_at)
            .bind(&body)
            .bind(&ev.alert.community)
            .bind(seq)
            .bind(ev.kind.as_str())
            .bind(&ev.actor)
            .bind(ev.at)
            .bind(&ev.note)
            .bind(&hash)
            .bind(&head_hash)
            .bind(ev.decision.map(|d| d as i64))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| crate::decision_kept(e, ev.decision))?;
            if written == 1 {
                self.set_cached_head(Some((seq, hash.clone())));
                return Ok(saved(seq, ev, hash));
            }
            // Another writer appended: learn the head under its lock.
            self.set_cached_head(None);
        }
        let mut tx = self.pool.begin().await?;
        // Taking the next seq locks the chain's head row until commit:
        // concurrent appends wait here and, once the holder commits, read
        // its seq and hash (READ COMMITTED re-reads an updated row). A
        // rollback restores the head, so no seq is ever skipped.
        let (seq, prev_hash): (i64, String) =
            sqlx::query_as("UPDATE alert_chain_head SET seq = seq + 1 RETURNING seq, hash")
                .fetch_one(&mut *tx)
                .await?;
        let a = &ev.alert;
        let hash = chained_hash(&prev_hash, seq, &ev, &body);
        // The alert's state, its event and the new head in one statement:
        // one round trip while the head is locked.
        sqlx::query(
            "WITH a AS (
                INSERT INTO alerts (id, elder_id, kind, severity, state, raised_at, updated_at,
                    body, community)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
                ON CONFLICT (id) DO UPDATE SET severity=excluded.severity, state=excluded.state,
                    updated_at=excluded.updated_at, body=excluded.body,
                    community=excluded.community),
             e AS (
                INSERT INTO alert_events (seq, alert_id, kind, actor, at, note, alert, hash,
                    decision)
                VALUES ($10, $1, $11, $12, $13, $14, $8, $15, $16))
             UPDATE alert_chain_head SET hash = $15",
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
        .bind(seq)
        .bind(ev.kind.as_str())
        .bind(&ev.actor)
        .bind(ev.at)
        .bind(&ev.note)
        .bind(&hash)
        .bind(ev.decision.map(|d| d as i64))
        .execute(&mut *tx)
        .await
        .map_err(|e| crate::decision_kept(e, ev.decision))?;
        tx.commit().await?;
        self.set_cached_head(Some((seq, hash.clone())));
        Ok(saved(seq, ev, hash))
    }

    pub(super) async fn pg_last_decision(&self) -> Result<u64> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(decision) FROM alert_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    pub(super) async fn pg_events_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AlertEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM alert_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(after_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub(super) async fn pg_last_seq(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM alert_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last as u64)
    }

    pub(super) async fn pg_get_alert(&self, id: &str) -> Result<Option<Alert>> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body::text FROM alerts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        body.as_deref().map(alert_from_body).transpose()
    }

    pub(super) async fn pg_list_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>> {
        let mut b = QueryBuilder::<Postgres>::new("SELECT body::text FROM alerts WHERE true");
        if !q.states.is_empty() {
            let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
            b.push(" AND state = ANY(").push_bind(states).push(")");
        }
        if let Some(s) = q.min_severity {
            b.push(" AND severity >= ").push_bind(severity_rank(s));
        }
        if let Some(e) = &q.elder_id {
            b.push(" AND elder_id = ").push_bind(e.clone());
        }
        if let Some(c) = &q.community {
            b.push(" AND community = ").push_bind(c.clone());
        }
        if !q.kinds.is_empty() {
            let kinds: Vec<&str> = q.kinds.iter().map(|k| k.as_str()).collect();
            b.push(" AND kind = ANY(").push_bind(kinds).push(")");
        }
        if let Some(f) = q.raised_from {
            b.push(" AND raised_at >= ").push_bind(f);
        }
        if let Some(t) = q.raised_to {
            b.push(" AND raised_at < ").push_bind(t);
        }
        if let Some((ts, id)) = &q.after {
            // A row comparison: the (raised_at, id) index serves it directly.
            b.push(" AND (raised_at, id) < (")
                .push_bind(*ts)
                .push(", ")
                .push_bind(id.clone())
                .push(")");
        }
        b.push(" ORDER BY raised_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows: Vec<String> = b.build_query_scalar().fetch_all(&self.pool).await?;
        rows.iter().map(|b| alert_from_body(b)).collect()
    }

    pub(super) async fn pg_unresolved_alerts(&self) -> Result<Vec<Alert>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body::text FROM alerts WHERE state <> 'RESOLVED'")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|b| alert_from_body(b)).collect()
    }

    pub(super) async fn pg_events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM alert_events WHERE alert_id = $1 ORDER BY seq"
        )))
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub(super) async fn pg_verify_chain(&self) -> Result<ChainReport> {
        let mut walk = crate::ChainWalk::default();
        loop {
            let rows = sqlx::query(
                "SELECT seq, alert_id, kind, actor, at, note, alert, hash FROM alert_events
                 WHERE seq > $1 ORDER BY seq LIMIT 1000",
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

    pub(super) async fn pg_insert_silence(&self, s: &Silence) -> Result<()> {
        sqlx::query(
            "INSERT INTO silences (id, kind, elder_id, device_id, reason, created_by, created_at,
                until, ended_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
             ON CONFLICT (id) DO UPDATE SET until=excluded.until, ended_at=excluded.ended_at",
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

    pub(super) async fn pg_silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
        let rows = match active_at {
            Some(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences WHERE created_at <= $1 AND until > $1
                     AND (ended_at IS NULL OR ended_at > $1) ORDER BY created_at"
                )))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences ORDER BY created_at"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(silence_from_row).collect()
    }

    pub(super) async fn pg_insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
        // Insert and trim in one statement (one snapshot, atomic): the
        // DELETE cannot see the new row, and removes those that fell more
        // than the capacity behind it.
        sqlx::query(
            "WITH ins AS (
                INSERT INTO dead_letters (received_at, topic, sender, reason, detail, payload)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING id)
             DELETE FROM dead_letters WHERE id <= (SELECT id FROM ins) - $7",
        )
        .bind(dl.received_at)
        .bind(&dl.topic)
        .bind(&dl.sender)
        .bind(&dl.reason)
        .bind(&dl.detail)
        .bind(&dl.payload)
        .bind(DEAD_LETTER_CAPACITY)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn pg_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, received_at, topic, sender, reason, detail, payload FROM dead_letters
             ORDER BY id DESC LIMIT $1",
        )
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
