//! The public MQTT 3.1.1 listener. It reads every packet a device sends,
//! asks the device's [`Session`] what to do with it, and does it: device
//! messages go straight to the ingest pipeline, PINGREQ is answered here,
//! everything else (SUBSCRIBE to its own `cmd`, QoS 2, acks of commands)
//! goes to the embedded rumqttd over loopback, and rumqttd's packets go
//! back to the device.
//!
//! The guard, not rumqttd, times each device's keep-alive, since only the
//! guard sees every packet (rumqttd gets a keep-alive it never reaches,
//! and a ping from the guard now and then). The listener's limits
//! ([`MqttSettings`]) keep strangers' sockets from holding it: a CONNECT
//! deadline, a cap on connections not yet logged in, a size limit per
//! packet, a byte budget for all of them, and a rate per device.
use crate::frame::{self, Budget, FrameError, FrameReader};
use crate::live::SessionHandle;
pub use crate::live::Sessions;
use crate::refusals::Refusals;
use crate::session::{
    self, ConnRefusal, Ending, Lookup, Pace, PublishVerdict, Session, SubscribeVerdict,
};
use crate::settings::MqttSettings;
use bytes::{Bytes, BytesMut};
use eldercare_intake::{Appender, Durable, Lane, TryAppendError};
use eldercare_model::{Device, Stream};
use eldercare_protocol::{Refusal, parse_topic};
use eldercare_store::{DeviceQuery, Store};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Login, Packet, Publish, SubAck, Subscribe};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Clone)]
pub struct GuardConfig {
    /// Where rumqttd listens, on loopback.
    pub broker_addr: SocketAddr,
    /// Password the guard presents to rumqttd; nothing else knows it.
    pub internal_token: String,
    /// The live sessions, which the registry API can close.
    pub sessions: Sessions,
    /// Where device messages go: the intake log, in the order each device
    /// sent them; a QoS 1 message is acknowledged once it is durable there.
    pub intake: Appender,
    /// Limits and timers of the listener.
    pub settings: MqttSettings,
}

/// The keep-alive each session presents to rumqttd: the largest there is
/// (rumqttd refuses 0), so it never times out a session the guard keeps.
const BROKER_KEEP_ALIVE_S: u16 = u16::MAX;
/// How often the guard pings rumqttd on each session: far within the
/// 27 hours (1.5 x 65,535 s) after which rumqttd would end it.
const BROKER_PING: Duration = Duration::from_secs(3600);
/// Largest packet taken from rumqttd (its own limit is 256 KiB of payload).
const BROKER_MAX_PACKET: usize = 512 * 1024;
/// How long a closed session may take to finish the frame it is writing
/// before its sockets are dropped regardless (a device that stops reading
/// must not keep a revoked session open).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Packets waiting to be written to one device.
const OUT_QUEUE: usize = 64;
/// Pending connections the kernel may hold for the accept loop.
const BACKLOG: u32 = 4096;

/// Reasons of `eldercare_mqtt_connections_refused_total`, exported from
/// the start so a dashboard sees 0 rather than nothing.
const REFUSED: [&str; 12] = [
    "no_credentials",
    "unknown_device",
    "bad_credentials",
    "will_not_owned",
    "registry_changed",
    "registry_unavailable",
    "unsupported_protocol",
    "connect_timeout",
    "too_many_pending",
    "connect_too_large",
    "malformed_connect",
    "memory",
];
/// Reasons of `eldercare_mqtt_connections_closed_total`.
const CLOSED: [&str; 6] = [
    "keep_alive",
    "rate_limit",
    "packet_too_large",
    "malformed",
    "memory",
    "topic_not_owned_qos2",
];

pub struct Guard {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: GuardConfig,
    store: Arc<dyn Store>,
    refusals: Refusals,
    /// Connections accepted and not yet past CONNECT.
    pending: Arc<Semaphore>,
    /// Bytes of unfinished packets, all connections together.
    budget: Budget,
}

