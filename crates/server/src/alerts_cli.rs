//! `eldercare alerts watch | list | ack`: the alert API from a shell or an
//! integration script, over gRPC with the same bearer tokens as any other
//! client.
//!
//! The pure parts (what a line says, which failures are worth a retry,
//! how long to wait, which exit code) are apart from the I/O loop, which
//! only connects, reads and writes. `watch` keeps the last `seq` it
//! printed and resumes after it on every reconnect, so an event is
//! printed once and none is missed across dropped connections and server
//! restarts.
//!
//! `--json` prints one flat object per line with the enums in lower case
//! (`"kind": "raised"`, `"severity": "critical"`), numbers as numbers and
//! times in RFC 3339 UTC, rather than the protobuf JSON mapping of the
//! whole message (`serde_json::to_value(&event)`): that mapping nests the
//! alert with all its readings, writes the uint64 `seq` as a string and
//! the kinds as `ACKNOWLEDGED_EVENT`, which makes `jq 'select(.seq > 41)'`
//! or `.kind == "acknowledged"` needlessly awkward. Anything else is one
//! `GetAlert` away.

use clap::{Args, Subcommand, ValueEnum};
use eldercare_proto::v1 as pb;
use pb::alert_service_client::AlertServiceClient;
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The server's own default gRPC listener (`config.rs`), as a URL.
pub const DEFAULT_GRPC_ADDR: &str = "http://127.0.0.1:50051";

/// EX_NOPERM: the token is unknown, or its role may not do this.
const EXIT_NOPERM: u8 = 77;
/// EX_UNAVAILABLE: the server could not be reached.
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
/// EX_USAGE: a token that cannot be sent as a header.
const EXIT_USAGE: u8 = 64;

