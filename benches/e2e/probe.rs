//! `sos-probe`: SOS publish-to-alert latency of a running eldercare
//! server, measured from a client that is not the load simulator.
//!
//! The simulator's own figure (`publish_to_alert_ms`) is taken inside a
//! process that drives thousands of sessions; when that process saturates
//! its CPU, its timestamps (before the publish, on the alert's arrival)
//! are late and the figure grows with the simulator's load, not the
//! server's. The probe is mostly idle: it registers its own elders, one
//! SOS button each, holds one MQTT session per button, and sends one SOS
//! every `--interval-ms` while the simulator's load runs beside it.
//!
//! 1. Registers `--elders` elders (`PROBE-<tag>-E0001`, ...) with one
//!    `sos_button` each (`PROBE-<tag>-B0001`, ..., a fresh random secret)
//!    through `RegistryService.Import`, as admin
//!    (`ELDERCARE_PROBE_ADMIN_TOKEN`). The tag (default: the start time in
//!    hex Unix seconds and three random characters) keeps every run's
//!    elders new, so each SOS raises a new alert rather than folding into
//!    an open one.
//! 2. Subscribes to `AlertService.Subscribe` (`ELDERCARE_PROBE_TOKEN`, a
//!    viewer token is enough) on its own thread and current-thread
//!    runtime, and notes when each probe elder's RAISED `sos` event
//!    arrives.
//! 3. Connects one MQTT 3.1.1 session per button, waits `--delay-s` from
//!    its start (the load reaches steady state), then every
//!    `--interval-ms` publishes one QoS 1 SOS `event` from the next button
//!    that has not sent (each elder sends exactly one), until `--count`
//!    are sent or `--duration-s` has passed; then waits up to `--wait-s`
//!    for the last alerts.
//!
//! Latency is from just before the publish to the RAISED event's arrival
//! (both `Instant`s of this process); the PUBACK wait from the same
//! instant to the PUBACK (the only QoS 1 message of its session).
//! SIGINT/SIGTERM stop the sending and report what was measured.
//!
//! Output (stdout, and `--result FILE`):
//! `{"sent", "raised", "missed", "latency_ms": {count, p50, p95, p99,
//! max}, "puback_ms": {count, p50, p99, max}, ...}`.

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use eldercare_proto::v1 as pb;
use hdrhistogram::Histogram;
use rand::distr::{Alphanumeric, SampleString};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(
    name = "sos-probe",
    about = "Measure SOS publish-to-alert latency of a running eldercare server"
)]
struct Args {
    /// The server's MQTT listener, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt_addr: String,
    /// The server's gRPC API.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_addr: String,
    /// Elders (one SOS button each) to register; at most this many SOS.
    #[arg(long, default_value_t = 150)]
    elders: usize,
    /// SOS to send, one per elder.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Milliseconds between two SOS.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Seconds from the probe's start to the first SOS.
    #[arg(long, default_value_t = 20.0)]
    delay_s: f64,
    /// Stop sending this many seconds after the first SOS, even if fewer
    /// than --count went out.
    #[arg(long)]
    duration_s: Option<f64>,
    /// After the last SOS, wait up to this long for the missing alerts.
    #[arg(long, default_value_t = 10.0)]
    wait_s: f64,
    /// Part of every id (`PROBE-<tag>-E0001`); default: the start time.
    #[arg(long)]
    tag: Option<String>,
    /// Also write the JSON result here.
    #[arg(long)]
    result: Option<PathBuf>,
    /// Admin token, to register the probe's elders and buttons.
    #[arg(long, env = "ELDERCARE_PROBE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Token that may subscribe to alerts (viewer, operator, ...).
    #[arg(long, env = "ELDERCARE_PROBE_TOKEN", hide_env_values = true)]
    token: String,
}

/// One probe elder and its SOS button.
struct Button {
    elder_id: String,
    device_id: String,
    secret: String,
    /// Just before its SOS was published.
    sent: OnceLock<Instant>,
    /// When its PUBACK came.
    puback: OnceLock<Instant>,
}

