//! `eldercare demo`: the whole system on the embedded default, driven by
//! 50 simulated homes with one scripted episode for every rule of the
//! engine, and every alert printed as it arrives over the demo's own gRPC
//! subscription. Homes without an episode raise nothing.
use crate::config::{Config, StorageArgs};
use anyhow::Context;
use eldercare_proto::v1 as pb;
use eldercare_sim::Inject;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The demo's rules: the defaults, with the timer rules shortened so that
/// every rule fires within two minutes. Compiled in, so the demo runs
/// from any directory.
const DEMO_RULES: &str = include_str!("../../../deploy/demo-rules.toml");
/// Heartbeat interval of the demo's devices (seconds): with the demo
/// rules' grace, a silent device is reported within half a minute
/// instead of six.
const DEMO_HEARTBEAT_S: u32 = 20;
/// Seconds between two readings of one device.
const INTERVAL: Duration = Duration::from_secs(5);

/// One scripted episode: when it starts (seconds after the homes come
/// online), where, and how long after its start its alert is due under
/// the demo rules.
struct Scripted {
    at_s: u64,
    home: usize,
    what: Inject,
    alert_after_s: u64,
    expect: &'static str,
}

const fn ep(
    at_s: u64,
    home: usize,
    what: Inject,
    alert_after_s: u64,
    expect: &'static str,
) -> Scripted {
    Scripted {
        at_s,
        home,
        what,
        alert_after_s,
        expect,
    }
}