/// A CONNECT that passed.
struct Admitted {
    connect: Connect,
    device: Device,
    handle: SessionHandle,
}

/// A packet for the device, from the guard or from rumqttd.
enum Out {
    PubAck(u16),
    PingResp,
    Frame(Bytes),
}

/// When a QoS 1 PUBACK may be sent (always in order after the PUBACKs
/// before it).
enum Ack {
    /// Once the message is durable in the intake log.
    Durable(Durable),
    /// At once: the message was refused (and kept as a dead letter).
    Now,
}

fn refused(reason: &'static str) {
    metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => reason).increment(1);
}

impl Guard {
    pub async fn bind(
        addr: SocketAddr,
        cfg: GuardConfig,
        store: Arc<dyn Store>,
        refusals: Refusals,
    ) -> std::io::Result<Guard> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        let s = &cfg.settings;
        let shared = Shared {
            pending: Arc::new(Semaphore::new(s.max_pending_connections)),
            budget: Budget::new(s.max_buffered_bytes, s.connect_timeout()),
            cfg,
            store,
            refusals,
        };
        Ok(Guard {
            listener,
            shared: Arc::new(shared),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts devices until `shutdown`; each connection ends with it too.
    /// The loop itself never waits on a socket: each is served on a task
    /// of its own, and one over the pending cap is closed at once.
    pub async fn run(self, shutdown: CancellationToken) {
        for r in REFUSED {
            metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => r)
                .absolute(0);
        }
        for r in CLOSED {
            metrics::counter!("eldercare_mqtt_connections_closed_total", "reason" => r).absolute(0);
        }
        metrics::counter!("eldercare_mqtt_rate_limited_total").absolute(0);
        let Guard { listener, shared } = self;
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = gauges.tick() => {
                    shared.export_gauges();
                    continue;
                }
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of file descriptors (or another resource):
                        // retrying at once would spin and flood the log.
                        // Counted, logged, and retried after a pause.
                        metrics::counter!("eldercare_mqtt_accept_errors_total").increment(1);
                        warn!(error = %e, "Accept failed; retrying in 100 ms.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(pending) = shared.pending.clone().try_acquire_owned() else {
                refused("too_many_pending");
                debug!(%peer, "Too many connections not logged in; this one closed at once.");
                drop(sock);
                continue;
            };
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = shared.connection(sock, pending) => if let Err(e) = r {
                        debug!(%peer, error = %e, "Device connection ended.");
                    }
                }
            });
        }
    }
}

impl Shared {
    fn export_gauges(&self) {
        let pending = self.cfg.settings.max_pending_connections - self.pending.available_permits();
        metrics::gauge!("eldercare_mqtt_pending_connections").set(pending as f64);
        metrics::gauge!("eldercare_mqtt_buffered_bytes").set(self.budget.used() as f64);
    }

    async fn connection(
        &self,
        sock: TcpStream,
        pending: OwnedSemaphorePermit,
    ) -> std::io::Result<()> {
        sock.set_nodelay(true)?;
        let (rd, mut wr) = sock.into_split();
        let s = &self.cfg.settings;
        let mut reader = FrameReader::new(self.budget.clone(), s.max_connect_bytes);
        let Some(admitted) = self.handshake(&rd, &mut wr, &mut reader).await? else {
            return Ok(());
        };
        drop(pending);
        reader.set_max(s.max_packet_bytes);
        // Boxed: a connection waiting for its CONNECT (there may be
        // thousands) then holds only the handshake's state.
        Box::pin(self.session(admitted, rd, wr, reader)).await
    }

