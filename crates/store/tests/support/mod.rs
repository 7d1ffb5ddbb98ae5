//! What the storage tests share: the throwaway PostgreSQL server, and one
//! handle over either backend so the same test body runs on both.
#![allow(dead_code)]

pub mod fixtures;
pub mod pg;

use eldercare_store::{PgOptions, PgStore, SqliteStore, Store};
use std::sync::Arc;

/// Raw SQL access next to the store, for what the trait cannot do on
/// purpose (tampering with the event log, filling tables fast).
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

/// Keeps the backend's files or database alive for the test.
enum Guard {
    Dir(tempfile::TempDir),
    Db(pg::TestDb),
}

/// A store under test. Fields drop in order: the store and raw pool
/// close before the directory or database goes.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub name: &'static str,
    raw: Raw,
    _guard: Guard,
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(dir.path()).await.expect("opening SQLite");
        let raw = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("eldercare.db").display()
        ))
        .await
        .expect("a raw SQLite pool");
        Backend {
            store: Arc::new(store),
            name: "sqlite",
            raw: Raw::Sqlite(raw),
            _guard: Guard::Dir(dir),
        }
    }

    pub async fn postgres() -> Backend {
        let db = pg::fresh_db().await;
        let store = PgStore::connect(&db.url, PgOptions::default())
            .await
            .expect("opening PostgreSQL");
        let raw = store.pool().clone();
        Backend {
            store: Arc::new(store),
            name: "postgres",
            raw: Raw::Pg(raw),
            _guard: Guard::Db(db),
        }
    }

    /// Runs one statement of SQL that both dialects read the same way.
    pub async fn exec(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match &self.raw {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
            Raw::Pg(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
        }
    }

    /// Makes the database itself refuse every reading of `device_id`,
    /// the way a constraint refuses data: a CHECK constraint on
    /// PostgreSQL (SQLSTATE 23514), a trigger's `RAISE(ABORT)` on SQLite
    /// (extended code 1811, a constraint error). The store does not know
    /// of it, so only the database's answer can tell it.
    pub async fn refuse_device_in_database(&self, device_id: &str) {
        let name = device_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        match &self.raw {
            Raw::Sqlite(p) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE TRIGGER refuse_{name} BEFORE INSERT ON readings
                     WHEN NEW.device_id = '{device_id}'
                     BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
                )))
                .execute(p)
                .await
                .unwrap();
            }
            Raw::Pg(p) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE readings ADD CONSTRAINT refuse_{name}
                     CHECK (device_id <> '{device_id}')"
                )))
                .execute(p)
                .await
                .unwrap();
            }
        }
    }

    /// Fills the dead-letter table with `n` letters in one statement,
    /// as if that many had been refused (ids 1..=n on a fresh store).
    pub async fn prefill_dead_letters(&self, n: i64) {
        match &self.raw {
            Raw::Sqlite(p) => {
                sqlx::query(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                     INSERT INTO dead_letters (received_at, topic, sender, reason, detail, payload)
                     SELECT x, 'prefill', NULL, 'prefill', '', x'00' FROM c",
                )
                .bind(n)
                .execute(p)
                .await
                .unwrap();
            }
            Raw::Pg(p) => {
                sqlx::query(
                    "INSERT INTO dead_letters (received_at, topic, sender, reason, detail, payload)
                     SELECT x, 'prefill', NULL, 'prefill', '', '\\x00'::bytea
                     FROM generate_series(1, $1::bigint) x",
                )
                .bind(n)
                .execute(p)
                .await
                .unwrap();
            }
        }
    }
}
