//! Wiring the intake: the embedded broker, the MQTT front end (guard),
//! the intake log between them and the ingest pipeline
//! ([`crate::pipeline`]), and the task that runs the pipeline: records,
//! timer ticks, registry changes, rule reloads and checkpoints, one at a
//! time.
use crate::guard::{Guard, GuardConfig};
use crate::links::Router;
use crate::live::Sessions;
use crate::pipeline::Pipeline;
use eldercare_alerts::AlertDesk;
use eldercare_intake::{Durability, FileJournal, Intake, IntakeConfig, Record};
use eldercare_model::{AlertEvent, AlertEventKind, AlertKind, EpochMs, RegistryChange};
use eldercare_rules::Rules;
use eldercare_store::Store;
use rumqttd::RouterConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the rule engine's timers run: a timer alert (offline, out
/// of bed, inactivity) is raised at most this long after it is due. A
/// tick only compares each elder's next due time, so ten a second cost
/// about a millisecond for 100,000 elders.
const TICK: Duration = Duration::from_millis(100);
/// How often the engine's copy of the registry is refreshed, so devices
/// imported while running are watched even before they first speak.
const REGISTRY_REFRESH: Duration = Duration::from_secs(30);
/// Durable records on their way from the intake log to the pipeline. Kept
/// small: messages queue in the log's lanes instead, where an SOS goes
/// ahead of telemetry.
const RECORDS_QUEUE: usize = 1024;
/// How often the rule engine's state is checkpointed: a restart after a
/// crash replays about this much of the intake log.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Registry changes from the API waiting for the ingest loop; a full queue
/// makes the API call wait, never drops a deletion.
const REGISTRY_CHANGES: usize = 1024;

