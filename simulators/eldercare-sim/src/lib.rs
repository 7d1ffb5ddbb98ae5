//! Device simulator: N homes, each with a sleep sensor, a vital-sign band,
//! a PIR sensor, a GPS watch and an SOS button, publishing plausible
//! readings over MQTT as real devices do (each device logs in as itself),
//! with emergencies injected on demand.
//!
//! Homes are deterministic from `(count, seed)`: ids and secrets derive
//! from them, so `registry_csv` and `run` agree without sharing files.
use prost::Message;
use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Turns true when the simulation should stop.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

pub const KINDS: [(&str, &str); 5] = [
    ("bed", "sleep_sensor"),
    ("band", "vital_band"),
    ("pir", "pir"),
    ("gps", "gps_watch"),
    ("btn", "sos_button"),
];

#[derive(Debug, Clone)]
pub struct SimDevice {
    pub device_id: String,
    pub kind: &'static str,
    pub secret: String,
}

#[derive(Debug, Clone)]
pub struct Home {
    pub index: usize,
    pub elder_id: String,
    pub devices: Vec<SimDevice>,
}

/// An emergency to inject into one home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    Sos,
    Fall,
    Tachycardia,
}

pub fn homes(count: usize, seed: u64) -> Vec<Home> {
    (1..=count)
        .map(|i| Home {
            index: i,
            elder_id: format!("E{i:05}"),
            devices: KINDS
                .iter()
                .map(|(prefix, kind)| {
                    let device_id = format!("{prefix}-{i:05}");
                    let mut h = Sha256::new();
                    h.update(format!("{seed}:{device_id}"));
                    SimDevice {
                        secret: hex::encode(&h.finalize()[..16]),
                        device_id,
                        kind,
                    }
                })
                .collect(),
        })
        .collect()
}

/// The registry files for these homes: `(elders.csv, devices.csv)`.
/// Names and addresses are synthetic.
pub fn registry_csv(homes: &[Home]) -> (String, String) {
    let mut elders =
        String::from("elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags\n");
    let mut devices = String::from("device_id,kind,elder_id,room,heartbeat_s,secret\n");
    for h in homes {
        elders.push_str(&format!(
            "{},Resident {},Demo District,Community {},{:.5},{:.5},500,lives_alone\n",
            h.elder_id,
            h.index,
            (h.index - 1) / 10 + 1,
            31.2 + h.index as f64 * 0.001,
            121.4 + h.index as f64 * 0.001
        ));
        for d in &h.devices {
            let room = if d.kind == "pir" { "living" } else { "" };
            devices.push_str(&format!(
                "{},{},{},{},300,{}\n",
                d.device_id, d.kind, h.elder_id, room, d.secret
            ));
        }
    }
    (elders, devices)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A connected simulated device.
pub struct Connected {
    pub client: AsyncClient,
    pub device: SimDevice,
}

/// Connects one device and drives its event loop in the background.
pub async fn connect(addr: &str, d: &SimDevice) -> anyhow::Result<Connected> {
    connect_as(addr, d, &format!("sim-{}", d.device_id)).await
}

/// Like [`connect`], with a chosen MQTT client id (an injector runs beside
/// the device's regular connection and must not take its session over).
pub async fn connect_as(addr: &str, d: &SimDevice, client_id: &str) -> anyhow::Result<Connected> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt-addr must be host:port"))?;
    let mut opts = MqttOptions::new(client_id, host, port.parse()?);
    opts.set_credentials(d.device_id.clone(), d.secret.clone());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_last_will(rumqttc::LastWill::new(
        format!("eldercare/v1/{}/status", d.device_id),
        r#"{"online": false}"#.as_bytes().to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut el) = AsyncClient::new(opts, 64);
    // Wait for the CONNACK so a refused login is reported, not hidden.
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => anyhow::bail!("{} could not connect: {e}", d.device_id),
        }
    }
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    Ok(Connected {
        client,
        device: d.clone(),
    })
}

/// JSON telemetry on `stream`.
pub async fn publish_json(
    c: &AsyncClient,
    device_id: &str,
    stream: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    c.publish(
        format!("eldercare/v1/{device_id}/{stream}"),
        QoS::AtLeastOnce,
        false,
        body.to_string(),
    )
    .await?;
    Ok(())
}

