//! The operator API over gRPC (tonic): `eldercare.v1.AlertService`, plus
//! the standard health and reflection services so stock tools work;
//! served in the clear or over TLS (`tls`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod registry;
pub mod telemetry;
pub mod tls;
pub mod visits;
pub use auth::{Action, Auth, Principal, Role};
pub use registry::{DeviceSessions, RegistryHandles};

use eldercare_alerts::{Action as DeskAction, AlertDesk, DeskError};
use eldercare_model as m;
use eldercare_proto::v1 as pb;
use eldercare_store::AlertQuery;
use futures::StreamExt;
use futures::future::Either;
use pb::alert_service_server::{AlertService, AlertServiceServer};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

fn ts(ms: i64) -> Option<eldercare_proto::wkt::Timestamp> {
    Some(eldercare_proto::wkt::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn ms(t: &eldercare_proto::wkt::Timestamp) -> i64 {
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
        queue: a.queue().as_str().to_string(),
        muted: a.muted,
        silence_id: a.silence_id.clone().unwrap_or_default(),
        escalations: a.escalations,
        responder: a.responder.as_ref().map(|r| pb::Responder {
            r#type: responder_type(r.kind) as i32,
            name: r.name.clone(),
            phone: r.phone.clone(),
        }),
        acknowledged_at: a.acknowledged_at.and_then(ts),
        dispatched_at: a.dispatched_at.and_then(ts),
        resolved_at: a.resolved_at.and_then(ts),
        history: Vec::new(),
        district: a.district.clone().unwrap_or_default(),
        community: a.community.clone().unwrap_or_default(),
        late_ms: a.late_ms.unwrap_or(0),
        recorded: a.recorded,
        visit: a.visit.as_deref().map(visit_to_pb),
        route: a.route.map(|q| q.as_str().to_string()).unwrap_or_default(),
    }
}

fn visit_to_pb(v: &m::VisitInfo) -> pb::Visit {
    pb::Visit {
        visit_id: v.visit_id.clone(),
        provider_id: v.provider_id.clone(),
        carer_id: v.carer_id.clone().unwrap_or_default(),
        plan_id: v.plan_id.clone().unwrap_or_default(),
        service: v.service.clone().unwrap_or_default(),
        day: v.day.clone(),
        window_start: v.window.and_then(|w| ts(w.0)),
        window_end: v.window.and_then(|w| ts(w.1)),
        planned_min: v.planned_min.unwrap_or(0),
        check_in: v.check_in.and_then(ts),
        check_out: v.check_out.and_then(ts),
        via: v.via.clone().unwrap_or_default(),
        flags: v.flags.iter().map(|f| f.as_str().to_string()).collect(),
        signs: v
            .signs
            .iter()
            .map(|s| pb::VisitSign {
                kind: s.kind.as_str().to_string(),
                at: ts(s.at),
                room: s.room.clone().unwrap_or_default(),
            })
            .collect(),
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
        hash: e.hash.clone(),
    }
}

fn responder_type(t: m::ResponderType) -> pb::ResponderType {
    match t {
        m::ResponderType::FamilyContact => pb::ResponderType::FamilyContact,
        m::ResponderType::CommunityWorker => pb::ResponderType::CommunityWorker,
        m::ResponderType::FamilyDoctor => pb::ResponderType::FamilyDoctor,
        m::ResponderType::Ambulance120 => pb::ResponderType::Ambulance120,
    }
}

fn silence_to_pb(s: &m::Silence) -> pb::Silence {
    pb::Silence {
        id: s.id.clone(),
        kind: s.kind.as_str().to_string(),
        elder_id: s.elder_id.clone().unwrap_or_default(),
        device_id: s.device_id.clone().unwrap_or_default(),
        reason: s.reason.clone(),
        created_by: s.created_by.clone(),
        created_at: ts(s.created_at),
        until: ts(s.until),
        ended_at: s.ended_at.and_then(ts),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn desk_status(e: DeskError) -> Status {
    match e {
        DeskError::NotFound(_) => Status::not_found(e.to_string()),
        DeskError::NotAllowed { .. } | DeskError::AlreadyAcknowledged { .. } => {
            Status::failed_precondition(e.to_string())
        }
        DeskError::Invalid(_) => Status::invalid_argument(e.to_string()),
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

/// How subscribers are served. Each has a bounded buffer of events on
/// their way to it; one whose buffer stays full for `stall` has stopped
/// reading and is cut off with RESOURCE_EXHAUSTED naming the last seq it
/// was sent, to resume from. Ingestion and other subscribers never wait
/// on it either way.
#[derive(Debug, Clone, Copy)]
pub struct Subscribers {
    pub buffer: usize,
    pub stall: std::time::Duration,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            buffer: 1024,
            stall: std::time::Duration::from_secs(10),
        }
    }
}

pub struct Alerts {
    desk: AlertDesk,
    auth: Auth,
    subscribers: Subscribers,
    /// Ends open subscriptions at shutdown, so the server can drain.
    shutdown: CancellationToken,
}

impl Alerts {
    /// The newest event's `seq` now, for a client that wants to follow the
    /// feed from here on (the console reads the queue after it): needs the
    /// right to read alerts, as `Subscribe` does.
    pub async fn head_seq<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        self.auth.check(req, Action::ReadAlerts)?;
        self.desk
            .store()
            .last_seq()
            .await
            .map_err(store_unavailable)
    }
}

fn store_unavailable(e: eldercare_store::StoreError) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl AlertService for Alerts {
    type SubscribeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

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
        let queue = parse_queue(&r.queue)?;
        let (district, community) = (r.district, r.community);
        let keep = move |e: &m::AlertEvent| {
            let a = &e.alert;
            min.is_none_or(|s| a.severity >= s)
                && (kinds.is_empty() || kinds.contains(&a.kind))
                && (district.is_empty() || a.district.as_deref() == Some(district.as_str()))
                && (community.is_empty() || a.community.as_deref() == Some(community.as_str()))
                && queue.is_none_or(|q| a.queue() == q)
        };
        // Events flow desk -> forwarder -> a bounded buffer the client
        // drains. The forwarder never waits on the client: when the buffer
        // is full the subscriber is cut off, after the events already
        // buffered, with the seq it can resume from. The stream's last
        // item is that status (or the shutdown one), kept aside here.
        let terminal: Arc<Mutex<Option<Status>>> = Arc::default();
        let set_terminal = {
            let t = terminal.clone();
            move |st: Status| {
                let mut g = t.lock().unwrap_or_else(|p| p.into_inner());
                if g.is_none() {
                    *g = Some(st);
                }
            }
        };
        let (tx, mut rx) = mpsc::channel::<m::AlertEvent>(256);
        let (out_tx, out_rx) = mpsc::channel(self.subscribers.buffer.max(1));
        let desk = self.desk.clone();
        let shutdown = self.shutdown.clone();
        let on_end = set_terminal.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    on_end(Status::unavailable("server shutting down; resume with after_seq"));
                }
                r = desk.subscribe(r.after_seq, keep, tx) => if let Err(e) = r {
                    on_end(desk_status(e));
                }
            }
        });
        let (buffer, stall) = (self.subscribers.buffer, self.subscribers.stall);
        let mut last = r.after_seq;
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let seq = ev.seq;
                // A client catching up drains the buffer as it goes; one
                // whose buffer stays full for the stall time has stopped.
                match tokio::time::timeout(stall, out_tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(Ok(event_to_pb(&ev, lang)));
                        last = seq;
                    }
                    Ok(Err(_)) => break,
                    Err(_) => {
                        metrics::counter!("eldercare_subscribers_cut_off_total").increment(1);
                        debug!(last, "Subscriber stalled; cut off.");
                        let mut st = Status::resource_exhausted(format!(
                            "subscriber stopped reading ({buffer} events buffered for {} s) and was cut off; last delivered seq {last}; resume with after_seq = {last}",
                            stall.as_secs_f64()
                        ));
                        if let Ok(v) = last.to_string().parse() {
                            st.metadata_mut().insert("eldercare-last-seq", v);
                        }
                        set_terminal(st);
                        break;
                    }
                }
            }
        });
        let end = futures::stream::once(async move {
            terminal.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|st| async move { st.map(Err) });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(out_rx).chain(end),
        )))
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
        let kinds: Vec<m::AlertKind> = r
            .kinds
            .iter()
            .map(|k| {
                m::AlertKind::parse(k)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown alert kind `{k}`")))
            })
            .collect::<Result<_, _>>()?;
        let queue = parse_queue(&r.queue)?;
        let mut q = AlertQuery {
            community: (!r.community.is_empty()).then_some(r.community),
            kinds,
            states: r.states.iter().filter_map(|s| from_pb_state(*s)).collect(),
            min_severity: from_pb_severity(r.min_severity),
            elder_id: (!r.elder_id.is_empty()).then_some(r.elder_id),
            raised_from: r.raised_from.as_ref().map(ms),
            raised_to: r.raised_to.as_ref().map(ms),
            limit,
            after,
        };
        // The queue follows from kind, silence and recording, which the
        // store does not index: read pages and keep the queue's alerts,
        // reading at most ten pages' worth for one answer (the token then
        // resumes after the last alert read).
        let mut alerts = Vec::new();
        let mut last_read = None;
        let mut more = false;
        for _ in 0..10 {
            let page = self
                .desk
                .store()
                .list_alerts(&q)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            more = page.len() as u32 == limit;
            if let Some(a) = page.last() {
                last_read = Some((a.raised_at, a.id.clone()));
                q.after = last_read.clone();
            }
            alerts.extend(
                page.into_iter()
                    .filter(|a| queue.is_none_or(|q| a.queue() == q)),
            );
            if !more || alerts.len() as u32 >= limit {
                break;
            }
        }
        alerts.truncate(limit as usize);
        let next_page_token = match (alerts.last(), more) {
            (Some(a), _) if alerts.len() as u32 == limit => format!("{}:{}", a.raised_at, a.id),
            (_, true) => last_read.map_or(String::new(), |(t, id)| format!("{t}:{id}")),
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
        let store = self.desk.store();
        let a = match store.get_alert(&id).await {
            Ok(Some(a)) => a,
            Ok(None) => return Err(Status::not_found(format!("no alert with id `{id}`"))),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let history = store
            .events_of_alert(&id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut out = alert_to_pb(&a, lang);
        out.history = history
            .iter()
            .map(|e| pb::HistoryEntry {
                seq: e.seq,
                kind: event_kind(e.kind) as i32,
                actor: e.actor.clone(),
                at: ts(e.at),
                note: e.note.clone().unwrap_or_default(),
                state: state(e.alert.state) as i32,
                hash: e.hash.clone(),
            })
            .collect();
        Ok(Response::new(out))
    }

    async fn acknowledge(
        &self,
        req: Request<pb::AlertActionRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let step = self.step(&req, Action::Acknowledge)?;
        self.act(step, DeskAction::Acknowledge).await
    }

    async fn dispatch(
        &self,
        req: Request<pb::DispatchRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let step = self.step(&req, Action::Dispatch)?;
        let p = req
            .into_inner()
            .responder
            .ok_or_else(|| Status::invalid_argument("responder is required"))?;
        let kind = match pb::ResponderType::try_from(p.r#type) {
            Ok(pb::ResponderType::FamilyContact) => m::ResponderType::FamilyContact,
            Ok(pb::ResponderType::CommunityWorker) => m::ResponderType::CommunityWorker,
            Ok(pb::ResponderType::FamilyDoctor) => m::ResponderType::FamilyDoctor,
            Ok(pb::ResponderType::Ambulance120) => m::ResponderType::Ambulance120,
            _ => {
                return Err(Status::invalid_argument(
                    "responder.type is required: FAMILY_CONTACT, COMMUNITY_WORKER, FAMILY_DOCTOR or AMBULANCE_120",
                ));
            }
        };
        if kind != m::ResponderType::Ambulance120 && p.name.trim().is_empty() {
            return Err(Status::invalid_argument("responder.name is required"));
        }
        if !p.phone.is_empty()
            && !p
                .phone
                .chars()
                .all(|c| c.is_ascii_digit() || "+- ()".contains(c))
        {
            return Err(Status::invalid_argument(
                "responder.phone may hold only digits, spaces and + - ( )",
            ));
        }
        let responder = m::Responder {
            kind,
            name: p.name,
            phone: p.phone,
        };
        self.act(step, DeskAction::Dispatch(responder)).await
    }

    async fn escalate(
        &self,
        req: Request<pb::AlertActionRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let step = self.step(&req, Action::Escalate)?;
        self.act(step, DeskAction::Escalate).await
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let step = self.step(&req, Action::Resolve)?;
        let r = req.into_inner();
        let outcome = m::Outcome::parse(&r.outcome)
            .filter(|o| !matches!(o, m::Outcome::Cleared | m::Outcome::Recorded))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "outcome `{}` is not one of false_alarm, handled_by_phone, responder_on_site, sent_to_hospital (or, for a follow_up alert, satisfied, complaint, no_answer)",
                    r.outcome
                ))
            })?;
        // A follow-up call ends with the elder's answer and nothing else;
        // the answers are for follow-up calls only. An unknown id falls
        // through to the desk, which says NOT_FOUND.
        let kind = self
            .desk
            .store()
            .get_alert(&step.id)
            .await
            .map_err(store_unavailable)?
            .map(|a| a.kind);
        if let Some(kind) = kind {
            check_follow_up_outcome(kind, outcome)?;
        }
        self.act(step, DeskAction::Resolve(outcome)).await
    }

    async fn add_note(
        &self,
        req: Request<pb::AlertActionRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let step = self.step(&req, Action::AddNote)?;
        if step.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(Status::invalid_argument("note is required"));
        }
        self.act(step, DeskAction::AddNote).await
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let r = req.into_inner();
        let (Some(from), Some(to)) = (r.from.as_ref().map(ms), r.to.as_ref().map(ms)) else {
            return Err(Status::invalid_argument("from and to are required"));
        };
        if from >= to {
            return Err(Status::invalid_argument("from must be before to"));
        }
        let mut q = AlertQuery {
            community: (!r.community.is_empty()).then_some(r.community),
            raised_from: Some(from),
            raised_to: Some(to),
            limit: 1000,
            ..Default::default()
        };
        let mut counts: std::collections::BTreeMap<(String, i32), u64> = Default::default();
        let mut out = pb::StatsResponse::default();
        let (mut within_60, mut within_180) = (0u64, 0u64);
        let mut ack_s: Vec<f64> = Vec::new();
        loop {
            let page = self
                .desk
                .store()
                .list_alerts(&q)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            for a in &page {
                out.total += 1;
                *counts
                    .entry((a.kind.as_str().to_string(), severity(a.severity) as i32))
                    .or_default() += 1;
                out.acknowledged += u64::from(a.acknowledged_at.is_some());
                out.dispatched += u64::from(a.dispatched_at.is_some());
                out.resolved += u64::from(a.state == m::AlertState::Resolved);
                if a.queue() != m::Queue::Hotline {
                    continue;
                }
                out.hotline_total += 1;
                if let Some(t) = a.acknowledged_at {
                    let waited = (t - a.detected_at).max(0);
                    within_60 += u64::from(waited <= 60_000);
                    within_180 += u64::from(waited <= 180_000);
                    ack_s.push(waited as f64 / 1000.0);
                }
            }
            match page.last() {
                Some(a) if page.len() == q.limit as usize => {
                    q.after = Some((a.raised_at, a.id.clone()));
                }
                _ => break,
            }
        }
        out.by_kind = counts
            .into_iter()
            .map(|((kind, severity), count)| pb::KindCount {
                kind,
                severity,
                count,
            })
            .collect();
        if out.hotline_total > 0 {
            out.acknowledged_within_60s = within_60 as f64 / out.hotline_total as f64;
            out.acknowledged_within_180s = within_180 as f64 / out.hotline_total as f64;
        }
        ack_s.sort_by(f64::total_cmp);
        out.ack_p50_seconds = percentile(&ack_s, 50.0);
        out.ack_p95_seconds = percentile(&ack_s, 95.0);
        Ok(Response::new(out))
    }

    async fn create_silence(
        &self,
        req: Request<pb::CreateSilenceRequest>,
    ) -> Result<Response<pb::Silence>, Status> {
        let who = self.auth.check(&req, Action::Silence)?;
        let r = req.into_inner();
        let kind = m::AlertKind::parse(&r.kind)
            .ok_or_else(|| Status::invalid_argument(format!("unknown alert kind `{}`", r.kind)))?;
        let until = r
            .until
            .as_ref()
            .map(ms)
            .ok_or_else(|| Status::invalid_argument("until is required"))?;
        let s = m::Silence {
            id: String::new(),
            kind,
            elder_id: (!r.elder_id.is_empty()).then_some(r.elder_id),
            device_id: (!r.device_id.is_empty()).then_some(r.device_id),
            reason: r.reason,
            created_by: who.operator_id,
            created_at: 0,
            until,
            ended_at: None,
        };
        let s = self.desk.silence(s).await.map_err(desk_status)?;
        Ok(Response::new(silence_to_pb(&s)))
    }

    async fn list_silences(
        &self,
        req: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        self.auth.check(&req, Action::ReadAlerts)?;
        let now = chrono::Utc::now().timestamp_millis();
        let list = self
            .desk
            .store()
            .silences(Some(now))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ListSilencesResponse {
            silences: list.iter().map(silence_to_pb).collect(),
        }))
    }

    async fn end_silence(
        &self,
        req: Request<pb::EndSilenceRequest>,
    ) -> Result<Response<pb::Silence>, Status> {
        let who = self.auth.check(&req, Action::Silence)?;
        let id = req.into_inner().id;
        let s = self
            .desk
            .end_silence(&id, &who.operator_id)
            .await
            .map_err(desk_status)?;
        Ok(Response::new(silence_to_pb(&s)))
    }
}

