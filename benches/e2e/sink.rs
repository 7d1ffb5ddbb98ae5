//! `mqtt-sink`: a counting MQTT subscriber, the receiving end of the peer
//! run in `benches/e2e/run.sh` (the simulator publishes to Mosquitto, this
//! counts what Mosquitto delivers).
//!
//! Hand-written because the benchmark needs the delivery rate, not just a
//! count: `mosquitto_sub | wc -l` counts lines (a payload may hold
//! newlines), cannot tell when the first and last message arrived, and
//! never ends by itself. This subscribes, counts, notes the wall-clock
//! time of the first and last message, and stops after `--idle-s` seconds
//! without a message once messages have flowed (or on SIGINT/SIGTERM).
//!
//! Output, on stdout or `--out`:
//! `{"received": n, "first_ms": .., "last_ms": .., "rate_per_s": ..}`
//! (`first_ms`/`last_ms` are Unix milliseconds, null when nothing came;
//! the rate is (n - 1) over the time between the first and last message).

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "mqtt-sink",
    about = "Count the messages an MQTT broker delivers"
)]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    /// Topic filter to subscribe to.
    #[arg(long, default_value = "eldercare/v1/#")]
    filter: String,
    /// Subscription QoS, 0 or 1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Stop after this many seconds without a message, once one came.
    #[arg(long, default_value_t = 5.0)]
    idle_s: f64,
    /// Give up after this many seconds if no message ever comes.
    #[arg(long, default_value_t = 300.0)]
    first_wait_s: f64,
    /// Write the JSON result here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write this file once the subscription is acknowledged, so a script
    /// knows when to start publishing.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Append `unix_ms,received` here every half second, so the rate while
    /// the load lasted can be told from what arrived after it.
    #[arg(long)]
    series: Option<PathBuf>,
}

/// What the receiving task has seen.
#[derive(Default)]
struct Counts {
    received: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
}

impl Counts {
    fn note(&self, t: u64) {
        if self.received.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first.store(t, Ordering::Relaxed);
        }
        self.last.store(t, Ordering::Relaxed);
    }
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    fn last_ms(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (host, port) = args
        .addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--addr must be host:port, not {}", args.addr))?;
    let mut opts = MqttOptions::new(
        format!("mqtt-sink-{}", std::process::id()),
        host,
        port.parse()?,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    let qos = if args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let (client, mut el) = AsyncClient::new(opts, 16);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    // The event loop runs in its own task, so that its poll is never
    // cancelled midway by the timers below; it counts into `count`.
    let count = Arc::new(Counts::default());
    let (filter, ready_file, addr) = (args.filter.clone(), args.ready_file.clone(), args.addr);
    let c = count.clone();
    let receiver = tokio::spawn(async move {
        let mut subscribed = false;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => c.note(now_ms()),
                // Subscribe on every CONNACK: a reconnect with a clean
                // session has lost the subscription.
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe(&filter, qos)?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) if !subscribed => {
                    subscribed = true;
                    if let Some(p) = &ready_file {
                        std::fs::write(p, "subscribed\n")?;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("mqtt-sink: connection to {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    });

    let mut series = match &args.series {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let idle_ms = (args.idle_s * 1000.0) as u64;
    let first_wait_ms = (args.first_wait_s * 1000.0) as u64;
    let started = now_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {}
        }
        if receiver.is_finished() {
            break;
        }
        let (received, last) = (count.received(), count.last_ms());
        if let Some(w) = series.as_mut() {
            writeln!(w, "{},{received}", now_ms())?;
            w.flush()?;
        }
        let give_up_at = if received == 0 {
            started + first_wait_ms
        } else {
            last + idle_ms
        };
        if now_ms() >= give_up_at {
            break;
        }
    }
    receiver.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), receiver).await {
        return Err(e);
    }
    let (received, last_ms) = (count.received(), count.last_ms());
    let first_ms = (received > 0).then(|| count.first.load(Ordering::Relaxed));
    if let Some(w) = series.as_mut() {
        writeln!(w, "{},{received}", now_ms())?;
        w.flush()?;
    }
    let rate = match first_ms {
        Some(f) if received > 1 && last_ms > f => {
            (received - 1) as f64 * 1000.0 / (last_ms - f) as f64
        }
        _ => 0.0,
    };
    let result = serde_json::json!({
        "received": received,
        "first_ms": first_ms,
        "last_ms": first_ms.map(|_| last_ms),
        "rate_per_s": (rate * 10.0).round() / 10.0,
    });
    match &args.out {
        Some(p) => std::fs::write(p, format!("{result}\n"))?,
        None => println!("{result}"),
    }
    Ok(())
}