#[derive(Clone)]
pub struct IngestConfig {
    /// Public MQTT listener for devices, plain TCP; `None`: none.
    pub mqtt_addr: Option<SocketAddr>,
    /// Public MQTT listener over TLS, and its certificate.
    pub mqtts: Option<(SocketAddr, eldercare_tls::Tls)>,
    /// The rule settings; a new value is applied without losing state.
    pub rules: watch::Receiver<Rules>,
    /// Limits and timers of the MQTT listener.
    pub mqtt: crate::MqttSettings,
    /// Where the intake log and the rule engine's checkpoint live.
    pub intake_dir: PathBuf,
    /// Whether an acknowledged message is fsynced first.
    pub durability: Durability,
    /// The alert desk's applied mark as the last run left it (see
    /// [`crate::pipeline::applied_mark`]).
    pub applied: u64,
    /// Where the pipeline's task runs: a runtime of its own keeps an SOS
    /// from queueing behind thousands of connection tasks. `None`: the
    /// current runtime.
    pub pipeline: Option<tokio::runtime::Handle>,
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// The dead-letter writer lives in [`crate::refusals`]; re-exported here
/// for the path the server has always used.
pub use crate::refusals::Refusals;

/// The running intake: broker, guard and ingest loop.
pub struct Ingest {
    pub mqtt_addr: Option<SocketAddr>,
    pub mqtts_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: Sessions,
    changes: mpsc::Sender<RegistryChange>,
    /// API check-ins into the intake log (on a cluster member, the
    /// intake stream, under the elder's partition).
    visits: Option<crate::api_visits::VisitIntake>,
}

impl Ingest {
    /// Starts the broker, the guard on `cfg.mqtt_addr` and `cfg.mqtts`,
    /// and the ingest loop.
    pub async fn start(
        cfg: IngestConfig,
        store: Arc<dyn Store>,
        desk: AlertDesk,
        refusals: Refusals,
        shutdown: CancellationToken,
    ) -> std::io::Result<Ingest> {
        let mut rules = cfg.rules.clone();
        let (writer, writer_task) = crate::TelemetryWriter::start(store.clone());
        let journal = FileJournal::open(&cfg.intake_dir.join("log"), cfg.durability)?;
        let mut state = Pipeline::new(
            store.clone(),
            Arc::new(desk.clone()),
            refusals.clone(),
            rules.borrow_and_update().clone(),
            writer,
            cfg.intake_dir.clone(),
        );
        // Before any device is let in: what the last run acknowledged
        // and did not finish takes effect first.
        state.recover(&journal, cfg.applied).await?;
        let (records_tx, mut records) = mpsc::channel::<Record>(RECORDS_QUEUE);
        let (intake, appender) =
            Intake::start(Box::new(journal), IntakeConfig::default(), records_tx)?;
        let visits = crate::api_visits::VisitIntake::new(appender.clone());
        let front = Front::start(
            &cfg,
            store,
            appender.clone(),
            refusals,
            desk.live(),
            &shutdown,
        )
        .await?;
        let Front {
            mqtt_addr,
            mqtts_addr,
            mut tasks,
            sessions,
        } = front;
        let (changes, mut changes_rx) = mpsc::channel::<RegistryChange>(REGISTRY_CHANGES);
        let pipeline_rt = cfg
            .pipeline
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        tasks.push(pipeline_rt.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut refresh = tokio::time::interval(REGISTRY_REFRESH);
            refresh.tick().await;
            let mut save = tokio::time::interval(CHECKPOINT_EVERY);
            save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            save.tick().await;
            let mut rules_open = true;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => state.tick().await,
                    _ = refresh.tick() => state.refresh_registry().await,
                    _ = save.tick() => if let Some(upto) = state.checkpoint().await {
                        intake.release(upto);
                    },
                    // Never closes: `Ingest` keeps a sender.
                    Some(c) = changes_rx.recv() => state.registry_change(c).await,
                    Some(rec) = records.recv() => state.handle(rec).await,
                    r = rules.changed(), if rules_open => match r {
                        Ok(()) => {
                            let new = rules.borrow_and_update().clone();
                            info!(overridden = new.overridden(), "Rules reloaded.");
                            state.engine.set_rules(new);
                        }
                        Err(_) => rules_open = false,
                    },
                }
            }
            // The guard has stopped appending: the log writes what is
            // queued, and the pipeline takes every durable record still in
            // flight before its last checkpoint.
            drop(appender);
            while let Ok(Some(rec)) =
                tokio::time::timeout(Duration::from_millis(200), records.recv()).await
            {
                state.handle(rec).await;
            }
            // Whatever the log still writes now is replayed at the next
            // start; the writer thread must not wait for this task.
            drop(records);
            let checkpointed = state.final_checkpoint().await;
            let stored = state.writer.stored_cell();
            // Dropping the pipeline drops the writer's handle: it writes
            // what is queued and ends.
            drop(state);
            let _ = writer_task.await;
            if let Some(p) = checkpointed {
                intake.release(p.min(stored.load(std::sync::atomic::Ordering::Acquire)));
            }
            let _ = tokio::task::spawn_blocking(move || intake.close()).await;
            info!("Ingest stopped; telemetry flushed.");
        }));
        Ok(Ingest {
            mqtt_addr,
            mqtts_addr,
            tasks,
            sessions,
            changes,
            visits: Some(visits),
        })
    }

    /// A cluster member's intake: the same MQTT front end, appending each
    /// device message to `journal` (the cluster's replicated log, which
    /// acknowledges once replicated); no local pipeline: the partitions'
    /// owners judge what the log holds. Registry changes from the API go
    /// to `changes`, for the cluster to hand to every partition.
    pub async fn start_member(
        cfg: IngestConfig,
        journal: Box<dyn eldercare_intake::Journal>,
        store: Arc<dyn Store>,
        desk_live: broadcast::Receiver<AlertEvent>,
        refusals: Refusals,
        changes: mpsc::Sender<RegistryChange>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Ingest> {
        // The log's records are judged by the partitions' owners, which
        // read them back from the cluster; none are handed over here.
        let (records_tx, _) = mpsc::channel::<Record>(1);
        let (intake, appender) = Intake::start(journal, IntakeConfig::default(), records_tx)?;
        let visits = crate::api_visits::VisitIntake::new(appender.clone());
        let Front {
            mqtt_addr,
            mqtts_addr,
            mut tasks,
            sessions,
        } = Front::start(
            &cfg,
            store,
            appender.clone(),
            refusals,
            desk_live,
            &shutdown,
        )
        .await?;
        tasks.push(tokio::spawn(async move {
            shutdown.cancelled().await;
            // The guard stops appending; the log sends what is queued.
            drop(appender);
            let _ = tokio::task::spawn_blocking(move || intake.close()).await;
        }));
        Ok(Ingest {
            mqtt_addr,
            mqtts_addr,
            tasks,
            sessions,
            changes,
            visits: Some(visits),
        })
    }

    /// The live MQTT sessions per device, for the registry API to close.
    pub fn sessions(&self) -> Sessions {
        self.sessions.clone()
    }

    /// Where the registry API reports changes, so the rule engine applies
    /// them at once (deletions above all, which its periodic refresh never
    /// sees).
    pub fn registry_changes(&self) -> mpsc::Sender<RegistryChange> {
        self.changes.clone()
    }

    /// Where the API writes carers' check-ins: the intake log, which the
    /// rule engine (on a cluster, the elder's partition's owner) judges.
    pub fn visit_intake(&self) -> Option<crate::api_visits::VisitIntake> {
        self.visits.clone()
    }

    /// Waits for the guard and ingest loop to finish after shutdown.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Tells a device that pressed SOS or detected a fall that help is coming.
fn alert_acks(
    mut live: broadcast::Receiver<AlertEvent>,
    mut cmd_tx: rumqttd::local::LinkTx,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = live.recv() => match r {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
            };
            if ev.kind == AlertEventKind::Acknowledged
                && matches!(ev.alert.kind, AlertKind::Sos | AlertKind::Fall)
            {
                let topic = format!("eldercare/v1/{}/cmd", ev.alert.device_id);
                let payload = serde_json::json!({"type": "alert_ack", "alert_id": ev.alert.id, "ts": now_ms()});
                if let Err(e) = cmd_tx.publish(topic, payload.to_string().into_bytes()) {
                    warn!(error = %e, "Could not send alert_ack to the device.");
                }
            }
        }
    })
}

