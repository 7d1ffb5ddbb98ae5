//! `eldercare demo`: the whole system on the embedded default, driven by
//! 50 simulated homes with a few scripted emergencies, and every alert
//! printed as it arrives over the demo's own gRPC subscription.
use crate::config::{Config, StorageArgs};
use eldercare_proto::v1 as pb;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory of the demo's store.
    #[arg(long, default_value = "./data/demo")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 50)]
    pub homes: usize,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_addr: std::net::SocketAddr,
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: std::net::SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let storage = StorageArgs {
        data_dir: args.data_dir.clone(),
        database_url: None,
    };
    let homes = eldercare_sim::homes(args.homes, 1);
    // Register the homes, and note where the event log stands so only
    // this run's alerts are printed.
    let last = {
        let store = crate::open_store(&storage).await?;
        let (elders, devices) = eldercare_sim::registry_csv(&homes);
        eldercare_store::import::import(store.as_ref(), &elders).await?;
        eldercare_store::import::import(store.as_ref(), &devices).await?;
        store.last_seq().await?
    };
    let cfg = Config {
        mqtt_addr: args.mqtt_addr,
        grpc_addr: args.grpc_addr,
        metrics_addr: args.metrics_addr,
        storage,
        rules_file: None,
        rules: eldercare_rules::Rules::defaults(),
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
        "Scripted: SOS in home 3 at ~3 s, a fall in home 17 at ~6 s, tachycardia in home 8 (alert after 60 s of high heart rate)."
    );
    println!("Press Ctrl-C to stop.\n");

    // Print alerts over our own gRPC subscription, from now on.
    let grpc = format!("http://{}", bound.grpc);
    let mut client = pb::alert_service_client::AlertServiceClient::connect(grpc).await?;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            after_seq: last,
            ..Default::default()
        })
        .await?
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            print_event(&ev);
        }
    });

    let addr = bound.mqtt.to_string();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let injected = [(8, eldercare_sim::Inject::Tachycardia)];
        let (addr, homes) = (
            addr.clone(),
            eldercare_sim::without_injected(&homes, &injected),
        );
        tokio::spawn(async move {
            if let Err(e) = eldercare_sim::run(&addr, &homes, Duration::from_secs(5), stop_rx).await
            {
                eprintln!("simulator: {e}");
            }
        });
    }
    let script = [
        (0u64, 8usize, eldercare_sim::Inject::Tachycardia),
        (3, 3, eldercare_sim::Inject::Sos),
        (6, 17, eldercare_sim::Inject::Fall),
    ];
    for (delay, home, what) in script {
        if let Some(h) = homes.get(home - 1).cloned() {
            let addr = addr.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(delay)).await;
                if let Err(e) = eldercare_sim::inject(&addr, &h, what).await {
                    eprintln!("injection failed: {e}");
                }
            });
        }
    }
    server.await?
}

fn print_event(ev: &pb::AlertEvent) {
    let Some(a) = &ev.alert else { return };
    let sev = pb::Severity::try_from(a.severity)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let state = pb::AlertState::try_from(a.state)
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
    println!(
        "{at}  #{:<4} {:<8} {:<20} elder {:<7} {:<12} {:<18} {} (×{})",
        ev.seq, sev, a.kind, a.elder_id, a.device_id, kind, a.summary, a.occurrences
    );
    let _ = state;
}
