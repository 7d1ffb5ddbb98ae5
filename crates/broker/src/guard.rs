//! The public MQTT listener (3.1.1 and 5, plain TCP or TLS): it accepts
//! devices, reads each CONNECT within its limits and judges it, then
//! hands the session to [`crate::conn`], and when the session ends
//! publishes the last will (at once or after its delay) and lets the
//! broker keep or forget the session as agreed.
//!
//! The listener's limits ([`MqttSettings`]) keep strangers' sockets from
//! holding it: a deadline for the TLS handshake and for the CONNECT, a cap
//! on connections not yet logged in, a size limit per packet, a byte
//! budget for all of them, and a rate per device.
use crate::conn::{self, Broker, Conn};
use crate::frame::{self, Budget, FrameError, FrameReader};
use crate::kept::{self, Keeper};
use crate::links::{self, Router};
use crate::live::SessionHandle;
pub use crate::live::Sessions;
use crate::refusals::Refusals;
use crate::session::{self, ConnRefusal, Ending, Lookup, Session};
use crate::settings::MqttSettings;
use crate::terms::{self, Expiry, Terms};
use crate::wire::{ConnCode, Level};
use bytes::Bytes;
use eldercare_intake::{Appender, Durable, Lane, TryAppendError};
use eldercare_model::{Device, Stream};
use eldercare_protocol::parse_topic;
use eldercare_store::Registry;
use eldercare_tls::Tls;
use rumqttd::protocol::{ConnAckProperties, LastWill, LastWillProperties, Packet, QoS};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Clone)]
pub struct GuardConfig {
    /// The embedded broker's router: a session it keeps gets a link to it.
    pub router: Router,
    /// Commands for the sessions that keep nothing.
    pub commands: crate::commands::Hub,
    /// The live sessions, which the registry API can close.
    pub sessions: Sessions,
    /// Where device messages go: the intake log, in the order each device
    /// sent them; a QoS 1 message is acknowledged once it is durable there.
    pub intake: Appender,
    /// Limits and timers of the listener.
    pub settings: MqttSettings,
}

/// Pending connections the kernel may hold for the accept loop.
const BACKLOG: u32 = 4096;
/// How long the DISCONNECT the listener says goodbye with may take.
const GOODBYE: Duration = Duration::from_secs(1);

/// Reasons of `eldercare_mqtt_connections_refused_total`, exported from
/// the start so a dashboard sees 0 rather than nothing.
const REFUSED: [&str; 17] = [
    "no_credentials",
    "unknown_device",
    "bad_credentials",
    "will_not_owned",
    "registry_changed",
    "registry_unavailable",
    "certificate_mismatch",
    "unsupported_protocol",
    "bad_auth_method",
    "protocol_error",
    "connect_timeout",
    "too_many_pending",
    "connect_too_large",
    "malformed_connect",
    "memory",
    "tls_handshake",
    "broker",
];
/// Reasons of `eldercare_mqtt_connections_closed_total`.
const CLOSED: [&str; 8] = [
    "keep_alive",
    "rate_limit",
    "packet_too_large",
    "malformed",
    "memory",
    "topic_not_owned_qos2",
    "topic_alias",
    "protocol_error",
];

/// The listener's shared state; each bound address gets a [`Listener`].
#[derive(Clone)]
pub struct Guard {
    shared: Arc<Shared>,
}

/// One bound address, plain or TLS.
pub struct Listener {
    listener: TcpListener,
    tls: Option<Tls>,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) cfg: GuardConfig,
    pub(crate) store: Arc<dyn Registry>,
    pub(crate) refusals: Refusals,
    /// Connections accepted and not yet past CONNECT.
    pending: Arc<Semaphore>,
    /// Bytes of unfinished packets, all connections together.
    budget: Budget,
    /// What the broker keeps of sessions, and for how long.
    kept: Keeper,
}

/// A CONNECT that passed.
struct Admitted {
    level: Level,
    terms: Terms,
    ack: Option<ConnAckProperties>,
    client_id: String,
    will: Option<(LastWill, Option<LastWillProperties>)>,
    device: Device,
    handle: SessionHandle,
}

fn refused(reason: &'static str) {
    metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => reason).increment(1);
}