    /// Reads the CONNECT within the deadline and judges it; `None` when
    /// the connection is refused (and answered, when it can be).
    async fn handshake(
        &self,
        rd: &OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
        reader: &mut FrameReader,
    ) -> std::io::Result<Option<Admitted>> {
        let timeout = self.cfg.settings.connect_timeout();
        let mut first = match tokio::time::timeout(timeout, reader.next(rd)).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(FrameError::Io(e))) => return Err(e),
            Ok(Err(e)) => {
                refused(match e {
                    FrameError::TooLarge(_) => "connect_too_large",
                    FrameError::NoRoom => "memory",
                    _ => "malformed_connect",
                });
                debug!(error = %e, "MQTT connection refused before CONNECT.");
                return Ok(None);
            }
            Err(_) => {
                refused("connect_timeout");
                return Ok(None);
            }
        };
        if frame::packet_type(&first) != frame::CONNECT {
            refused("malformed_connect");
            return Ok(None);
        }
        if frame::protocol_level(&first) == Some(5) {
            // MQTT 5 is not served yet: say so in the client's own protocol.
            refused("unsupported_protocol");
            info!(reason = "unsupported_protocol", "MQTT connection refused.");
            wr.write_all(&frame::CONNACK_V5_UNSUPPORTED).await?;
            return Ok(None);
        }
        let Ok(Packet::Connect(connect)) = Packet::read(&mut first, usize::MAX) else {
            refused("malformed_connect");
            return Ok(None);
        };
        let login = match session::login_of(&connect) {
            Ok(l) => l,
            Err(r) => return self.refuse(wr, r).await,
        };
        // Registered before the credentials are checked: a rotation that
        // commits meanwhile still finds (and closes) this connection.
        let handle = self
            .cfg
            .sessions
            .register(&login.username, &connect.client_id);
        let lookup = match self.store.get_device(&login.username).await {
            Ok(Some(d)) => Lookup::Found(d),
            Ok(None) => Lookup::Unknown,
            Err(e) => {
                warn!(error = %e, "Registry lookup failed at CONNECT.");
                Lookup::Unavailable
            }
        };
        let will_topic = connect.last_will.as_ref().map(|w| w.topic.as_str());
        match session::admit(login, will_topic, lookup, handle.close.is_cancelled()) {
            Ok(device) => Ok(Some(Admitted {
                connect,
                device,
                handle,
            })),
            Err(r) => self.refuse(wr, r).await,
        }
    }

    async fn refuse(
        &self,
        wr: &mut OwnedWriteHalf,
        r: ConnRefusal,
    ) -> std::io::Result<Option<Admitted>> {
        refused(r.reason());
        info!(reason = r.reason(), "MQTT connection refused.");
        wr.write_all(&frame::connack(r.return_code() as u8)).await?;
        Ok(None)
    }

    /// Serves a logged-in device until its session ends, then publishes
    /// its last will if it is due.
    async fn session(
        &self,
        a: Admitted,
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        reader: FrameReader,
    ) -> std::io::Result<()> {
        let Admitted {
            mut connect,
            device,
            handle,
        } = a;
        let s = &self.cfg.settings;
        let session = Session::new(&device, connect.keep_alive, s, Instant::now());
        handle.set_live();
        metrics::counter!("eldercare_mqtt_connections_total").increment(1);
        debug!(device_id = %device.device_id, keep_alive_s = connect.keep_alive, "Device connected.");
        // The last will stays here: the guard publishes it itself, into
        // the same queue as the device's messages, so it can never
        // overtake them.
        let will = connect.last_will.take();
        let broker = self.open_broker(connect, &device.device_id).await?;
        let (br, bw) = broker.into_split();
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (acks, acks_rx) = mpsc::channel(s.max_inflight);
        let close = handle.close.clone();
        let mut conn = Conn {
            shared: self,
            session,
            rd,
            reader,
            broker: bw,
            out: out.clone(),
            acks,
            close: close.clone(),
        };
        let ending = tokio::select! {
            e = conn.run() => e,
            _ = write_device(wr, out_rx) => Ending::Lost,
            e = from_broker(br, out.clone()) => e,
            e = acknowledge(acks_rx, out) => e,
            // A session stuck writing to a device that does not read is
            // dropped anyway.
            _ = async {
                close.cancelled().await;
                tokio::time::sleep(CLOSE_GRACE).await;
            } => Ending::Revoked,
        };
        drop(conn);
        let taken_over = handle.taken_over();
        if let Some(reason) = ending.closed_reason() {
            metrics::counter!("eldercare_mqtt_connections_closed_total", "reason" => reason)
                .increment(1);
            debug!(device_id = %device.device_id, reason, "MQTT session closed by the listener.");
        }
        if ending.will_due(taken_over)
            && let Some(w) = will
        {
            self.will(w).await;
        }
        drop(handle);
        Ok(())
    }

    /// Opens the device's session on rumqttd: its identity fixed in the
    /// client id (so one device can never take over another's session),
    /// the guard's own credentials, no will, and a keep-alive rumqttd
    /// never reaches.
    async fn open_broker(&self, mut c: Connect, device_id: &str) -> std::io::Result<TcpStream> {
        c.client_id = if c.client_id.is_empty() {
            format!("{device_id}~{}", rand::random::<u64>())
        } else {
            format!("{device_id}~{}", c.client_id)
        };
        c.login = Some(Login::new(device_id, self.cfg.internal_token.clone()));
        c.keep_alive = BROKER_KEEP_ALIVE_S;
        c.last_will = None;
        let mut out = BytesMut::new();
        Packet::Connect(c)
            .write(&mut out, usize::MAX)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}")))?;
        let mut broker = TcpStream::connect(self.cfg.broker_addr).await?;
        broker.set_nodelay(true)?;
        broker.write_all(&out).await?;
        Ok(broker)
    }

    /// The will goes to the log like any message of the device (no one
    /// waits for it to be durable).
    async fn will(&self, w: LastWill) {
        let lane = lane_of(&w.topic);
        let _ = self.cfg.intake.append(lane, w.topic, w.message).await;
    }

    /// Appends an accepted message to the intake log: a QoS 1 message and
    /// an SOS or fall wait for room (back-pressure: the device is slowed);
    /// routine QoS 0 telemetry is shed, and counted, when the log is
    /// behind. `None`: nothing to acknowledge.
    async fn intake(&self, qos: QoS, topic: String, payload: Bytes) -> Result<Option<Ack>, Ending> {
        let lane = lane_of(&topic);
        if qos == QoS::AtMostOnce && lane == Lane::Routine {
            let stream = stream_label(&topic);
            return match self.cfg.intake.try_append(lane, topic, payload) {
                Ok(_) => Ok(None),
                Err(TryAppendError::Full) => {
                    metrics::counter!("eldercare_ingest_shed_total", "stream" => stream)
                        .increment(1);
                    Ok(None)
                }
                Err(TryAppendError::Closed(_)) => Err(Ending::IntakeClosed),
            };
        }
        let durable = self
            .cfg
            .intake
            .append(lane, topic, payload)
            .await
            .map_err(|_| Ending::IntakeClosed)?;
        Ok((qos == QoS::AtLeastOnce).then_some(Ack::Durable(durable)))
    }
}

