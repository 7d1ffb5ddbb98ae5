//! Drives simulated homes over MQTT against a real server: registers
//! them through RegistryService, connects one MQTT session per device,
//! publishes what [`crate::life`] says when it says it, and (in `verify`)
//! subscribes to AlertService and matches alerts to the injected ground
//! truth. Ends with a summary table and a JSON result.
//!
//! Sessions speak MQTT 3.1.1 or 5, over TCP or TLS, from the source
//! addresses given ([`Link`], [`crate::mqtt`], [`crate::net`]). As one of
//! several processes ([`crate::procs`]), a run reports on stdout as JSON
//! lines instead ([`Report`]).
use crate::life::{HomeSim, Intervals, Msg, Payload, Truth};
use crate::mqtt::{self, Client, Command, Login, Protocol, Route};
use crate::net::{Relay, SourceAddrs};
use crate::pace::{self, BEHIND_MS, Behind, Plan};
use crate::visits::live;
use crate::{Home, Inject, registry_csv, stage};
use eldercare_proto::v1 as pb;
use eldercare_rules::RuleConfig;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Run,
    Verify,
    /// At `at_s`, every connection drops at once (a power cut) and comes
    /// back; for `len_s` the devices send `multiple` times as often.
    Burst {
        multiple: f64,
        at_s: f64,
        len_s: f64,
    },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Verify => "verify",
            Mode::Burst { .. } => "burst",
        }
    }
}

pub struct Config {
    pub mode: Mode,
    pub homes: Vec<Home>,
    pub seed: u64,
    pub mqtt_addr: String,
    pub grpc_addr: String,
    pub admin_token: Option<String>,
    pub token: Option<String>,
    pub register: bool,
    pub duration: Duration,
    /// Target messages/s for the fleet (None: realistic intervals).
    pub rate: Option<f64>,
    pub rules: RuleConfig,
    /// (seconds after the start, home index, episode).
    pub injections: Vec<(f64, usize, Inject)>,
    pub result: Option<std::path::PathBuf>,
    pub progress: bool,
    /// Carers visit the homes with no episode (`verify --carers`): their
    /// plans registered, their tag reads and footprints published by the
    /// homes, the alerts scored against what each carer did.
    pub carers: Option<live::Options>,
}

/// How a load is paced, beyond [`Config`]: for load tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// With a target rate, no device sends more than this, messages/s
    /// (eldercare limits each session to 50 by default and slows down,
    /// then cuts off, one above it).
    pub device_max_per_s: f64,
    /// QoS 1 messages a connection may have waiting for their PUBACK.
    pub inflight: u16,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            device_max_per_s: 40.0,
            inflight: 100,
        }
    }
}

/// How the sessions reach the broker, beyond [`Config::mqtt_addr`].
#[derive(Clone)]
pub struct Link {
    pub protocol: Protocol,
    /// TLS to the broker (the host of `mqtt_addr` as server name).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Local addresses the sessions connect from, in turn (through a
    /// [`Relay`]); none: the system's choice.
    pub source_addrs: Option<SourceAddrs>,
    /// Sessions connecting at once while the fleet connects.
    pub connect_concurrency: usize,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            protocol: Protocol::V311,
            tls: None,
            source_addrs: None,
            connect_concurrency: 128,
        }
    }
}

/// What ends a run before its time.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a run reports, and what stops it early.
#[derive(Default)]
pub struct Report {
    /// One of several processes ([`crate::procs`]): no progress bar and
    /// no table; a `{"tick": ...}` JSON line on stdout every second and a
    /// `{"result": ...}` line at the end, for the parent to merge.
    pub child: bool,
    /// Ends the load window early (default: Ctrl-C).
    pub stop: Option<Stop>,
}

impl Config {
    /// Whether alerts are matched to the ground truth: always in
    /// `verify`, and in `burst` given a token (did the power cut raise
    /// anything?).
    fn verifying(&self) -> bool {
        self.mode == Mode::Verify
            || (matches!(self.mode, Mode::Burst { .. }) && self.token.is_some())
    }
}

