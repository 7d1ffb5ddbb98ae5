//! `eldercare`: the server binary. It only wires things: load config,
//! build the parts, spawn them, wait for a signal, drain.
#![forbid(unsafe_code)]

mod alert_path;
mod alerts_cli;
mod backtest;
mod cluster;
mod config;
mod demo;
mod descriptors;
mod visits_cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, StorageArgs};
use eldercare_alerts::AlertDesk;
use eldercare_broker::{Ingest, IngestConfig, ingest::Refusals};
use eldercare_store::postgres::{Maintenance, is_postgres_url, redact_url};
use eldercare_store::{PgOptions, PgStore, SqliteStore, Store};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

#[derive(Parser)]
#[command(
    name = "eldercare",
    version,
    about = "Smart elderly care backend: MQTT intake, rule engine, alerts over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<config::ServeArgs>),
    /// Load registry files (elders, devices, providers, carers, visit
    /// plans; CSV or JSON lines).
    Import {
        #[command(flatten)]
        storage: StorageArgs,
        /// elders.csv, providers.csv, carers.csv, visit_plans.csv, devices.csv;
        /// the header tells which. Each is loaded after the lists it names.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the newest refused messages.
    DeadLetters {
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Start everything on the embedded default with 50 simulated homes and
    /// print alerts as they arrive.
    Demo(demo::DemoArgs),
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Check the alert event log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Watch, list and acknowledge alerts over the gRPC API, as a script
    /// or a shell user (token from --token or ELDERCARE_TOKEN).
    #[command(subcommand)]
    Alerts(alerts_cli::AlertsCmd),
    /// Reports on carers' home visits over the gRPC API (token from
    /// --token or ELDERCARE_TOKEN).
    #[command(subcommand)]
    Visits(visits_cli::VisitsCmd),
    /// A cluster's state, read from its NATS servers.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Replay stored readings through a candidate rule file (and, with
    /// --against, a baseline one) and compare the alerts each would have
    /// raised with those the alert log kept: how a threshold change will
    /// feel before it is made. Read only.
    Backtest(Box<backtest::BacktestArgs>),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Who owns each partition and the desk, how fresh each partition's
    /// snapshot is, and the intake stream's size.
    Status {
        /// NATS servers, comma-separated.
        #[arg(long, env = "ELDERCARE_NATS")]
        nats: String,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain over every alert event and report the
    /// first break (an edited, inserted or deleted event); exits 1 then.
    Verify {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a token for an operator with a role; prints it once and keeps
    /// only its hash. A running server picks it up on SIGHUP.
    Add {
        /// The tokens file [default: <data-dir>/tokens.toml].
        #[arg(long, env = "ELDERCARE_TOKENS_FILE")]
        tokens_file: Option<PathBuf>,
        #[arg(long, env = "ELDERCARE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Who the token belongs to; recorded with every action taken with
        /// it. For a `provider` token: the provider's id in the registry,
        /// which limits it to that provider's carers, elders and report.
        #[arg(long)]
        operator: String,
        /// operator, dispatcher, admin, viewer or provider.
        #[arg(long)]
        role: String,
    },
    /// List who has tokens, and their roles (never the tokens).
    List {
        #[arg(long, env = "ELDERCARE_TOKENS_FILE")]
        tokens_file: Option<PathBuf>,
        #[arg(long, env = "ELDERCARE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Remove every token of an operator; a running server stops accepting
    /// them on SIGHUP.
    Revoke {
        #[arg(long, env = "ELDERCARE_TOKENS_FILE")]
        tokens_file: Option<PathBuf>,
        #[arg(long, env = "ELDERCARE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        operator: String,
    },
}

/// Bad configuration exits with this (EX_USAGE), never a panic.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ELDERCARE_LOG")
                // rumqttd logs every ordinary client disconnect at ERROR;
                // rustls warns of each peer's protocol oddities (gRPC's C
                // core sends an IP address as SNI), which are the peer's
                // business: failed handshakes are logged at debug here.
                .unwrap_or_else(|_| "info,rumqttd=off,rustls=error".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eldercare: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(args) => {
                let cfg = match Config::load(&args) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("eldercare: {e:#}");
                        return Ok(ExitCode::from(EXIT_CONFIG));
                    }
                };
                match serve(cfg, None).await {
                    Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
                        eprintln!("eldercare: {e:#}");
                        Ok(ExitCode::from(EXIT_CONFIG))
                    }
                    r => r.map(|_| ExitCode::SUCCESS),
                }
            }
            Cmd::Import { storage, files } => import(&storage, &files).await,
            Cmd::DeadLetters { storage, limit } => dead_letters(&storage, limit).await,
            Cmd::Demo(args) => demo::run(args).await.map(|_| ExitCode::SUCCESS),
            Cmd::Alerts(cmd) => alerts_cli::run(cmd).await,
            Cmd::Visits(cmd) => visits_cli::run(cmd).await,
            Cmd::Backtest(args) => backtest::run(*args).await,
            Cmd::Cluster(ClusterCmd::Status { nats, json }) => {
                cluster::status(&nats, json).await.map(|_| ExitCode::SUCCESS)
            }
            Cmd::Audit(AuditCmd::Verify { storage }) => {
                let store = open_store(&storage).await?;
                let report = store.verify_chain().await?;
                match report.first_break {
                    None => {
                        println!(
                            "audit: OK, {} events, hash chain intact",
                            report.checked
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Some((seq, why)) => {
                        println!(
                            "audit: BROKEN at seq {seq}: {why} ({} events checked)",
                            report.checked
                        );
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            Cmd::Token(TokenCmd::List {
                tokens_file,
                data_dir,
            }) => {
                let path = tokens_file.unwrap_or_else(|| data_dir.join("tokens.toml"));
                for p in eldercare_api::auth::list_tokens(&path)? {
                    println!("{}\t{}", p.operator_id, p.role.as_str());
                }
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Token(TokenCmd::Revoke {
                tokens_file,
                data_dir,
                operator,
            }) => {
                let path = tokens_file.unwrap_or_else(|| data_dir.join("tokens.toml"));
                let n = eldercare_api::auth::revoke_tokens(&path, &operator)?;
                println!("revoked {n} token(s) of `{operator}`; send SIGHUP to a running server");
                Ok(if n == 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
            Cmd::Token(TokenCmd::Add {
                tokens_file,
                data_dir,
                operator,
                role,
            }) => {
                let Some(role) = eldercare_api::Role::parse(&role) else {
                    eprintln!(
                        "eldercare: unknown role `{role}`; use operator, dispatcher, admin, viewer or provider"
                    );
                    return Ok(ExitCode::from(EXIT_CONFIG));
                };
                let path = tokens_file.unwrap_or_else(|| data_dir.join("tokens.toml"));
                let token = eldercare_api::auth::add_token(&path, &operator, role)?;
                println!("{token}");
                eprintln!(
                    "token for `{operator}` ({}) added to {}; it is shown only now",
                    role.as_str(),
                    path.display()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("eldercare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store the configuration names.
enum Opened {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// PostgreSQL when a database URL is given, else SQLite in the data dir.
/// The URL's password never appears in a message.
async fn open_backend(storage: &StorageArgs, pg: PgOptions) -> anyhow::Result<Opened> {
    if let Some(url) = &storage.database_url {
        if !is_postgres_url(url) {
            anyhow::bail!(
                "--database-url must be a postgres:// or postgresql:// URL, not {}",
                redact_url(url)
            );
        }
        let s = PgStore::connect(url, pg)
            .await
            .with_context(|| format!("opening the store at {}", redact_url(url)))?;
        return Ok(Opened::Postgres(s));
    }
    let s = SqliteStore::open(&storage.data_dir)
        .await
        .with_context(|| format!("opening the store in {}", storage.data_dir.display()))?;
    Ok(Opened::Sqlite(s))
}

/// A configuration problem found while starting the server, which
/// waiting will not mend; it exits with [`EXIT_CONFIG`].
#[derive(Debug)]
struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The server's store. Unlike [`open_backend`], PostgreSQL unreachable at
/// start (connection refused, timed out, name not resolved) does not stop
/// it: the store is returned unprepared, every call fails at once as an
/// outage (alert events and readings are spooled, devices checked against
/// the local copy of the registry), and [`maintain_hourly`] prepares it
/// once the database answers. A URL that does not parse, or a database
/// that answers but refuses us (login, no such database, migrations that
/// do not match), is a configuration error: exit 64 at once.
async fn open_server_backend(storage: &StorageArgs, pg: PgOptions) -> anyhow::Result<Opened> {
    let Some(url) = &storage.database_url else {
        return open_backend(storage, pg).await;
    };
    let redacted = redact_url(url);
    if !is_postgres_url(url) {
        return Err(ConfigError(format!(
            "--database-url must be a postgres:// or postgresql:// URL, not {redacted}"
        ))
        .into());
    }
    let s = PgStore::lazy(url, pg)
        .map_err(|e| ConfigError(format!("--database-url {redacted}: {e}")))?;
    match s.prepare().await {
        Ok(()) => {}
        Err(e) if e.is_config() => {
            return Err(
                ConfigError(format!("PostgreSQL at {redacted} refuses this server: {e}")).into(),
            );
        }
        Err(e) => warn!(
            url = %redacted,
            error = %e,
            "PostgreSQL unreachable at start; serving without it (alerts and readings spooled, devices checked against the local copy of the registry) and connecting in the background."
        ),
    }
    Ok(Opened::Postgres(s))
}

/// The store for one-shot commands (import, dead-letters, audit): these
/// never maintain the readings partitions; the server does.
pub async fn open_store(storage: &StorageArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match open_backend(storage, PgOptions::default()).await? {
        Opened::Sqlite(s) => Arc::new(s),
        Opened::Postgres(s) => Arc::new(s),
    })
}

/// Re-runs the readings maintenance every hour (partitions ahead,
/// retention); it already ran once at start. A failure is retried at the
/// next run: a day's partition exists a week before it is needed, and
/// until then its readings wait in the default partition.
///
/// When the database was unreachable at start, first waits for it
/// (trying every 2 s), prepares the schema and runs the maintenance once.
async fn maintain_hourly(pg: PgStore, shutdown: CancellationToken) {
    if !pg.is_ready() {
        if !pg
            .prepare_when_reachable(std::time::Duration::from_secs(2), &shutdown)
            .await
        {
            return;
        }
        match pg.maintain(chrono::Utc::now()).await {
            Ok(m) => info!(
                layout = ?pg.layout(),
                partitions_created = m.created.len(),
                partitions_dropped = m.dropped.len(),
                "PostgreSQL store ready."
            ),
            Err(e) => warn!(error = %e, "Readings maintenance failed; retrying in an hour."),
        }
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match pg.maintain(chrono::Utc::now()).await {
            Ok(m) if m == Maintenance::default() => debug!("Readings maintenance: nothing to do."),
            Ok(m) => info!(
                created = m.created.len(),
                dropped = m.dropped.len(),
                moved = m.moved,
                expired = m.expired,
                "Readings maintenance done."
            ),
            Err(e) => warn!(error = %e, "Readings maintenance failed; retrying in an hour."),
        }
    }
}

/// Addresses the server actually listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Plain MQTT; None when it is off.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS; None without a certificate.
    pub mqtts: Option<SocketAddr>,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub console: SocketAddr,
}

/// Runs the server until SIGINT/SIGTERM or `stop`. `ready` learns the
/// bound addresses once everything listens.
pub async fn serve(
    cfg: Config,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    // Files that do not load are a configuration error, found before
    // anything else starts. One value serves MQTT and gRPC, so one SIGHUP
    // reloads both.
    let tls = match &cfg.tls {
        Some(files) => Some(
            eldercare_tls::Tls::load(files.clone())
                .map_err(|e| ConfigError(format!("TLS: {e}")))?,
        ),
        None => None,
    };
    // Answer times as a histogram with buckets at the alarm-centre
    // standard's 60 s and 180 s, so "share answered within" is a ratio of
    // two series; other histograms render as summaries.
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("eldercare_alert_answer_seconds".into()),
            &[
                5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0,
            ],
        )
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    match descriptors::raise() {
        Ok(l) => {
            info!(
                soft_before = l.before,
                soft = l.soft,
                hard = l.hard,
                device_sessions = l.device_sessions(),
                "Open-file limit raised to the hard limit; room for about this many device sessions ({} descriptors each).",
                descriptors::PER_SESSION
            );
            metrics::gauge!("eldercare_device_sessions_capacity").set(l.device_sessions() as f64);
        }
        Err(e) => warn!(error = %e, "Could not raise the open-file limit."),
    }
    let shutdown = CancellationToken::new();
    let pg_options = PgOptions {
        retention_days: cfg.retention_days,
        ..PgOptions::default()
    };
    let (database, maintenance_task): (Arc<dyn Store>, _) =
        match open_server_backend(&cfg.storage, pg_options).await? {
            Opened::Sqlite(s) => (Arc::new(s), None),
            Opened::Postgres(pg) => {
                // Before intake starts: today's and the coming week's
                // partitions exist, and expired days are gone. A database
                // lost meanwhile only delays that (readings of a day
                // without its partition wait in the default one).
                if pg.is_ready() {
                    match pg.maintain(chrono::Utc::now()).await {
                        Ok(m) => info!(
                            layout = ?pg.layout(),
                            retention_days = cfg.retention_days,
                            partitions_created = m.created.len(),
                            partitions_dropped = m.dropped.len(),
                            "PostgreSQL store ready."
                        ),
                        Err(e) if e.is_outage() => {
                            warn!(error = %e, "Readings maintenance failed; retrying in an hour.")
                        }
                        Err(e) => {
                            return Err(
                                anyhow::Error::new(e).context("preparing the readings table")
                            );
                        }
                    }
                }
                let task = tokio::spawn(maintain_hourly(pg.clone(), shutdown.clone()));
                (Arc::new(pg), Some(task))
            }
        };
    // A database outage must not stop alerts: writes it refuses go to a
    // bounded spool in the data directory and are written when it is back.
    if cfg.cluster.is_some() && cfg.storage.database_url.is_none() {
        return Err(ConfigError(
            "a cluster member (--nats) needs the cluster's PostgreSQL (--database-url)".into(),
        )
        .into());
    }
    let database_direct = database.clone();
    let spool = eldercare_store::SpoolingStore::open(
        database,
        &cfg.storage.data_dir.join("spool"),
        eldercare_store::spool::SPOOL_READINGS,
    )
    .await
    .context("opening the spool")?;
    // The drain stops with the drain token, after everything else, so a
    // last attempt to write the spool happens at shutdown.
    let drain_stop = CancellationToken::new();
    let drain_task = spool.start_drain(std::time::Duration::from_secs(1), drain_stop.clone());
    let store: Arc<dyn Store> = spool.clone();
    // The pipeline, the desk and the gRPC server on threads of their own
    // (see alert_path.rs).
    let alert_rt = alert_path::AlertRuntime::start().context("starting the alert path")?;
    let alerts = alert_rt.handle();
    let (refusals, dl_task) = Refusals::start(store.clone());
    let (rules_tx, rules_rx) = tokio::sync::watch::channel(cfg.rules.clone());
    let reloader = Arc::new(RulesReloader {
        path: cfg.rules_file.clone(),
        tx: rules_tx,
    });
    let reload_task = tokio::spawn(reload_on_sighup(
        reloader.clone(),
        cfg.auth.clone(),
        tls.clone(),
        shutdown.clone(),
    ));
    let ingest_cfg = |intake_dir: PathBuf, applied: u64| IngestConfig {
        mqtt_addr: cfg.mqtt_addr,
        mqtts: tls.clone().map(|tls| (cfg.mqtts_addr, tls)),
        rules: rules_rx.clone(),
        mqtt: cfg.mqtt.clone(),
        intake_dir,
        durability: cfg.durability,
        applied,
        pipeline: Some(alerts.clone()),
    };
    let listening = || {
        let plain = cfg.mqtt_addr.map_or("off".to_string(), |a| a.to_string());
        match &tls {
            Some(_) => format!(
                "starting MQTT on {plain} and MQTT over TLS on {}",
                cfg.mqtts_addr
            ),
            None => format!("starting MQTT on {plain}"),
        }
    };
    let mut member_begin = None;
    let mut member_closer = None;
    let (desk, desk_task, ingest) = match &cfg.cluster {
        Some(cc) => {
            let m = cluster::start_member(
                cc,
                cluster::MemberParts {
                    direct: database_direct,
                    store: store.clone(),
                    refusals,
                    rules: rules_rx.clone(),
                    escalation: cfg.escalation,
                    ingest: ingest_cfg(cfg.storage.data_dir.join("intake"), 0),
                },
                shutdown.clone(),
            )
            .await
            .with_context(listening)?;
            member_begin = Some(m.begin);
            member_closer = Some(m.closer);
            (m.desk, m.task, m.ingest)
        }
        None => {
            // The intake log and the rule engine's checkpoint; the desk
            // reports which logged messages' decisions it has kept.
            let intake_dir = cfg.storage.data_dir.join("intake");
            std::fs::create_dir_all(&intake_dir)
                .with_context(|| format!("creating {}", intake_dir.display()))?;
            let (applied, applied_pos) = eldercare_broker::pipeline::applied_mark(&intake_dir)
                .with_context(|| format!("opening the applied mark in {}", intake_dir.display()))?;
            let desk_cfg = eldercare_alerts::DeskConfig {
                escalation: cfg.escalation,
                applied: Some(applied),
                ..Default::default()
            };
            let desk_store = store.clone();
            let (desk, desk_task) = alerts
                .spawn(async move { AlertDesk::start_with(desk_store, desk_cfg).await })
                .await
                .context("starting the alert desk")??;
            let ingest = Ingest::start(
                ingest_cfg(intake_dir, applied_pos),
                store.clone(),
                desk.clone(),
                refusals,
                shutdown.clone(),
            )
            .await
            .with_context(listening)?;
            (desk, desk_task, ingest)
        }
    };
    if cfg.auth.is_empty() {
        warn!(
            "No API tokens: every gRPC call will be refused. Add one with `eldercare token add`, then send SIGHUP."
        );
    }
    let registry = eldercare_api::RegistryHandles {
        store: store.clone(),
        sessions: Arc::new(GuardSessions(ingest.sessions(), member_closer)),
        changes: ingest.registry_changes(),
    };
    let check_ins = ingest.visit_intake();
    // One set of services for gRPC and the console's JSON API.
    let mut services = eldercare_api::Services::new(
        desk.clone(),
        cfg.auth.clone(),
        cfg.subscribers,
        registry,
        reloader,
        shutdown.clone(),
    );
    if let Some(c) = check_ins {
        services = services.with_check_ins(Arc::new(IntakeCheckIns(c)), store.clone());
    }
    // Both bound on the alert path, so their sockets are served there.
    let (grpc_addr, grpc) = {
        let (addr, services, tls, sd) = (
            cfg.grpc_addr,
            services.clone(),
            tls.clone(),
            shutdown.clone(),
        );
        alerts
            .spawn(async move { eldercare_api::serve(addr, services, tls, sd).await })
            .await
            .context("starting gRPC")?
            .with_context(|| format!("binding gRPC on {}", cfg.grpc_addr))?
    };
    let (console_addr, console) = {
        let (addr, sd) = (cfg.http_addr, shutdown.clone());
        alerts
            .spawn(async move { eldercare_console::serve(addr, services, sd).await })
            .await
            .context("starting the console")?
            .with_context(|| format!("binding the console on {}", cfg.http_addr))?
    };
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics_addr)
        .await
        .with_context(|| format!("binding metrics on {}", cfg.metrics_addr))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let p = prom.clone();
            async move { p.render() }
        }),
    );
    let sd = shutdown.clone();
    let metrics_task = tokio::spawn(async move {
        let _ = axum::serve(metrics_listener, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
    });
    let grpc_task = alerts.spawn(grpc);
    let console_task = alerts.spawn(console);
    let bound = Bound {
        mqtt: ingest.mqtt_addr,
        mqtts: ingest.mqtts_addr,
        grpc: grpc_addr,
        metrics: metrics_addr,
        console: console_addr,
    };
    let mqtt = bound.mqtt.map_or("off".to_string(), |a| a.to_string());
    // mqtts= only when it listens: a line without it reads as before.
    let mqtts = bound.mqtts.map_or(String::new(), |a| format!(" mqtts={a}"));
    info!(%mqtt, mqtts = ?bound.mqtts, grpc = %bound.grpc, grpc_tls = tls.is_some(),
        metrics = %bound.metrics, console = %bound.console, "eldercare is ready.");
    println!(
        "ready mqtt={mqtt}{mqtts} grpc={} metrics={} console=http://{}/",
        bound.grpc, bound.metrics, bound.console
    );
    if let Some(tx) = ready {
        let _ = tx.send(bound);
    }
    if let Some(begin) = member_begin {
        let _ = begin.send(());
    }

    wait_for_signal().await;
    info!("Shutting down: intake stops, buffered telemetry is flushed.");
    shutdown.cancel();
    let drain = async {
        ingest.join().await;
        debug!("Drain: intake stopped.");
        // Subscriptions were ended with UNAVAILABLE; a client that never
        // reads or closes must not hold the shutdown: give them a moment,
        // then drop their connections.
        let grpc_abort = grpc_task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), grpc_task)
            .await
            .is_err()
        {
            warn!("gRPC clients did not close within 2 s; closing their connections.");
            grpc_abort.abort();
        }
        debug!("Drain: gRPC stopped.");
        // Its live feeds ended with the subscriptions.
        let console_abort = console_task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), console_task)
            .await
            .is_err()
        {
            console_abort.abort();
        }
        let _ = metrics_task.await;
        desk.stop().await;
        drop(desk);
        let _ = desk_task.await;
        debug!("Drain: alert desk stopped.");
        let _ = dl_task.await;
        let _ = reload_task.await;
        if let Some(t) = maintenance_task {
            let _ = t.await;
        }
        drain_stop.cancel();
        let _ = drain_task.await;
        spool.drain().await;
        let (events, readings) = spool.spooled();
        if events + readings > 0 {
            warn!(
                events,
                readings,
                "The database is still unreachable; the spool stays on disk for the next start."
            );
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        error!("Drain did not finish within 10 s; exiting anyway.");
    }
    drop(alert_rt);
    info!("Stopped.");
    Ok(())
}

/// The visit API's way to keep a carer's check-in: the MQTT intake's log,
/// through this adapter (the API stays free of MQTT).
struct IntakeCheckIns(eldercare_broker::api_visits::VisitIntake);

#[tonic::async_trait]
impl eldercare_api::visits::CheckIns for IntakeCheckIns {
    async fn append(
        &self,
        elder_id: &str,
        carer_id: &str,
        action: eldercare_model::VisitAction,
        at: eldercare_model::EpochMs,
    ) -> Result<(), String> {
        let check = eldercare_broker::api_visits::ApiCheck {
            carer: carer_id.to_string(),
            action,
            ts: at,
        };
        self.0
            .append(elder_id, &check)
            .await
            .map_err(|_| "the intake log is closed (shutting down)".to_string())
    }
}

/// The registry API's way to close a device's MQTT sessions: the broker's
/// guard tracks and closes them, and this adapter lets the API use it
/// while neither crate depends on the other (the MQTT intake stays free of
/// gRPC, and the API free of MQTT).
/// On a cluster member, every other member is asked to close them too.
struct GuardSessions(
    eldercare_broker::guard::Sessions,
    Option<eldercare_cluster::sessions::Closer>,
);

impl eldercare_api::DeviceSessions for GuardSessions {
    fn disconnect(&self, device_id: &str) -> usize {
        if let Some(c) = &self.1 {
            c.close_everywhere(device_id);
        }
        self.0.disconnect(device_id)
    }
}

/// Re-reads the rule file into the running rule engine, for SIGHUP and
/// for AdminService.ReloadRules alike.
struct RulesReloader {
    path: Option<PathBuf>,
    tx: tokio::sync::watch::Sender<eldercare_rules::Rules>,
}

impl eldercare_api::admin::RulesReload for RulesReloader {
    fn reload(&self) -> Result<(String, usize), eldercare_api::admin::ReloadError> {
        use eldercare_api::admin::ReloadError;
        let p = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        match eldercare_rules::Rules::load(p) {
            Ok(r) => {
                let n = r.overridden();
                info!(file = %p.display(), "Rule file reloaded.");
                // stdout may be closed (a supervisor that only wanted the
                // ready line): a failed write is not an error here.
                let _ = writeln!(std::io::stdout(), "rules reloaded from {}", p.display());
                let _ = self.tx.send(r);
                Ok((p.display().to_string(), n))
            }
            Err(e) => {
                error!(file = %p.display(), error = %e, "Rule file refused; the running rules stay.");
                let _ = writeln!(std::io::stdout(), "rules refused: {e}");
                Err(ReloadError::Refused(e.to_string()))
            }
        }
    }
}

/// SIGHUP re-reads the tokens file, the rule file and the TLS files; a
/// bad file is refused (with the key or file and why) and what runs stays.
async fn reload_on_sighup(
    rules: Arc<RulesReloader>,
    auth: eldercare_api::Auth,
    tls: Option<eldercare_tls::Tls>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use eldercare_api::admin::RulesReload;
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "Cannot listen for SIGHUP; rules will not reload.");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {}
            }
            match auth.reload() {
                Ok(n) => {
                    info!(tokens = n, "SIGHUP: tokens file reloaded.");
                    let _ = writeln!(std::io::stdout(), "tokens reloaded ({n})");
                }
                Err(e) => {
                    error!(error = %e, "SIGHUP: tokens file refused; the running tokens stay.")
                }
            }
            if let Err(eldercare_api::admin::ReloadError::NoFile) = rules.reload() {
                info!("SIGHUP: no rule file configured; nothing to reload.");
            }
            if let Some(tls) = &tls {
                // Connections already up keep their session; new ones get
                // what was read now.
                match tls.reload() {
                    Ok(()) => {
                        info!(cert = %tls.files().cert.display(), "SIGHUP: TLS certificate reloaded.");
                        let _ = writeln!(std::io::stdout(), "tls reloaded");
                    }
                    Err(e) => {
                        error!(error = %e, "SIGHUP: TLS files refused; the running certificate stays.");
                        let _ = writeln!(std::io::stdout(), "tls refused: {e}");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (rules, auth, tls);
        shutdown.cancelled().await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn import(storage: &StorageArgs, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let store = open_store(storage).await?;
    let mut texts = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let kind =
            eldercare_store::import::detect(&text).with_context(|| f.display().to_string())?;
        texts.push((f, kind, text));
    }
    // Elders and providers first, so devices, carers and plans can name them.
    texts.sort_by_key(|(_, k, _)| k.load_order());
    let mut refused = 0;
    for (f, _, text) in texts {
        let (kind, r) = eldercare_store::import::import(store.as_ref(), &text).await?;
        for (line, reason) in &r.refused {
            eprintln!("{}:{line}: refused: {reason}", f.display());
        }
        for (dev, secret) in &r.generated_secrets {
            println!("generated secret for device {dev}: {secret}   (shown once; not stored)");
        }
        // This process cannot reach a running server's MQTT sessions.
        for dev in &r.rekeyed {
            eprintln!(
                "device {dev}: new secret; a session it already has open stays until it reconnects (import through the API, or RotateDeviceSecret, closes it at once)"
            );
        }
        println!(
            "{}: {:?}: {} imported, {} updated, {} refused",
            f.display(),
            kind,
            r.imported,
            r.updated,
            r.refused.len()
        );
        refused += r.refused.len();
    }
    Ok(if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn dead_letters(storage: &StorageArgs, limit: u32) -> anyhow::Result<ExitCode> {
    let store = open_store(storage).await?;
    for d in store.dead_letters(limit).await? {
        let at = chrono::DateTime::from_timestamp_millis(d.received_at).unwrap_or_default();
        println!(
            "{}  {:<18} {}  sender={}  {}",
            at.format("%Y-%m-%d %H:%M:%S"),
            d.reason,
            d.topic,
            d.sender.as_deref().unwrap_or("-"),
            d.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