/// Longest wait between two reconnection attempts of `watch`.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Follow alert events as they happen (AlertService.Subscribe), one
    /// line each; reconnects by itself and resumes after the last seq
    /// printed.
    Watch {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Start after this seq (the last one you saw); 0 replays every
        /// stored event first.
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
    },
    /// List alerts (AlertService.ListAlerts).
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only alerts in these states, e.g. `open,acknowledged` [default: all].
        #[arg(long, value_enum, value_delimiter = ',')]
        state: Vec<StateArg>,
        /// At most this many alerts.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Acknowledge an alert as the token's operator, and print it.
    Ack {
        #[command(flatten)]
        api: ApiArgs,
        /// The alert's id.
        id: String,
        /// A note recorded with the acknowledgement.
        #[arg(long)]
        note: Option<String>,
        /// Print the alert as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where the server is and who is asking. Deliberately not `Debug`: it
/// holds the token.
#[derive(Args)]
pub struct ApiArgs {
    /// The server's gRPC address, `http://host:port` or `host:port`.
    #[arg(long, env = "ELDERCARE_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    grpc_addr: String,
    /// Bearer token from `eldercare token add`. The environment variable
    /// keeps it out of `ps` and shell history.
    #[arg(long, env = "ELDERCARE_TOKEN", hide_env_values = true)]
    token: String,
    /// Language of the summaries: zh-CN or en.
    #[arg(long, default_value = "zh-CN")]
    language: String,
    /// CA certificate (PEM) to trust: the server serves gRPC over TLS
    /// (it has `--tls-cert`). Without it the connection is plain.
    #[arg(long, env = "ELDERCARE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Open,
    Acknowledged,
    Dispatched,
    Resolved,
}

impl StateArg {
    fn to_pb(self) -> pb::AlertState {
        match self {
            StateArg::Open => pb::AlertState::Open,
            StateArg::Acknowledged => pb::AlertState::Acknowledged,
            StateArg::Dispatched => pb::AlertState::Dispatched,
            StateArg::Resolved => pb::AlertState::Resolved,
        }
    }
}

pub async fn run(cmd: AlertsCmd) -> anyhow::Result<ExitCode> {
    let code = match cmd {
        AlertsCmd::Watch {
            api,
            json,
            after_seq,
        } => watch(&api, json, after_seq).await,
        AlertsCmd::List {
            api,
            json,
            state,
            limit,
        } => list(&api, json, &state, limit).await,
        AlertsCmd::Ack {
            api,
            id,
            note,
            json,
        } => ack(&api, &id, note.unwrap_or_default(), json).await,
    };
    Ok(code.unwrap_or_else(|f| {
        eprintln!("eldercare: {}", f.message);
        ExitCode::from(f.code)
    }))
}

// ---------------------------------------------------------------------
// What the lines say (pure).

/// An optional protobuf Timestamp field as RFC 3339 (or null). A macro
/// rather than a function so it takes the fields apart whatever crate
/// the generated code's Timestamp type comes from.
macro_rules! utc {
    ($t:expr) => {
        $t.as_ref().map(|t| rfc3339(t.seconds, t.nanos))
    };
}

/// One alert event as the flat JSON object `watch --json` prints.
pub fn event_json(ev: &pb::AlertEvent) -> Value {
    let a = ev.alert.as_ref();
    let s = |f: fn(&pb::Alert) -> &str| a.map(f).unwrap_or_default();
    json!({
        "seq": ev.seq,
        "kind": event_kind_name(ev.kind),
        "at": utc!(ev.at),
        "actor": non_empty(&ev.actor),
        "note": non_empty(&ev.note),
        "alert_id": s(|a| &a.id),
        "elder_id": s(|a| &a.elder_id),
        "device_id": s(|a| &a.device_id),
        "alert_kind": s(|a| &a.kind),
        "severity": severity_name(a.map_or(0, |a| a.severity)),
        "state": state_name(a.map_or(0, |a| a.state)),
        "summary": s(|a| &a.summary),
        "district": s(|a| &a.district),
        "community": s(|a| &a.community),
        "queue": s(|a| &a.queue),
        "occurrences": a.map_or(0, |a| a.occurrences),
        "escalations": a.map_or(0, |a| a.escalations),
        "outcome": a.and_then(|a| non_empty(&a.outcome)),
        "muted": a.is_some_and(|a| a.muted),
        "hash": ev.hash,
    })
}

/// One alert as the flat JSON object `list --json` and `ack --json` print.
pub fn alert_json(a: &pb::Alert) -> Value {
    json!({
        "id": a.id,
        "elder_id": a.elder_id,
        "device_id": a.device_id,
        "kind": a.kind,
        "severity": severity_name(a.severity),
        "state": state_name(a.state),
        "summary": a.summary,
        "district": a.district,
        "community": a.community,
        "queue": a.queue,
        "occurrences": a.occurrences,
        "escalations": a.escalations,
        "outcome": non_empty(&a.outcome),
        "muted": a.muted,
        "raised_at": utc!(a.raised_at),
        "detected_at": utc!(a.detected_at),
        "updated_at": utc!(a.updated_at),
        "acknowledged_at": utc!(a.acknowledged_at),
        "dispatched_at": utc!(a.dispatched_at),
        "resolved_at": utc!(a.resolved_at),
    })
}

/// The human line of `watch`.
pub fn event_line(ev: &pb::AlertEvent) -> String {
    let default = pb::Alert::default();
    let a = ev.alert.as_ref().unwrap_or(&default);
    let at = ev
        .at
        .as_ref()
        .map(|t| local_time(t.seconds, t.nanos))
        .unwrap_or_default();
    let mut line = format!(
        "#{:<5} {at}  {:<12} {:<8} {:<19} elder {:<8} {} ({})  {}",
        ev.seq,
        event_kind_name(ev.kind),
        severity_name(a.severity),
        a.kind,
        a.elder_id,
        a.id,
        state_name(a.state),
        a.summary
    );
    if !ev.actor.is_empty() {
        line.push_str(&format!("  by {}", ev.actor));
    }
    if !ev.note.is_empty() {
        line.push_str(&format!("  [{}]", ev.note));
    }
    line
}

/// The human line of `list` and `ack`.
pub fn alert_line(a: &pb::Alert) -> String {
    let raised = a
        .raised_at
        .as_ref()
        .map(|t| local_time(t.seconds, t.nanos))
        .unwrap_or_default();
    format!(
        "{}  {:<12} {:<8} {:<19} elder {:<8} raised {raised}  {}",
        a.id,
        state_name(a.state),
        severity_name(a.severity),
        a.kind,
        a.elder_id,
        a.summary
    )
}

fn event_kind_name(k: i32) -> &'static str {
    use pb::AlertEventKind as K;
    match K::try_from(k) {
        Ok(K::Raised) => "raised",
        Ok(K::Updated) => "updated",
        Ok(K::AcknowledgedEvent) => "acknowledged",
        Ok(K::DispatchedEvent) => "dispatched",
        Ok(K::Escalated) => "escalated",
        Ok(K::ResolvedEvent) => "resolved",
        Ok(K::Note) => "note",
        Ok(K::Unspecified) | Err(_) => "unspecified",
    }
}

