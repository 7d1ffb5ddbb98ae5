//! Keeping the readings table in shape: daily partitions created ahead
//! and dropped after the retention (plain PostgreSQL), or TimescaleDB's
//! compression, retention and hourly-vitals policies (when the extension
//! is installed). The server runs [`PgStore::maintain`] at start and every
//! hour; it takes "now" as an argument so tests can drive the clock.
use super::PgStore;
use crate::{Result, vital_columns};
use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::PgPool;
use std::collections::BTreeSet;

/// How the readings table is laid out, decided once by the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Plain PostgreSQL: partitioned by range on `ts`, one partition per
    /// UTC day, plus a default partition for days without one.
    Partitioned,
    /// A TimescaleDB hypertable with daily chunks.
    Timescale,
}

/// What one maintenance run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Daily partitions created.
    pub created: Vec<NaiveDate>,
    /// Daily partitions dropped, their readings older than the retention.
    pub dropped: Vec<NaiveDate>,
    /// Readings moved out of the default partition into a new day's one.
    pub moved: u64,
    /// Expired readings deleted from the default partition.
    pub expired: u64,
}

/// Serialises maintenance between processes (two servers, or a server and
/// a test) sharing a database; "eldercar" in ASCII.
const LOCK_KEY: i64 = 0x656c_6465_7263_6172;

/// Readings columns in table order, for moving rows between partitions.
const ALL_COLUMNS: &str = "ts, id, seq, lat, lon, temp_c, movement, accuracy_m, confidence, \
     rssi, stream, hr, spo2, rr, sys, dia, event_type, battery_pct, in_bed, motion, online, \
     device_id, elder_id, room, fw, visit_action, carer";

fn partition_name(day: NaiveDate) -> String {
    format!("readings_p{}", day.format("%Y%m%d"))
}