/// Injects one emergency through the home's devices. Tachycardia sends a
/// heart rate of 150 for 75 s of event time, so its alert comes about a
/// minute later, as it would from a real band.
pub async fn inject(addr: &str, home: &Home, what: Inject) -> anyhow::Result<()> {
    let dev = |prefix: &str| {
        home.devices
            .iter()
            .find(|d| d.device_id.starts_with(prefix))
            .unwrap()
    };
    match what {
        Inject::Sos => {
            let c = connect_as(addr, dev("btn"), "sim-inject").await?;
            publish_json(
                &c.client,
                &c.device.device_id,
                "event",
                serde_json::json!({"ts": now_ms(), "type": "sos"}),
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Inject::Fall => {
            // Protobuf, as many fall detectors send.
            let c = connect_as(addr, dev("btn"), "sim-inject").await?;
            let msg = eldercare_proto::v1::DeviceMessage {
                ts_ms: now_ms(),
                seq: None,
                body: Some(eldercare_proto::v1::device_message::Body::Event(
                    eldercare_proto::v1::Event {
                        r#type: "fall".into(),
                        confidence: Some(0.93),
                    },
                )),
            };
            c.client
                .publish(
                    format!("eldercare/v1/{}/event/pb", c.device.device_id),
                    QoS::AtLeastOnce,
                    false,
                    msg.encode_to_vec(),
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Inject::Tachycardia => {
            let c = connect_as(addr, dev("band"), "sim-inject").await?;
            for _ in 0..16 {
                publish_json(
                    &c.client,
                    &c.device.device_id,
                    "vitals",
                    serde_json::json!({"ts": now_ms(), "hr": 150, "spo2": 95}),
                )
                .await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
    Ok(())
}

/// The homes without the device an injection takes over (the band of a
/// tachycardia home), so regular readings do not mask the emergency.
pub fn without_injected(homes: &[Home], injected: &[(usize, Inject)]) -> Vec<Home> {
    homes
        .iter()
        .cloned()
        .map(|mut h| {
            if injected
                .iter()
                .any(|(i, w)| *i == h.index && *w == Inject::Tachycardia)
            {
                h.devices.retain(|d| d.kind != "vital_band");
            }
            h
        })
        .collect()
}

/// Runs every home's devices, publishing a reading per device every
/// `interval`, until `shutdown` turns true.
pub async fn run(
    addr: &str,
    homes: &[Home],
    interval: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for h in homes {
        for d in &h.devices {
            let c = connect(addr, d).await?;
            let mut sd = shutdown.clone();
            let phase = Duration::from_millis(
                rand::rng().random_range(0..interval.as_millis().max(1) as u64),
            );
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(phase).await;
                let mut tick = tokio::time::interval(interval);
                let mut seq = 0u64;
                loop {
                    tokio::select! {
                        _ = sd.changed() => break,
                        _ = tick.tick() => {}
                    }
                    seq += 1;
                    let body = reading(c.device.kind, seq);
                    let stream = stream_of(c.device.kind);
                    if publish_json(&c.client, &c.device.device_id, stream, body)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = c.client.disconnect().await;
            }));
        }
    }
    let _ = shutdown.changed().await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn stream_of(kind: &str) -> &'static str {
    match kind {
        "sleep_sensor" => "sleep",
        "vital_band" => "vitals",
        "pir" => "motion",
        "gps_watch" => "location",
        _ => "status",
    }
}

/// A plausible reading for a healthy resident.
fn reading(kind: &str, seq: u64) -> serde_json::Value {
    let mut r = rand::rng();
    let ts = now_ms();
    match kind {
        "sleep_sensor" => serde_json::json!({"ts": ts, "seq": seq, "in_bed": true,
            "hr": r.random_range(55..75), "rr": r.random_range(12..18), "movement": r.random_range(0.0..0.3)}),
        "vital_band" => serde_json::json!({"ts": ts, "seq": seq, "hr": r.random_range(60..95),
            "spo2": r.random_range(95..100), "temp_c": 36.2 + r.random_range(0.0..0.8),
            "sys": r.random_range(110..140), "dia": r.random_range(65..85)}),
        "pir" => {
            serde_json::json!({"ts": ts, "seq": seq, "room": "living", "motion": r.random_bool(0.3)})
        }
        "gps_watch" => {
            serde_json::json!({"ts": ts, "seq": seq, "lat": 31.2 + r.random_range(0.0..0.001),
            "lon": 121.4 + r.random_range(0.0..0.001), "accuracy_m": 15})
        }
        _ => {
            serde_json::json!({"ts": ts, "seq": seq, "battery_pct": r.random_range(60..100), "online": true})
        }
    }
}