/// The parts every alert action request has.
trait StepRequest {
    /// (alert_id, operator_id, note, language)
    fn parts(&self) -> (&str, &str, &str, &str);
}

impl StepRequest for pb::AlertActionRequest {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (
            &self.alert_id,
            &self.operator_id,
            &self.note,
            &self.language,
        )
    }
}

impl StepRequest for pb::DispatchRequest {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (
            &self.alert_id,
            &self.operator_id,
            &self.note,
            &self.language,
        )
    }
}

impl StepRequest for pb::ResolveRequest {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (
            &self.alert_id,
            &self.operator_id,
            &self.note,
            &self.language,
        )
    }
}

/// An alert action request, checked: who acts, on what, how to answer.
struct Step {
    id: String,
    operator: String,
    note: Option<String>,
    lang: Lang,
}

impl Alerts {
    fn step<R: StepRequest>(&self, req: &Request<R>, action: Action) -> Result<Step, Status> {
        let who = self.auth.check(req, action)?;
        let (id, operator_id, note, language) = req.get_ref().parts();
        if id.is_empty() {
            return Err(Status::invalid_argument("alert_id is required"));
        }
        Ok(Step {
            id: id.to_string(),
            operator: actor(&who, operator_id)?,
            note: (!note.is_empty()).then(|| note.to_string()),
            lang: Lang::parse(language)?,
        })
    }