/// The wall clock, milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    connected: AtomicU64,
    alerts: AtomicU64,
    /// First and last CONNACK, wall clock ms (first: `i64::MAX` until one).
    first_connack_ms: AtomicI64,
    last_connack_ms: AtomicI64,
    /// `alert_ack`s received on the devices' `cmd` topics, and other
    /// messages there.
    alert_acks: AtomicU64,
    other_cmds: AtomicU64,
    /// `cmd` subscriptions the broker refused.
    cmd_refused: AtomicU64,
    /// The run is over: connections closing now are not errors.
    stopping: AtomicBool,
    /// From a QoS 1 PUBLISH written to its PUBACK, microseconds.
    puback_us: Mutex<Histogram<u64>>,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            first_connack_ms: AtomicI64::new(i64::MAX),
            last_connack_ms: AtomicI64::new(0),
            alert_acks: AtomicU64::new(0),
            other_cmds: AtomicU64::new(0),
            cmd_refused: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            puback_us: Mutex::new(hist_us()),
        }
    }

    fn connack(&self) {
        let now = now_ms();
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.first_connack_ms.fetch_min(now, Ordering::Relaxed);
        self.last_connack_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn command(&self, payload: &[u8]) {
        match Command::parse(payload) {
            Command::AlertAck { alert_id } => {
                tracing::debug!(%alert_id, "Alert acknowledged to the device.");
                self.alert_acks.fetch_add(1, Ordering::Relaxed);
            }
            Command::Unknown => {
                self.other_cmds.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One device's connection.
struct Conn {
    client: Client,
    /// The task polling its event loop; aborted to drop the connection
    /// without a DISCONNECT, so the broker publishes the last will.
    poll: tokio::task::JoinHandle<()>,
    login: Login,
    /// QoS 1 messages written and not yet acknowledged.
    outstanding: Arc<AtomicU32>,
}

impl Conn {
    /// Whether the in-flight window is full: the next message waits for
    /// a PUBACK.
    fn window_full(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) + 1 >= u32::from(self.login.inflight.max(1))
    }
}

/// The login of a session: as the device `d` (or gateway), listening on
/// the `cmd` topics of the devices it speaks for; the `n`th session of
/// the process, for the source address it goes from.
fn login(
    addr: &str,
    link: &Link,
    relay: Option<&Relay>,
    n: usize,
    d: &crate::SimDevice,
    speaks_for: &[crate::SimDevice],
    inflight: u16,
) -> anyhow::Result<Login> {
    let (host, port) = crate::net::split_host_port(addr)?;
    let route = match (relay, &link.tls) {
        (Some(r), _) => Route::Relay(r.path(n).to_path_buf()),
        (None, Some(cfg)) => Route::Tls(cfg.clone()),
        (None, None) => Route::Tcp,
    };
    let device_id = &d.device_id;
    Ok(Login {
        client_id: format!("sim-{device_id}"),
        user: device_id.clone(),
        secret: d.secret.clone(),
        host,
        port,
        protocol: link.protocol,
        route,
        inflight: inflight.max(1),
        will_topic: format!("eldercare/v1/{device_id}/status"),
        cmd_topics: std::iter::once(device_id)
            .chain(speaks_for.iter().map(|s| &s.device_id))
            .map(|id| format!("eldercare/v1/{id}/cmd"))
            .collect(),
    })
}

/// Connects and waits for the CONNACK, so a refused login is reported.
/// A broker busy accepting thousands of sessions may time a few out:
/// those are tried again, up to five times; a refused login is not.
/// Then subscribes to the device's `cmd` topics (again after each
/// reconnection: the sessions are clean).
async fn connect(login: Login, c: Arc<Counters>) -> anyhow::Result<Conn> {
    let id = &login.client_id;
    let mut attempt = 0;
    let (client, mut el) = loop {
        attempt += 1;
        let (client, mut el) = mqtt::session(&login, 16);
        let r = loop {
            match el.poll().await {
                Ok(mqtt::Event::ConnAck) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        match r {
            Ok(()) => break (client, el),
            Err(mqtt::PollError::Refused(code)) => anyhow::bail!("{id} was refused: {code}"),
            Err(e) if attempt >= 5 => anyhow::bail!("{id} could not connect: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500 * attempt)).await,
        }
    };
    c.connack();
    let _ = client.try_subscribe(&login.cmd_topics);
    let outstanding = Arc::new(AtomicU32::new(0));
    let out = outstanding.clone();
    let window = usize::from(login.inflight.max(1));
    let (sub, topics) = (client.clone(), login.cmd_topics.clone());
    let poll = tokio::spawn(async move {
        // When each packet id went out, for its PUBACK's wait; kept here
        // and added to the shared histogram now and then.
        let mut written: Vec<Option<Instant>> = vec![None; window + 1];
        let mut waits = hist_us();
        let keep = |waits: &mut Histogram<u64>| {
            let _ = c.puback_us.lock().unwrap().add(&*waits);
            waits.reset();
        };
        loop {
            match el.poll().await {
                Ok(mqtt::Event::Published(pkid)) => {
                    out.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = written.get_mut(usize::from(pkid)) {
                        *w = Some(Instant::now());
                    }
                }
                Ok(mqtt::Event::PubAck(pkid)) => {
                    c.acked.fetch_add(1, Ordering::Relaxed);
                    let _ = out.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                    if let Some(at) = written.get_mut(usize::from(pkid)).and_then(Option::take) {
                        let _ = waits.record((at.elapsed().as_micros() as u64).max(1));
                        if waits.len() >= 256 {
                            keep(&mut waits);
                        }
                    }
                }
                Ok(mqtt::Event::Message { topic, payload }) if topic.ends_with("/cmd") => {
                    c.command(&payload);
                }
                Ok(mqtt::Event::SubAck { refused }) if refused > 0 => {
                    c.cmd_refused.fetch_add(refused as u64, Ordering::Relaxed);
                }
                // Reconnected after an error: a clean session again.
                Ok(mqtt::Event::ConnAck) => {
                    let _ = sub.try_subscribe(&topics);
                }
                Ok(_) => {}
                // The run is over: the DISCONNECT went out (or the session
                // is gone); polling again would reconnect.
                Err(_) if c.stopping.load(Ordering::Relaxed) => break,
                Err(_) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    // rumqttc reconnects on the next poll and sends again
                    // what was waiting for its PUBACK.
                    out.store(0, Ordering::Relaxed);
                    written.iter_mut().for_each(|w| *w = None);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        keep(&mut waits);
    });
    Ok(Conn {
        client,
        poll,
        login,
        outstanding,
    })
}

/// A connection to the server's gRPC API at `addr`, and the interceptor
/// that presents `token` on every call (for any of its service clients).
pub async fn authorized(
    addr: &str,
    token: &str,
) -> anyhow::Result<(
    tonic::transport::Channel,
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<>,
)> {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_string())?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?;
    let auth = format!("Bearer {token}").parse::<tonic::metadata::MetadataValue<_>>()?;
    let bearer = move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", auth.clone());
        Ok(r)
    };
    Ok((ch, bearer))
}

/// Registers the homes through RegistryService.Import, in parts.
async fn register(cfg: &Config, homes: &[Home], devices_too: bool) -> anyhow::Result<()> {
    let token = cfg.admin_token.as_deref().ok_or_else(|| {
        anyhow::anyhow!("registering needs --admin-token (an admin token), or pass --no-register")
    })?;
    let (ch, bearer) = authorized(&cfg.grpc_addr, token).await?;
    let mut reg = pb::registry_service_client::RegistryServiceClient::with_interceptor(ch, bearer);
    for part in homes.chunks(500) {
        let (elders, devices) = registry_csv(part);
        let mut lists = vec![elders];
        if devices_too {
            lists.push(devices);
        }
        for text in lists {
            import(&mut reg, text).await?;
        }
    }
    Ok(())
}

/// One RegistryService.Import call; any refused row fails it.
async fn import<I: tonic::service::Interceptor>(
    reg: &mut pb::registry_service_client::RegistryServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, I>,
    >,
    text: String,
) -> anyhow::Result<()> {
    let r = reg
        .import(pb::ImportRequest { text })
        .await
        .map_err(|e| anyhow::anyhow!("import refused: {}", e.message()))?
        .into_inner();
    if r.refused > 0 {
        anyhow::bail!(
            "import refused {} rows, first: {:?}",
            r.refused,
            r.refused_rows.first()
        );
    }
    Ok(())
}

/// Registers the carers' providers, carers and visit plans through
/// RegistryService.Import (after the elders they name).
async fn register_carers(cfg: &Config, s: &live::Schedule) -> anyhow::Result<()> {
    let token = cfg
        .admin_token
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--carers needs --admin-token (an admin token)"))?;
    let (ch, bearer) = authorized(&cfg.grpc_addr, token).await?;
    let mut reg = pb::registry_service_client::RegistryServiceClient::with_interceptor(ch, bearer);
    for text in s.registry() {
        // In parts of 500 rows, each with the header.
        let (header, rows) = text.split_once('\n').unwrap_or((&text, ""));
        let rows: Vec<&str> = rows.lines().collect();
        for part in rows.chunks(500) {
            let text = format!("{header}\n{}\n", part.join("\n"));
            import(&mut reg, text).await?;
        }
    }
    Ok(())
}

/// A received alert.
#[derive(Debug, Clone)]
struct Seen {
    at_ms: i64,
    elder_id: String,
    kind: String,
    /// `hotline`, `operations` or `care`.
    queue: String,
    /// Born resolved for the care queue (an episode late readings showed
    /// already over, or a trend in shadow mode): not raised to anyone.
    recorded: bool,
    /// Shown by readings that arrived late (0: judged live).
    late_ms: i64,
    /// What the alert is about (a visit's id), and its English summary.
    subject: String,
    summary: String,
    /// A visit's flags, as `Alert.visit` carries them.
    visit_flags: Option<Vec<String>>,
    alert_id: String,
    /// This is the alert's resolution (kept for `visit_missed` only, to
    /// tell one a late check-in cleared), with its outcome.
    resolved: bool,
    outcome: String,
}

/// Alerts of carers' visits: scored apart from the episodes.
fn of_visits(kind: &str) -> bool {
    matches!(kind, "visit" | "visit_missed" | "follow_up")
}

impl Seen {
    /// For care managers (trends, recorded episodes), not an alert an
    /// episode's emergency can be detected by or a false alarm on the
    /// hotline.
    fn for_care(&self) -> bool {
        self.recorded || self.queue == "care"
    }
}

/// Subscribes to alert events; keeps every RAISED one of the fleet's
/// elders raised since `since_ms`.
async fn subscribe(
    cfg: &Config,
    since_ms: i64,
    seen: Arc<Mutex<Vec<Seen>>>,
    counters: Arc<Counters>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let token = cfg
        .token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("verify needs --token (a viewer or operator token)"))?;
    let (ch, bearer) = authorized(&cfg.grpc_addr, &token).await?;
    let mut client = pb::alert_service_client::AlertServiceClient::with_interceptor(ch, bearer);
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            language: "en".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let _ = ready.send(());
    let ours: std::collections::HashSet<String> =
        cfg.homes.iter().map(|h| h.elder_id.clone()).collect();
    while let Some(ev) = stream.message().await? {
        let Some(a) = ev.alert else { continue };
        let resolved = ev.kind == pb::AlertEventKind::ResolvedEvent as i32;
        if !(ev.kind == pb::AlertEventKind::Raised as i32 || resolved && a.kind == "visit_missed")
            || !ours.contains(&a.elder_id)
        {
            continue;
        }
        let raised = a.raised_at.map(|t| t.seconds * 1000).unwrap_or(0);
        if raised < since_ms - 1000 {
            continue;
        }
        if !resolved {
            counters.alerts.fetch_add(1, Ordering::Relaxed);
        }
        seen.lock().unwrap().push(Seen {
            at_ms: now_ms(),
            elder_id: a.elder_id,
            kind: a.kind,
            queue: a.queue,
            recorded: a.recorded,
            late_ms: a.late_ms,
            subject: a.subject,
            summary: a.summary_en,
            visit_flags: a.visit.map(|v| v.flags),
            alert_id: a.id,
            resolved,
            outcome: a.outcome,
        });
    }
    Ok(())
}

/// Runs the simulation and returns the JSON result.
pub async fn drive(cfg: Config) -> anyhow::Result<serde_json::Value> {
    drive_with(cfg, Pacing::default()).await
}

/// As [`drive`], paced as given.
pub async fn drive_with(cfg: Config, pacing: Pacing) -> anyhow::Result<serde_json::Value> {
    drive_over(cfg, pacing, Link::default(), Report::default()).await
}

/// As [`drive_with`], over the link given, reporting as asked.
pub async fn drive_over(
    cfg: Config,
    pacing: Pacing,
    link: Link,
    mut report: Report,
) -> anyhow::Result<serde_json::Value> {
    let counters = Arc::new(Counters::new());
    let mut homes = cfg.homes.clone();
    let n_devices: usize = homes.iter().map(|h| h.devices.len()).sum();
    // The intervals that make the target rate over this run (the time of
    // day decides who is asleep, walking, ...), no device above its
    // ceiling; or why it cannot be made.
    let rate_plan = cfg.rate.map(|target| {
        pace::plan(
            &homes,
            cfg.seed,
            &cfg.rules,
            now_ms() + 2000,
            cfg.duration.as_millis().min(i64::MAX as u128) as i64,
            target,
            pacing.device_max_per_s,
        )
    });
    if let Some(p) = &rate_plan {
        eprintln!("{}", describe_plan(p));
    }
    if cfg.register {
        eprintln!("registering {} homes ({n_devices} devices)", homes.len());
        register(&cfg, &homes, true).await?;
    }
    // One session per device, a few hundred connecting at a time.
    let sessions: usize = homes
        .iter()
        .map(|h| {
            if h.gateway.is_some() {
                1
            } else {
                h.devices.len()
            }
        })
        .sum();
    let relay = match &link.source_addrs {
        Some(s) => Some(Relay::start(s, &cfg.mqtt_addr, link.tls.clone()).await?),
        None => None,
    };
    eprintln!(
        "connecting {n_devices} devices in {sessions} MQTT {} sessions to {}{}{}",
        link.protocol.name(),
        cfg.mqtt_addr,
        if link.tls.is_some() { " over TLS" } else { "" },
        match &link.source_addrs {
            Some(s) => format!(" from {} source addresses", s.len()),
            None => String::new(),
        }
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(link.connect_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let ramp_start = now_ms();
    let mut n = 0;
    for (hi, h) in homes.iter().enumerate() {
        // Through the gateway, one session for the home (listening for
        // its devices' commands too); otherwise one a device.
        let logins: Vec<(&crate::SimDevice, &[crate::SimDevice])> = match &h.gateway {
            Some(g) => vec![(g, &h.devices[..])],
            None => h.devices.iter().map(|d| (d, &[][..])).collect(),
        };
        for (ci, (d, speaks_for)) in logins.into_iter().enumerate() {
            let login = login(
                &cfg.mqtt_addr,
                &link,
                relay.as_ref(),
                n,
                d,
                speaks_for,
                pacing.inflight,
            )?;
            n += 1;
            let (sem, c) = (sem.clone(), counters.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                Ok::<_, anyhow::Error>((hi, ci, connect(login, c).await?))
            });
        }
    }
    let mut conns: Vec<Vec<Option<Conn>>> = homes
        .iter()
        .map(|h| {
            let n = if h.gateway.is_some() {
                1
            } else {
                h.devices.len()
            };
            (0..n).map(|_| None).collect()
        })
        .collect();
    while let Some(r) = set.join_next().await {
        let (hi, ci, c) = r??;
        conns[hi][ci] = Some(c);
    }
    let ramp = Ramp {
        sessions: sessions as u64,
        concurrency: link.connect_concurrency.max(1),
        started_ms: ramp_start,
        first_connack_ms: counters.first_connack_ms.load(Ordering::Relaxed),
        last_connack_ms: counters.last_connack_ms.load(Ordering::Relaxed),
        connacks: counters.connected.load(Ordering::Relaxed),
    };
    if !report.child {
        eprintln!("{}", ramp.describe());
    }
    // The episodes are placed from now on; their homes are staged (night
    // window, flags) and registered again, which the engine takes at once.
    let t0 = now_ms() + 2000;
    let mut plan: HashMap<usize, Vec<(Inject, i64)>> = HashMap::new();
    for (at_s, home, what) in &cfg.injections {
        // On a whole second: the resident's activity changes at whole
        // seconds (`life`), so the episode's due time is exact.
        let at = (t0 + (*at_s * 1000.0) as i64 + 999) / 1000 * 1000;
        plan.entry(*home).or_default().push((*what, at));
    }
    let mut staged = Vec::new();
    for h in homes.iter_mut() {
        if let Some(eps) = plan.get(&h.index) {
            for (what, at) in eps {
                stage(h, *what, *at);
            }
            staged.push(h.clone());
        }
    }
    if cfg.register && !staged.is_empty() {
        register(&cfg, &staged, false).await?;
    }
    let carers = match &cfg.carers {
        Some(o) => {
            let episodes: std::collections::HashSet<usize> = plan.keys().copied().collect();
            let s = live::schedule(
                &homes,
                &episodes,
                t0,
                cfg.duration.as_millis() as i64,
                &cfg.rules,
                cfg.seed,
                o,
            )?;
            eprintln!(
                "carers visit {} homes: {} providers, windows of {} min opening over {} minutes from {} s in",
                s.homes.len(),
                s.providers.len(),
                o.window_min,
                s.slots,
                (s.homes
                    .iter()
                    .map(|v| v.occurrence.window.0)
                    .min()
                    .unwrap_or(t0)
                    - t0)
                    / 1000
            );
            if !cfg.register {
                anyhow::bail!(
                    "--carers registers the visit plans: it needs --admin-token, not --no-register"
                );
            }
            register_carers(&cfg, &s).await?;
            Some(s)
        }
        None => None,
    };
    let iv = rate_plan
        .as_ref()
        .map_or(Intervals::default(), |p| p.intervals);
    let mut sims: Vec<HomeSim> = homes
        .iter()
        .map(|h| {
            let inj = plan.get(&h.index).cloned().unwrap_or_default();
            HomeSim::new(h, cfg.seed, &cfg.rules, iv, t0, &inj)
        })
        .collect();
    let truths: Vec<Truth> = sims.iter().flat_map(|s| s.truths()).collect();
    if let Some(c) = &carers {
        for sim in &mut sims {
            if let Some(v) = c.of_home(sim.home().index) {
                sim.keep_in(vec![c.protected(v)]);
                let msgs = live::messages(v, sim.home());
                sim.add_messages(msgs);
            }
        }
    }

    // Alerts, when verifying.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = if cfg.verifying() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cfg2 = Config {
            homes: homes.clone(),
            injections: Vec::new(),
            result: None,
            ..clone_cfg(&cfg)
        };
        let (seen, c) = (seen.clone(), counters.clone());
        // On a thread of its own: the time an alert arrives is taken when
        // it arrives, not when the device tasks leave this thread a turn.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("alert-watch".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        r = subscribe(&cfg2, t0, seen, c, tx) => if let Err(e) = r {
                            eprintln!("alert subscription ended: {e:#}");
                        },
                        _ = stopped => {}
                    }
                })
            })?;
        rx.await
            .map_err(|_| anyhow::anyhow!("could not subscribe to alerts"))?;
        Some(stop)
    } else {
        None
    };

    // Publish, each home in its own task, each message at its time.
    let published: Arc<Mutex<Published>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let end = t0 + cfg.duration.as_millis() as i64;
    let base = (Instant::now(), now_ms());
    let at_instant = move |ms: i64| base.0 + Duration::from_millis((ms - base.1).max(0) as u64);
    let burst = match cfg.mode {
        Mode::Burst {
            multiple,
            at_s,
            len_s,
        } => Some((
            t0 + (at_s * 1000.0) as i64,
            t0 + ((at_s + len_s) * 1000.0) as i64,
            iv.faster(multiple),
        )),
        _ => None,
    };
    let mut tasks = Vec::new();
    for (sim, conns) in sims.drain(..).zip(conns) {
        let conns: Vec<Conn> = conns.into_iter().map(|c| c.expect("connected")).collect();
        let (c, stop, published) = (counters.clone(), stop.clone(), published.clone());
        tasks.push(tokio::spawn(play_home(
            sim, conns, t0, end, c, stop, published, at_instant, burst, iv,
        )));
    }
    let progress = if report.child {
        tokio::spawn(ticks(counters.clone()));
        None
    } else {
        progress_bar(&cfg, counters.clone(), t0, end)
    };
    // Until the end, then until every episode's alert is due (+10 s).
    let last_due = truths
        .iter()
        .map(|t| t.due_ms)
        .chain(carers.as_ref().map(|c| c.last_due_ms))
        .max()
        .unwrap_or(0);
    tokio::time::sleep_until(at_instant(t0)).await;
    let cpu_start = cpu_now();
    let sent_start = counters.sent.load(Ordering::Relaxed);
    let stop_early = report.stop.take().unwrap_or_else(|| {
        Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    });
    tokio::select! {
        _ = tokio::time::sleep_until(at_instant(end)) => {}
        _ = stop_early => eprintln!("interrupted"),
    }
    // The load window: what was sent in it is the rate offered.
    let window_end = now_ms();
    let sent_in_window = counters.sent.load(Ordering::Relaxed) - sent_start;
    let cpu_end = cpu_now();
    stop.store(true, Ordering::Relaxed);
    counters.stopping.store(true, Ordering::Relaxed);
    let mut paced = TaskStats::new();
    for t in tasks {
        if let Ok(s) = t.await {
            paced.add(&s);
        }
    }
    let sent_end = now_ms();
    let run = RunStats {
        window_s: ((window_end - t0) as f64 / 1000.0).max(0.001),
        sent_in_window,
        paced,
        cpu: cpu_start.zip(cpu_end).map(|(a, b)| b.since(&a)),
        inflight: pacing.inflight,
    };
    if cfg.verifying() {
        let wait_until = (last_due + 10_000).max(sent_end + 3000);
        tokio::time::sleep_until(at_instant(wait_until)).await;
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Some(stop) = sub {
        let _ = stop.send(());
    }
    let seen = seen.lock().unwrap().clone();
    let published = published.lock().unwrap().clone();
    let result = summarize(
        &cfg,
        &homes,
        &counters,
        &truths,
        &seen,
        &published,
        t0,
        sent_end,
        n_devices,
        rate_plan.as_ref(),
        &run,
        &ramp,
        carers.as_ref(),
    );
    drop(relay);
    if report.child {
        // For the parent to merge: histograms travel as their buckets.
        println!("{}", json!({ "result": result }));
        return Ok(result);
    }
    let mut result = result;
    strip_buckets(&mut result);
    print_summary(&result);
    if let Some(path) = &cfg.result {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
        eprintln!("result written to {}", path.display());
    }
    Ok(result)
}