/// The MQTT front end: the embedded broker (commands only), the guard
/// and its listeners, and the alert acknowledgements sent to devices.
struct Front {
    mqtt_addr: Option<SocketAddr>,
    mqtts_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: Sessions,
}

impl Front {
    async fn start(
        cfg: &IngestConfig,
        store: Arc<dyn Store>,
        appender: eldercare_intake::Appender,
        refusals: Refusals,
        desk_live: broadcast::Receiver<AlertEvent>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Front> {
        // The broker is its router alone: no listener of its own, every
        // session an in-process link.
        let router = Router::start(RouterConfig {
            max_connections: 100_010,
            max_outgoing_packet_count: 200,
            // Bounded in-memory log: 8 x 16 MiB.
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 8,
            ..Default::default()
        });
        // Device messages never pass through the broker (the listener
        // appends them to the intake log); it carries commands only, from
        // this link to the devices' sessions.
        let cmd_tx = router
            .link("eldercare-cmd", true)
            .await
            .map_err(std::io::Error::other)?
            .tx;
        let commands = crate::commands::Hub::default();
        let commands_link = crate::commands::Hub::connect(&router).await?;
        let sessions = Sessions::default();
        // Exported from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!("eldercare_mqtt_sessions_closed_total").absolute(0);
        let guard = Guard::new(
            GuardConfig {
                router: router.clone(),
                commands: commands.clone(),
                sessions: sessions.clone(),
                intake: appender,
                settings: cfg.mqtt.clone(),
            },
            store,
            refusals,
        );
        let mut tasks = vec![
            tokio::spawn(guard.clone().export_gauges(shutdown.clone())),
            tokio::spawn(commands.run(commands_link, shutdown.clone())),
        ];
        let mut bound = |l: crate::Listener| -> std::io::Result<SocketAddr> {
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(l.run(shutdown.clone())));
            Ok(addr)
        };
        let mqtt_addr = match cfg.mqtt_addr {
            Some(a) => Some(bound(guard.bind(a, None).await?)?),
            None => None,
        };
        let mqtts_addr = match cfg.mqtts.clone() {
            Some((a, tls)) => Some(bound(guard.bind(a, Some(tls)).await?)?),
            None => None,
        };
        info!(
            ?mqtt_addr,
            ?mqtts_addr,
            durability = cfg.durability.as_str(),
            "MQTT listeners ready."
        );
        tasks.push(alert_acks(desk_live, cmd_tx, shutdown.clone()));
        Ok(Front {
            mqtt_addr,
            mqtts_addr,
            tasks,
            sessions,
        })
    }
}