/// Every rule once, each in its own home. The slow ones start first so
/// that every alert is in within about two minutes. Timer episodes begin
/// with 5 s asleep in bed before the person gets up.
const SCRIPT: [Scripted; 16] = [
    ep(
        0,
        8,
        Inject::Tachycardia,
        60,
        "vital_out_of_range HIGH: pulse 150 for 60 s",
    ),
    ep(3, 3, Inject::Sos, 0, "sos CRITICAL"),
    ep(
        6,
        17,
        Inject::Fall,
        0,
        "fall CRITICAL, nothing moves after it",
    ),
    ep(
        9,
        12,
        Inject::Inactivity,
        95,
        "inactivity HIGH: no movement for 90 s of daytime",
    ),
    ep(
        12,
        5,
        Inject::OutOfBed,
        65,
        "out_of_bed_too_long HIGH: out of bed 60 s at night",
    ),
    ep(
        15,
        6,
        Inject::BathroomFall,
        65,
        "out_of_bed_too_long CRITICAL: last seen in the bathroom",
    ),
    ep(
        18,
        4,
        Inject::SosCancel,
        0,
        "sos CRITICAL, resolved as a false alarm 8 s later",
    ),
    ep(
        21,
        18,
        Inject::FallUp,
        0,
        "fall CRITICAL, updated 20 s later: appears to be up",
    ),
    ep(
        24,
        9,
        Inject::Bradycardia,
        60,
        "vital_out_of_range HIGH: pulse 35 for 60 s",
    ),
    ep(
        27,
        10,
        Inject::Hypoxia,
        60,
        "vital_out_of_range HIGH: SpO2 88 % for 60 s",
    ),
    ep(
        30,
        11,
        Inject::Fever,
        60,
        "vital_out_of_range HIGH: temperature 39.6 °C for 60 s",
    ),
    ep(
        33,
        13,
        Inject::NoBreathing,
        20,
        "no_breathing CRITICAL: no breathing in bed for 20 s",
    ),
    ep(
        36,
        14,
        Inject::Wandering,
        30,
        "geofence_exit CRITICAL: elder with dementia leaves at night",
    ),
    ep(
        39,
        15,
        Inject::DeviceOffline,
        10,
        "device_offline LOW: the GPS watch",
    ),
    ep(
        42,
        16,
        Inject::HomeOffline,
        10,
        "home_offline LOW: all 5 devices (power cut)",
    ),
    ep(
        45,
        19,
        Inject::LowBattery,
        0,
        "low_battery LOW: SOS button at 12 %",
    ),
];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory of the demo's store.
    #[arg(long, default_value = "./data/demo")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 50)]
    pub homes: usize,
    /// MQTT listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_addr: std::net::SocketAddr,
    /// gRPC listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: std::net::SocketAddr,
    /// Metrics listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rules = eldercare_rules::Rules::parse(DEMO_RULES).context("deploy/demo-rules.toml")?;
    let storage = StorageArgs {
        data_dir: args.data_dir.clone(),
        database_url: None,
    };
    let script: Vec<&Scripted> = SCRIPT.iter().filter(|s| s.home <= args.homes).collect();
    let mut homes = eldercare_sim::homes(args.homes, 1);
    for h in &mut homes {
        h.heartbeat_s = DEMO_HEARTBEAT_S;
    }
    // Night windows around the current time, for the episodes whose rules
    // only judge the night (or the day).
    for s in &script {
        eldercare_sim::stage(&mut homes[s.home - 1], s.what);
    }
    // Register the homes, and note where the event log stands so only
    // this run's alerts are printed.
    let (last, still_open) = {
        let store = crate::open_store(&storage).await?;
        let (elders, devices) = eldercare_sim::registry_csv(&homes);
        eldercare_store::import::import(store.as_ref(), &elders).await?;
        eldercare_store::import::import(store.as_ref(), &devices).await?;
        (
            store.last_seq().await?,
            store.unresolved_alerts().await?.len(),
        )
    };
    // The demo's own console reads alerts with a viewer token of its own.
    let tokens_file = args.data_dir.join("tokens.toml");
    // A fresh one each run; the previous run's is revoked, not piled up.
    eldercare_api::auth::revoke_tokens(&tokens_file, "demo-console")?;
    let token =
        eldercare_api::auth::add_token(&tokens_file, "demo-console", eldercare_api::Role::Viewer)?;
    let auth = eldercare_api::Auth::load(&tokens_file)?;
    let g = rules.global().clone();
    let cfg = Config {
        auth,
        escalation: Default::default(),
        subscribers: Default::default(),
        mqtt_addr: args.mqtt_addr,
        grpc_addr: args.grpc_addr,
        metrics_addr: args.metrics_addr,
        storage,
        retention_days: crate::config::DEFAULT_RETENTION_DAYS,
        rules_file: None,
        rules,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::serve(cfg, Some(tx)));
    let bound = match rx.await {
        Ok(b) => b,
        Err(_) => return server.await?,
    };
    println!(
        "\neldercare demo: {} homes on MQTT {}, gRPC {}, metrics http://{}/metrics",
        args.homes, bound.mqtt, bound.grpc, bound.metrics
    );
    println!(
        "Demo rules (deploy/demo-rules.toml): out of bed {} s at night, inactivity {} s of daytime, \
         offline after a {DEMO_HEARTBEAT_S} s heartbeat + {} s grace; the rest at their defaults.",
        g.out_of_bed.after_s, g.inactivity.after_s, g.offline.grace_s
    );
    println!("Scripted, one episode per rule, each in its own home (seconds from now):");
    let mut by_due: Vec<&&Scripted> = script.iter().collect();
    by_due.sort_by_key(|s| s.at_s + s.alert_after_s);
    for s in by_due {
        println!(
            "  +{:>3} s  home {:<3} {:<15} -> +{:>3} s  {}",
            s.at_s,
            s.home,
            s.what.name(),
            s.at_s + s.alert_after_s,
            s.expect
        );
    }
    if script.len() < SCRIPT.len() {
        println!(
            "  ({} episodes left out: they need --homes 19 or more.)",
            SCRIPT.len() - script.len()
        );
    }
    println!("Every other home stays normal and raises nothing.");
    if still_open > 0 {
        // The alert desk folds a repeat into the open alert of the same
        // kind, so an earlier run's alerts change how this run reads.
        println!(
            "Note: {still_open} alerts of earlier runs in {} are still open; repeats of them show \
             as UPDATED (×2). For a clean rehearsal, pass a new --data-dir.",
            args.data_dir.display()
        );
    }
    println!("Press Ctrl-C to stop.\n");

    // Print alerts over our own gRPC subscription, from now on.
    let grpc = format!("http://{}", bound.grpc);
    let channel = tonic::transport::Endpoint::from_shared(grpc)?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client = pb::alert_service_client::AlertServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    );
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            after_seq: last,
            language: "en".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let t0 = Instant::now();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            print_event(&ev, t0);
        }
    });

    let addr = bound.mqtt.to_string();
    // Kept for the whole run: dropping the sender would stop the simulator.
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let injected: Vec<(usize, Inject)> = script.iter().map(|s| (s.home, s.what)).collect();
        let (addr, homes, stop_rx) = (
            addr.clone(),
            eldercare_sim::without_injected(&homes, &injected),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = eldercare_sim::run(&addr, &homes, INTERVAL, stop_rx).await {
                eprintln!("simulator: {e:#}");
            }
        });
    }
    for s in script {
        let (addr, home, stop_rx) = (addr.clone(), homes[s.home - 1].clone(), stop_rx.clone());
        let (what, lead) = (s.what, Duration::from_secs(s.at_s));
        // Started now: the devices the episode takes over report as usual
        // until it begins.
        tokio::spawn(async move {
            if let Err(e) = eldercare_sim::inject(&addr, &home, what, lead, INTERVAL, stop_rx).await
            {
                eprintln!("injecting {what} into home {}: {e:#}", home.index);
            }
        });
    }
    server.await?
}