/// The messages that made alerts due, by `(home, key)`: the event time
/// the rule could first raise the alert at, and when that message was
/// published (wall clock). A rule judged on a reading is due at its
/// trigger message, keyed by the message's own time. The rules that infer
/// from absence (out of bed too long, inactivity) judge at the newest
/// time the home was heard from, so theirs is the first message of the
/// home at or after the deadline, keyed by the deadline: up to one
/// interval of the home's most frequent device later.
type Published = HashMap<(usize, i64), (i64, i64)>;

/// Connecting the fleet: sessions, how many at once, when it began, the
/// first and last CONNACK (wall clock ms).
struct Ramp {
    sessions: u64,
    concurrency: usize,
    started_ms: i64,
    first_connack_ms: i64,
    last_connack_ms: i64,
    connacks: u64,
}

impl Ramp {
    fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "connacks": self.connacks,
        });
        if self.connacks > 0 {
            v["started_ms"] = json!(self.started_ms);
            v["first_connack_ms"] = json!(self.first_connack_ms);
            v["last_connack_ms"] = json!(self.last_connack_ms);
        }
        with_connect_rates(&mut v);
        v
    }

    fn describe(&self) -> String {
        describe_connect(&self.json())
    }
}

/// Adds to a `connect` object the CONNACKs per second from the first to
/// the last CONNACK (with at least two) and the seconds from the first
/// attempt to the last CONNACK.
pub(crate) fn with_connect_rates(v: &mut serde_json::Value) {
    let (Some(start), Some(first), Some(last), Some(n)) = (
        v["started_ms"].as_i64(),
        v["first_connack_ms"].as_i64(),
        v["last_connack_ms"].as_i64(),
        v["connacks"].as_u64(),
    ) else {
        return;
    };
    let span = (last - first) as f64 / 1000.0;
    v["ramp_s"] = json!(span);
    v["connacks_per_s"] = if n >= 2 && span > 0.0 {
        json!(n as f64 / span)
    } else {
        serde_json::Value::Null
    };
    v["all_connected_s"] = json!((last - start) as f64 / 1000.0);
}