fn state_name(s: i32) -> &'static str {
    use pb::AlertState as S;
    match S::try_from(s) {
        Ok(S::Open) => "open",
        Ok(S::Acknowledged) => "acknowledged",
        Ok(S::Dispatched) => "dispatched",
        Ok(S::Resolved) => "resolved",
        Ok(S::Unspecified) | Err(_) => "unspecified",
    }
}

fn severity_name(s: i32) -> &'static str {
    use pb::Severity as S;
    match S::try_from(s) {
        Ok(S::Critical) => "critical",
        Ok(S::High) => "high",
        Ok(S::Medium) => "medium",
        Ok(S::Low) => "low",
        Ok(S::Unspecified) | Err(_) => "unspecified",
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A protobuf timestamp (taken apart, so this works with any Timestamp
/// type) as RFC 3339 in UTC, to the millisecond as the server keeps it.
fn rfc3339(seconds: i64, nanos: i32) -> String {
    chrono::DateTime::from_timestamp(seconds, nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Human lines in the local time zone, as a console shows them.
fn local_time(seconds: i64, nanos: i32) -> String {
    chrono::DateTime::from_timestamp(seconds, nanos.max(0) as u32)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

// ---------------------------------------------------------------------
// Failures and retries (pure).

/// Why a command stops: the exit code and what to say on stderr.
#[derive(Debug, PartialEq)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

pub(crate) fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// The exit code and message for a call the server refused or failed.
pub(crate) fn status_failure(what: &str, st: &Status) -> Failure {
    let msg = st.message();
    match st.code() {
        Code::Unauthenticated => fail(
            EXIT_NOPERM,
            format!("{what}: the server does not accept this token ({msg})"),
        ),
        Code::PermissionDenied => fail(EXIT_NOPERM, format!("{what}: permission denied: {msg}")),
        Code::Unavailable => fail(
            EXIT_UNAVAILABLE,
            format!("{what}: the server is unavailable: {msg}"),
        ),
        Code::NotFound => fail(1, format!("{what}: {msg}")),
        c => fail(1, format!("{what}: {msg} ({c:?})")),
    }
}

/// Whether `watch` reconnects after its stream ended with `code`: the
/// server going away, shutting down or cutting off a slow reader is worth
/// a retry; a refusal of the token or the request is not.
fn worth_retry(code: Code) -> bool {
    !matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

/// Exponential wait between reconnection attempts, from 100 ms up to
/// [`MAX_BACKOFF`]; back to the start once a subscription is accepted.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_BACKOFF)
    }

    fn reset(&mut self) {
        self.0 = FIRST_BACKOFF;
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(MAX_BACKOFF);
        d
    }
}

/// The last seq printed. `watch` subscribes after it, and prints only
/// what is newer, so an overlapping replay never prints an event twice.
struct Cursor(u64);

impl Cursor {
    /// Whether `seq` is new; it becomes the last one if so.
    fn advance(&mut self, seq: u64) -> bool {
        if seq <= self.0 {
            return false;
        }
        self.0 = seq;
        true
    }
}

/// `host:port` as a URL; a URL stays as it is.
fn endpoint_url(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An error with its causes, which for a transport error say what
/// actually went wrong ("transport error: ...: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        // hyper's layers repeat one another ("tcp connect error: tcp
        // connect error: ...").
        let part = c.to_string();
        if parts.last() != Some(&part) {
            parts.push(part);
        }
        cause = c.source();
    }
    parts.join(": ")
}

fn describe(st: &Status) -> String {
    format!("{:?}: {}", st.code(), st.message())
}

// ---------------------------------------------------------------------
// I/O: the connection, stdout, signals, and the three commands.

/// Adds the bearer token to every call. Not `Debug`: it holds the token.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Client = AlertServiceClient<InterceptedService<Channel, Bearer>>;

pub(crate) struct Api {
    url: String,
    endpoint: Endpoint,
    /// TLS to the server, trusting `--tls-ca`.
    tls: Option<std::sync::Arc<eldercare_tls::ClientConfig>>,
    bearer: Bearer,
    language: String,
}

impl Api {
    pub(crate) fn new(args: &ApiArgs) -> Result<Api, Failure> {
        let url = endpoint_url(&args.grpc_addr);
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| fail(EXIT_USAGE, format!("--grpc-addr `{url}`: {}", chain(&e))))?
            .connect_timeout(Duration::from_secs(5))
            // A connection that dies without a FIN or RST (a cable, a
            // NAT) is noticed by its pings instead of hanging `watch`.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let token = args.token.trim();
        if token.is_empty() {
            return Err(fail(
                EXIT_USAGE,
                "no token: pass --token or set ELDERCARE_TOKEN",
            ));
        }
        let mut header: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            fail(
                EXIT_USAGE,
                "the token has characters a header cannot carry; check --token or ELDERCARE_TOKEN",
            )
        })?;
        header.set_sensitive(true);
        let tls = match &args.tls_ca {
            Some(ca) => Some(
                eldercare_tls::grpc_client_config(ca)
                    .map_err(|e| fail(EXIT_USAGE, format!("--tls-ca: {e}")))?,
            ),
            None => None,
        };
        Ok(Api {
            url,
            endpoint,
            tls,
            bearer: Bearer(header),
            language: args.language.clone(),
        })
    }

    /// A client on a fresh connection; the error says why there is none.
    async fn connect(&self) -> Result<Client, String> {
        let channel = self.channel().await?;
        Ok(AlertServiceClient::with_interceptor(
            channel,
            self.bearer.clone(),
        ))
    }

    /// A fresh connection, for a client of any service (with
    /// [`Api::bearer`]).
    pub(crate) async fn channel(&self) -> Result<Channel, String> {
        match &self.tls {
            None => self.endpoint.connect().await,
            Some(tls) => {
                let connector = eldercare_api::tls::connector(tls.clone());
                self.endpoint.connect_with_connector(connector).await
            }
        }
        .map_err(|e| format!("cannot reach {}: {}", self.url, chain(&e)))
    }

    /// What adds the token to every call.
    pub(crate) fn bearer(&self) -> Bearer {
        self.bearer.clone()
    }

    async fn connect_once(&self) -> Result<Client, Failure> {
        self.connect().await.map_err(|m| fail(EXIT_UNAVAILABLE, m))
    }
}