    async fn act(&self, step: Step, action: DeskAction) -> Result<Response<pb::Alert>, Status> {
        let a = self
            .desk
            .act(&step.id, action, &step.operator, step.note)
            .await
            .map_err(desk_status)?;
        Ok(Response::new(alert_to_pb(&a, step.lang)))
    }
}

/// A registry import is one whole file in one message: a city's list is
/// larger than tonic's default 4 MiB limit.
const MAX_REGISTRY_MESSAGE: usize = 64 * 1024 * 1024;

/// The services, built once: the gRPC server and the console's JSON API
/// (crate `eldercare-console`) call the same code, with the same roles,
/// audit and answer-time accounting.
#[derive(Clone)]
pub struct Services {
    pub alerts: Arc<Alerts>,
    pub registry: Arc<registry::Registry>,
    pub telemetry: Arc<telemetry::Telemetry>,
    pub admin: Arc<admin::Admin>,
    pub visits: Arc<visits::Visits>,
    pub auth: Auth,
}

impl Services {
    pub fn new(
        desk: AlertDesk,
        auth: Auth,
        subscribers: Subscribers,
        registry: RegistryHandles,
        rules: Arc<dyn admin::RulesReload>,
        shutdown: CancellationToken,
    ) -> Services {
        Services {
            visits: Arc::new(visits::Visits::new(desk.store().clone(), auth.clone())),
            alerts: Arc::new(Alerts {
                desk,
                auth: auth.clone(),
                subscribers,
                shutdown,
            }),
            telemetry: Arc::new(telemetry::Telemetry::new(
                registry.store.clone(),
                auth.clone(),
            )),
            registry: Arc::new(registry::Registry::new(registry, auth.clone())),
            admin: Arc::new(admin::Admin::new(auth.clone(), rules)),
            auth,
        }
    }
}

