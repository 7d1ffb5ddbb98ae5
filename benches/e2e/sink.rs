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
use std::path::PathBuf;
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

    let (mut received, mut first_ms, mut last_ms) = (0u64, None, 0u64);
    let mut subscribed = false;
    let idle = Duration::from_secs_f64(args.idle_s);
    let first_wait = Duration::from_secs_f64(args.first_wait_s);
    loop {
        let wait = if received == 0 { first_wait } else { idle };
        let event = tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            e = tokio::time::timeout(wait, el.poll()) => match e {
                Err(_) => break,
                Ok(e) => e,
            },
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(_))) => {
                let t = now_ms();
                first_ms.get_or_insert(t);
                last_ms = t;
                received += 1;
            }
            // Subscribe on every CONNACK: a reconnect with a clean session
            // has lost the subscription.
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.try_subscribe(&args.filter, qos)?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) if !subscribed => {
                subscribed = true;
                if let Some(p) = &args.ready_file {
                    std::fs::write(p, "subscribed\n")?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("mqtt-sink: connection to {}: {e}; retrying", args.addr);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
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