/// Writes one line to stdout and flushes it, so whatever reads a pipe
/// sees each event at once.
pub(crate) fn emit(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Stdout closed by the reader (`| head`): done, quietly. Anything else
/// is a failure.
pub(crate) fn output_ended(e: std::io::Error) -> Result<ExitCode, Failure> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(fail(1, format!("writing to stdout: {e}")))
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How one subscription ended.
enum Ended {
    /// Connecting or subscribing failed in a way worth a retry.
    Unreachable(String),
    /// An established stream broke (or the server ended it).
    Lost(String),
    /// The server refused the token or the request: stop.
    Refused(Status),
    /// Stdout could not be written.
    Output(std::io::Error),
}

/// What `watch` keeps across subscriptions.
struct Follow {
    json: bool,
    cursor: Cursor,
    backoff: Backoff,
    /// A stream was lost, and no new one accepted yet.
    reconnecting: bool,
}

async fn watch(args: &ApiArgs, json: bool, after_seq: u64) -> Result<ExitCode, Failure> {
    let api = Api::new(args)?;
    let mut f = Follow {
        json,
        cursor: Cursor(after_seq),
        backoff: Backoff::new(),
        reconnecting: false,
    };
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        let ended = tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            e = subscribe_once(&api, &mut f) => e,
        };
        let wait = f.backoff.next();
        match ended {
            Ended::Output(e) => return output_ended(e),
            Ended::Refused(st) => return Err(status_failure("watch", &st)),
            Ended::Lost(why) => {
                f.reconnecting = true;
                eprintln!(
                    "eldercare: alert stream lost ({why}); reconnecting, resuming after seq {}",
                    f.cursor.0
                );
            }
            Ended::Unreachable(why) => eprintln!(
                "eldercare: {why}; retrying in {} ms (resuming after seq {})",
                wait.as_millis(),
                f.cursor.0
            ),
        }
        tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One subscription after the last seq printed, printing each new event,
/// until it ends.
async fn subscribe_once(api: &Api, f: &mut Follow) -> Ended {
    let mut client = match api.connect().await {
        Ok(c) => c,
        Err(why) => return Ended::Unreachable(why),
    };
    let req = pb::SubscribeRequest {
        after_seq: f.cursor.0,
        language: api.language.clone(),
        ..Default::default()
    };
    let mut stream = match client.subscribe(req).await {
        Ok(r) => r.into_inner(),
        Err(st) if worth_retry(st.code()) => return Ended::Unreachable(describe(&st)),
        Err(st) => return Ended::Refused(st),
    };
    f.backoff.reset();
    if std::mem::take(&mut f.reconnecting) {
        eprintln!(
            "eldercare: reconnected to {}; resuming after seq {}",
            api.url, f.cursor.0
        );
    }
    loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                if !f.cursor.advance(ev.seq) {
                    continue;
                }
                let line = if f.json {
                    event_json(&ev).to_string()
                } else {
                    event_line(&ev)
                };
                if let Err(e) = emit(&line) {
                    return Ended::Output(e);
                }
            }
            Ok(None) => return Ended::Lost("the server ended the stream".into()),
            Err(st) if worth_retry(st.code()) => return Ended::Lost(describe(&st)),
            Err(st) => return Ended::Refused(st),
        }
    }
}