/// The device-to-backend half of one session.
struct Conn<'a> {
    shared: &'a Shared,
    session: Session,
    rd: OwnedReadHalf,
    reader: FrameReader,
    broker: OwnedWriteHalf,
    out: mpsc::Sender<Out>,
    /// QoS 1 messages waiting for their PUBACK, in order.
    acks: mpsc::Sender<(u16, Ack)>,
    close: CancellationToken,
}

impl Conn<'_> {
    /// Reads packets until the session ends, and says how it ended.
    async fn run(&mut self) -> Ending {
        let start = Instant::now();
        let mut ping = tokio::time::interval_at(start + BROKER_PING, BROKER_PING);
        let keep_alive = tokio::time::sleep_until(start);
        tokio::pin!(keep_alive);
        loop {
            let expires = self.session.expires_at();
            if let Some(t) = expires
                && keep_alive.deadline() != t
            {
                keep_alive.as_mut().reset(t);
            }
            // Closing is only taken between frames (reading is cancel
            // safe), so the DISCONNECT never lands inside a frame
            // forwarded to the broker.
            let next = tokio::select! {
                biased;
                _ = self.close.cancelled() => {
                    // A clean DISCONNECT, and no last will: the backend
                    // ended the session on purpose; the device was not lost.
                    let _ = self.broker.write_all(&frame::DISCONNECT).await;
                    return Ending::Revoked;
                }
                _ = &mut keep_alive, if expires.is_some() => return Ending::KeepAliveExpired,
                _ = ping.tick() => {
                    if self.broker.write_all(&frame::PINGREQ).await.is_err() {
                        return Ending::BrokerGone;
                    }
                    continue;
                }
                f = self.reader.next(&self.rd) => f,
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => return Ending::Lost,
                Err(FrameError::Io(_)) => return Ending::Lost,
                Err(FrameError::TooLarge(_)) => return Ending::TooLarge,
                Err(FrameError::Malformed(_)) => return Ending::Malformed,
                Err(FrameError::NoRoom) => return Ending::NoMemory,
            };
            let pace = self.session.heard(Instant::now());
            if let Err(end) = self.packet(frame).await {
                return end;
            }
            match pace {
                Pace::Go => {}
                Pace::Slow { wait, starts } => {
                    if starts {
                        metrics::counter!("eldercare_mqtt_rate_limited_total").increment(1);
                        debug!(
                            device_id = self.session.device_id(),
                            "Device slowed down to its rate."
                        );
                    }
                    metrics::counter!("eldercare_mqtt_rate_delayed_packets_total").increment(1);
                    tokio::select! {
                        biased;
                        _ = self.close.cancelled() => continue,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Pace::CutOff => return Ending::RateLimited,
            }
            // Silence is only timed while the socket is read: waits for
            // the pipeline or the rate limit say nothing about the device.
            self.session.resumed(Instant::now());
        }
    }

    async fn packet(&mut self, mut frame: BytesMut) -> Result<(), Ending> {
        // Kept as it came for the packets that go on to the broker.
        let raw = forwarded(&frame).then(|| Bytes::copy_from_slice(&frame));
        let packet = Packet::read(&mut frame, usize::MAX).map_err(|_| Ending::Malformed)?;
        match (packet, raw) {
            (Packet::PingReq, _) => self.send(Out::PingResp).await,
            (Packet::Disconnect, _) => {
                // Said goodbye: no last will.
                let _ = self.broker.write_all(&frame::DISCONNECT).await;
                Err(Ending::Disconnected)
            }
            // A second CONNECT is a protocol violation (MQTT 3.1.1 §3.1.0-2).
            (Packet::Connect(_), _) => Err(Ending::Malformed),
            (Packet::Publish(p), raw) => self.publish(p, raw).await,
            (Packet::Subscribe(s), Some(raw)) => self.subscribe(s, raw).await,
            (_, Some(raw)) => self.forward(&raw).await,
            (_, None) => Err(Ending::Malformed),
        }
    }

    async fn publish(&mut self, p: Publish, raw: Option<Bytes>) -> Result<(), Ending> {
        if self
            .session
            .wants_registry([p.topic.as_str()], Instant::now())
        {
            self.read_delegation().await;
        }
        let (qos, pkid) = (p.qos, p.pkid);
        match self.session.publish(&p.topic, qos) {
            // Device -> backend traffic goes straight to the ingest
            // pipeline rather than through the embedded broker: one
            // loopback TCP crossing less per message, and a full pipeline
            // slows the device down instead of queueing without bound.
            PublishVerdict::Intake => {
                if let Some(ack) = self.shared.intake(qos, p.topic, p.payload).await? {
                    self.ack(pkid, ack).await?;
                }
                Ok(())
            }
            PublishVerdict::Broker => match raw {
                Some(raw) => self.forward(&raw).await,
                None => Err(Ending::Malformed),
            },
            PublishVerdict::Refuse { ack } => {
                self.refuse(&p);
                if ack {
                    self.ack(pkid, Ack::Now).await?;
                }
                Ok(())
            }
            PublishVerdict::RefuseAndClose => {
                self.refuse(&p);
                Err(Ending::RefusedQos2)
            }
        }
    }

    fn refuse(&self, p: &Publish) {
        let sender = self.session.device_id();
        self.shared.refusals.refuse(
            &p.topic,
            Some(sender),
            &Refusal::TopicNotOwned {
                sender: sender.to_string(),
                topic: p.topic.clone(),
            },
            &p.payload,
        );
    }

    async fn subscribe(&mut self, s: Subscribe, raw: Bytes) -> Result<(), Ending> {
        if self
            .session
            .wants_registry(s.filters.iter().map(|f| f.path.as_str()), Instant::now())
        {
            self.read_delegation().await;
        }
        match self.session.subscribe(&s.filters) {
            SubscribeVerdict::Forward => self.forward(&raw).await,
            SubscribeVerdict::Refuse(codes) => {
                metrics::counter!("eldercare_mqtt_subscriptions_refused_total").increment(1);
                let mut o = BytesMut::new();
                let _ = SubAck::new(s.pkid, codes).write(&mut o);
                self.send(Out::Frame(o.freeze())).await
            }
        }
    }

    /// Reads a gateway's devices from the registry.
    async fn read_delegation(&mut self) {
        let Some(elder_id) = self.session.gateway_elder().map(String::from) else {
            return;
        };
        let devices = read_devices_of(self.shared.store.as_ref(), &elder_id).await;
        self.session.delegate(devices, Instant::now());
    }

    /// Queues a PUBACK behind those before it; waits while the session has
    /// as many in flight as it may (its socket is not read meanwhile).
    async fn ack(&self, pkid: u16, ack: Ack) -> Result<(), Ending> {
        self.acks.send((pkid, ack)).await.map_err(|_| Ending::Lost)
    }

    async fn send(&self, o: Out) -> Result<(), Ending> {
        self.out.send(o).await.map_err(|_| Ending::Lost)
    }

    async fn forward(&mut self, raw: &[u8]) -> Result<(), Ending> {
        self.broker
            .write_all(raw)
            .await
            .map_err(|_| Ending::BrokerGone)
    }
}

/// SOS and fall events (JSON or protobuf) go ahead of routine telemetry.
fn lane_of(topic: &str) -> Lane {
    match parse_topic(topic) {
        Ok(t) if t.stream == Stream::Event => Lane::Urgent,
        _ => Lane::Routine,
    }
}

/// The `stream` label of a topic (a bounded set).
fn stream_label(topic: &str) -> &'static str {
    parse_topic(topic).map_or("other", |t| t.stream.as_str())
}