/// One line on how the fleet connected.
pub(crate) fn describe_connect(v: &serde_json::Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let rate = v["connacks_per_s"]
        .as_f64()
        .map_or("-".to_string(), |r| format!("{r:.0}"));
    format!(
        "{} of {} sessions connected, {} at a time: {rate} CONNACKs/s over {:.1} s, all connected {:.1} s after the first attempt",
        v["connacks"],
        v["sessions"],
        v["concurrency"],
        f("ramp_s"),
        f("all_connected_s")
    )
}

/// Every second, the counters as a JSON line on stdout (a child's
/// progress, for its parent).
async fn ticks(c: Arc<Counters>) {
    use std::io::Write;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = json!({"tick": {
            "sent": c.sent.load(Ordering::Relaxed),
            "acked": c.acked.load(Ordering::Relaxed),
            "connections": c.connected.load(Ordering::Relaxed),
            "alerts": c.alerts.load(Ordering::Relaxed),
        }});
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}

fn clone_cfg(c: &Config) -> Config {
    Config {
        mode: c.mode,
        homes: Vec::new(),
        seed: c.seed,
        mqtt_addr: c.mqtt_addr.clone(),
        grpc_addr: c.grpc_addr.clone(),
        admin_token: c.admin_token.clone(),
        token: c.token.clone(),
        register: c.register,
        duration: c.duration,
        rate: c.rate,
        rules: c.rules.clone(),
        injections: Vec::new(),
        result: None,
        progress: c.progress,
        carers: c.carers.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn play_home(
    mut sim: HomeSim,
    mut conns: Vec<Conn>,
    t0: i64,
    end: i64,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<Published>>,
    at_instant: impl Fn(i64) -> Instant,
    burst: Option<(i64, i64, Intervals)>,
    iv: Intervals,
) -> TaskStats {
    let home = sim.home().clone();
    // Deadlines of the rules that infer from absence, soonest first: each
    // is judged at the first message of the home at or after it.
    let mut deadlines: Vec<i64> = sim
        .truths()
        .iter()
        .filter(|t| t.what.infers_from_absence())
        .map(|t| t.due_ms)
        .collect();
    deadlines.sort_unstable();
    let heard = |deadlines: &mut Vec<i64>, ts: i64| {
        while let Some(&due) = deadlines.first()
            && due <= ts
        {
            deadlines.remove(0);
            published
                .lock()
                .unwrap()
                .insert((home.index, due), (ts, now_ms()));
        }
    };
    let mut st = TaskStats::new();
    let behind = Duration::from_millis(BEHIND_MS as u64);
    // When the last publish was handed over.
    let mut prev_done = Instant::now();
    let mut buf: Vec<Msg> = Vec::new();
    let mut t = t0;
    let mut burst_state = 0;
    let (mut dropped, mut gateway_lost, mut next_gw_status) = (0, false, t0);
    while t < end && !stop.load(Ordering::Relaxed) {
        let next = (t + 200).min(end);
        if let Some((b0, b1, fast)) = burst {
            if burst_state == 0 && t >= b0 {
                // The power comes back: every device reconnects at once.
                burst_state = 1;
                for conn in conns.iter_mut() {
                    conn.poll.abort();
                    if let Ok(n) = connect(conn.login.clone(), c.clone()).await {
                        *conn = n;
                    }
                }
                sim.set_intervals(fast);
            } else if burst_state == 1 && t >= b1 {
                burst_state = 2;
                sim.set_intervals(iv);
            }
        }
        buf.clear();
        sim.advance(next, &mut buf);
        // The gateway's own heartbeat.
        if let Some(g) = &home.gateway
            && t >= next_gw_status
            && !gateway_lost
        {
            next_gw_status = t + iv.status_ms.min(i64::from(home.heartbeat_s) * 1000);
            let topic = format!("eldercare/v1/{}/status", g.device_id);
            let body = json!({"ts": t, "online": true, "battery_pct": 100}).to_string();
            if conns[0]
                .client
                .publish(topic, body.into_bytes())
                .await
                .is_ok()
            {
                c.sent.fetch_add(1, Ordering::Relaxed);
                heard(&mut deadlines, t);
            }
        }
        for m in buf.drain(..) {
            let due = at_instant(m.at_ms);
            tokio::time::sleep_until(due).await;
            // Behind schedule: since it was due, or since the last
            // message went if that was later, the task was making
            // messages or waiting for a core.
            let ready = Instant::now();
            if ready > due + behind {
                st.behind.cpu_s += (ready - prev_done.max(due)).as_secs_f64();
            }
            let dev = &home.devices[m.device];
            let conn = if home.gateway.is_some() {
                &conns[0]
            } else {
                &conns[m.device]
            };
            if m.body == Payload::Drop {
                if home.gateway.is_none() {
                    // Lost for good: not an error of the run.
                    conn.poll.abort();
                    continue;
                }
                // The gateway reports the device lost, as the broker
                // would publish its last will; when it loses them all (a
                // power cut), it goes too.
                dropped += 1;
                if conn
                    .client
                    .publish(m.body.topic(&dev.device_id), m.body.bytes(m.at_ms))
                    .await
                    .is_ok()
                {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
                if dropped == home.devices.len() {
                    gateway_lost = true;
                    // Let the wills out before the session drops.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    conn.poll.abort();
                }
                continue;
            }
            let topic = m.body.topic(&dev.device_id);
            let bytes = m.body.bytes(m.at_ms);
            let start = Instant::now();
            let full = conn.window_full();
            let r = conn.client.publish(topic, bytes).await;
            let done = Instant::now();
            st.lag(done.saturating_duration_since(due));
            if done > due + behind {
                // Handing it over waited: for PUBACKs if the window was
                // full, else for the connection's event loop.
                let waited = (done - start).as_secs_f64();
                if full || conn.window_full() {
                    st.behind.puback_wait_s += waited;
                } else {
                    st.behind.queue_wait_s += waited;
                }
            }
            prev_done = done;
            if r.is_ok() {
                c.sent.fetch_add(1, Ordering::Relaxed);
                if m.trigger {
                    published
                        .lock()
                        .unwrap()
                        .insert((home.index, m.at_ms), (m.at_ms, now_ms()));
                }
                heard(&mut deadlines, m.at_ms);
            } else {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        t = next;
    }
    // A clean goodbye: no last will. (The run is ending: the sessions
    // closing now are not errors.)
    c.stopping.store(true, Ordering::Relaxed);
    for conn in &conns {
        let _ = conn.client.try_disconnect();
    }
    // Each event loop ends once its DISCONNECT is written; one that does
    // not within 5 s is dropped (and the broker publishes its will).
    for conn in conns {
        let mut poll = conn.poll;
        if tokio::time::timeout(Duration::from_secs(5), &mut poll)
            .await
            .is_err()
        {
            poll.abort();
        }
    }
    st
}

/// What one publishing task measured of its own pace.
struct TaskStats {
    behind: Behind,
    /// How late each message was handed over, microseconds.
    lag_us: Histogram<u64>,
}

impl TaskStats {
    fn new() -> TaskStats {
        TaskStats {
            behind: Behind::default(),
            lag_us: hist_us(),
        }
    }

    fn lag(&mut self, d: Duration) {
        let _ = self.lag_us.record((d.as_micros() as u64).max(1));
    }

    fn add(&mut self, o: &TaskStats) {
        self.behind.puback_wait_s += o.behind.puback_wait_s;
        self.behind.queue_wait_s += o.behind.queue_wait_s;
        self.behind.cpu_s += o.behind.cpu_s;
        let _ = self.lag_us.add(&o.lag_us);
    }
}

/// The load window as measured.
struct RunStats {
    window_s: f64,
    sent_in_window: u64,
    paced: TaskStats,
    cpu: Option<CpuUse>,
    inflight: u16,
}

/// CPU time of this process and of the machine, from `/proc` (Linux).
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: std::time::Instant,
    /// utime + stime of this process, clock ticks.
    own: u64,
    /// Busy and all clock ticks of the machine.
    busy: u64,
    all: u64,
}

/// Between two samples: this process's CPU in % of one core, the
/// machine's busy share in %, and the cores.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    own_pct: f64,
    machine_busy_pct: f64,
    cores: usize,
}

impl CpuSample {
    fn since(&self, a: &CpuSample) -> CpuUse {
        // USER_HZ: 100 on every Linux this runs on.
        let wall = (self.at - a.at).as_secs_f64().max(1e-3);
        CpuUse {
            own_pct: 100.0 * (self.own.saturating_sub(a.own)) as f64 / 100.0 / wall,
            machine_busy_pct: 100.0 * self.busy.saturating_sub(a.busy) as f64
                / (self.all.saturating_sub(a.all)).max(1) as f64,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

fn cpu_now() -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command's closing parenthesis: state is the 1st,
    // utime the 12th, stime the 13th.
    let f: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let all = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = all
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    Some(CpuSample {
        at: std::time::Instant::now(),
        own,
        busy,
        all: cpu.iter().take(8).sum(),
    })
}

/// One line on how the target rate is made, or why it cannot be.
fn describe_plan(p: &Plan) -> String {
    let iv = &p.intervals;
    let how = format!(
        "vital signs every {} ms, sleep {} ms, GPS {} ms, PIR {} ms, status {} ms; busiest device {:.1} msg/s (at most {})",
        iv.vitals_ms,
        iv.sleep_ms,
        iv.gps_ms,
        iv.pir_ms,
        iv.status_ms,
        p.busiest_device_per_s,
        p.device_max_per_s
    );
    match p.ceiling_per_s {
        Some(c) => format!(
            "cannot offer {:.0} msg/s: {}; offering {c:.0} msg/s ({how})",
            p.target_per_s,
            pace::Shortfall::TooFewDevices {
                ceiling_per_s: c,
                device_max_per_s: p.device_max_per_s,
                homes_needed: p.homes_needed,
            }
            .reason()
        ),
        None => format!(
            "offering {:.0} msg/s (planned {:.0}): {how}",
            p.target_per_s, p.planned_per_s
        ),
    }
}

fn progress_bar(
    cfg: &Config,
    c: Arc<Counters>,
    t0: i64,
    end: i64,
) -> Option<indicatif::ProgressBar> {
    if !cfg.progress {
        return None;
    }
    let total = ((end - t0) / 1000).max(1) as u64;
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let p = pb.clone();
    tokio::spawn(async move {
        let mut last = (now_ms(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = now_ms();
            let sent = c.sent.load(Ordering::Relaxed);
            let rate = (sent - last.1) as f64 * 1000.0 / (now - last.0).max(1) as f64;
            last = (now, sent);
            p.set_position(((now - t0).max(0) / 1000) as u64);
            p.set_message(format!(
                "sent {sent}  acked {}  {rate:.0} msg/s  connections {}  alerts {}",
                c.acked.load(Ordering::Relaxed),
                c.connected.load(Ordering::Relaxed),
                c.alerts.load(Ordering::Relaxed),
            ));
            if p.is_finished() {
                break;
            }
        }
    });
    Some(pb)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds")
}

/// Microseconds up to an hour.
fn hist_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Percentiles of a microsecond histogram, in milliseconds.
fn percentiles_ms(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "_buckets_us": buckets(h),
    })
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p95": h.value_at_quantile(0.95),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
        "_buckets": buckets(h),
    })
}

/// A histogram's recorded buckets, `[[value, count], ...]`: how a child
/// process hands a histogram to its parent, which adds them up and takes
/// the percentiles again ([`rebuild_percentiles`]). Not part of the
/// result written: [`strip_buckets`].
fn buckets(h: &Histogram<u64>) -> serde_json::Value {
    h.iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect()
}

/// Takes every percentile object's percentiles again from its buckets
/// (after the buckets of several processes were put together).
pub(crate) fn rebuild_percentiles(v: &mut serde_json::Value) {
    let from = |b: &serde_json::Value, mut h: Histogram<u64>| {
        for pair in b.as_array().into_iter().flatten() {
            if let (Some(value), Some(n)) = (pair[0].as_u64(), pair[1].as_u64()) {
                let _ = h.record_n(value, n);
            }
        }
        h
    };
    match v {
        serde_json::Value::Object(m) => {
            if let Some(b) = m.get("_buckets") {
                *v = percentiles(&from(b, hist()));
            } else if let Some(b) = m.get("_buckets_us") {
                *v = percentiles_ms(&from(b, hist_us()));
            } else {
                m.values_mut().for_each(rebuild_percentiles);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(rebuild_percentiles),
        _ => {}
    }
}

/// Removes the histograms' buckets from a result.
pub fn strip_buckets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("_buckets");
            m.remove("_buckets_us");
            m.values_mut().for_each(strip_buckets);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_buckets),
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &Config,
    homes: &[Home],
    c: &Counters,
    truths: &[Truth],
    seen: &[Seen],
    published: &Published,
    t0: i64,
    sent_end: i64,
    n_devices: usize,
    plan: Option<&Plan>,
    run: &RunStats,
    ramp: &Ramp,
    carers: Option<&live::Schedule>,
) -> serde_json::Value {
    let span = ((sent_end - t0) as f64 / 1000.0).max(0.001);
    let sent = c.sent.load(Ordering::Relaxed);
    let acked = c.acked.load(Ordering::Relaxed);
    let offered = run.sent_in_window as f64 / run.window_s;
    let mut out = json!({
        "mode": cfg.mode.name(),
        "homes": homes.len(),
        "devices": n_devices,
        "connections": c.connected.load(Ordering::Relaxed),
        "duration_s": run.window_s,
        "messages": {
            "sent": sent,
            "sent_in_window": run.sent_in_window,
            "sent_after_window": sent.saturating_sub(run.sent_in_window),
            "acked": acked,
            "rate_sent_per_s": offered,
            "rate_acked_per_s": acked as f64 / span,
            "span_s": span,
            "connection_errors": c.errors.load(Ordering::Relaxed),
        },
        "connect": ramp.json(),
        "commands": {
            "alert_acks": c.alert_acks.load(Ordering::Relaxed),
            "other": c.other_cmds.load(Ordering::Relaxed),
            "subscriptions_refused": c.cmd_refused.load(Ordering::Relaxed),
        },
    });
    out["rate"] = rate_result(plan, offered, run, &c.puback_us.lock().unwrap());
    if !cfg.verifying() {
        return out;
    }
    // The episodes are judged on the alerts raised of other kinds.
    let raised: Vec<Seen> = seen
        .iter()
        .filter(|s| !s.resolved && !of_visits(&s.kind))
        .cloned()
        .collect();
    if let serde_json::Value::Object(v) = verdict(truths, &raised, published) {
        for (k, v) in v {
            out[k] = v;
        }
    }
    if let Some(c) = carers {
        out["carers"] = live::score(c, &heard(seen)).to_json(c);
    }
    out
}

/// The alerts raised, for the carers' score: a `visit_missed` marked
/// cleared when its resolution said so.
fn heard(seen: &[Seen]) -> Vec<live::Heard> {
    let cleared: std::collections::HashSet<&str> = seen
        .iter()
        .filter(|s| s.resolved && s.outcome == "cleared")
        .map(|s| s.alert_id.as_str())
        .collect();
    seen.iter()
        .filter(|s| !s.resolved)
        .map(|s| live::Heard {
            elder_id: s.elder_id.clone(),
            kind: s.kind.clone(),
            subject: s.subject.clone(),
            summary: s.summary.clone(),
            // A word this build does not know: the summary is read.
            flags: s.visit_flags.as_ref().and_then(|f| {
                f.iter()
                    .map(|w| eldercare_model::VisitFlag::parse(w))
                    .collect()
            }),
            queue: s.queue.clone(),
            recorded: s.recorded,
            cleared: cleared.contains(s.alert_id.as_str()),
        })
        .collect()
}

/// The alerts seen against the ground truth: the `emergencies` counts
/// and lists, and the latencies, of a verify result.
fn verdict(truths: &[Truth], seen: &[Seen], published: &Published) -> serde_json::Value {
    let mut out = json!({});
    // Match: each injected episode takes the first alert of its kind for
    // its elder at or after its start, on the hotline or operations queue
    // (not one recorded for the care queue); every other alert is false.
    let mut used = vec![false; seen.len()];
    let mut by_kind: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut from_start: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut evidence_wait: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut pub_to_alert = hist();
    let mut missed = Vec::new();
    let mut detected = 0;
    let mut late = Vec::new();
    for t in truths {
        let want = t.expected.as_str();
        let hit = seen.iter().enumerate().find(|(i, s)| {
            !used[*i]
                && !s.for_care()
                && s.elder_id == t.elder_id
                && s.kind == want
                && s.at_ms >= t.at_ms - 1000
        });
        match hit {
            Some((i, s)) => {
                used[i] = true;
                detected += 1;
                let name = t.what.name().to_string();
                // When the rule could first raise it: its deadline, or for
                // a rule judged on the home's evidence the first message
                // from the home at or after it.
                let (due, pub_at) = match published.get(&(t.home, t.due_ms)) {
                    Some(&(ts, p)) if t.what.infers_from_absence() => {
                        let wait = (ts - t.due_ms).max(1) as u64;
                        let _ = evidence_wait
                            .entry(name.clone())
                            .or_insert_with(hist)
                            .record(wait);
                        (ts, Some(p))
                    }
                    Some(&(_, p)) => (t.due_ms, Some(p)),
                    None => (t.due_ms, None),
                };
                let beyond = (s.at_ms - due).max(1) as u64;
                let _ = by_kind.entry(name.clone()).or_insert_with(hist).record(beyond);
                let since = (s.at_ms - t.at_ms).max(1) as u64;
                let _ = from_start.entry(name).or_insert_with(hist).record(since);
                if let Some(p) = pub_at {
                    let _ = pub_to_alert.record((s.at_ms - p).max(1) as u64);
                }
                if s.late_ms > 0 {
                    late.push(json!({"home": t.home, "elder_id": t.elder_id,
                                     "episode": t.what.name(), "late_ms": s.late_ms}));
                }
            }
            None => missed.push(json!({"home": t.home, "elder_id": t.elder_id, "episode": t.what.name(), "expected": want})),
        }
    }
    let injected_homes: std::collections::HashSet<&str> =
        truths.iter().map(|t| t.elder_id.as_str()).collect();
    let describe = |s: &Seen| {
        json!({"elder_id": s.elder_id, "kind": s.kind, "queue": s.queue,
               "recorded": s.recorded, "late_ms": s.late_ms,
               "injected_home": injected_homes.contains(s.elder_id.as_str())})
    };
    let false_alerts: Vec<serde_json::Value> = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| !used[*i] && !s.for_care())
        .map(|(_, s)| describe(s))
        .collect();
    let for_care: Vec<serde_json::Value> =
        seen.iter().filter(|s| s.for_care()).map(describe).collect();
    let on_clean = false_alerts
        .iter()
        .filter(|a| a["injected_home"] == false)
        .count();
    out["emergencies"] = json!({
        "injected": truths.len(),
        "detected": detected,
        "missed": missed.len(),
        "false_alerts": on_clean,
        "unexpected_on_injected_homes": false_alerts.len() - on_clean,
        "care_queue": for_care.len(),
        "detected_late": late.len(),
        "missed_list": missed,
        "false_list": false_alerts,
        "care_list": for_care,
        "late_list": late,
    });
    out["absence_judged_after_deadline_ms"] = evidence_wait
        .iter()
        .map(|(k, h)| (k.clone(), percentiles(h)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let mut overall = hist();
    for h in by_kind.values() {
        let _ = overall.add(h);
    }
    out["latency_beyond_rule_ms"] = by_kind
        .iter()
        .map(|(k, h)| (k.clone(), percentiles(h)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    out["latency_beyond_rule_ms"]["all"] = percentiles(&overall);
    out["latency_ms"] = from_start
        .iter()
        .map(|(k, h)| (k.clone(), percentiles(h)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    out["publish_to_alert_ms"] = percentiles(&pub_to_alert);
    out
}

/// The rate asked, planned and offered, and, if short, why: the `rate`
/// object of the JSON result.
fn rate_result(
    plan: Option<&Plan>,
    offered: f64,
    run: &RunStats,
    puback_us: &Histogram<u64>,
) -> serde_json::Value {
    let b = run.paced.behind;
    let mut out = json!({
        "offered_per_s": offered,
        "publish_lag_ms": percentiles_ms(&run.paced.lag_us),
        "puback_ms": percentiles_ms(puback_us),
        "inflight_window": run.inflight,
        "behind_s": {
            "puback_wait": b.puback_wait_s,
            "queue_wait": b.queue_wait_s,
            "cpu": b.cpu_s,
        },
    });
    if let Some(u) = run.cpu {
        out["simulator_cpu_pct"] = json!((u.own_pct * 10.0).round() / 10.0);
        out["cores"] = json!(u.cores);
        out["machine_busy_pct"] = json!((u.machine_busy_pct * 10.0).round() / 10.0);
    }
    let Some(p) = plan else {
        return out;
    };
    let why = pace::judge(p, offered, b);
    let iv = p.intervals;
    out["target_per_s"] = json!(p.target_per_s);
    out["planned_per_s"] = json!(p.planned_per_s);
    out["offered_of_target"] = json!(offered / p.target_per_s);
    out["met"] = json!(why.is_empty());
    // Each reason with the figures behind it.
    let said: Vec<String> = why
        .iter()
        .map(|w| match w {
            pace::Shortfall::ServerBackPressure if !puback_us.is_empty() => format!(
                "{} (PUBACK p50 {:.0} ms, p99 {:.0} ms)",
                w.reason(),
                puback_us.value_at_quantile(0.5) as f64 / 1000.0,
                puback_us.value_at_quantile(0.99) as f64 / 1000.0
            ),
            pace::Shortfall::SimulatorCpu => match run.cpu {
                Some(u) => format!(
                    "{} ({:.0} % of one core of {}; machine {:.0} % busy)",
                    w.reason(),
                    u.own_pct,
                    u.cores,
                    u.machine_busy_pct
                ),
                None => w.reason(),
            },
            _ => w.reason(),
        })
        .collect();
    out["reason"] = said.first().cloned().into();
    out["reasons"] = said.into();
    out["device_max_per_s"] = json!(p.device_max_per_s);
    out["busiest_device_per_s"] = json!(p.busiest_device_per_s);
    out["ceiling_per_s"] = json!(p.ceiling_per_s);
    out["homes_needed"] = json!(p.homes_needed);
    out["intervals_ms"] = json!({
        "vitals": iv.vitals_ms, "sleep": iv.sleep_ms, "gps": iv.gps_ms,
        "pir": iv.pir_ms, "status": iv.status_ms,
    });
    out
}

/// The result as a table on stdout.
pub fn print_summary(r: &serde_json::Value) {
    let m = &r["messages"];
    println!();
    println!("{:<28} {}", "mode", r["mode"].as_str().unwrap_or(""));
    println!(
        "{:<28} {}",
        "homes / devices",
        format_args!("{} / {}", r["homes"], r["devices"])
    );
    if let Some(p) = r["processes"].as_u64() {
        println!("{:<28} {p}", "processes");
    }
    println!("{:<28} {}", "connections", r["connections"]);
    let c = &r["connect"];
    if !c.is_null() {
        println!(
            "{:<28} {} ({} at a time{})",
            "CONNACKs/s while ramping",
            c["connacks_per_s"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.0}")),
            c["concurrency"],
            match r["processes"].as_u64() {
                Some(p) => format!(" in each of {p} processes"),
                None => String::new(),
            }
        );
        println!(
            "{:<28} {:.2}",
            "all connected after (s)",
            c["all_connected_s"].as_f64().unwrap_or(0.0)
        );
    }
    let cmd = &r["commands"];
    if !cmd.is_null() {
        println!(
            "{:<28} {} alert_ack, {} other{}",
            "commands received",
            cmd["alert_acks"],
            cmd["other"],
            match cmd["subscriptions_refused"].as_u64() {
                Some(n) if n > 0 => format!(" ({n} cmd subscriptions refused)"),
                _ => String::new(),
            }
        );
    }
    println!(
        "{:<28} {:.1}",
        "duration (s)",
        r["duration_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<28} {}",
        "messages sent / acked",
        format_args!("{} / {}", m["sent"], m["acked"])
    );
    println!(
        "{:<28} {:.0} / {:.0}",
        "rate sent / acked (msg/s)",
        m["rate_sent_per_s"].as_f64().unwrap_or(0.0),
        m["rate_acked_per_s"].as_f64().unwrap_or(0.0)
    );
    println!("{:<28} {}", "connection errors", m["connection_errors"]);
    let rate = &r["rate"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    if !rate["target_per_s"].is_null() {
        println!(
            "{:<28} {:.0} / {:.0} / {:.0} ({:.1} %)",
            "rate target/planned/offered",
            f(&rate["target_per_s"]),
            f(&rate["planned_per_s"]),
            f(&rate["offered_per_s"]),
            100.0 * f(&rate["offered_of_target"]),
        );
    }
    println!(
        "{:<28} {} / {} / {}",
        "publish lag ms p50/p99/max",
        rate["publish_lag_ms"]["p50"],
        rate["publish_lag_ms"]["p99"],
        rate["publish_lag_ms"]["max"],
    );
    println!(
        "{:<28} {} / {} / {}",
        "PUBACK wait ms p50/p99/max",
        rate["puback_ms"]["p50"],
        rate["puback_ms"]["p99"],
        rate["puback_ms"]["max"],
    );
    if !rate["simulator_cpu_pct"].is_null() {
        println!(
            "{:<28} {:.0} % of one core ({} cores; machine {:.0} % busy)",
            "simulator CPU",
            f(&rate["simulator_cpu_pct"]),
            rate["cores"],
            f(&rate["machine_busy_pct"]),
        );
    }
    if let Some(why) = rate["reasons"].as_array().filter(|w| !w.is_empty()) {
        let b = &rate["behind_s"];
        for w in why {
            println!("{:<28} {}", "SHORT OF THE TARGET", w.as_str().unwrap_or(""));
        }
        println!(
            "{:<28} PUBACK waits {:.1}, other queue waits {:.1}, CPU {:.1}",
            "time behind schedule (s)",
            f(&b["puback_wait"]),
            f(&b["queue_wait"]),
            f(&b["cpu"]),
        );
    }
    if !r["carers"].is_null() {
        live::print(&r["carers"]);
    }
    let e = &r["emergencies"];
    if e.is_null() {
        return;
    }
    println!(
        "{:<28} {}",
        "emergencies injected",
        format_args!(
            "{} (detected {}, missed {})",
            e["injected"], e["detected"], e["missed"]
        )
    );
    println!("{:<28} {}", "false alerts (clean homes)", e["false_alerts"]);
    println!(
        "{:<28} {}",
        "unexpected (injected homes)", e["unexpected_on_injected_homes"]
    );
    if e["care_queue"].as_u64().is_some_and(|n| n > 0) {
        println!("{:<28} {}", "care queue (trend, recorded)", e["care_queue"]);
    }
    if e["detected_late"].as_u64().is_some_and(|n| n > 0) {
        println!("{:<28} {}", "detected on late readings", e["detected_late"]);
    }
    println!();
    println!(
        "{:<16} {:>6} {:>8} {:>8} {:>8} {:>8}   (ms beyond the rule's own duration)",
        "episode", "count", "p50", "p95", "p99", "max"
    );
    let cell = |v: &serde_json::Value| v.as_u64().map(|n| n.to_string()).unwrap_or("-".into());
    let row = |name: &str, v: &serde_json::Value| {
        format!(
            "{:<16} {:>6} {:>8} {:>8} {:>8} {:>8}",
            name,
            cell(&v["count"]),
            cell(&v["p50"]),
            cell(&v["p95"]),
            cell(&v["p99"]),
            cell(&v["max"])
        )
    };
    if let Some(k) = r["latency_beyond_rule_ms"].as_object() {
        for (name, v) in k {
            println!("{}", row(name, v));
        }
    }
    println!(
        "{}   (publish of the triggering message to alert)",
        row("publish->alert", &r["publish_to_alert_ms"])
    );
    if let Some(k) = r["absence_judged_after_deadline_ms"]
        .as_object()
        .filter(|k| !k.is_empty())
    {
        println!();
        println!(
            "{:<16} {:>6} {:>8} {:>8} {:>8} {:>8}   (ms from the rule's deadline to the home's next message, the time it is judged at)",
            "episode", "count", "p50", "p95", "p99", "max"
        );
        for (name, v) in k {
            println!("{}", row(name, v));
        }
    }
}

/// Episodes to inject: `per_home_per_day` on average over the run, of
/// the given kinds, each in a home of its own, each placed so its alert
/// is due before the run ends. Kinds that cannot fit are left out.
pub fn injections_by_rate(
    homes: usize,
    per_home_per_day: f64,
    kinds: &[Inject],
    duration: Duration,
    rules: &RuleConfig,
    seed: u64,
) -> Vec<(f64, usize, Inject)> {
    let secs = duration.as_secs_f64();
    let want = (homes as f64 * per_home_per_day * secs / 86_400.0).round() as usize;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1_0000);
    let mut free: Vec<usize> = (1..=homes).collect();
    let mut out = Vec::new();
    for k in 0..want.min(homes) {
        let what = kinds[k % kinds.len()];
        let lead = crate::life::lead_s(what, rules);
        let latest = secs - lead - 15.0;
        if latest < 20.0 {
            continue;
        }
        let at = rng.random_range(20.0..latest);
        let i = rng.random_range(0..free.len());
        out.push((at, free.swap_remove(i), what));
    }
    out
}

/// Reads a scenario file: one episode a line, `at_s,home,episode`
/// (`#` comments), e.g. `120,17,bathroom-fall`.
pub fn read_scenario(text: &str, homes: usize) -> anyhow::Result<Vec<(f64, usize, Inject)>> {
    use clap::ValueEnum;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |why: &str| anyhow::anyhow!("scenario line {}: {why}: `{line}`", n + 1);
        if f.len() != 3 {
            return Err(bad("expected at_s,home,episode"));
        }
        let at: f64 = f[0].parse().map_err(|_| bad("at_s is not a number"))?;
        let home: usize = f[1].parse().map_err(|_| bad("home is not a number"))?;
        if home == 0 || home > homes {
            return Err(bad(&format!("home is not 1..={homes}")));
        }
        let what = Inject::from_str(f[2], true).map_err(|_| bad("unknown episode"))?;
        out.push((at, home, what));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(home: usize, what: Inject, at_ms: i64, due_ms: i64) -> Truth {
        Truth {
            home,
            elder_id: format!("E{home:05}"),
            what,
            at_ms,
            due_ms,
            end_ms: due_ms + 60_000,
            expected: what.alert_kind(),
        }
    }

    fn seen(at_ms: i64, home: usize, kind: &str, queue: &str) -> Seen {
        Seen {
            at_ms,
            elder_id: format!("E{home:05}"),
            kind: kind.into(),
            queue: queue.into(),
            recorded: false,
            late_ms: 0,
            subject: String::new(),
            summary: String::new(),
            visit_flags: None,
            alert_id: String::new(),
            resolved: false,
            outcome: String::new(),
        }
    }

    #[test]
    fn an_absence_rule_is_due_at_the_homes_first_message_after_its_deadline() {
        let truths = [
            truth(1, Inject::Inactivity, 0, 180_000),
            truth(2, Inject::Sos, 5_000, 5_000),
        ];
        // Home 1's next message after the deadline came 7 s later; the
        // alert 40 ms after it. The SOS 3 ms after its press.
        let published: Published = [
            ((1, 180_000), (187_000, 187_010)),
            ((2, 5_000), (5_000, 5_001)),
        ]
        .into();
        let alerts = [
            seen(187_040, 1, "inactivity", "hotline"),
            seen(5_003, 2, "sos", "hotline"),
        ];
        let v = verdict(&truths, &alerts, &published);
        let e = &v["emergencies"];
        assert_eq!(
            (e["detected"].as_u64(), e["missed"].as_u64()),
            (Some(2), Some(0))
        );
        assert_eq!(v["latency_beyond_rule_ms"]["inactivity"]["max"], 40);
        assert_eq!(v["latency_beyond_rule_ms"]["sos"]["max"], 3);
        // (Kept to three significant digits.)
        let wait = v["absence_judged_after_deadline_ms"]["inactivity"]["max"]
            .as_u64()
            .unwrap();
        assert!((7_000..7_010).contains(&wait), "{wait}");
        assert_eq!(v["publish_to_alert_ms"]["max"], 30);
    }

    #[test]
    fn care_queue_alerts_neither_detect_an_episode_nor_count_as_false() {
        let truths = [truth(1, Inject::Tachycardia, 0, 60_000)];
        let published: Published = [((1, 60_000), (60_000, 60_002))].into();
        let mut recorded = seen(60_010, 1, "vital_out_of_range", "care");
        recorded.recorded = true;
        let alerts = [
            recorded,
            seen(60_020, 3, "trend", "care"),
            seen(60_030, 1, "vital_out_of_range", "hotline"),
            seen(61_000, 4, "inactivity", "hotline"),
            seen(62_000, 1, "inactivity", "hotline"),
        ];
        let v = verdict(&truths, &alerts, &published);
        let e = &v["emergencies"];
        assert_eq!(e["detected"], 1);
        // The hotline alert, not the recorded one before it.
        assert_eq!(v["latency_beyond_rule_ms"]["tachycardia"]["max"], 30);
        assert_eq!(e["care_queue"], 2);
        assert_eq!(e["false_alerts"], 1, "home 4: no episode");
        assert_eq!(e["unexpected_on_injected_homes"], 1, "home 1's inactivity");
        assert_eq!(e["care_list"][1]["kind"], "trend");
    }

    #[test]
    fn an_episode_only_recorded_is_missed() {
        let truths = [truth(1, Inject::Fall, 0, 0)];
        let mut recorded = seen(5, 1, "fall", "care");
        recorded.recorded = true;
        let v = verdict(&truths, &[recorded], &Published::new());
        assert_eq!(v["emergencies"]["missed"], 1);
        assert_eq!(v["emergencies"]["care_queue"], 1);
        assert_eq!(v["emergencies"]["false_alerts"], 0);
    }

    #[test]
    fn alerts_shown_by_late_readings_are_listed() {
        let truths = [truth(1, Inject::Sos, 0, 0)];
        let mut late = seen(9_000, 1, "sos", "hotline");
        late.late_ms = 8_500;
        let v = verdict(&truths, &[late], &Published::new());
        assert_eq!(v["emergencies"]["detected"], 1);
        assert_eq!(v["emergencies"]["detected_late"], 1);
        assert_eq!(v["emergencies"]["late_list"][0]["late_ms"], 8_500);
    }
}