impl Guard {
    pub fn new(cfg: GuardConfig, store: Arc<dyn Registry>, refusals: Refusals) -> Guard {
        for r in REFUSED {
            metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => r)
                .absolute(0);
        }
        for r in CLOSED {
            metrics::counter!("eldercare_mqtt_connections_closed_total", "reason" => r).absolute(0);
        }
        metrics::counter!("eldercare_mqtt_rate_limited_total").absolute(0);
        let s = &cfg.settings;
        let shared = Shared {
            pending: Arc::new(Semaphore::new(s.max_pending_connections)),
            budget: Budget::new(s.max_buffered_bytes, s.connect_timeout()),
            kept: Keeper::new(cfg.router.clone(), cfg.commands.clone()),
            cfg,
            store,
            refusals,
        };
        Guard {
            shared: Arc::new(shared),
        }
    }

    /// Binds a listener; with `tls`, every connection is TLS.
    pub async fn bind(&self, addr: SocketAddr, tls: Option<Tls>) -> std::io::Result<Listener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(Listener {
            listener: socket.listen(BACKLOG)?,
            tls,
            shared: self.shared.clone(),
        })
    }

    /// Exports the listener's gauges every second until `shutdown`.
    pub async fn export_gauges(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => self.shared.export_gauges(),
            }
        }
    }
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts devices until `shutdown`; each connection ends with it too.
    /// The loop itself never waits on a socket: each is served on a task
    /// of its own, and one over the pending cap is closed at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let Listener {
            listener,
            tls,
            shared,
        } = self;
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
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
            let tls = tls.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = shared.accepted(sock, tls, pending) => if let Err(e) = r {
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
        metrics::gauge!("eldercare_mqtt_sessions_live").set(self.cfg.sessions.live_total() as f64);
    }

    /// A new socket: the TLS handshake first when the listener has TLS.
    async fn accepted(
        self: &Arc<Self>,
        sock: TcpStream,
        tls: Option<Tls>,
        pending: OwnedSemaphorePermit,
    ) -> std::io::Result<()> {
        sock.set_nodelay(true)?;
        let Some(tls) = tls else {
            return self.connection(sock, None, pending).await;
        };
        let timeout = self.cfg.settings.connect_timeout();
        let stream = match tokio::time::timeout(timeout, tls.mqtt_acceptor().accept(sock)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                refused("tls_handshake");
                debug!(error = %e, "TLS handshake failed.");
                return Ok(());
            }
            Err(_) => {
                refused("connect_timeout");
                return Ok(());
            }
        };
        let certified = eldercare_tls::peer_device_id(stream.get_ref().1);
        self.connection(stream, certified, pending).await
    }

    /// Serves one connection: its CONNECT, then its session. `certified`:
    /// the device a verified client certificate names.
    async fn connection<S>(
        self: &Arc<Self>,
        stream: S,
        certified: Option<String>,
        pending: OwnedSemaphorePermit,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let s = &self.cfg.settings;
        let mut reader = FrameReader::new(self.budget.clone(), s.max_connect_bytes);
        let admitted = self
            .handshake(&mut rd, &mut wr, &mut reader, certified.as_deref())
            .await?;
        let Some(admitted) = admitted else {
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
    async fn handshake<S: AsyncRead + AsyncWrite>(
        &self,
        rd: &mut ReadHalf<S>,
        wr: &mut WriteHalf<S>,
        reader: &mut FrameReader,
        certified: Option<&str>,
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
        let Some(level) = Level::of_connect(&first) else {
            // MQTT 3.1 or something else: "unacceptable protocol
            // version", in the only form every version reads.
            refused("unsupported_protocol");
            info!(reason = "unsupported_protocol", "MQTT connection refused.");
            send_now(wr, &frame::connack(1)).await?;
            return Ok(None);
        };
        let Ok(Packet::Connect(connect, props, will, will_props, login)) =
            level.read(&mut first, usize::MAX)
        else {
            refused("malformed_connect");
            return Ok(None);
        };
        let asked = terms::Asked {
            level,
            keep_alive: connect.keep_alive,
            clean: connect.clean_session,
            client_id: &connect.client_id,
            props: props.as_ref(),
            will_props: will_props.as_ref(),
        };
        let agreed = terms::agree(asked, &self.cfg.settings, || {
            format!("auto-{:016x}", rand::random::<u64>())
        });
        let (terms, ack) = match agreed {
            Ok(v) => v,
            Err(code) => {
                let reason = match code {
                    ConnCode::BadAuthMethod => "bad_auth_method",
                    _ => "protocol_error",
                };
                refused(reason);
                info!(reason, "MQTT connection refused.");
                send_now(wr, &level.connack(code, false, None)).await?;
                return Ok(None);
            }
        };
        let credential = match session::credential_of(login.as_ref(), certified) {
            Ok(c) => c,
            Err(r) => return self.refuse(level, wr, r).await,
        };
        let client_id = terms
            .assigned_client_id
            .clone()
            .unwrap_or_else(|| connect.client_id.clone());
        // Registered before the credentials are checked: a rotation that
        // commits meanwhile still finds (and closes) this connection. An
        // assigned client id is nobody else's, so it never takes over.
        let registered_id = if terms.assigned_client_id.is_some() {
            ""
        } else {
            client_id.as_str()
        };
        let handle = self
            .cfg
            .sessions
            .register(credential.device_id(), registered_id);
        let lookup = match self.store.get_device(credential.device_id()).await {
            Ok(Some(d)) => Lookup::Found(d),
            Ok(None) => Lookup::Unknown,
            Err(e) => {
                warn!(error = %e, "Registry lookup failed at CONNECT.");
                Lookup::Unavailable
            }
        };
        let will_topic = will.as_ref().map(|w| String::from_utf8_lossy(&w.topic));
        match session::admit(
            credential,
            will_topic.as_deref(),
            lookup,
            handle.close.is_cancelled(),
        ) {
            Ok(device) => Ok(Some(Admitted {
                level,
                terms,
                ack,
                client_id,
                will: will.map(|w| (w, will_props)),
                device,
                handle,
            })),
            Err(r) => self.refuse(level, wr, r).await,
        }
    }

    async fn refuse<W: AsyncWrite>(
        &self,
        level: Level,
        wr: &mut WriteHalf<W>,
        r: ConnRefusal,
    ) -> std::io::Result<Option<Admitted>> {
        refused(r.reason());
        info!(reason = r.reason(), "MQTT connection refused.");
        send_now(wr, &level.connack(r.code(), false, None)).await?;
        Ok(None)
    }

    /// Serves a logged-in device until its session ends, then publishes
    /// its last will if it is due and lets the broker keep or forget the
    /// session.
    async fn session<S>(
        self: &Arc<Self>,
        a: Admitted,
        rd: ReadHalf<S>,
        mut wr: WriteHalf<S>,
        reader: FrameReader,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Admitted {
            level,
            terms,
            ack,
            client_id,
            will,
            device,
            handle,
        } = a;
        let broker_id = links::broker_client_id(&device.device_id, &client_id);
        let lock = self.kept.lock(&broker_id).await;
        let generation = self.kept.claim(&broker_id);
        // Live before its link opens: opening it ends an older connection's
        // link under the same client id, and that connection must then
        // find itself taken over (no last will).
        handle.set_live();
        let (broker, present) = match self.kept.start(&broker_id, &terms).await {
            Ok(b) => b,
            Err(e) => {
                refused("broker");
                warn!(error = %e, "The embedded broker refused a session.");
                send_now(&mut wr, &level.connack(ConnCode::Unavailable, false, None)).await?;
                return Ok(());
            }
        };
        drop(lock);
        send_now(&mut wr, &level.connack(ConnCode::Accepted, present, ack)).await?;
        let linked = matches!(broker, Broker::Link(_));
        let s = &self.cfg.settings;
        let session = Session::new(&device, terms.keep_alive, s, Instant::now());
        metrics::counter!("eldercare_mqtt_connections_total").increment(1);
        debug!(device_id = %device.device_id, keep_alive_s = terms.keep_alive, v5 = level.is_v5(), "Device connected.");
        let close = handle.close.clone();
        let ended = conn::serve(
            Conn::new(self, level, &terms, session, broker, close),
            rd,
            &mut wr,
            reader,
        )
        .await;
        let ending = ended.ending;
        let taken_over = handle.taken_over();
        if let Some(reason) = ending.closed_reason() {
            metrics::counter!("eldercare_mqtt_connections_closed_total", "reason" => reason)
                .increment(1);
            debug!(device_id = %device.device_id, reason, "MQTT session closed by the listener.");
        }
        if let Some((code, text)) = ending.disconnect_reason(taken_over)
            && let Some(bye) = level.disconnect(code, text, terms.device_max_packet)
        {
            let _ = tokio::time::timeout(GOODBYE, send_now(&mut wr, &bye)).await;
        }
        drop(handle);
        if ending.will_due(taken_over)
            && let Some(w) = will
        {
            let elder: std::sync::Arc<str> = device.elder_id.as_str().into();
            self.will_after(w, elder, terms.will_delay, &broker_id, generation);
        }
        // A DISCONNECT may shorten the session's expiry, or lengthen it
        // when it had one (MQTT 5 §3.14.2.2.2), within the listener's cap.
        let expiry = match (ended.expiry, terms.expiry) {
            (Some(secs), Expiry::After(d)) if !d.is_zero() || secs == 0 => Expiry::After(
                Duration::from_secs(u64::from(secs.min(self.cfg.settings.max_session_expiry_s))),
            ),
            (_, e) => e,
        };
        let lock = self.kept.lock(&broker_id).await;
        let end = kept::End {
            link: ended.link,
            linked,
            expiry,
        };
        self.kept.end(&broker_id, generation, end).await;
        drop(lock);
        Ok(())
    }

    /// Publishes the will now, or after its delay unless the client came
    /// back meanwhile (MQTT 5 §3.1.3.2.2).
    fn will_after(
        self: &Arc<Self>,
        (will, props): (LastWill, Option<LastWillProperties>),
        elder: std::sync::Arc<str>,
        delay: Duration,
        broker_id: &str,
        generation: u64,
    ) {
        let topic = topic_for(
            &will.topic,
            props.as_ref().and_then(|p| p.content_type.as_deref()),
        );
        let me = self.clone();
        let id = broker_id.to_string();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                if !me.kept.still_latest(&id, generation) {
                    return;
                }
            }
            // The will goes to the log like any message of the device (no
            // one waits for it to be durable).
            let _ = me
                .cfg
                .intake
                .append(lane_of(&topic), Some(elder), topic, will.message)
                .await;
        });
    }

    /// Appends an accepted message to the intake log: a QoS 1 or 2 message
    /// and an SOS or fall wait for room (back-pressure: the device is
    /// slowed); routine QoS 0 telemetry is shed, and counted, when the log
    /// is behind. For QoS 1 and 2: when it is durable.
    pub(crate) async fn intake(
        &self,
        qos: QoS,
        elder: std::sync::Arc<str>,
        topic: String,
        payload: Bytes,
    ) -> Result<Option<Durable>, Ending> {
        let lane = lane_of(&topic);
        if qos == QoS::AtMostOnce && lane == Lane::Routine {
            let stream = stream_label(&topic);
            return match self
                .cfg
                .intake
                .try_append(lane, Some(elder), topic, payload)
            {
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
            .append(lane, Some(elder), topic, payload)
            .await
            .map_err(|_| Ending::IntakeClosed)?;
        Ok((qos != QoS::AtMostOnce).then_some(durable))
    }
}

/// Writes a packet and flushes it: over TLS, bytes written may wait in
/// the session's buffer until then.
async fn send_now<W: AsyncWrite>(wr: &mut WriteHalf<W>, packet: &[u8]) -> std::io::Result<()> {
    wr.write_all(packet).await?;
    wr.flush().await
}

/// The topic a message is taken under: an MQTT 5 content type of
/// protobuf sends a plain topic down the `/pb` path.
pub(crate) fn topic_for(topic: &[u8], content_type: Option<&str>) -> String {
    let topic = String::from_utf8_lossy(topic).into_owned();
    if content_type == Some(eldercare_protocol::PROTOBUF_CONTENT_TYPE) && !topic.ends_with("/pb") {
        format!("{topic}/pb")
    } else {
        topic
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

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