/// Whether a frame from the device goes on to the broker as it came
/// (then it is copied before parsing): everything but PINGREQ,
/// DISCONNECT, CONNECT and a PUBLISH below QoS 2.
fn forwarded(frame: &[u8]) -> bool {
    match frame::packet_type(frame) {
        frame::PUBLISH => frame.first().is_some_and(|b| (b >> 1) & 0b11 == 2),
        frame::PINGREQ_TYPE | frame::DISCONNECT_TYPE | frame::CONNECT => false,
        _ => true,
    }
}

/// The devices registered to `elder_id`; `None` when the registry could
/// not be read.
async fn read_devices_of(store: &dyn Store, elder_id: &str) -> Option<HashSet<String>> {
    let mut after = None;
    let mut devices = HashSet::new();
    loop {
        let page = match store
            .query_devices(&DeviceQuery {
                elder_id: Some(elder_id.to_string()),
                after: after.clone(),
                limit: 1000,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "Registry lookup for a gateway failed.");
                return None;
            }
        };
        let full = page.len() == 1000;
        after = page.last().map(|d| d.device_id.clone());
        devices.extend(page.into_iter().map(|d| d.device_id));
        if !full {
            return Some(devices);
        }
    }
}

/// Writes packets to the device, several at once when they queue up.
async fn write_device(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Out>) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(o) = next {
            match o {
                Out::PubAck(pkid) => batch.extend_from_slice(&frame::puback(pkid)),
                Out::PingResp => batch.extend_from_slice(&frame::PINGRESP),
                Out::Frame(f) => batch.extend_from_slice(&f),
            }
            next = if batch.len() < 64 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        wr.write_all(&batch).await?;
        batch.clear();
    }
    Ok(())
}

