//! `eldercare.v1.VisitService`: reports on carers' home visits, worked
//! out by `eldercare-visits` from the alerts this reads.
use crate::auth::{Action, Auth, Principal};
use eldercare_model::{self as m, AlertKind};
use eldercare_proto::v1 as pb;
use eldercare_store::{AlertLog, AlertQuery, Store};
use eldercare_visits::{Counts, ElderMonth, Month, ProviderMonth, VisitRow};
use pb::visit_service_server::VisitService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Alerts read per store query while gathering a month.
const PAGE: u32 = 1000;

pub struct Visits {
    store: Arc<dyn AlertLog>,
    auth: Auth,
    /// Alerts per store query ([`PAGE`]; smaller in tests).
    page: u32,
    /// Where API check-ins go, with the registry that checks them; `None`
    /// where the server has no intake of its own (a cluster member).
    check_ins: Option<(Arc<dyn CheckIns>, Arc<dyn Store>)>,
}

/// Writes a check-in to the intake log: the MQTT intake's, adapted by the
/// server, so the API does not depend on the broker.
#[tonic::async_trait]
pub trait CheckIns: Send + Sync {
    /// Resolves once the check-in is durable.
    async fn append(
        &self,
        elder_id: &str,
        carer_id: &str,
        action: m::VisitAction,
        at: m::EpochMs,
    ) -> Result<(), String>;
}

impl Visits {
    pub fn new(store: Arc<dyn AlertLog>, auth: Auth) -> Visits {
        Visits {
            store,
            auth,
            page: PAGE,
            check_ins: None,
        }
    }

    /// Accepts API check-ins into `intake`, checked against `registry`.
    pub fn with_check_ins(mut self, intake: Arc<dyn CheckIns>, registry: Arc<dyn Store>) -> Visits {
        self.check_ins = Some((intake, registry));
        self
    }

