//! `eldercare demo`: the whole system on the embedded default, driven by
//! 50 simulated homes with one scripted episode for every rule of the
//! engine, and every alert printed as it arrives over the demo's own gRPC
//! subscription. Carers of one provider visit four more homes, each
//! visit scripted to show what a supervisor sees of it ([`visits`]).
//! Homes without an episode or a visit raise nothing.
mod visits;

use crate::config::{Config, StorageArgs};
use anyhow::Context;
use eldercare_proto::v1 as pb;
use eldercare_sim::Inject;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The demo's rules: the defaults, with the timer rules shortened so that
/// every rule fires within four minutes. Compiled in, so the demo runs
/// from any directory.
const DEMO_RULES: &str = include_str!("../../../deploy/demo-rules.toml");
/// Heartbeat interval of the demo's devices (seconds): with the demo
/// rules' grace, a silent device is reported within half a minute
/// instead of six.
const DEMO_HEARTBEAT_S: u32 = 20;
/// Seed of the demo's homes: their devices' secrets, their residents'
/// days and the carers' visits.
const SEED: u64 = 1;

/// One scripted episode: when it starts (seconds after the homes come
/// online), where, and how long after its start its alert is due under
/// the demo rules.
struct Scripted {
    at_s: u64,
    home: usize,
    what: Inject,
    expect: &'static str,
}

/// Safe radius of the demo's wandering home: a tight zone, as a family
/// sets for an elder with dementia, so the walk leaves it in under four minutes.
const WANDERING_RADIUS_M: f64 = 150.0;

/// Seconds from an episode's start until its alert is due under `rules`.
fn due_after_s(s: &Scripted, rules: &eldercare_rules::RuleConfig) -> f64 {
    let mut home = eldercare_sim::homes(1, 1).remove(0);
    if s.what == Inject::Wandering {
        home.safe_radius_m = WANDERING_RADIUS_M;
    }
    home.heartbeat_s = DEMO_HEARTBEAT_S;
    let sim =
        eldercare_sim::life::HomeSim::new(&home, 1, rules, Default::default(), 0, &[(s.what, 0)]);
    sim.truths()[0].due_ms as f64 / 1000.0
}

const fn ep(at_s: u64, home: usize, what: Inject, expect: &'static str) -> Scripted {
    Scripted {
        at_s,
        home,
        what,
        expect,
    }
}