/// Broker -> device: whole frames, so packets the guard writes itself
/// never land inside one.
async fn from_broker(mut br: OwnedReadHalf, out: mpsc::Sender<Out>) -> Ending {
    let mut buf = BytesMut::new();
    loop {
        match frame::read_trusted(&mut br, &mut buf, BROKER_MAX_PACKET).await {
            // Answers to the guard's own pings: the device's are answered
            // by the guard.
            Ok(Some(f)) if f[..] == frame::PINGRESP => {}
            Ok(Some(f)) => {
                if out.send(Out::Frame(f.freeze())).await.is_err() {
                    return Ending::Lost;
                }
            }
            Ok(None) | Err(_) => return Ending::BrokerGone,
        }
    }
}

/// Sends each PUBACK once its message may be acknowledged, in the order
/// the messages came.
async fn acknowledge(mut rx: mpsc::Receiver<(u16, Ack)>, out: mpsc::Sender<Out>) -> Ending {
    while let Some((pkid, ack)) = rx.recv().await {
        if let Ack::Durable(d) = ack
            && d.await.is_err()
        {
            // Not kept (the disk failed, or the server is stopping): no
            // PUBACK, and the session ends, so the device sends it again.
            return Ending::IntakeClosed;
        }
        if out.send(Out::PubAck(pkid)).await.is_err() {
            return Ending::Lost;
        }
    }
    // The reading half is gone; it says how the session ended.
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    //! The guard over real sockets on port 0, with a real SQLite registry,
    //! a fake rumqttd (answers CONNACK, then listens) and an intake log
    //! whose durability the test controls.
    use super::*;
    use eldercare_intake::{Intake, IntakeConfig, Journal, Record};
    use eldercare_model::{DeviceKind, Elder};
    use eldercare_store::SqliteStore;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A journal that keeps a record only when the test lets it.
    struct Gated {
        pos: u64,
        gate: std::sync::mpsc::Receiver<()>,
    }

    impl Journal for Gated {
        fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
            for _ in records {
                self.gate
                    .recv()
                    .map_err(|_| std::io::Error::other("gate closed"))?;
            }
            self.pos += records.len() as u64;
            Ok(())
        }
        fn durable_position(&self) -> u64 {
            self.pos
        }
        fn replay(
            &self,
            _from: u64,
        ) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Record>> + Send + '_>>
        {
            Ok(Box::new(std::iter::empty()))
        }
        fn release(&mut self, _upto: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Accepts sessions like rumqttd would: reads the CONNECT, answers
    /// CONNACK, then reads whatever comes.
    async fn fake_broker() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let _ = s.write_all(&frame::connack(0)).await;
                    while s.read(&mut b).await.unwrap_or(0) > 0 {}
                });
            }
        });
        addr
    }

    struct Fixture {
        addr: SocketAddr,
        gate: std::sync::mpsc::Sender<()>,
        store: Arc<SqliteStore>,
        _intake: Intake,
        _records: mpsc::Receiver<Record>,
        _dir: tempfile::TempDir,
    }

    /// The guard over a registry holding `btn-1` (secret `s`).
    async fn guard() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        store
            .upsert_elder(&Elder {
                elder_id: "E1".into(),
                name: "Test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let (secret_salt, secret_hash) = eldercare_store::hash_secret("s");
        store
            .upsert_device(&Device {
                device_id: "btn-1".into(),
                kind: DeviceKind::SosButton,
                elder_id: "E1".into(),
                room: None,
                heartbeat_s: 300,
                secret_salt,
                secret_hash,
            })
            .await
            .unwrap();
        let (gate, gate_rx) = std::sync::mpsc::channel();
        let (records_tx, records) = mpsc::channel(1024);
        let (intake, appender) = Intake::start(
            Box::new(Gated {
                pos: 0,
                gate: gate_rx,
            }),
            IntakeConfig::default(),
            records_tx,
        )
        .unwrap();
        let dyn_store: Arc<dyn Store> = store.clone();
        let (refusals, _) = Refusals::start(dyn_store.clone());
        let g = Guard::bind(
            "127.0.0.1:0".parse().unwrap(),
            GuardConfig {
                broker_addr: fake_broker().await,
                internal_token: "t".into(),
                sessions: Sessions::default(),
                intake: appender,
                settings: MqttSettings::default(),
            },
            dyn_store,
            refusals,
        )
        .await
        .unwrap();
        let addr = g.local_addr().unwrap();
        tokio::spawn(g.run(CancellationToken::new()));
        Fixture {
            addr,
            gate,
            store,
            _intake: intake,
            _records: records,
            _dir: dir,
        }
    }

    fn connect(user: &str, pass: &str) -> BytesMut {
        let mut c = Connect::new("fw");
        c.keep_alive = 30;
        c.login = Some(Login::new(user, pass));
        let mut out = BytesMut::new();
        Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
        out
    }

    fn publish(topic: &str, pkid: u16) -> BytesMut {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, r#"{"type": "sos"}"#);
        p.pkid = pkid;
        let mut out = BytesMut::new();
        Packet::Publish(p).write(&mut out, usize::MAX).unwrap();
        out
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .expect("nothing arrived")
            .unwrap();
        b
    }

    /// Whether anything arrives within `wait`.
    async fn silent_for(s: &mut TcpStream, wait: Duration) -> bool {
        let mut b = [0u8; 1];
        tokio::time::timeout(wait, s.read(&mut b)).await.is_err()
    }

    #[tokio::test]
    async fn a_registry_error_at_connect_is_answered_server_unavailable() {
        let f = guard().await;
        let mut s = TcpStream::connect(f.addr).await.unwrap();
        s.write_all(&connect("btn-1", "wrong")).await.unwrap();
        assert_eq!(read_n(&mut s, 4).await, frame::connack(4));
        // The database goes away.
        f.store.close().await;
        let mut s = TcpStream::connect(f.addr).await.unwrap();
        s.write_all(&connect("btn-1", "s")).await.unwrap();
        assert_eq!(
            read_n(&mut s, 4).await,
            frame::connack(3),
            "server unavailable, not bad user name or password"
        );
    }

    #[tokio::test]
    async fn a_qos1_puback_follows_durability_in_order_even_for_a_refused_publish() {
        let f = guard().await;
        let mut s = TcpStream::connect(f.addr).await.unwrap();
        s.write_all(&connect("btn-1", "s")).await.unwrap();
        assert_eq!(read_n(&mut s, 4).await, frame::connack(0));
        s.write_all(&publish("eldercare/v1/btn-1/event", 1))
            .await
            .unwrap();
        assert!(
            silent_for(&mut s, Duration::from_millis(300)).await,
            "no PUBACK before the message is durable"
        );
        f.gate.send(()).unwrap();
        assert_eq!(read_n(&mut s, 4).await, frame::puback(1));
        // Pipelined: one of its own, then one under another device's id,
        // which is refused at once but acknowledged in its turn.
        s.write_all(&publish("eldercare/v1/btn-1/status", 2))
            .await
            .unwrap();
        s.write_all(&publish("eldercare/v1/btn-9/event", 3))
            .await
            .unwrap();
        assert!(
            silent_for(&mut s, Duration::from_millis(300)).await,
            "PUBACKs go in the order of their PUBLISHes"
        );
        f.gate.send(()).unwrap();
        assert_eq!(read_n(&mut s, 4).await, frame::puback(2));
        assert_eq!(read_n(&mut s, 4).await, frame::puback(3));
        // Answered by the guard, not the broker.
        s.write_all(&frame::PINGREQ).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, frame::PINGRESP);
    }
}