    /// Every `visit`, `visit_missed` and `follow_up` alert raised in the
    /// month's generous range (two days either side, for time zones and
    /// late writes), `elder_id`'s only when given: the report keeps those
    /// whose visit day is in the month.
    async fn month_alerts(
        &self,
        month: Month,
        elder_id: Option<String>,
    ) -> Result<Vec<m::Alert>, Status> {
        let (from, to) = month.generous_range_ms();
        let mut q = AlertQuery {
            kinds: vec![
                AlertKind::Visit,
                AlertKind::VisitMissed,
                AlertKind::FollowUp,
            ],
            elder_id,
            raised_from: Some(from),
            raised_to: Some(to),
            limit: self.page,
            ..Default::default()
        };
        let mut out = Vec::new();
        loop {
            let page = self
                .store
                .list_alerts(&q)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let full = page.len() == self.page as usize;
            q.after = page.last().map(|a| (a.raised_at, a.id.clone()));
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

fn month_arg(s: &str) -> Result<Month, Status> {
    Month::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.trim().is_empty() {
        Err(Status::invalid_argument(format!(
            "missing required `{field}`"
        )))
    } else {
        Ok(v)
    }
}

fn counts_to_pb(c: &Counts) -> pb::VisitCounts {
    pb::VisitCounts {
        planned: c.planned,
        done: c.done,
        on_time: c.on_time,
        late: c.late,
        missed: c.missed,
        unplanned: c.unplanned,
        short: c.short,
        uncorroborated: c.uncorroborated,
        unverified: c.unverified,
        no_check_in: c.no_check_in,
        no_check_out: c.no_check_out,
        follow_ups: c.follow_ups,
        satisfied: c.satisfied,
        complaint: c.complaint,
        no_answer: c.no_answer,
        follow_up_open: c.follow_up_open,
        minutes_delivered: c.minutes_delivered,
        minutes_planned: c.minutes_planned,
    }
}

fn row_to_pb(r: &VisitRow) -> pb::VisitRow {
    pb::VisitRow {
        visit_id: r.visit_id.clone(),
        elder_id: r.elder_id.clone(),
        provider_id: r.provider_id.clone(),
        day: r.day.clone(),
        plan_id: r.plan_id.clone().unwrap_or_default(),
        service: r.service.clone().unwrap_or_default(),
        carer_id: r.carer_id.clone().unwrap_or_default(),
        status: r.status.as_str().to_string(),
        check_in: r.check_in.and_then(crate::ts),
        check_out: r.check_out.and_then(crate::ts),
        length_min: r.length_min.unwrap_or(0),
        planned_min: r.planned_min.unwrap_or(0),
        flags: r.flags.iter().map(|f| f.as_str().to_string()).collect(),
        follow_up: r.follow_up.as_str().to_string(),
        alert_id: r.alert_id.clone(),
        follow_up_alert_id: r.follow_up_alert_id.clone().unwrap_or_default(),
    }
}

/// The provider's report as the API answers it, CSV included.
pub fn provider_report_to_pb(r: &ProviderMonth) -> pb::ProviderReport {
    pb::ProviderReport {
        provider_id: r.provider_id.clone(),
        month: r.month.to_string(),
        counts: Some(counts_to_pb(&r.counts)),
        visits: r.visits().map(row_to_pb).collect(),
        csv: eldercare_visits::csv::visits(r.visits()),
        summary_csv: eldercare_visits::csv::summary(r),
    }
}

/// Whether `who` may check `carer_id` in at `elder_id`: both registered;
/// for a provider's token, its own carer at an elder it has a plan for.
/// A provider is told neither whether another provider's carer nor an
/// elder it does not serve exists.
async fn registered(
    who: &Principal,
    registry: &dyn Store,
    elder_id: &str,
    carer_id: &str,
) -> Result<(), Status> {
    let unavailable = |e: eldercare_store::StoreError| Status::unavailable(e.to_string());
    let carers = registry.list_carers().await.map_err(unavailable)?;
    let carer = carers.iter().find(|c| c.carer_id == carer_id);
    if let Some(own) = who.provider_scope() {
        if carer.is_none_or(|c| c.provider_id != own) {
            return Err(Status::permission_denied(format!(
                "`{carer_id}` is not a carer of provider `{own}`"
            )));
        }
        let plans = registry.list_visit_plans().await.map_err(unavailable)?;
        if !plans
            .iter()
            .any(|p| p.elder_id == elder_id && p.provider_id == own)
        {
            return Err(Status::permission_denied(format!(
                "provider `{own}` has no visit plan for elder `{elder_id}`"
            )));
        }
        return Ok(());
    }
    if registry
        .get_elder(elder_id)
        .await
        .map_err(unavailable)?
        .is_none()
    {
        return Err(Status::not_found(format!("no elder `{elder_id}`")));
    }
    if carer.is_none() {
        return Err(Status::not_found(format!("no carer `{carer_id}`")));
    }
    Ok(())
}

#[tonic::async_trait]
impl VisitService for Visits {
    async fn provider_report(
        &self,
        req: Request<pb::ProviderReportRequest>,
    ) -> Result<Response<pb::ProviderReport>, Status> {
        let who = self.auth.check(&req, Action::ReadVisitReport)?;
        let r = req.into_inner();
        let provider = required("provider_id", &r.provider_id)?;
        if let Some(own) = who.provider_scope()
            && own != provider
        {
            return Err(Status::permission_denied(format!(
                "provider `{own}` may read its own report only"
            )));
        }
        let month = month_arg(&r.month)?;
        let alerts = self.month_alerts(month, None).await?;
        let report = ProviderMonth::compute(provider, month, &alerts);
        Ok(Response::new(provider_report_to_pb(&report)))
    }

    async fn check_in(
        &self,
        req: Request<pb::CheckInRequest>,
    ) -> Result<Response<pb::CheckInResponse>, Status> {
        let who = self.auth.check(&req, Action::CheckIn)?;
        let Some((intake, registry)) = &self.check_ins else {
            return Err(Status::unimplemented(
                "check-ins through the API are taken by a server with its own intake, not a cluster member",
            ));
        };
        let r = req.into_inner();
        let elder_id = required("elder_id", &r.elder_id)?;
        let carer_id = required("carer_id", &r.carer_id)?;
        let action = m::VisitAction::parse(&r.action)
            .ok_or_else(|| Status::invalid_argument("`action` must be `in` or `out`"))?;
        let now = chrono::Utc::now().timestamp_millis();
        let at = match &r.at {
            Some(t) => t.seconds * 1000 + i64::from(t.nanos) / 1_000_000,
            None => now,
        };
        if at > now + 5 * 60_000 || at < now - 24 * 3_600_000 {
            return Err(Status::invalid_argument(
                "`at` must be within the last 24 hours and at most 5 minutes ahead",
            ));
        }
        registered(&who, registry.as_ref(), elder_id, carer_id).await?;
        intake
            .append(elder_id, carer_id, action, at)
            .await
            .map_err(|e| Status::unavailable(format!("the check-in was not kept: {e}")))?;
        tracing::debug!(operator = %who.operator_id, elder_id, carer_id, action = action.as_str(), "Check-in recorded through the API.");
        Ok(Response::new(pb::CheckInResponse {
            elder_id: elder_id.to_string(),
            carer_id: carer_id.to_string(),
            action: action.as_str().to_string(),
            at: Some(eldercare_proto::wkt::Timestamp {
                seconds: at.div_euclid(1000),
                nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
            }),
        }))
    }

    async fn elder_visits(
        &self,
        req: Request<pb::ElderVisitsRequest>,
    ) -> Result<Response<pb::ElderVisitsResponse>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let r = req.into_inner();
        let elder = required("elder_id", &r.elder_id)?.to_string();
        let month = month_arg(&r.month)?;
        let alerts = self.month_alerts(month, Some(elder.clone())).await?;
        let report = ElderMonth::compute(&elder, month, &alerts);
        Ok(Response::new(pb::ElderVisitsResponse {
            elder_id: report.elder_id,
            month: report.month.to_string(),
            counts: Some(counts_to_pb(&report.counts)),
            visits: report.visits.iter().map(row_to_pb).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, add_token};
    use eldercare_model::{AlertEventKind, AlertState, Severity, VisitFlag, VisitInfo};
    use eldercare_store::{NewAlertEvent, Registry, SqliteStore};

    /// 2026-11-01T00:00:00Z.
    const NOV: i64 = 1_793_491_200_000;
    const DAY: i64 = 86_400_000;

    fn alert(id: &str, kind: AlertKind, raised_at: i64, v: VisitInfo) -> m::Alert {
        m::Alert {
            id: id.into(),
            elder_id: v.visit_id.split('/').next().unwrap().into(),
            device_id: String::new(),
            kind,
            severity: Severity::Low,
            state: AlertState::Open,
            raised_at,
            detected_at: raised_at,
            updated_at: raised_at,
            summary: String::new(),
            summary_zh: String::new(),
            subject: Some(v.visit_id.clone()),
            window: None,
            score: None,
            factors: vec![],
            readings: vec![],
            occurrences: 1,
            outcome: None,
            district: None,
            community: None,
            muted: false,
            silence_id: None,
            escalations: 0,
            responder: None,
            acknowledged_at: None,
            dispatched_at: None,
            resolved_at: None,
            late_ms: None,
            recorded: false,
            visit: Some(Box::new(v)),
            route: None,
        }
    }

    fn visit(visit_id: &str, provider: &str, day: &str, check_in: Option<i64>) -> VisitInfo {
        VisitInfo {
            visit_id: visit_id.into(),
            provider_id: provider.into(),
            plan_id: Some("p1".into()),
            day: day.into(),
            planned_min: Some(60),
            check_in,
            check_out: check_in.map(|t| t + 3_600_000),
            carer_id: check_in.map(|_| "c1".into()),
            ..Default::default()
        }
    }

    fn req<T>(token: &str, body: T) -> Request<T> {
        let mut r = Request::new(body);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    #[tokio::test]
    async fn a_providers_month_is_read_page_by_page_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        // Raised on the last evening of October UTC, the elder's 1 November.
        let first = visit(
            "e1/p1/2026-11-01",
            "P1",
            "2026-11-01",
            Some(NOV - 3_600_000),
        );
        let mut late = visit(
            "e1/p1/2026-11-02",
            "P1",
            "2026-11-02",
            Some(NOV + DAY + 7_200_000),
        );
        late.flags = vec![VisitFlag::Late];
        let alerts = [
            alert("a1", AlertKind::Visit, NOV - 3_600_000, first),
            alert(
                "m2",
                AlertKind::VisitMissed,
                NOV + DAY,
                visit("e1/p1/2026-11-02", "P1", "2026-11-02", None),
            ),
            alert("a2", AlertKind::Visit, NOV + DAY + 7_200_000, late),
            alert(
                "m3",
                AlertKind::VisitMissed,
                NOV + 2 * DAY,
                visit("e2/p1/2026-11-03", "P1", "2026-11-03", None),
            ),
            alert(
                "x1",
                AlertKind::Visit,
                NOV,
                visit("e1/q1/2026-11-01", "P2", "2026-11-01", Some(NOV)),
            ),
            alert(
                "x2",
                AlertKind::VisitMissed,
                NOV - DAY,
                visit("e1/p1/2026-10-31", "P1", "2026-10-31", None),
            ),
        ];
        for a in alerts {
            store
                .append_alert_event(NewAlertEvent {
                    kind: AlertEventKind::Raised,
                    at: a.raised_at,
                    alert: a,
                    actor: String::new(),
                    note: None,
                    decision: None,
                })
                .await
                .unwrap();
        }
        let tokens = dir.path().join("tokens.toml");
        let viewer = add_token(&tokens, "v-1", Role::Viewer).unwrap();
        let svc = Visits {
            page: 2,
            ..Visits::new(store, Auth::load(&tokens).unwrap())
        };
        let r = svc
            .provider_report(req(
                &viewer,
                pb::ProviderReportRequest {
                    provider_id: "P1".into(),
                    month: "2026-11".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let c = r.counts.unwrap();
        assert_eq!(
            (c.planned, c.done, c.on_time, c.late, c.missed),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(c.minutes_delivered, 120);
        let ids: Vec<_> = r.visits.iter().map(|v| v.visit_id.as_str()).collect();
        assert_eq!(
            ids,
            ["e1/p1/2026-11-01", "e1/p1/2026-11-02", "e2/p1/2026-11-03"]
        );
        assert_eq!(r.visits[1].status, "late");
        assert_eq!(r.visits[1].flags, ["late"]);
        assert_eq!(r.csv.lines().count(), 4);
        assert!(r.summary_csv.starts_with("provider_id,month,planned,"));

        let e = svc
            .elder_visits(req(
                &viewer,
                pb::ElderVisitsRequest {
                    elder_id: "e1".into(),
                    month: "2026-11".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.visits.len(), 3, "P1's two and P2's one");

        let bad = svc
            .provider_report(req(
                &viewer,
                pb::ProviderReportRequest {
                    provider_id: "P1".into(),
                    month: "2026-13".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("2026-13"), "{}", bad.message());
        let anon = svc
            .provider_report(Request::new(pb::ProviderReportRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(anon.code(), tonic::Code::Unauthenticated);
    }

    /// Check-ins the intake would keep, for the test to count.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<(String, String)>>);

    #[tonic::async_trait]
    impl CheckIns for Kept {
        async fn append(
            &self,
            elder_id: &str,
            carer_id: &str,
            _action: m::VisitAction,
            _at: m::EpochMs,
        ) -> Result<(), String> {
            let mut k = self.0.lock().unwrap();
            k.push((elder_id.into(), carer_id.into()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_provider_checks_in_its_own_carers_at_its_own_elders_and_reads_its_own_month() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        for e in ["e1", "e2"] {
            let elder = m::Elder {
                elder_id: e.into(),
                name: "Test".into(),
                timezone: "Asia/Shanghai".into(),
                night_start: "22:00".into(),
                night_end: "06:00".into(),
                ..Default::default()
            };
            store.upsert_elder(&elder).await.unwrap();
        }
        for p in ["P1", "P2"] {
            let provider = m::Provider {
                provider_id: p.into(),
                name: p.into(),
                phone: None,
            };
            store.upsert_provider(&provider).await.unwrap();
        }
        for (c, p) in [("c1", "P1"), ("c2", "P2")] {
            let carer = m::Carer {
                carer_id: c.into(),
                provider_id: p.into(),
                name: "Test".into(),
            };
            store.upsert_carer(&carer).await.unwrap();
        }
        let plan = m::VisitPlan {
            plan_id: "p1".into(),
            elder_id: "e1".into(),
            provider_id: "P1".into(),
            days: "daily".into(),
            window_start: "09:00".into(),
            window_end: "10:00".into(),
            length_min: 60,
            service: "meals".into(),
        };
        store.upsert_visit_plan(&plan).await.unwrap();
        let tokens = dir.path().join("tokens.toml");
        let p1 = add_token(&tokens, "P1", Role::Provider).unwrap();
        let op = add_token(&tokens, "op-1", Role::Operator).unwrap();
        let kept = Arc::new(Kept::default());
        let svc = Visits::new(store.clone(), Auth::load(&tokens).unwrap())
            .with_check_ins(kept.clone(), store);
        let check = |token: &str, elder: &str, carer: &str| {
            svc.check_in(req(
                token,
                pb::CheckInRequest {
                    elder_id: elder.into(),
                    carer_id: carer.into(),
                    action: "in".into(),
                    at: None,
                },
            ))
        };
        check(&p1, "e1", "c1").await.unwrap();
        // Another provider's carer, an elder P1 has no plan for, and ids
        // that do not exist: all refused alike, nothing told.
        for (elder, carer) in [
            ("e1", "c2"),
            ("e2", "c1"),
            ("e1", "ghost"),
            ("nobody", "c1"),
        ] {
            let e = check(&p1, elder, carer).await.unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{elder} {carer}: {e}"
            );
        }
        // The hotline is not limited to a provider.
        check(&op, "e2", "c2").await.unwrap();
        let e = check(&op, "e1", "ghost").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(
            *kept.0.lock().unwrap(),
            [("e1".into(), "c1".into()), ("e2".into(), "c2".into())]
        );

        let report = |provider: &str| {
            svc.provider_report(req(
                &p1,
                pb::ProviderReportRequest {
                    provider_id: provider.into(),
                    month: "2026-11".into(),
                },
            ))
        };
        assert_eq!(report("P1").await.unwrap().into_inner().provider_id, "P1");
        let e = report("P2").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = svc
            .elder_visits(req(
                &p1,
                pb::ElderVisitsRequest {
                    elder_id: "e1".into(),
                    month: "2026-11".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::PermissionDenied,
            "an elder's month spans providers"
        );
    }
}