impl Services {
    /// Accepts carers' check-ins through VisitService.CheckIn into `intake`.
    pub fn with_check_ins(
        mut self,
        intake: Arc<dyn visits::CheckIns>,
        registry: Arc<dyn eldercare_store::Store>,
    ) -> Services {
        let v = visits::Visits::new(self.alerts.desk.store().clone(), self.auth.clone());
        self.visits = Arc::new(v.with_check_ins(intake, registry));
        self
    }
}

/// Serves `services` over gRPC on `addr`, with health and reflection,
/// until `shutdown`: over TLS with `tls` (the certificate in force when
/// each connection is accepted, offering only HTTP/2), in the clear
/// without.
pub async fn serve(
    addr: SocketAddr,
    services: Services,
    tls: Option<eldercare_tls::Tls>,
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
    health_reporter
        .set_serving::<pb::admin_service_server::AdminServiceServer<admin::Admin>>()
        .await;
    health_reporter
        .set_serving::<pb::visit_service_server::VisitServiceServer<visits::Visits>>()
        .await;
    let registry =
        pb::registry_service_server::RegistryServiceServer::from_arc(services.registry.clone())
            .max_decoding_message_size(MAX_REGISTRY_MESSAGE);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(pb::admin_service_server::AdminServiceServer::from_arc(
            services.admin.clone(),
        ))
        .add_service(AlertServiceServer::from_arc(services.alerts.clone()))
        .add_service(registry)
        .add_service(pb::visit_service_server::VisitServiceServer::from_arc(
            services.visits.clone(),
        ))
        .add_service(
            pb::telemetry_service_server::TelemetryServiceServer::from_arc(
                services.telemetry.clone(),
            ),
        );
    let stopped = shutdown.clone();
    let stopped = async move { stopped.cancelled().await };
    let fut = match tls {
        None => Either::Left(
            router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped),
        ),
        Some(tls) => Either::Right(
            router.serve_with_incoming_shutdown(tls::incoming(listener, tls, shutdown), stopped),
        ),
    };
    Ok((local, fut))
}