fn day_of_partition(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix("readings_p")?;
    if digits.len() != 8 {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// A partition bound as a SQL literal. Generated here from a date, never
/// from input, so it is safe to splice into DDL (which takes no parameters).
fn bound_literal(day: NaiveDate) -> String {
    format!("'{} 00:00:00+00'", day.format("%Y-%m-%d"))
}

pub(super) async fn detect_layout(pool: &PgPool) -> Result<Layout> {
    // 'p' is a partitioned table; a hypertable is an ordinary one ('r').
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = 'readings'::regclass")
            .fetch_one(pool)
            .await?;
    Ok(if kind == "p" {
        Layout::Partitioned
    } else {
        Layout::Timescale
    })
}

impl PgStore {
    /// Brings the readings table in line with `now`: on plain PostgreSQL,
    /// creates the daily partitions from yesterday to `partitions_ahead`
    /// days ahead (and for any other day the default partition holds
    /// readings of, moving them in), drops the partitions whose every
    /// reading is older than `retention_days`, and deletes such readings
    /// from the default partition. With TimescaleDB, makes sure the
    /// compression, retention and continuous-aggregate policies are set.
    ///
    /// Idempotent, and safe to run from several processes at once.
    pub async fn maintain(&self, now: DateTime<Utc>) -> Result<Maintenance> {
        match self.ready()? {
            Layout::Partitioned => self.maintain_partitions(now).await,
            Layout::Timescale => {
                self.maintain_timescale().await?;
                Ok(Maintenance::default())
            }
        }
    }

    /// The days that have a partition, in order.
    pub async fn partitions(&self) -> Result<Vec<NaiveDate>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'readings'::regclass",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut days: Vec<NaiveDate> = names.iter().filter_map(|n| day_of_partition(n)).collect();
        days.sort();
        Ok(days)
    }

    async fn maintain_partitions(&self, now: DateTime<Utc>) -> Result<Maintenance> {
        let mut report = Maintenance::default();
        let today = now.date_naive();
        // Readings older than the cutoff are expired. A day's partition is
        // dropped once its end is at or before the cutoff, so a reading is
        // kept at least `retention_days`, and at most a day longer.
        let cutoff = now - chrono::Duration::days(i64::from(self.opts.retention_days));
        for day in self.partitions().await? {
            if day_start(day + Days::new(1)) <= cutoff {
                self.drop_partition(day).await?;
                report.dropped.push(day);
            }
        }
        report.expired = sqlx::query("DELETE FROM readings_default WHERE ts < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();

        let last = today + Days::new(u64::from(self.opts.partitions_ahead));
        // Yesterday too: the protocol accepts readings up to a day old, and
        // a server started just after midnight still gets them.
        let mut wanted: BTreeSet<NaiveDate> = today
            .pred_opt()
            .unwrap_or(today)
            .iter_days()
            .take_while(|d| *d <= last)
            .collect();
        // Days the default partition holds readings of (a device's clock
        // far off, or a server that ran without maintenance): give each a
        // partition so the default stays small, unless expired or too far
        // ahead.
        let held: Vec<NaiveDate> = sqlx::query_scalar(
            "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM readings_default
             WHERE ts >= $1 AND ts < $2",
        )
        .bind(cutoff)
        .bind(day_start(last + Days::new(1)))
        .fetch_all(&self.pool)
        .await?;
        wanted.extend(held);
        let existing: BTreeSet<NaiveDate> = self.partitions().await?.into_iter().collect();
        for day in wanted {
            if existing.contains(&day) || day_start(day + Days::new(1)) <= cutoff {
                continue;
            }
            if let Some(moved) = self.create_partition(day).await? {
                report.created.push(day);
                report.moved += moved;
            }
        }
        Ok(report)
    }

    /// Creates one day's partition; `None` when another process made it
    /// first. Readings of that day waiting in the default partition are
    /// moved in, in the same transaction.
    async fn create_partition(&self, day: NaiveDate) -> Result<Option<u64>> {
        let name = partition_name(day);
        let (from, to) = (bound_literal(day), bound_literal(day + Days::new(1)));
        let mut tx = self.pool.begin().await?;
        // DDL on a partitioned table takes a lock that ingest waits on; a
        // long wait is worse than trying again at the next run.
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            tx.commit().await?;
            return Ok(None);
        }
        // The DDL below locks the parent anyway; locking it first, before
        // the default partition, takes the locks in the order an insert
        // does (parent, then partition), so the two cannot deadlock. It
        // also holds inserts off until commit, so no reading of this day
        // lands in the default between the check and the DDL (which would
        // then fail the partition's constraint).
        sqlx::query("LOCK TABLE ONLY readings IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM readings_default WHERE ts >= $1 AND ts < $2)",
        )
        .bind(day_start(day))
        .bind(day_start(day + Days::new(1)))
        .fetch_one(&mut *tx)
        .await?;
        let mut moved = 0;
        if !waiting {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {name} PARTITION OF readings FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(&mut *tx)
            .await?;
        } else {
            // A partition cannot be created over rows the default holds:
            // build it aside, move them in, then attach it.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )))
            .execute(&mut *tx)
            .await?;
            moved = sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH m AS (DELETE FROM readings_default WHERE ts >= $1 AND ts < $2
                    RETURNING {ALL_COLUMNS})
                 INSERT INTO {name} ({ALL_COLUMNS}) SELECT {ALL_COLUMNS} FROM m"
            )))
            .bind(day_start(day))
            .bind(day_start(day + Days::new(1)))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(partition = %name, moved, "Created a readings partition.");
        Ok(Some(moved))
    }

    async fn drop_partition(&self, day: NaiveDate) -> Result<()> {
        let name = partition_name(day);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        // Parent first, as inserts lock (see create_partition).
        sqlx::query("LOCK TABLE ONLY readings IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(partition = %name, "Dropped an expired readings partition.");
        Ok(())
    }

    /// TimescaleDB's own machinery does the work; this only makes sure it
    /// is configured as the options say. Not exercised by the tests: the
    /// machines that run them have no TimescaleDB.
    async fn maintain_timescale(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        // Compressed chunks are segmented by who the readings belong to
        // (every query names an elder or a device) and ordered as queries
        // read them; after 7 days a chunk no longer receives readings
        // (the protocol refuses any older than a day).
        let compressed: Option<bool> = sqlx::query_scalar(
            "SELECT compression_enabled FROM timescaledb_information.hypertables
             WHERE hypertable_name = 'readings'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if compressed != Some(true) {
            sqlx::query(
                "ALTER TABLE readings SET (timescaledb.compress,
                    timescaledb.compress_segmentby = 'elder_id, device_id',
                    timescaledb.compress_orderby = 'ts, id')",
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true)",
        )
        .execute(&mut *tx)
        .await?;
        // The retention policy follows retention_days: replaced when it
        // changed since the last start.
        let drop_after: Option<String> = sqlx::query_scalar(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs
             WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let want = format!("{} days", self.opts.retention_days);
        if drop_after.as_deref() != Some(want.as_str()) {
            sqlx::query("SELECT remove_retention_policy('readings', if_exists => true)")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT add_retention_policy('readings', make_interval(days => $1))")
                .bind(i32::try_from(self.opts.retention_days).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // Hourly vitals per elder, kept after the raw readings expire. A
        // continuous aggregate cannot be created inside a transaction.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_hourly
             WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
             SELECT elder_id, time_bucket(INTERVAL '1 hour', ts) AS bucket,
                count(*) AS readings, {}
             FROM readings WHERE stream = 1
             GROUP BY elder_id, bucket
             WITH NO DATA",
            vital_columns(|f| f.to_string(), "float8")
        )))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "SELECT add_continuous_aggregate_policy('vitals_hourly',
                start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
                schedule_interval => INTERVAL '1 hour', if_not_exists => true)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 9).unwrap();
        assert_eq!(partition_name(d), "readings_p20260109");
        assert_eq!(day_of_partition("readings_p20260109"), Some(d));
        assert_eq!(day_of_partition("readings_default"), None);
        assert_eq!(day_of_partition("readings_p2026010"), None);
        assert_eq!(bound_literal(d), "'2026-01-09 00:00:00+00'");
    }
}
