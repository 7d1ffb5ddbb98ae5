//! The embedded broker and the ingest loop: every telemetry message the
//! broker accepts is read in-process from a local link, decoded,
//! validated, de-duplicated, attributed to its elder, stored, and judged
//! by the rule engine; triggers go to the alert desk.
use crate::guard::{Guard, GuardConfig, Sessions};
use eldercare_alerts::AlertDesk;
use eldercare_model::{AlertEventKind, AlertKind, DeadLetter, EpochMs, RegistryChange};
use eldercare_protocol::{Refusal, decode};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, Rules};
use eldercare_store::{Store, StoredReading};
use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Seqs remembered per device to drop QoS 1 redeliveries.
const SEQ_WINDOW: usize = 1024;
/// How often the rule engine's timers run: a timer alert (offline, out
/// of bed, inactivity) is raised at most this long after it is due. A
/// tick only compares each elder's next due time, so ten a second cost
/// about a millisecond for 100,000 elders.
const TICK: Duration = Duration::from_millis(100);
/// How often the engine's copy of the registry is refreshed, so devices
/// imported while running are watched even before they first speak.
const REGISTRY_REFRESH: Duration = Duration::from_secs(30);
/// Device messages from the MQTT front end waiting for the ingest loop;
/// when full, devices wait for their PUBACK (back-pressure).
const INTAKE_QUEUE: usize = 16_384;
/// Registry changes from the API waiting for the ingest loop; a full queue
/// makes the API call wait, never drops a deletion.
const REGISTRY_CHANGES: usize = 1024;

#[derive(Clone)]
pub struct IngestConfig {
    /// Public MQTT listener for devices.
    pub mqtt_addr: SocketAddr,
    /// The rule settings; a new value is applied without losing state.
    pub rules: watch::Receiver<Rules>,
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// Counts refused messages by reason and hands them to the bounded
/// dead-letter store, without ever blocking the caller.
#[derive(Clone)]
pub struct Refusals {
    tx: mpsc::Sender<DeadLetter>,
}

impl Refusals {
    /// Starts the dead-letter writer.
    pub fn start(store: Arc<dyn Store>) -> (Refusals, tokio::task::JoinHandle<()>) {
        for r in Refusal::REASONS {
            metrics::counter!("eldercare_ingest_refused_total", "reason" => r).absolute(0);
        }
        let (tx, mut rx) = mpsc::channel::<DeadLetter>(10_000);
        let h = tokio::spawn(async move {
            while let Some(dl) = rx.recv().await {
                if let Err(e) = store.insert_dead_letter(&dl).await {
                    warn!(error = %e, "Could not keep a dead letter.");
                }
            }
        });
        (Refusals { tx }, h)
    }