/// INVALID_ARGUMENT unless `outcome` suits an alert of `kind`: a
/// `follow_up` alert is resolved with `satisfied`, `complaint` or
/// `no_answer`, and only a `follow_up` alert is.
fn check_follow_up_outcome(kind: m::AlertKind, outcome: m::Outcome) -> Result<(), Status> {
    match (kind == m::AlertKind::FollowUp, outcome.is_follow_up()) {
        (true, false) => Err(Status::invalid_argument(format!(
            "a follow_up alert is resolved with satisfied, complaint or no_answer (the elder's answer to the call), not `{}`",
            outcome.as_str()
        ))),
        (false, true) => Err(Status::invalid_argument(format!(
            "outcome `{}` is for follow_up alerts only; this is a {} alert",
            outcome.as_str(),
            kind.as_str()
        ))),
        _ => Ok(()),
    }
}

/// A queue name from a request; empty means every queue.
fn parse_queue(q: &str) -> Result<Option<m::Queue>, Status> {
    match q {
        "" => Ok(None),
        q => m::Queue::parse(q).map(Some).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown queue `{q}`; use \"hotline\", \"operations\", \"care\", \"provider\", \"supervision\" or \"follow_up\""
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_up_outcomes_are_for_follow_up_alerts_only() {
        use m::{AlertKind as K, Outcome as O};
        for o in [O::Satisfied, O::Complaint, O::NoAnswer] {
            assert!(check_follow_up_outcome(K::FollowUp, o).is_ok());
            let e = check_follow_up_outcome(K::Visit, o).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().contains("follow_up alerts only"),
                "{}",
                e.message()
            );
        }
        for o in [O::FalseAlarm, O::HandledByPhone, O::ResponderOnSite] {
            assert!(check_follow_up_outcome(K::VisitMissed, o).is_ok());
            let e = check_follow_up_outcome(K::FollowUp, o).unwrap_err();
            assert!(
                e.message().contains("satisfied, complaint or no_answer"),
                "{}",
                e.message()
            );
        }
        assert!(m::Outcome::parse("no_answer").is_some_and(|o| o.is_follow_up()));
    }

    #[test]
    fn an_alerts_visit_is_carried_with_flags_and_signs_as_names() {
        let v = m::VisitInfo {
            visit_id: "e1/p1/2026-11-02".into(),
            provider_id: "P1".into(),
            day: "2026-11-02".into(),
            window: Some((1000, 2000)),
            check_in: Some(1500),
            flags: vec![m::VisitFlag::Late, m::VisitFlag::NoCheckOut],
            signs: vec![m::VisitSign {
                kind: m::SignKind::Entrance,
                at: 1600,
                room: Some("hall".into()),
            }],
            ..Default::default()
        };
        let p = visit_to_pb(&v);
        assert_eq!(p.flags, ["late", "no_check_out"]);
        assert_eq!(p.signs[0].kind, "entrance");
        assert_eq!(p.signs[0].room, "hall");
        assert_eq!(p.window_start.map(|t| ms(&t)), Some(1000));
        assert_eq!(p.check_in.map(|t| ms(&t)), Some(1500));
        assert!(p.check_out.is_none());
        assert_eq!(p.carer_id, "");
    }
}