/// Elder id -> arrival of its first RAISED `sos` event.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    if args.elders == 0 || args.count == 0 {
        bail!("--elders and --count must be at least 1");
    }
    for (name, v) in [
        ("--delay-s", args.delay_s),
        ("--wait-s", args.wait_s),
        ("--duration-s", args.duration_s.unwrap_or(0.0)),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{name} must be a number of seconds, 0 or more");
        }
    }
    let tag = match &args.tag {
        Some(t) => t.clone(),
        // Start time and a few random letters: two probes started in the
        // same second do not share elders.
        None => format!(
            "{:x}{}",
            now_ms() / 1000,
            Alphanumeric
                .sample_string(&mut rand::rng(), 3)
                .to_ascii_lowercase()
        ),
    };
    if tag.is_empty()
        || tag.len() > 40
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("--tag must be 1 to 40 characters of A-Z a-z 0-9 _ -");
    }
    let buttons: Vec<Arc<Button>> = (1..=args.elders)
        .map(|i| {
            Arc::new(Button {
                elder_id: format!("PROBE-{tag}-E{i:04}"),
                device_id: format!("PROBE-{tag}-B{i:04}"),
                secret: Alphanumeric.sample_string(&mut rand::rng(), 32),
                sent: OnceLock::new(),
                puback: OnceLock::new(),
            })
        })
        .collect();
    let to_send = args.count.min(buttons.len());
    if args.count > buttons.len() {
        eprintln!(
            "sos-probe: --count {} is more than --elders {}: sending {to_send}",
            args.count,
            buttons.len()
        );
    }

    register(&args, &buttons).await?;
    eprintln!("sos-probe: registered {} elders, tag {tag}", buttons.len());

    // Alerts, on their own thread.
    let arrivals: Arrivals = Arc::default();
    let ours: HashSet<String> = buttons.iter().map(|b| b.elder_id.clone()).collect();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    {
        let (addr, token, arrivals) =
            (args.grpc_addr.clone(), args.token.clone(), arrivals.clone());
        std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    tokio::select! {
                        _ = watch_alerts(&addr, &token, &ours, &arrivals, ready_tx) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .context("starting the alert thread")?;
    }
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .map_err(|_| anyhow!("no answer to AlertService.Subscribe within 30 s"))?
        .map_err(|_| anyhow!("the alert thread ended"))?
        .context("subscribing to alerts")?;

    // One MQTT session per button.
    let stopping = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    for (i, b) in buttons.iter().enumerate() {
        let (b, addr, stopping) = (b.clone(), args.mqtt_addr.clone(), stopping.clone());
        set.spawn(async move { Ok::<_, anyhow::Error>((i, connect(b, &addr, stopping).await?)) });
    }
    let mut clients: Vec<Option<AsyncClient>> = vec![None; buttons.len()];
    while let Some(r) = set.join_next().await {
        let (i, c) = r.context("connect task")??;
        clients[i] = Some(c);
    }
    let clients: Vec<AsyncClient> = clients.into_iter().flatten().collect();
    eprintln!(
        "sos-probe: {} buttons connected to {}",
        clients.len(),
        args.mqtt_addr
    );

    // From here SIGINT/SIGTERM end the measurement, not the process.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut stopped = false;
    let first_at = started + Duration::from_secs_f64(args.delay_s);
    tokio::select! {
        _ = tokio::time::sleep_until(first_at.into()) => {}
        _ = sigint.recv() => stopped = true,
        _ = sigterm.recv() => stopped = true,
    }

    // Send: one SOS a tick, each from a button that has not sent.
    let send_start = Instant::now();
    let send_end = args
        .duration_s
        .map(|d| send_start + Duration::from_secs_f64(d));
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut publish_failed) = (0usize, 0usize);
    if !stopped {
        let limit = args
            .duration_s
            .map_or(String::new(), |d| format!(", for at most {d} s"));
        eprintln!(
            "sos-probe: sending up to {to_send} SOS, one every {} ms{limit}",
            args.interval_ms
        );
    }
    for (b, client) in buttons.iter().zip(&clients).take(to_send) {
        if stopped {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = sigint.recv() => { stopped = true; break }
            _ = sigterm.recv() => { stopped = true; break }
        }
        if send_end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let topic = format!("eldercare/v1/{}/event", b.device_id);
        let payload = format!(r#"{{"ts": {}, "seq": 1, "type": "sos"}}"#, now_ms());
        let t = Instant::now();
        match client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
        {
            Ok(()) => {
                let _ = b.sent.set(t);
                sent += 1;
            }
            Err(e) => {
                eprintln!("sos-probe: {}: publish failed: {e}", b.device_id);
                publish_failed += 1;
            }
        }
    }

    // Wait for the alerts (and PUBACKs) still missing.
    let wait_end = Instant::now() + Duration::from_secs_f64(args.wait_s);
    while !stopped && Instant::now() < wait_end {
        let pending = {
            let arr = lock(&arrivals);
            buttons.iter().any(|b| {
                b.sent.get().is_some()
                    && (!arr.contains_key(&b.elder_id) || b.puback.get().is_none())
            })
        };
        if !pending {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = sigint.recv() => stopped = true,
            _ = sigterm.recv() => stopped = true,
        }
    }
    let _ = stop_tx.send(());
    stopping.store(true, Ordering::Relaxed);
    for c in &clients {
        let _ = c.try_disconnect();
    }

    let result = summarize(
        &args,
        &tag,
        &buttons,
        &arrivals,
        sent,
        publish_failed,
        stopped,
    );
    println!("{result}");
    if let Some(p) = &args.result {
        std::fs::write(p, format!("{result}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    // Let the DISCONNECTs go out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// A connection to the gRPC API at `addr`, and the interceptor that
/// presents `token` on every call (as the simulator's `authorized`).
async fn authorized(
    addr: &str,
    token: &str,
) -> anyhow::Result<(
    tonic::transport::Channel,
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<>,
)> {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| anyhow!("cannot reach {addr}: {e}"))?;
    let auth = format!("Bearer {token}").parse::<tonic::metadata::MetadataValue<_>>()?;
    let bearer = move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", auth.clone());
        Ok(r)
    };
    Ok((ch, bearer))
}

/// Registers the elders, then their buttons, each list in one import.
async fn register(args: &Args, buttons: &[Arc<Button>]) -> anyhow::Result<()> {
    let (ch, bearer) = authorized(&args.grpc_addr, &args.admin_token).await?;
    let mut reg = pb::registry_service_client::RegistryServiceClient::with_interceptor(ch, bearer);
    let mut elders = String::from("elder_id,name,district,community\n");
    // The buttons are silent but for their one SOS: the longest heartbeat
    // keeps them from being reported offline during a run.
    let mut devices = String::from("device_id,kind,elder_id,heartbeat_s,secret\n");
    for (i, b) in buttons.iter().enumerate() {
        elders.push_str(&format!(
            "{},Probe Resident {},Probe District,Probe Community\n",
            b.elder_id,
            i + 1
        ));
        devices.push_str(&format!(
            "{},sos_button,{},86400,{}\n",
            b.device_id, b.elder_id, b.secret
        ));
    }
    for (what, text) in [("elders", elders), ("devices", devices)] {
        let r = reg
            .import(pb::ImportRequest { text })
            .await
            .map_err(|e| anyhow!("importing the probe's {what}: {}", e.message()))?
            .into_inner();
        if r.refused > 0 {
            bail!(
                "importing the probe's {what}: {} rows refused, first: {:?}",
                r.refused,
                r.refused_rows.first()
            );
        }
    }
    Ok(())
}

/// Follows the alert events; notes the arrival of the first RAISED `sos`
/// of each of `ours`. Reports on `ready` whether the first subscription
/// was taken; after that, a broken stream is subscribed again from the
/// last event seen.
async fn watch_alerts(
    addr: &str,
    token: &str,
    ours: &HashSet<String>,
    arrivals: &Arrivals,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut after_seq = 0;
    loop {
        let subscribed = async {
            let (ch, bearer) = authorized(addr, token).await?;
            let mut client =
                pb::alert_service_client::AlertServiceClient::with_interceptor(ch, bearer);
            let stream = client
                .subscribe(pb::SubscribeRequest {
                    after_seq,
                    kinds: vec!["sos".into()],
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("AlertService.Subscribe: {}", e.message()))?
                .into_inner();
            Ok::<_, anyhow::Error>(stream)
        }
        .await;
        let mut stream = match (subscribed, ready.take()) {
            (Ok(s), ready) => {
                if let Some(tx) = ready {
                    let _ = tx.send(Ok(()));
                }
                s
            }
            (Err(e), Some(tx)) => {
                let _ = tx.send(Err(e));
                return;
            }
            (Err(e), None) => {
                eprintln!("sos-probe: subscribing again: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    let at = Instant::now();
                    after_seq = after_seq.max(ev.seq);
                    if ev.kind != pb::AlertEventKind::Raised as i32 {
                        continue;
                    }
                    let Some(a) = ev.alert else { continue };
                    if a.kind == "sos" && ours.contains(&a.elder_id) {
                        lock(arrivals).entry(a.elder_id).or_insert(at);
                    }
                }
                Ok(None) => {
                    eprintln!("sos-probe: the alert stream ended; subscribing again");
                    break;
                }
                Err(e) => {
                    eprintln!("sos-probe: the alert stream broke: {}", e.message());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connects a button and waits for its CONNACK (a refused login is an
/// error; a timeout is tried again, up to five times); then keeps its
/// session polled in a task that notes the PUBACK.
async fn connect(
    b: Arc<Button>,
    addr: &str,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<AsyncClient> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--mqtt-addr must be host:port, not {addr}"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--mqtt-addr port in {addr}"))?;
    let mut opts = MqttOptions::new(format!("probe-{}", b.device_id), host, port);
    opts.set_credentials(b.device_id.clone(), b.secret.clone());
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    let mut attempt = 0;
    let (client, mut el) = loop {
        attempt += 1;
        let (client, mut el) = AsyncClient::new(opts.clone(), 8);
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match r {
            Ok(Ok(())) => break (client, el),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                bail!("{} was refused: {code:?}", b.device_id)
            }
            Ok(Err(e)) if attempt >= 5 => bail!("{} could not connect: {e}", b.device_id),
            Err(_) if attempt >= 5 => bail!("{} got no CONNACK within 10 s", b.device_id),
            _ => tokio::time::sleep(Duration::from_millis(500 * attempt)).await,
        }
    };
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let _ = b.puback.set(Instant::now());
                }
                Ok(_) => {}
                Err(_) if stopping.load(Ordering::Relaxed) => break,
                Err(e) => {
                    // rumqttc reconnects on the next poll and sends again
                    // what waits for its PUBACK.
                    eprintln!("sos-probe: {}: {e}; reconnecting", b.device_id);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(client)
}

/// Microseconds up to an hour.
fn hist_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn summarize(
    args: &Args,
    tag: &str,
    buttons: &[Arc<Button>],
    arrivals: &Arrivals,
    sent: usize,
    publish_failed: usize,
    stopped: bool,
) -> serde_json::Value {
    let arrivals = lock(arrivals);
    let (mut latency, mut puback) = (hist_us(), hist_us());
    let mut raised = 0usize;
    for b in buttons {
        let Some(&t) = b.sent.get() else { continue };
        if let Some(d) = arrivals
            .get(&b.elder_id)
            .and_then(|a| a.checked_duration_since(t))
        {
            raised += 1;
            let _ = latency.record((d.as_micros() as u64).max(1));
        }
        if let Some(d) = b.puback.get().and_then(|p| p.checked_duration_since(t)) {
            let _ = puback.record((d.as_micros() as u64).max(1));
        }
    }
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    let latency_ms = if latency.is_empty() {
        serde_json::json!({"count": 0})
    } else {
        serde_json::json!({
            "count": latency.len(),
            "p50": q(&latency, 0.50),
            "p95": q(&latency, 0.95),
            "p99": q(&latency, 0.99),
            "max": ms(latency.max()),
        })
    };
    let puback_ms = if puback.is_empty() {
        serde_json::json!({"count": 0})
    } else {
        serde_json::json!({
            "count": puback.len(),
            "p50": q(&puback, 0.50),
            "p99": q(&puback, 0.99),
            "max": ms(puback.max()),
        })
    };
    serde_json::json!({
        "tag": tag,
        "elders": buttons.len(),
        "interval_ms": args.interval_ms,
        "delay_s": args.delay_s,
        "sent": sent,
        "raised": raised,
        "missed": sent - raised,
        "publish_failed": publish_failed,
        // RAISED sos events of probe elders that sent nothing (none expected).
        "unexpected": arrivals.len().saturating_sub(raised),
        "stopped_early": stopped,
        "latency_ms": latency_ms,
        "puback_ms": puback_ms,
    })
}