    pub fn refuse(&self, topic: &str, sender: Option<&str>, why: &Refusal, payload: &[u8]) {
        metrics::counter!("eldercare_ingest_refused_total", "reason" => why.reason()).increment(1);
        debug!(reason = why.reason(), sender, "Message refused.");
        let dl = DeadLetter {
            id: 0,
            received_at: now_ms(),
            topic: topic.chars().take(256).collect(),
            sender: sender.map(String::from),
            reason: why.reason().to_string(),
            detail: why.to_string(),
            payload: payload[..payload.len().min(eldercare_protocol::MAX_PAYLOAD_BYTES)].to_vec(),
        };
        if self.tx.try_send(dl).is_err() {
            metrics::counter!("eldercare_dead_letters_dropped_total").increment(1);
        }
    }
}

/// The running intake: broker, guard and ingest loop.
pub struct Ingest {
    pub mqtt_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: Sessions,
    changes: mpsc::Sender<RegistryChange>,
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    StdListener::bind("127.0.0.1:0")?.local_addr()
}

impl Ingest {
    /// Starts the broker, the guard on `cfg.mqtt_addr`, and the ingest loop.
    pub async fn start(
        cfg: IngestConfig,
        store: Arc<dyn Store>,
        desk: AlertDesk,
        refusals: Refusals,
        shutdown: CancellationToken,
    ) -> std::io::Result<Ingest> {
        let token = eldercare_store::generate_secret();
        let broker_addr = free_loopback_port()?;
        let mut conn = ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        // Only the guard knows this token, so nothing can reach the broker
        // around it.
        let expected = token.clone();
        conn.set_auth_handler(move |_client, _user, pass| {
            let ok = pass == expected;
            async move { ok }
        });
        let server = ServerSettings {
            name: "internal".into(),
            listen: broker_addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections: conn,
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 100_010,
                max_outgoing_packet_count: 200,
                // Bounded in-memory log: 8 x 16 MiB.
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 8,
                ..Default::default()
            },
            v4: Some(HashMap::from([("internal".to_string(), server)])),
            ..Default::default()
        };
        let mut broker = Broker::new(config);
        let (mut link_tx, mut link_rx) = broker
            .link("eldercare-ingest")
            .map_err(|e| std::io::Error::other(format!("broker link: {e}")))?;
        let (mut cmd_tx, _cmd_rx) = broker
            .link("eldercare-cmd")
            .map_err(|e| std::io::Error::other(format!("broker link: {e}")))?;
        // Everything under the prefix, so a malformed topic is refused and
        // counted rather than silently unrouted.
        link_tx
            .subscribe("eldercare/v1/#")
            .map_err(|e| std::io::Error::other(format!("broker subscribe: {e}")))?;
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    error!(error = %e, "The embedded MQTT broker stopped.");
                }
            })?;
        // The broker binds on its own thread; wait until it answers a
        // real MQTT handshake.
        let mut up = false;
        for _ in 0..500 {
            if probe(broker_addr, &token).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !up {
            return Err(std::io::Error::other(
                "the embedded MQTT broker did not start",
            ));
        }

        let sessions = Sessions::default();
        let (intake, mut intake_rx) = mpsc::channel::<crate::guard::Intake>(INTAKE_QUEUE);
        // Exported from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!("eldercare_mqtt_sessions_closed_total").absolute(0);
        let guard = Guard::bind(
            cfg.mqtt_addr,
            GuardConfig {
                broker_addr,
                internal_token: token,
                sessions: sessions.clone(),
                intake,
            },
            store.clone(),
            refusals.clone(),
        )
        .await?;
        let mqtt_addr = guard.local_addr()?;
        info!(%mqtt_addr, "MQTT listener ready.");
        let mut tasks = vec![tokio::spawn(guard.run(shutdown.clone()))];

        // Tell a device that pressed SOS or detected a fall that help is coming.
        let mut live = desk.live();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = sd.cancelled() => break,
                    r = live.recv() => match r {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
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
        }));

        let mut rules = cfg.rules;
        let (writer, writer_task) = crate::TelemetryWriter::start(store.clone());
        let mut state = Pipeline {
            store,
            desk,
            refusals,
            engine: Engine::new(rules.borrow_and_update().clone()),
            decisions: Vec::new(),
            refreshed_at: None,
            held: VecDeque::new(),
            registry_down_until: 0,
            seqs: HashMap::new(),
            writer,
        };
        state.refresh_registry().await;
        // A restart must not forget what is already reported: conditions
        // of open alerts are not raised again and still clear themselves.
        match state.store.unresolved_alerts().await {
            Ok(open) => {
                let now = now_ms();
                for a in open {
                    state
                        .engine
                        .restore_open(a.kind, &a.elder_id, a.subject.as_deref(), now);
                }
            }
            Err(e) => warn!(error = %e, "Could not read open alerts for the rule engine."),
        }
        info!(
            elders = state.engine.elders(),
            devices = state.engine.devices(),
            "Rule engine watching the registry."
        );
        let (changes, mut changes_rx) = mpsc::channel::<RegistryChange>(REGISTRY_CHANGES);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut refresh = tokio::time::interval(REGISTRY_REFRESH);
            refresh.tick().await;
            let mut rules_open = true;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => state.tick().await,
                    _ = refresh.tick() => state.refresh_registry().await,
                    // Never closes: `Ingest` keeps a sender.
                    Some(c) = changes_rx.recv() => state.registry_change(c).await,
                    // Closes only when the guard is gone (shutdown).
                    Some(m) = intake_rx.recv() => {
                        state.message(&m.topic, &m.payload, None).await;
                    }
                    r = rules.changed(), if rules_open => match r {
                        Ok(()) => {
                            let new = rules.borrow_and_update().clone();
                            info!(overridden = new.overridden(), "Rules reloaded.");
                            state.engine.set_rules(new);
                        }
                        Err(_) => rules_open = false,
                    },
                    n = link_rx.next() => match n {
                        Ok(Some(Notification::Forward(f))) => {
                            let content_type = f.properties.as_ref().and_then(|p| p.content_type.clone());
                            let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
                            state.message(&topic, &f.publish.payload, content_type.as_deref()).await;
                        }
                        Ok(Some(Notification::Unschedule)) => {
                            if let Err(e) = link_rx.wake().await {
                                error!(error = %e, "Broker link closed.");
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            error!(error = %e, "Broker link closed.");
                            break;
                        }
                    },
                }
            }
            // Dropping the pipeline drops the writer's handle: it writes
            // what is queued and ends.
            drop(state);
            let _ = writer_task.await;
            info!("Ingest stopped; telemetry flushed.");
        }));
        Ok(Ingest {
            mqtt_addr,
            tasks,
            sessions,
            changes,
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

    /// Waits for the guard and ingest loop to finish after shutdown.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One clean MQTT session against the broker: CONNECT, CONNACK, DISCONNECT.
async fn probe(addr: SocketAddr, token: &str) -> std::io::Result<()> {
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut c = Connect::new("eldercare-probe");
    c.login = Some(Login::new("eldercare-probe", token));
    let mut out = bytes::BytesMut::new();
    Packet::Connect(c)
        .write(&mut out, 1024)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    s.write_all(&out).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    s.write_all(&[0xe0, 0x00]).await?;
    Ok(())
}

/// Messages held for a retry at most.
const HELD_MAX: usize = 10_000;

struct Held {
    topic: String,
    payload: Vec<u8>,
    content_type: Option<String>,
}

struct Pipeline {
    store: Arc<dyn Store>,
    desk: AlertDesk,
    refusals: Refusals,
    /// Judges readings; also the device -> elder map of the registry.
    engine: Engine,
    decisions: Vec<Decision>,
    /// When the engine last loaded the registry.
    refreshed_at: Option<EpochMs>,
    /// Messages of devices new to the engine whose registry lookup failed.
    held: VecDeque<Held>,
    /// No registry lookups before this (engine clock), after a failure.
    registry_down_until: EpochMs,
    seqs: HashMap<String, (HashSet<u64>, VecDeque<u64>)>,
    /// Batches telemetry to storage on its own task.
    writer: crate::TelemetryWriter,
}

impl Pipeline {
    async fn message(&mut self, topic: &str, payload: &[u8], content_type: Option<&str>) {
        if topic.ends_with("/cmd") {
            return;
        }
        let reading = match decode(topic, payload, content_type, now_ms()) {
            Ok(r) => r,
            Err(why) => {
                let sender = eldercare_protocol::topic_device_id(topic);
                self.refusals.refuse(topic, sender, &why, payload);
                return;
            }
        };
        let now = now_ms();
        let elder_id = match self.engine.elder_of(&reading.device_id) {
            Some(e) => e.to_string(),
            None => match self.lookup_device(&reading.device_id, now).await {
                Ok(Some(d)) => {
                    // New since the last registry refresh.
                    if let Ok(Some(e)) = self.store.get_elder(&d.elder_id).await {
                        self.engine.upsert_elder(&ElderProfile::from_elder(&e), now);
                    }
                    self.engine.upsert_device(&DeviceProfile::from(&d), now);
                    d.elder_id
                }
                Ok(None) => {
                    let why = Refusal::UnknownDevice(reading.device_id.clone());
                    self.refusals.refuse(topic, None, &why, payload);
                    return;
                }
                Err(e) => {
                    // The database is away and this device is new to the
                    // engine: hold the message and try again on the next
                    // ticks rather than lose it (it may be an SOS).
                    if self.held.len() < HELD_MAX {
                        warn!(error = %e, device_id = %reading.device_id, "Registry lookup failed; message held for a retry.");
                        self.held.push_back(Held {
                            topic: topic.to_string(),
                            payload: payload.to_vec(),
                            content_type: content_type.map(String::from),
                        });
                        metrics::gauge!("eldercare_ingest_held").set(self.held.len() as f64);
                    } else {
                        error!(error = %e, "Registry lookup failed and the retry queue is full; message dropped.");
                        metrics::counter!("eldercare_ingest_lost_total").increment(1);
                    }
                    return;
                }
            },
        };
        if let Some(seq) = reading.seq {
            let (set, order) = self.seqs.entry(reading.device_id.clone()).or_default();
            if !set.insert(seq) {
                metrics::counter!("eldercare_ingest_duplicates_total").increment(1);
                return;
            }
            order.push_back(seq);
            if order.len() > SEQ_WINDOW
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
        metrics::counter!("eldercare_ingest_accepted_total", "stream" => reading.stream().as_str())
            .increment(1);
        let mut decisions = std::mem::take(&mut self.decisions);
        self.engine.on_reading_into(&reading, now, &mut decisions);
        self.decide(&mut decisions).await;
        self.decisions = decisions;
        self.writer.push(StoredReading { elder_id, reading });
    }

    async fn decide(&self, decisions: &mut Vec<Decision>) {
        for d in decisions.drain(..) {
            let what = match &d {
                Decision::Raise(_) => "raise",
                Decision::Update(_) => "update",
                Decision::Resolve(_) => "resolve",
            };
            metrics::counter!("eldercare_rule_decisions_total",
                "kind" => d.kind().as_str(), "decision" => what)
            .increment(1);
            if self.desk.decide(d).await.is_err() {
                error!("Alert desk closed; rule decision lost.");
            }
        }
    }

    /// The registry entry of a device the engine does not know yet. While
    /// the database is failing, lookups are not retried for a few seconds,
    /// so a flood of unknown devices cannot stall the pipeline (their
    /// messages are held instead).
    async fn lookup_device(
        &mut self,
        device_id: &str,
        now: EpochMs,
    ) -> Result<Option<eldercare_model::Device>, String> {
        if now < self.registry_down_until {
            return Err("the registry was unreachable moments ago".into());
        }
        // Not cut short with a timeout: dropping a pool acquire midway can
        // leave the pool stuck; the store's own acquire timeout bounds it.
        let r = self
            .store
            .get_device(device_id)
            .await
            .map_err(|e| e.to_string());
        if r.is_err() {
            self.registry_down_until = now + 5_000;
        }
        r
    }

    async fn tick(&mut self) {
        // Messages held while the registry could not be read: once each,
        // when it may be back.
        let held: Vec<Held> = if now_ms() >= self.registry_down_until {
            self.held.drain(..).collect()
        } else {
            Vec::new()
        };
        for h in held {
            Box::pin(self.message(&h.topic, &h.payload, h.content_type.as_deref())).await;
        }
        metrics::gauge!("eldercare_ingest_held").set(self.held.len() as f64);
        let mut decisions = std::mem::take(&mut self.decisions);
        let started = std::time::Instant::now();
        self.engine.tick_into(now_ms(), &mut decisions);
        metrics::histogram!("eldercare_rule_tick_seconds").record(started.elapsed().as_secs_f64());
        self.decide(&mut decisions).await;
        self.decisions = decisions;
    }

    /// Loads the registry into the engine: the whole of it the first
    /// time, then what changed since the last refresh (new entries added,
    /// changed ones updated with their state kept). Deleting from the
    /// registry is for the registry API, which tells the engine itself.
    async fn refresh_registry(&mut self) {
        let started = now_ms();
        // Overlap the windows: an import commits rows stamped a moment
        // before it finishes.
        let since = self.refreshed_at.map(|t| t - 60_000);
        let (elders, devices) = match (
            self.store.list_elders(since).await,
            self.store.list_devices(since).await,
        ) {
            (Ok(e), Ok(d)) => (e, d),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "Could not refresh the registry for the rule engine.");
                return;
            }
        };
        for e in &elders {
            self.engine
                .upsert_elder(&ElderProfile::from_elder(e), started);
        }
        for d in &devices {
            self.engine.upsert_device(&DeviceProfile::from(d), started);
        }
        self.refreshed_at = Some(started);
        metrics::gauge!("eldercare_rule_engine_elders").set(self.engine.elders() as f64);
        metrics::gauge!("eldercare_rule_engine_devices").set(self.engine.devices() as f64);
    }

    /// Applies one change from the registry API: reads what the store now
    /// holds, so changes applied out of order still end in the right state.
    async fn registry_change(&mut self, change: RegistryChange) {
        let now = now_ms();
        match change {
            RegistryChange::Elder(id) => match self.store.get_elder(&id).await {
                Ok(Some(e)) => self.engine.upsert_elder(&ElderProfile::from_elder(&e), now),
                Ok(None) => self.engine.remove_elder(&id),
                Err(e) => warn!(error = %e, elder_id = %id, "Could not read a changed elder."),
            },
            RegistryChange::Device(id) => match self.store.get_device(&id).await {
                Ok(Some(d)) => self.engine.upsert_device(&DeviceProfile::from(&d), now),
                Ok(None) => {
                    self.engine.remove_device(&id);
                    self.seqs.remove(&id);
                }
                Err(e) => warn!(error = %e, device_id = %id, "Could not read a changed device."),
            },
            RegistryChange::Many => self.refresh_registry().await,
        }
        metrics::gauge!("eldercare_rule_engine_elders").set(self.engine.elders() as f64);
        metrics::gauge!("eldercare_rule_engine_devices").set(self.engine.devices() as f64);
    }
}