/// Every rule once, each in its own home. The slow ones start first so
/// that every alert is in within about four minutes. Timer episodes begin
/// with 5 s asleep in bed before the person gets up.
const SCRIPT: [Scripted; 16] = [
    ep(
        36,
        8,
        Inject::Tachycardia,
        "vital_out_of_range HIGH: pulse 150 for 60 s",
    ),
    ep(3, 3, Inject::Sos, "sos CRITICAL"),
    ep(6, 17, Inject::Fall, "fall CRITICAL, nothing moves after it"),
    ep(
        9,
        12,
        Inject::Inactivity,
        "inactivity HIGH: no movement for 90 s of daytime",
    ),
    ep(
        12,
        5,
        Inject::OutOfBed,
        "out_of_bed_too_long HIGH: out of bed 60 s at night",
    ),
    ep(
        15,
        6,
        Inject::BathroomFall,
        "out_of_bed_too_long CRITICAL: last seen in the bathroom",
    ),
    ep(
        18,
        4,
        Inject::SosCancel,
        "sos CRITICAL, resolved as a false alarm 8 s later",
    ),
    ep(
        21,
        18,
        Inject::FallUp,
        "fall CRITICAL, updated 20 s later: appears to be up",
    ),
    ep(
        24,
        9,
        Inject::Bradycardia,
        "vital_out_of_range HIGH: pulse 35 for 60 s",
    ),
    ep(
        27,
        10,
        Inject::Hypoxia,
        "vital_out_of_range HIGH: SpO2 88 % for 60 s",
    ),
    ep(
        30,
        11,
        Inject::Fever,
        "vital_out_of_range HIGH: temperature 39.6 °C for 60 s",
    ),
    ep(
        33,
        13,
        Inject::NoBreathing,
        "no_breathing CRITICAL: no breathing in bed for 20 s",
    ),
    ep(
        0,
        14,
        Inject::Wandering,
        "geofence_exit CRITICAL: elder with dementia leaves at night",
    ),
    ep(
        39,
        15,
        Inject::DeviceOffline,
        "device_offline LOW: the GPS watch",
    ),
    ep(
        42,
        16,
        Inject::HomeOffline,
        "home_offline LOW: all 9 devices (power cut)",
    ),
    ep(
        45,
        19,
        Inject::LowBattery,
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
    /// The hotline console, for a browser (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rules = eldercare_rules::Rules::parse(DEMO_RULES).context("deploy/demo-rules.toml")?;
    let storage = StorageArgs {
        data_dir: args.data_dir.clone(),
        database_url: None,
    };
    let script: Vec<&Scripted> = SCRIPT.iter().filter(|s| s.home <= args.homes).collect();
    let visits = visits::in_fleet(args.homes);
    let mut homes = eldercare_sim::homes(args.homes, SEED);
    visits::stage(&mut homes, &visits, eldercare_sim::drive::now_ms());
    for h in &mut homes {
        h.heartbeat_s = DEMO_HEARTBEAT_S;
    }
    for s in &script {
        if s.what == Inject::Wandering {
            homes[s.home - 1].safe_radius_m = WANDERING_RADIUS_M;
        }
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
    // The simulator registers its homes (and stages those with an
    // episode) through RegistryService, as an ops engineer's would.
    eldercare_api::auth::revoke_tokens(&tokens_file, "demo-simulator")?;
    let admin =
        eldercare_api::auth::add_token(&tokens_file, "demo-simulator", eldercare_api::Role::Admin)?;
    // A newcomer answers the demo's alerts in the console as this operator.
    eldercare_api::auth::revoke_tokens(&tokens_file, "demo-operator")?;
    let operator = eldercare_api::auth::add_token(
        &tokens_file,
        "demo-operator",
        eldercare_api::Role::Operator,
    )?;
    let auth = eldercare_api::Auth::load(&tokens_file)?;
    let g = rules.global().clone();
    let cfg = Config {
        auth,
        escalation: Default::default(),
        subscribers: Default::default(),
        mqtt_addr: Some(args.mqtt_addr),
        // The demo runs on loopback without TLS.
        mqtts_addr: ([127, 0, 0, 1], 0).into(),
        tls: None,
        grpc_addr: args.grpc_addr,
        metrics_addr: args.metrics_addr,
        http_addr: args.http_addr,
        storage,
        retention_days: crate::config::DEFAULT_RETENTION_DAYS,
        rules_file: None,
        rules,
        mqtt: Default::default(),
        durability: Default::default(),
        cluster: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::serve(cfg, Some(tx)));
    let bound = match rx.await {
        Ok(b) => b,
        Err(_) => return server.await?,
    };
    // The demo's configuration always opens plain MQTT.
    let mqtt = bound.mqtt.context("the demo's MQTT listener is off")?;
    println!(
        "\neldercare demo: {} homes on MQTT {}, gRPC {}, metrics http://{}/metrics",
        args.homes, mqtt, bound.grpc, bound.metrics
    );
    println!(
        "Hotline console: http://{}/  (sign in with the demo operator's token: {operator})",
        bound.console
    );
    println!(
        "Demo rules (deploy/demo-rules.toml): out of bed {} s at night, inactivity {} s of daytime, \
         offline after a {DEMO_HEARTBEAT_S} s heartbeat + {} s grace; the rest at their defaults.",
        g.out_of_bed.after_s, g.inactivity.after_s, g.offline.grace_s
    );
    println!("Scripted, one episode per rule, each in its own home (seconds from now):");
    let mut by_due: Vec<(u64, &&Scripted)> = script
        .iter()
        .map(|s| (s.at_s + due_after_s(s, &g).ceil() as u64, s))
        .collect();
    by_due.sort_by_key(|(due, _)| *due);
    for (due, s) in by_due {
        println!(
            "  +{:>3} s  home {:<3} {:<15} -> +{:>3} s  {}",
            s.at_s,
            s.home,
            s.what.name(),
            due,
            s.expect
        );
    }
    if script.len() < SCRIPT.len() {
        println!(
            "  ({} episodes left out: they need --homes 19 or more.)",
            SCRIPT.len() - script.len()
        );
    }
    let visits_due = visits::latest_due(&homes, &visits, &g, SEED, eldercare_sim::drive::now_ms())
        .context("the demo's carers' visits")?;
    visits::print(&visits, &visits_due);
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
    let (channel, bearer) =
        eldercare_sim::drive::authorized(&format!("http://{}", bound.grpc), &token).await?;
    let mut client =
        pb::alert_service_client::AlertServiceClient::with_interceptor(channel, bearer);
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

    // The homes live their day; the episodes play as scripted.
    let sim = eldercare_sim::drive::Config {
        mode: eldercare_sim::drive::Mode::Run,
        homes,
        seed: SEED,
        mqtt_addr: mqtt.to_string(),
        grpc_addr: format!("http://{}", bound.grpc),
        admin_token: Some(admin),
        token: None,
        register: true,
        duration: Duration::from_secs(7 * 24 * 3600),
        rate: None,
        rules: (*g).clone(),
        injections: script
            .iter()
            .map(|s| (s.at_s as f64, s.home, s.what))
            .collect(),
        result: None,
        progress: false,
        carers: visits::options(&visits),
    };
    tokio::spawn(async move {
        if let Err(e) = eldercare_sim::drive::drive(sim).await {
            eprintln!("simulator: {e:#}");
        }
    });
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
    use eldercare_rules::Rules;
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
        // Carers' visits: judged within seconds, routed and flagged as
        // by default.
        let (v, dv) = (&g.visits, &d.visits);
        assert_eq!((v.early_s, v.late_max_s, v.margin_s), (60, 90, 10));
        assert_eq!(v.max_visit_s, 180);
        assert_eq!(
            (v.short_pct, v.well_within_s, v.follow_up),
            (dv.short_pct, dv.well_within_s, dv.follow_up)
        );
        assert_eq!(
            (&v.entrance_rooms, &v.bedroom_rooms),
            (&dv.entrance_rooms, &dv.bedroom_rooms)
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
        let rules = Rules::parse(DEMO_RULES).unwrap();
        for s in &SCRIPT {
            let due = s.at_s as f64 + due_after_s(s, rules.global());
            assert!(due <= 240.0, "{}: due at {due} s", s.what);
        }
    }
}
