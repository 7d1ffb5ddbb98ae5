//! Drives simulated homes over MQTT against a real server: registers
//! them through RegistryService, connects one MQTT session per device,
//! publishes what [`crate::life`] says when it says it, and (in `verify`)
//! subscribes to AlertService and matches alerts to the injected ground
//! truth. Ends with a summary table and a JSON result.
use crate::life::{HomeSim, Intervals, Msg, Payload, Truth};
use crate::{Home, Inject, registry_csv, stage};
use eldercare_proto::v1 as pb;
use eldercare_rules::RuleConfig;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    connected: AtomicU64,
    alerts: AtomicU64,
    /// The run is over: connections closing now are not errors.
    stopping: AtomicBool,
}

/// One device's connection.
struct Conn {
    client: AsyncClient,
    /// The task polling its event loop; aborted to drop the connection
    /// without a DISCONNECT, so the broker publishes the last will.
    poll: tokio::task::JoinHandle<()>,
    opts: MqttOptions,
}

fn options(addr: &str, device_id: &str, secret: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt-addr must be host:port"))?;
    let mut o = MqttOptions::new(format!("sim-{device_id}"), host, port.parse()?);
    o.set_credentials(device_id, secret);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    o.set_last_will(rumqttc::LastWill::new(
        format!("eldercare/v1/{device_id}/status"),
        br#"{"online": false}"#.to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    Ok(o)
}

/// Connects and waits for the CONNACK, so a refused login is reported.
/// A broker busy accepting thousands of sessions may time a few out:
/// those are tried again, up to five times; a refused login is not.
async fn connect(opts: MqttOptions, c: Arc<Counters>) -> anyhow::Result<Conn> {
    let id = opts.client_id();
    let mut attempt = 0;
    let (client, mut el) = loop {
        attempt += 1;
        let (client, mut el) = AsyncClient::new(opts.clone(), 16);
        let r = loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        match r {
            Ok(()) => break (client, el),
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                anyhow::bail!("{id} was refused: {code:?}")
            }
            Err(e) if attempt >= 5 => anyhow::bail!("{id} could not connect: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500 * attempt)).await,
        }
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let poll = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    c.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                // The run is over: the DISCONNECT went out (or the session
                // is gone); polling again would reconnect.
                Err(_) if c.stopping.load(Ordering::Relaxed) => break,
                Err(_) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    // rumqttc reconnects on the next poll.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(Conn { client, poll, opts })
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
        if ev.kind != pb::AlertEventKind::Raised as i32 || !ours.contains(&a.elder_id) {
            continue;
        }
        let raised = a.raised_at.map(|t| t.seconds * 1000).unwrap_or(0);
        if raised < since_ms - 1000 {
            continue;
        }
        counters.alerts.fetch_add(1, Ordering::Relaxed);
        seen.lock().unwrap().push(Seen {
            at_ms: now_ms(),
            elder_id: a.elder_id,
            kind: a.kind,
        });
    }
    Ok(())
}

/// Runs the simulation and returns the JSON result.
pub async fn drive(cfg: Config) -> anyhow::Result<serde_json::Value> {
    let counters = Arc::new(Counters::default());
    let mut homes = cfg.homes.clone();
    let n_devices: usize = homes.iter().map(|h| h.devices.len()).sum();
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
    eprintln!(
        "connecting {n_devices} devices in {sessions} MQTT sessions to {}",
        cfg.mqtt_addr
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(128));
    let mut set = tokio::task::JoinSet::new();
    for (hi, h) in homes.iter().enumerate() {
        // Through the gateway, one session for the home; otherwise one a device.
        let logins: Vec<&crate::SimDevice> = match &h.gateway {
            Some(g) => vec![g],
            None => h.devices.iter().collect(),
        };
        for (ci, d) in logins.into_iter().enumerate() {
            let opts = options(&cfg.mqtt_addr, &d.device_id, &d.secret)?;
            let (sem, c) = (sem.clone(), counters.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                Ok::<_, anyhow::Error>((hi, ci, connect(opts, c).await?))
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
    let natural = natural_rate(&homes, &cfg.rules);
    let iv = match cfg.rate {
        Some(r) => Intervals::default().faster(r / natural),
        None => Intervals::default(),
    };
    let mut sims: Vec<HomeSim> = homes
        .iter()
        .map(|h| {
            let inj = plan.get(&h.index).cloned().unwrap_or_default();
            HomeSim::new(h, cfg.seed, &cfg.rules, iv, t0, &inj)
        })
        .collect();
    let truths: Vec<Truth> = sims.iter().flat_map(|s| s.truths()).collect();

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
        let h = tokio::spawn(async move {
            if let Err(e) = subscribe(&cfg2, t0, seen, c, tx).await {
                eprintln!("alert subscription ended: {e:#}");
            }
        });
        rx.await
            .map_err(|_| anyhow::anyhow!("could not subscribe to alerts"))?;
        Some(h)
    } else {
        None
    };

    // Publish, each home in its own task, each message at its time.
    let published: Arc<Mutex<HashMap<(usize, i64), i64>>> = Arc::default();
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
    let progress = progress_bar(&cfg, counters.clone(), t0, end);
    // Until the end, then until every episode's alert is due (+10 s).
    let last_due = truths.iter().map(|t| t.due_ms).max().unwrap_or(0);
    tokio::select! {
        _ = tokio::time::sleep_until(at_instant(end)) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted"),
    }
    stop.store(true, Ordering::Relaxed);
    counters.stopping.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let sent_end = now_ms();
    if cfg.verifying() {
        let wait_until = (last_due + 10_000).max(sent_end + 3000);
        tokio::time::sleep_until(at_instant(wait_until)).await;
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Some(h) = sub {
        h.abort();
    }
    let seen = seen.lock().unwrap().clone();
    let published = published.lock().unwrap().clone();
    let result = summarize(
        &cfg, &homes, &counters, &truths, &seen, &published, t0, sent_end, n_devices,
    );
    print_summary(&result);
    if let Some(path) = &cfg.result {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
        eprintln!("result written to {}", path.display());
    }
    Ok(result)
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
    }
}

/// Messages/s the homes send at realistic intervals, measured on an
/// hour of one in ten of them.
fn natural_rate(homes: &[Home], rules: &RuleConfig) -> f64 {
    let t0 = now_ms();
    let sample: Vec<&Home> = homes.iter().step_by(10).take(50).collect();
    let mut out = Vec::new();
    for h in &sample {
        let mut s = HomeSim::new(h, 1, rules, Intervals::default(), t0, &[]);
        s.advance(t0 + 3_600_000, &mut out);
    }
    let per_home = out.len() as f64 / sample.len().max(1) as f64 / 3600.0;
    per_home * homes.len() as f64
}

#[allow(clippy::too_many_arguments)]
async fn play_home(
    mut sim: HomeSim,
    mut conns: Vec<Conn>,
    t0: i64,
    end: i64,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<HashMap<(usize, i64), i64>>>,
    at_instant: impl Fn(i64) -> Instant,
    burst: Option<(i64, i64, Intervals)>,
    iv: Intervals,
) {
    let home = sim.home().clone();
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
                    if let Ok(n) = connect(conn.opts.clone(), c.clone()).await {
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
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .is_ok()
            {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        for m in buf.drain(..) {
            tokio::time::sleep_until(at_instant(m.at_ms)).await;
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
                    .publish(
                        m.body.topic(&dev.device_id),
                        QoS::AtLeastOnce,
                        false,
                        m.body.bytes(m.at_ms),
                    )
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
            if conn
                .client
                .publish(topic, QoS::AtLeastOnce, false, bytes)
                .await
                .is_ok()
            {
                c.sent.fetch_add(1, Ordering::Relaxed);
                if m.trigger {
                    published
                        .lock()
                        .unwrap()
                        .insert((home.index, m.at_ms), now_ms());
                }
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
    })
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &Config,
    homes: &[Home],
    c: &Counters,
    truths: &[Truth],
    seen: &[Seen],
    published: &HashMap<(usize, i64), i64>,
    t0: i64,
    sent_end: i64,
    n_devices: usize,
) -> serde_json::Value {
    let secs = ((sent_end - t0) as f64 / 1000.0).max(0.001);
    let sent = c.sent.load(Ordering::Relaxed);
    let acked = c.acked.load(Ordering::Relaxed);
    let mut out = json!({
        "mode": cfg.mode.name(),
        "homes": homes.len(),
        "devices": n_devices,
        "connections": c.connected.load(Ordering::Relaxed),
        "duration_s": secs,
        "messages": {
            "sent": sent, "acked": acked,
            "rate_sent_per_s": sent as f64 / secs,
            "rate_acked_per_s": acked as f64 / secs,
            "connection_errors": c.errors.load(Ordering::Relaxed),
        },
    });
    if !cfg.verifying() {
        return out;
    }
    // Match: each injected episode takes the first alert of its kind for
    // its elder at or after its start; every other alert is false.
    let mut used = vec![false; seen.len()];
    let mut by_kind: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut from_start: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut pub_to_alert = hist();
    let mut missed = Vec::new();
    let mut detected = 0;
    for t in truths {
        let want = t.expected.as_str();
        let hit = seen.iter().enumerate().find(|(i, s)| {
            !used[*i] && s.elder_id == t.elder_id && s.kind == want && s.at_ms >= t.at_ms - 1000
        });
        match hit {
            Some((i, s)) => {
                used[i] = true;
                detected += 1;
                let name = t.what.name().to_string();
                let beyond = (s.at_ms - t.due_ms).max(1) as u64;
                let _ = by_kind.entry(name.clone()).or_insert_with(hist).record(beyond);
                let since = (s.at_ms - t.at_ms).max(1) as u64;
                let _ = from_start.entry(name).or_insert_with(hist).record(since);
                if let Some(p) = published.get(&(t.home, t.due_ms)) {
                    let _ = pub_to_alert.record((s.at_ms - p).max(1) as u64);
                }
            }
            None => missed.push(json!({"home": t.home, "elder_id": t.elder_id, "episode": t.what.name(), "expected": want})),
        }
    }
    let injected_homes: std::collections::HashSet<&str> =
        truths.iter().map(|t| t.elder_id.as_str()).collect();
    let false_alerts: Vec<serde_json::Value> = seen
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .map(|(_, s)| {
            json!({"elder_id": s.elder_id, "kind": s.kind,
                   "injected_home": injected_homes.contains(s.elder_id.as_str())})
        })
        .collect();
    let on_clean = false_alerts
        .iter()
        .filter(|a| a["injected_home"] == false)
        .count();
    let mut overall = hist();
    for h in by_kind.values() {
        let _ = overall.add(h);
    }
    out["emergencies"] = json!({
        "injected": truths.len(),
        "detected": detected,
        "missed": missed.len(),
        "false_alerts": on_clean,
        "unexpected_on_injected_homes": false_alerts.len() - on_clean,
        "missed_list": missed,
        "false_list": false_alerts,
    });
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

fn print_summary(r: &serde_json::Value) {
    let m = &r["messages"];
    println!();
    println!("{:<28} {}", "mode", r["mode"].as_str().unwrap_or(""));
    println!(
        "{:<28} {}",
        "homes / devices",
        format_args!("{} / {}", r["homes"], r["devices"])
    );
    println!("{:<28} {}", "connections", r["connections"]);
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
