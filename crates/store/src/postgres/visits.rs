//! Providers, carers and visit plans on PostgreSQL, with the SQLite
//! backend's answers (docs/visits.md).
use super::registry::is_fk_violation;
use super::{PgStore, now_ms};
use crate::{Result, StoreError, visits};
use eldercare_model::{Carer, Provider, VisitPlan};
use sqlx::Row;

fn fk_refused(e: sqlx::Error, why: impl FnOnce() -> String) -> StoreError {
    if is_fk_violation(&e) {
        StoreError::RegistryConflict(why())
    } else {
        e.into()
    }
}

impl PgStore {
    pub(super) async fn pg_upsert_provider(&self, p: &Provider) -> Result<bool> {
        // `xmax = 0` only on a freshly inserted row.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO providers (provider_id, name, phone, updated_at) VALUES ($1,$2,$3,$4)
             ON CONFLICT (provider_id) DO UPDATE SET name=excluded.name, phone=excluded.phone,
                updated_at=excluded.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&p.provider_id)
        .bind(&p.name)
        .bind(&p.phone)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    pub(super) async fn pg_delete_provider(&self, provider_id: &str) -> Result<bool> {
        // One statement sees one snapshot: the delete and the counts agree.
        // A carer or plan written concurrently for this provider makes the
        // delete fail on the foreign key instead, answered from a recount.
        let r = sqlx::query_as::<_, (i64, i64, i64)>(
            "WITH del AS (
                DELETE FROM providers WHERE provider_id = $1
                AND NOT EXISTS (SELECT 1 FROM carers WHERE provider_id = $1)
                AND NOT EXISTS (SELECT 1 FROM visit_plans WHERE provider_id = $1)
                RETURNING 1)
             SELECT (SELECT COUNT(*) FROM del),
                (SELECT COUNT(*) FROM carers WHERE provider_id = $1),
                (SELECT COUNT(*) FROM visit_plans WHERE provider_id = $1)",
        )
        .bind(provider_id)
        .fetch_one(&self.pool)
        .await;
        match r {
            Ok((1, _, _)) => Ok(true),
            Ok((_, carers, plans)) if carers + plans > 0 => {
                Err(visits::provider_in_use(provider_id, carers, plans))
            }
            Ok(_) => Ok(false),
            Err(e) if is_fk_violation(&e) => {
                let (carers, plans) = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT (SELECT COUNT(*) FROM carers WHERE provider_id = $1),
                        (SELECT COUNT(*) FROM visit_plans WHERE provider_id = $1)",
                )
                .bind(provider_id)
                .fetch_one(&self.pool)
                .await?;
                Err(visits::provider_in_use(provider_id, carers, plans))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn pg_list_providers(&self) -> Result<Vec<Provider>> {
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

    pub(super) async fn pg_upsert_carer(&self, c: &Carer) -> Result<bool> {
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO carers (carer_id, provider_id, name, updated_at) VALUES ($1,$2,$3,$4)
             ON CONFLICT (carer_id) DO UPDATE SET provider_id=excluded.provider_id,
                name=excluded.name, updated_at=excluded.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&c.carer_id)
        .bind(&c.provider_id)
        .bind(&c.name)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| fk_refused(e, || visits::unknown("provider_id", &c.provider_id)))?;
        Ok(inserted)
    }

    pub(super) async fn pg_delete_carer(&self, carer_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM carers WHERE carer_id = $1")
            .bind(carer_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_list_carers(&self) -> Result<Vec<Carer>> {
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

    pub(super) async fn pg_upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool> {
        let length_min = i32::try_from(p.length_min)
            .map_err(|_| StoreError::OutOfRange(format!("length_min {}", p.length_min)))?;
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO visit_plans (plan_id, elder_id, provider_id, days, window_start,
                window_end, length_min, service, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
             ON CONFLICT (plan_id) DO UPDATE SET elder_id=excluded.elder_id,
                provider_id=excluded.provider_id, days=excluded.days,
                window_start=excluded.window_start, window_end=excluded.window_end,
                length_min=excluded.length_min, service=excluded.service,
                updated_at=excluded.updated_at
             RETURNING (xmax = 0)",
        )
        .bind(&p.plan_id)
        .bind(&p.elder_id)
        .bind(&p.provider_id)
        .bind(&p.days)
        .bind(&p.window_start)
        .bind(&p.window_end)
        .bind(length_min)
        .bind(&p.service)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| fk_refused(e, || visits::unknown_plan_refs(p)))?;
        Ok(inserted)
    }

    pub(super) async fn pg_delete_visit_plan(&self, plan_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM visit_plans WHERE plan_id = $1")
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn pg_list_visit_plans(&self) -> Result<Vec<VisitPlan>> {
        let rows = sqlx::query(
            "SELECT plan_id, elder_id, provider_id, days, window_start, window_end, length_min,
                service FROM visit_plans ORDER BY plan_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let length_min: i32 = r.try_get("length_min")?;
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
            })
            .collect()
    }
}