async fn list(
    args: &ApiArgs,
    json: bool,
    states: &[StateArg],
    limit: u32,
) -> Result<ExitCode, Failure> {
    let api = Api::new(args)?;
    let mut client = api.connect_once().await?;
    let mut req = pb::ListAlertsRequest {
        states: states.iter().map(|s| s.to_pb() as i32).collect(),
        language: api.language.clone(),
        ..Default::default()
    };
    let mut left = limit;
    while left > 0 {
        req.page_size = left.min(1000);
        let page = client
            .list_alerts(req.clone())
            .await
            .map_err(|st| status_failure("list", &st))?
            .into_inner();
        for a in page.alerts.iter().take(left as usize) {
            let line = if json {
                alert_json(a).to_string()
            } else {
                alert_line(a)
            };
            if let Err(e) = emit(&line) {
                return output_ended(e);
            }
        }
        left = left.saturating_sub(page.alerts.len() as u32);
        if page.alerts.is_empty() || page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    Ok(ExitCode::SUCCESS)
}

async fn ack(args: &ApiArgs, id: &str, note: String, json: bool) -> Result<ExitCode, Failure> {
    let api = Api::new(args)?;
    let mut client = api.connect_once().await?;
    let req = pb::AlertActionRequest {
        alert_id: id.to_string(),
        note,
        language: api.language.clone(),
        ..Default::default()
    };
    let alert = match client.acknowledge(req).await {
        Ok(r) => r.into_inner(),
        // The server says who got there first, and when.
        Err(st) if st.code() == Code::FailedPrecondition => {
            return Err(fail(
                1,
                format!("cannot acknowledge {id}: {}", st.message()),
            ));
        }
        Err(st) => return Err(status_failure(&format!("cannot acknowledge {id}"), &st)),
    };
    let line = if json {
        alert_json(&alert).to_string()
    } else {
        alert_line(&alert)
    };
    match emit(&line) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => output_ended(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> pb::Alert {
        pb::Alert {
            id: "A-7".into(),
            elder_id: "E1".into(),
            device_id: "btn-1".into(),
            kind: "sos".into(),
            severity: pb::Severity::Critical as i32,
            state: pb::AlertState::Acknowledged as i32,
            summary: "SOS button pressed".into(),
            community: "C1".into(),
            district: "D1".into(),
            queue: "hotline".into(),
            occurrences: 1,
            raised_at: Some(Default::default()),
            ..Default::default()
        }
    }

    fn event() -> pb::AlertEvent {
        let mut ev = pb::AlertEvent {
            seq: 42,
            kind: pb::AlertEventKind::AcknowledgedEvent as i32,
            alert: Some(alert()),
            actor: "op-1".into(),
            hash: "ab12".into(),
            ..Default::default()
        };
        // 2025-01-02T03:04:05.678Z, set field by field so the test does
        // not name the Timestamp type either.
        let mut at = pb::AlertEvent::default().at.unwrap_or_default();
        at.seconds = 1_735_787_045;
        at.nanos = 678_000_000;
        ev.at = Some(at);
        ev
    }

    #[test]
    fn an_event_is_one_flat_object_with_lower_case_names() {
        let v = event_json(&event());
        assert_eq!(
            v,
            json!({
                "seq": 42,
                "kind": "acknowledged",
                "at": "2025-01-02T03:04:05.678Z",
                "actor": "op-1",
                "note": null,
                "alert_id": "A-7",
                "elder_id": "E1",
                "device_id": "btn-1",
                "alert_kind": "sos",
                "severity": "critical",
                "state": "acknowledged",
                "summary": "SOS button pressed",
                "district": "D1",
                "community": "C1",
                "queue": "hotline",
                "occurrences": 1,
                "escalations": 0,
                "outcome": null,
                "muted": false,
                "hash": "ab12",
            })
        );
        // One line: no newline inside, whatever the summary says.
        assert!(!v.to_string().contains('\n'));
    }

    #[test]
    fn an_event_without_an_alert_still_prints() {
        let ev = pb::AlertEvent {
            seq: 1,
            kind: pb::AlertEventKind::Raised as i32,
            ..Default::default()
        };
        let v = event_json(&ev);
        assert_eq!(
            (&v["kind"], &v["alert_id"], &v["at"], &v["state"]),
            (
                &json!("raised"),
                &json!(""),
                &Value::Null,
                &json!("unspecified")
            )
        );
        assert!(event_line(&ev).starts_with("#1 "));
    }

    #[test]
    fn the_human_line_names_the_event_the_alert_and_who() {
        let mut ev = event();
        ev.note = "calling the daughter".into();
        let line = event_line(&ev);
        for part in [
            "#42",
            "acknowledged",
            "critical",
            "sos",
            "E1",
            "A-7",
            "by op-1",
            "[calling the daughter]",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line:?}");
        }
    }

    #[test]
    fn an_alert_keeps_unset_times_null() {
        let v = alert_json(&alert());
        assert_eq!(v["raised_at"], json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(v["acknowledged_at"], Value::Null);
        assert_eq!(v["state"], json!("acknowledged"));
    }

    #[test]
    fn refusals_stop_and_outages_retry() {
        for c in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            assert!(worth_retry(c), "{c:?}");
        }
        for c in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::InvalidArgument,
        ] {
            assert!(!worth_retry(c), "{c:?}");
        }
        assert_eq!(
            status_failure("x", &Status::permission_denied("role `viewer`")).code,
            EXIT_NOPERM
        );
        assert_eq!(
            status_failure("x", &Status::unauthenticated("unknown token")).code,
            EXIT_NOPERM
        );
        assert_eq!(status_failure("x", &Status::not_found("no alert")).code, 1);
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next(), FIRST_BACKOFF);
    }

    #[test]
    fn the_cursor_lets_each_seq_through_once() {
        let mut c = Cursor(3);
        let passed: Vec<u64> = [2, 3, 4, 4, 5, 1, 6]
            .into_iter()
            .filter(|s| c.advance(*s))
            .collect();
        assert_eq!(passed, [4, 5, 6]);
        assert_eq!(c.0, 6);
    }

    #[test]
    fn addresses_become_urls_and_the_default_is_the_servers() {
        assert_eq!(endpoint_url("10.0.0.5:50051"), "http://10.0.0.5:50051");
        assert_eq!(endpoint_url("http://h:1"), "http://h:1");
        // `eldercare serve` with nothing set listens where the commands
        // look by default.
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "eldercare",
            "serve",
            "--tokens-file",
            "/nonexistent/eldercare/tokens.toml",
        ])
        .unwrap();
        let crate::Cmd::Serve(serve) = cli.cmd else {
            unreachable!()
        };
        let cfg = crate::config::Config::load(&serve).unwrap();
        assert_eq!(DEFAULT_GRPC_ADDR, endpoint_url(&cfg.grpc_addr.to_string()));
    }
}