fn print_event(ev: &pb::AlertEvent, t0: Instant) {
    let Some(a) = &ev.alert else { return };
    let sev = pb::Severity::try_from(a.severity)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let kind = pb::AlertEventKind::try_from(ev.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("?");
    let at = ev
        .at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let summary = if a.summary_en.is_empty() {
        &a.summary
    } else {
        &a.summary_en
    };
    // What changed, when the summary does not already say it (a cancelled
    // SOS keeps its summary; the note says why it was resolved).
    let mut extra = String::new();
    if !ev.note.is_empty() && !summary.contains(&ev.note) {
        extra.push_str(&format!(" [{}]", ev.note));
    }
    if !a.outcome.is_empty() {
        extra.push_str(&format!(" -> {}", a.outcome));
    }
    println!(
        "{at} +{:<4} #{:<4} {:<8} {:<19} elder {:<6} {:<10} {:<16} {summary}{extra} (×{})",
        format!("{}s", t0.elapsed().as_secs()),
        ev.seq,
        sev,
        a.kind,
        a.elder_id,
        a.device_id,
        kind,
        a.occurrences
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{Body, Location, Motion, Reading, Sleep, Status, Vitals};
    use eldercare_rules::{DeviceProfile, ElderProfile, Engine, Rules};
    use std::collections::HashSet;

    #[test]
    fn demo_rules_shorten_only_the_timers() {
        let r = Rules::parse(DEMO_RULES).unwrap();
        let (g, d) = (r.global(), Rules::defaults().global().clone());
        assert_eq!(g.out_of_bed.after_s, 60);
        assert!(g.out_of_bed.moving_window_s < g.out_of_bed.after_s);
        assert_eq!(g.inactivity.after_s, 90);
        assert_eq!(g.offline.grace_s, 10);
        assert_eq!((&g.vitals, &g.news2, &g.sos), (&d.vitals, &d.news2, &d.sos));
        assert_eq!(
            (&g.fall, &g.geofence, &g.battery),
            (&d.fall, &d.geofence, &d.battery)
        );
    }

    #[test]
    fn script_covers_every_rule_once_in_its_own_home() {
        let homes: HashSet<usize> = SCRIPT.iter().map(|s| s.home).collect();
        assert_eq!(homes.len(), SCRIPT.len());
        assert!(homes.iter().all(|&h| (1..=50).contains(&h)));
        for w in Inject::ALL {
            assert_eq!(SCRIPT.iter().filter(|s| s.what == w).count(), 1, "{w}");
        }
        assert!(SCRIPT.iter().all(|s| s.at_s + s.alert_after_s <= 120));
    }

    /// A simulator JSON reading as the protocol decoder would hand it to
    /// the engine (the simulator only writes valid, in-range fields).
    fn to_reading(device_id: &str, kind: &str, v: &serde_json::Value) -> Reading {
        let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as u32);
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let body = match kind {
            "sleep_sensor" => Body::Sleep(Sleep {
                in_bed: v["in_bed"].as_bool().unwrap(),
                hr: u("hr"),
                rr: u("rr"),
                movement: f("movement"),
            }),
            "vital_band" => Body::Vitals(Vitals {
                hr: u("hr"),
                spo2: u("spo2"),
                rr: u("rr"),
                temp_c: f("temp_c"),
                sys: u("sys"),
                dia: u("dia"),
            }),
            "pir" => Body::Motion(Motion {
                room: v["room"].as_str().unwrap().into(),
                motion: v["motion"].as_bool().unwrap(),
            }),
            "gps_watch" => Body::Location(Location {
                lat: f("lat").unwrap(),
                lon: f("lon").unwrap(),
                accuracy_m: f("accuracy_m"),
            }),
            _ => Body::Status(Status {
                online: v["online"].as_bool(),
                battery_pct: u("battery_pct"),
                ..Default::default()
            }),
        };
        Reading {
            device_id: device_id.into(),
            seq: v["seq"].as_u64(),
            ts_ms: v["ts"].as_i64().unwrap(),
            body,
        }
    }

    /// Normal homes, registered as the demo registers them, judged for a
    /// simulated day and a bit (every hour of the night window and of the
    /// day) under both the default and the demo rules: nothing is raised.
    #[tokio::test]
    async fn normal_homes_raise_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = eldercare_store::SqliteStore::open(dir.path())
            .await
            .unwrap();
        let mut homes = eldercare_sim::homes(4, 1);
        for h in &mut homes {
            h.heartbeat_s = DEMO_HEARTBEAT_S;
        }
        let (elders, devices) = eldercare_sim::registry_csv(&homes);
        use eldercare_store::Store;
        for text in [&elders, &devices] {
            let (_, r) = eldercare_store::import::import(&store, text).await.unwrap();
            assert!(r.refused.is_empty(), "{:?}", r.refused);
        }
        let elders = store.list_elders(None).await.unwrap();
        let devices = store.list_devices(None).await.unwrap();
        for rules in [Rules::defaults(), Rules::parse(DEMO_RULES).unwrap()] {
            // 2026-11-23 12:00 Asia/Shanghai, through the night, to 14:00 the next day.
            let start: i64 = 1_795_406_400_000;
            let mut engine = Engine::new(rules);
            for e in &elders {
                engine.upsert_elder(&ElderProfile::from_elder(e), start);
            }
            for d in &devices {
                engine.upsert_device(&DeviceProfile::from(d), start);
            }
            let mut seq = 0;
            let mut t = start;
            while t < start + 26 * 3_600_000 {
                seq += 1;
                for h in &homes {
                    for d in &h.devices {
                        let v = eldercare_sim::normal_reading(d.kind, h.location, seq, t);
                        let r = to_reading(&d.device_id, d.kind, &v);
                        let out = engine.on_reading(&r, t);
                        assert!(out.is_empty(), "{v} -> {out:?}");
                    }
                }
                let out = engine.tick(t);
                assert!(out.is_empty(), "tick at {t}: {out:?}");
                t += INTERVAL.as_millis() as i64;
            }
        }
    }
}
