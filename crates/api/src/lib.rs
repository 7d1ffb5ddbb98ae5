//! The operator API over gRPC (tonic): `eldercare.v1.AlertService`, plus
//! the standard health and reflection services so stock tools work.
#![forbid(unsafe_code)]

pub mod auth;
pub mod registry;
pub mod telemetry;
pub use auth::{Action, Auth, Principal, Role};
pub use registry::{DeviceSessions, RegistryHandles};

use eldercare_alerts::{AlertDesk, DeskError};
use eldercare_model as m;
use eldercare_proto::v1 as pb;
use eldercare_store::AlertQuery;
use pb::alert_service_server::{AlertService, AlertServiceServer};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn severity(s: m::Severity) -> pb::Severity {
    match s {
        m::Severity::Low => pb::Severity::Low,
        m::Severity::Medium => pb::Severity::Medium,
        m::Severity::High => pb::Severity::High,
        m::Severity::Critical => pb::Severity::Critical,
    }
}

fn from_pb_severity(s: i32) -> Option<m::Severity> {
    match pb::Severity::try_from(s).ok()? {
        pb::Severity::Low => Some(m::Severity::Low),
        pb::Severity::Medium => Some(m::Severity::Medium),
        pb::Severity::High => Some(m::Severity::High),
        pb::Severity::Critical => Some(m::Severity::Critical),
        pb::Severity::Unspecified => None,
    }
}

fn state(s: m::AlertState) -> pb::AlertState {
    match s {
        m::AlertState::Open => pb::AlertState::Open,
        m::AlertState::Acknowledged => pb::AlertState::Acknowledged,
        m::AlertState::Dispatched => pb::AlertState::Dispatched,
        m::AlertState::Resolved => pb::AlertState::Resolved,
    }
}

fn from_pb_state(s: i32) -> Option<m::AlertState> {
    match pb::AlertState::try_from(s).ok()? {
        pb::AlertState::Open => Some(m::AlertState::Open),
        pb::AlertState::Acknowledged => Some(m::AlertState::Acknowledged),
        pb::AlertState::Dispatched => Some(m::AlertState::Dispatched),
        pb::AlertState::Resolved => Some(m::AlertState::Resolved),
        pb::AlertState::Unspecified => None,
    }
}

fn event_kind(k: m::AlertEventKind) -> pb::AlertEventKind {
    use m::AlertEventKind as K;
    match k {
        K::Raised => pb::AlertEventKind::Raised,
        K::Updated => pb::AlertEventKind::Updated,
        K::Acknowledged => pb::AlertEventKind::AcknowledgedEvent,
        K::Dispatched => pb::AlertEventKind::DispatchedEvent,
        K::Escalated => pb::AlertEventKind::Escalated,
        K::Resolved => pb::AlertEventKind::ResolvedEvent,
        K::Note => pb::AlertEventKind::Note,
    }
}

/// The language an operator reads summaries in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// zh-CN, the hotline operators' language: the default.
    #[default]
    Zh,
    En,
}

impl Lang {
    /// Parses a request's `language`; empty means the default.
    pub fn parse(s: &str) -> Result<Lang, Status> {
        match s.to_ascii_lowercase().as_str() {
            "" | "zh" | "zh-cn" | "zh-hans" => Ok(Lang::Zh),
            "en" | "en-us" | "en-gb" => Ok(Lang::En),
            _ => Err(Status::invalid_argument(format!(
                "unsupported language `{s}`; use \"zh-CN\" or \"en\""
            ))),
        }
    }
}

pub fn alert_to_pb(a: &m::Alert, lang: Lang) -> pb::Alert {
    let summary_zh = if a.summary_zh.is_empty() {
        a.summary.clone()
    } else {
        a.summary_zh.clone()
    };
    pb::Alert {
        id: a.id.clone(),
        elder_id: a.elder_id.clone(),
        device_id: a.device_id.clone(),
        kind: a.kind.as_str().to_string(),
        severity: severity(a.severity) as i32,
        state: state(a.state) as i32,
        raised_at: ts(a.raised_at),
        detected_at: ts(a.detected_at),
        summary: match lang {
            Lang::Zh => summary_zh.clone(),
            Lang::En => a.summary.clone(),
        },
        summary_en: a.summary.clone(),
        summary_zh,
        subject: a.subject.clone().unwrap_or_default(),
        window_start: a.window.and_then(|w| ts(w.0)),
        window_end: a.window.and_then(|w| ts(w.1)),
        score: a.score.unwrap_or(0),
        factors: a.factors.clone(),
        readings: a
            .readings
            .iter()
            .map(|r| pb::Reading {
                device_id: r.device_id.clone(),
                stream: r.stream.as_str().to_string(),
                ts: ts(r.ts_ms),
                json: r.json.clone(),
            })
            .collect(),
        occurrences: a.occurrences,
        outcome: a.outcome.clone().unwrap_or_default(),
        updated_at: ts(a.updated_at),
        queue: if a.kind.is_maintenance() {
            "operations"
        } else {
            "hotline"
        }
        .to_string(),
        district: a.district.clone().unwrap_or_default(),
        community: a.community.clone().unwrap_or_default(),
    }
}

pub fn event_to_pb(e: &m::AlertEvent, lang: Lang) -> pb::AlertEvent {
    pb::AlertEvent {
        seq: e.seq,
        kind: event_kind(e.kind) as i32,
        alert: Some(alert_to_pb(&e.alert, lang)),
        actor: e.actor.clone(),
        at: ts(e.at),
        note: e.note.clone().unwrap_or_default(),
    }
}

