//! Providers, carers and visit plans on SQLite (docs/visits.md). The
//! trait methods in `sqlite.rs` only delegate here.
use super::{SqliteStore, now_ms};
use crate::{Result, StoreError, visits};
use eldercare_model::{Carer, Provider, VisitPlan};
use sqlx::Row;

fn fk_refused(e: sqlx::Error, why: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::RegistryConflict(why())
        }
        _ => e.into(),
    }
}

fn plan_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<VisitPlan> {
    let length_min: i64 = r.try_get("length_min")?;
    Ok(VisitPlan {
        plan_id: r.try_get("plan_id")?,
        elder_id: r.try_get("elder_id")?,
        provider_id: r.try_get("provider_id")?,
        days: r.try_get("days")?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        length_min: u32::try_from(length_min).unwrap_or(0),
        service: r.try_get("service")?,
    })
}

impl SqliteStore {
    async fn exists(&self, sql: &'static str, id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    pub(super) async fn visits_upsert_provider(&self, p: &Provider) -> Result<bool> {
        let existed = self
            .exists(
                "SELECT 1 FROM providers WHERE provider_id = ?",
                &p.provider_id,
            )
            .await?;
        sqlx::query(
            "INSERT INTO providers (provider_id, name, phone, updated_at) VALUES (?,?,?,?)
             ON CONFLICT(provider_id) DO UPDATE SET name=excluded.name, phone=excluded.phone,
                updated_at=excluded.updated_at",
        )
        .bind(&p.provider_id)
        .bind(&p.name)
        .bind(&p.phone)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(!existed)
    }

    pub(super) async fn visits_delete_provider(&self, provider_id: &str) -> Result<bool> {
        // One transaction, so the refusal describes the state the delete saw.
        let mut tx = self.pool.begin().await?;
        let carers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM carers WHERE provider_id = ?")
            .bind(provider_id)
            .fetch_one(&mut *tx)
            .await?;
        let plans: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM visit_plans WHERE provider_id = ?")
                .bind(provider_id)
                .fetch_one(&mut *tx)
                .await?;
        if carers + plans > 0 {
            return Err(visits::provider_in_use(provider_id, carers, plans));
        }
        let r = sqlx::query("DELETE FROM providers WHERE provider_id = ?")
            .bind(provider_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn visits_list_providers(&self) -> Result<Vec<Provider>> {
        let rows =
            sqlx::query("SELECT provider_id, name, phone FROM providers ORDER BY provider_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Provider {
                    provider_id: r.try_get("provider_id")?,
                    name: r.try_get("name")?,
                    phone: r.try_get("phone")?,
                })
            })
            .collect()
    }

    pub(super) async fn visits_upsert_carer(&self, c: &Carer) -> Result<bool> {
        let existed = self
            .exists("SELECT 1 FROM carers WHERE carer_id = ?", &c.carer_id)
            .await?;
        sqlx::query(
            "INSERT INTO carers (carer_id, provider_id, name, updated_at) VALUES (?,?,?,?)
             ON CONFLICT(carer_id) DO UPDATE SET provider_id=excluded.provider_id,
                name=excluded.name, updated_at=excluded.updated_at",
        )
        .bind(&c.carer_id)
        .bind(&c.provider_id)
        .bind(&c.name)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| fk_refused(e, || visits::unknown("provider_id", &c.provider_id)))?;
        Ok(!existed)
    }

    pub(super) async fn visits_delete_carer(&self, carer_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM carers WHERE carer_id = ?")
            .bind(carer_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn visits_list_carers(&self) -> Result<Vec<Carer>> {
        let rows = sqlx::query("SELECT carer_id, provider_id, name FROM carers ORDER BY carer_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Carer {
                    carer_id: r.try_get("carer_id")?,
                    provider_id: r.try_get("provider_id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    pub(super) async fn visits_upsert_plan(&self, p: &VisitPlan) -> Result<bool> {
        let existed = self
            .exists("SELECT 1 FROM visit_plans WHERE plan_id = ?", &p.plan_id)
            .await?;
        sqlx::query(
            "INSERT INTO visit_plans (plan_id, elder_id, provider_id, days, window_start,
                window_end, length_min, service, updated_at)
             VALUES (?,?,?,?,?,?,?,?,?)
             ON CONFLICT(plan_id) DO UPDATE SET elder_id=excluded.elder_id,
                provider_id=excluded.provider_id, days=excluded.days,
                window_start=excluded.window_start, window_end=excluded.window_end,
                length_min=excluded.length_min, service=excluded.service,
                updated_at=excluded.updated_at",
        )
        .bind(&p.plan_id)
        .bind(&p.elder_id)
        .bind(&p.provider_id)
        .bind(&p.days)
        .bind(&p.window_start)
        .bind(&p.window_end)
        .bind(i64::from(p.length_min))
        .bind(&p.service)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| fk_refused(e, || visits::unknown_plan_refs(p)))?;
        Ok(!existed)
    }

    pub(super) async fn visits_delete_plan(&self, plan_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM visit_plans WHERE plan_id = ?")
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn visits_list_plans(&self) -> Result<Vec<VisitPlan>> {
        let rows = sqlx::query(
            "SELECT plan_id, elder_id, provider_id, days, window_start, window_end, length_min,
                service FROM visit_plans ORDER BY plan_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plan_from_row).collect()
    }
}