fn desk_status(e: DeskError) -> Status {
    match e {
        DeskError::NotFound(_) => Status::not_found(e.to_string()),
        DeskError::NotAllowed { .. } => Status::failed_precondition(e.to_string()),
        DeskError::Store(_) => Status::unavailable(e.to_string()),
        DeskError::Closed => Status::unavailable(e.to_string()),
    }
}

/// Who acts: the token's operator. A request may name its operator, but
/// only the one its token belongs to.
fn actor(who: &Principal, requested: &str) -> Result<String, Status> {
    if !requested.is_empty() && requested != who.operator_id {
        return Err(Status::invalid_argument(format!(
            "operator_id `{requested}` is not the operator of this token"
        )));
    }
    Ok(who.operator_id.clone())
}

pub struct Alerts {
    desk: AlertDesk,
    auth: Auth,
    /// Ends open subscriptions at shutdown, so the server can drain.
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl AlertService for Alerts {
    type SubscribeStream = ReceiverStream<Result<pb::AlertEvent, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let r = req.into_inner();
        let lang = Lang::parse(&r.language)?;
        let min = from_pb_severity(r.min_severity);
        let kinds: Vec<m::AlertKind> = r
            .kinds
            .iter()
            .map(|k| {
                m::AlertKind::parse(k)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown alert kind `{k}`")))
            })
            .collect::<Result<_, _>>()?;
        let (district, community) = (r.district, r.community);
        let keep = move |e: &m::AlertEvent| {
            let a = &e.alert;
            min.is_none_or(|s| a.severity >= s)
                && (kinds.is_empty() || kinds.contains(&a.kind))
                && (district.is_empty() || a.district.as_deref() == Some(district.as_str()))
                && (community.is_empty() || a.community.as_deref() == Some(community.as_str()))
        };
        let (tx, mut rx) = mpsc::channel::<m::AlertEvent>(256);
        let (out_tx, out_rx) = mpsc::channel(256);
        let desk = self.desk.clone();
        let err_tx = out_tx.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = err_tx.send(Err(Status::unavailable("server shutting down; resume with after_seq"))).await;
                }
                r = desk.subscribe(r.after_seq, keep, tx) => if let Err(e) = r {
                    let _ = err_tx.send(Err(desk_status(e))).await;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if out_tx.send(Ok(event_to_pb(&ev, lang))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let r = req.into_inner();
        let lang = Lang::parse(&r.language)?;
        let limit = match r.page_size {
            0 => 100,
            n => n.min(1000),
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            let (t, id) = r
                .page_token
                .split_once(':')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| Status::invalid_argument("malformed page_token"))?;
            Some((t, id))
        };
        let q = AlertQuery {
            states: r.states.iter().filter_map(|s| from_pb_state(*s)).collect(),
            min_severity: from_pb_severity(r.min_severity),
            elder_id: (!r.elder_id.is_empty()).then_some(r.elder_id),
            raised_from: r.raised_from.as_ref().map(ms),
            raised_to: r.raised_to.as_ref().map(ms),
            limit,
            after,
        };
        let alerts = self
            .desk
            .store()
            .list_alerts(&q)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let next_page_token = match alerts.last() {
            Some(a) if alerts.len() as u32 == limit => format!("{}:{}", a.raised_at, a.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts.iter().map(|a| alert_to_pb(a, lang)).collect(),
            next_page_token,
        }))
    }

    async fn get_alert(
        &self,
        req: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let r = req.into_inner();
        let (id, lang) = (r.id, Lang::parse(&r.language)?);
        match self.desk.store().get_alert(&id).await {
            Ok(Some(a)) => Ok(Response::new(alert_to_pb(&a, lang))),
            Ok(None) => Err(Status::not_found(format!("no alert with id `{id}`"))),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn acknowledge(
        &self,
        req: Request<pb::AlertActionRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let who = self.auth.check(&req, Action::Acknowledge)?;
        let r = req.into_inner();
        let lang = Lang::parse(&r.language)?;
        let operator = actor(&who, &r.operator_id)?;
        let note = (!r.note.is_empty()).then_some(r.note);
        let a = self
            .desk
            .acknowledge(&r.alert_id, &operator, note)
            .await
            .map_err(desk_status)?;
        Ok(Response::new(alert_to_pb(&a, lang)))
    }
}

/// A registry import is one whole file in one message: a city's list is
/// larger than tonic's default 4 MiB limit.
const MAX_REGISTRY_MESSAGE: usize = 64 * 1024 * 1024;

/// Binds the gRPC listener; returns its address and the serving future.
pub async fn serve(
    addr: SocketAddr,
    desk: AlertDesk,
    auth: Auth,
    registry: RegistryHandles,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = Result<(), tonic::transport::Error>>,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AlertServiceServer<Alerts>>()
        .await;
    health_reporter
        .set_serving::<pb::registry_service_server::RegistryServiceServer<registry::Registry>>()
        .await;
    health_reporter
        .set_serving::<pb::telemetry_service_server::TelemetryServiceServer<telemetry::Telemetry>>()
        .await;
    let telemetry = telemetry::Telemetry::new(registry.store.clone(), auth.clone());
    let registry = pb::registry_service_server::RegistryServiceServer::new(
        registry::Registry::new(registry, auth.clone()),
    )
    .max_decoding_message_size(MAX_REGISTRY_MESSAGE);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let fut = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(AlertServiceServer::new(Alerts {
            desk,
            auth,
            shutdown: shutdown.clone(),
        }))
        .add_service(registry)
        .add_service(pb::telemetry_service_server::TelemetryServiceServer::new(
            telemetry,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        });
    Ok((local, fut))
}
