//! The public MQTT listener: authentication and topic ownership, checked
//! per packet in-process before anything reaches the broker.
use crate::ingest::Refusals;
use bytes::BytesMut;
use eldercare_model::{Device, DeviceKind};
use eldercare_protocol::{Refusal, topic_device_id};
use eldercare_store::{DeviceQuery, Store, verify_secret};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest MQTT packet read from a device; the protocol's 4 KiB payload
/// limit is enforced (and counted) later, this only bounds memory.
const MAX_PACKET: usize = 256 * 1024;

#[derive(Clone)]
pub struct GuardConfig {
    /// Where rumqttd listens, on loopback.
    pub broker_addr: SocketAddr,
    /// Password the guard presents to rumqttd; nothing else knows it.
    pub internal_token: String,
    /// The live sessions, which the registry API can close.
    pub sessions: Sessions,
    /// Where device messages go: straight to the ingest pipeline, in the
    /// order each device sent them (see `connection`).
    pub intake: tokio::sync::mpsc::Sender<Intake>,
}

/// A device message for the ingest pipeline: a publish the guard accepted,
/// or a device's last will once its connection is lost.
#[derive(Debug)]
pub struct Intake {
    pub topic: String,
    pub payload: bytes::Bytes,
}

/// How long a closed session may take to finish the frame it is writing
/// before its sockets are dropped regardless (a device that stops reading
/// must not keep a revoked session open).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The live MQTT sessions of each device, so that rotating a device's
/// secret or deleting the device ends them at once: a session is only
/// authenticated at CONNECT, so without this a revoked device would stay
/// connected for as long as it liked.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<SessionsInner>,
}

#[derive(Default)]
struct SessionsInner {
    next_id: AtomicU64,
    /// device id -> connection id -> its session. A std mutex: it is never
    /// held across an await.
    map: std::sync::Mutex<HashMap<String, HashMap<u64, SessionEntry>>>,
}

struct SessionEntry {
    close: CancellationToken,
    /// Past CONNECT: authenticated and forwarded to the broker.
    live: bool,
    /// The MQTT client id the device chose (empty: none, so never the
    /// same as another session's).
    client_id: String,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, SessionEntry>>> {
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection that claims to be `device_id`, before its
    /// credentials are checked: a rotation that commits while the old
    /// secret is being verified then still finds (and closes) it.
    fn register(&self, device_id: &str, client_id: &str) -> SessionHandle {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        self.lock()
            .entry(device_id.to_string())
            .or_default()
            .insert(
                id,
                SessionEntry {
                    close: close.clone(),
                    live: false,
                    client_id: client_id.to_string(),
                },
            );
        SessionHandle {
            sessions: self.clone(),
            device_id: device_id.to_string(),
            id,
            close,
        }
    }

    /// Closes every session of `device_id`, including connections still
    /// being authenticated; returns how many were live (past CONNECT).
    pub fn disconnect(&self, device_id: &str) -> usize {
        let Some(entries) = self.lock().remove(device_id) else {
            return 0;
        };
        let mut live = 0;
        for e in entries.into_values() {
            live += usize::from(e.live);
            e.close.cancel();
        }
        metrics::counter!("eldercare_mqtt_sessions_closed_total").increment(live as u64);
        if live > 0 {
            info!(%device_id, sessions = live, "MQTT sessions closed by the registry.");
        }
        live
    }

    /// Live sessions of `device_id`.
    pub fn live(&self, device_id: &str) -> usize {
        self.lock()
            .get(device_id)
            .map(|m| m.values().filter(|e| e.live).count())
            .unwrap_or(0)
    }
}

/// One connection's place in [`Sessions`]; leaves it when dropped.
struct SessionHandle {
    sessions: Sessions,
    device_id: String,
    id: u64,
    close: CancellationToken,
}

impl SessionHandle {
    /// Whether a newer live session of the same device with the same
    /// client id exists: the device connected again, and the broker ends
    /// this session for it (an MQTT session takeover).
    fn taken_over(&self) -> bool {
        let map = self.sessions.lock();
        let Some(m) = map.get(&self.device_id) else {
            return false;
        };
        let Some(me) = m.get(&self.id).filter(|e| !e.client_id.is_empty()) else {
            return false;
        };
        m.iter()
            .any(|(id, e)| *id > self.id && e.live && e.client_id == me.client_id)
    }

    fn set_live(&self) {
        if let Some(e) = self
            .sessions
            .lock()
            .get_mut(&self.device_id)
            .and_then(|m| m.get_mut(&self.id))
        {
            e.live = true;
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut map = self.sessions.lock();
        if let Some(m) = map.get_mut(&self.device_id) {
            m.remove(&self.id);
            if m.is_empty() {
                map.remove(&self.device_id);
            }
        }
    }
}

pub struct Guard {
    listener: TcpListener,
    cfg: GuardConfig,
    store: Arc<dyn Store>,
    refusals: Refusals,
}

#[derive(Debug, Clone, Copy)]
enum ConnRefusal {
    NoCredentials,
    UnknownDevice,
    BadCredentials,
    WillNotOwned,
    /// The device's secret was rotated, or the device deleted, while its
    /// credentials were being checked: it may retry.
    RegistryChanged,
}

impl ConnRefusal {
    fn reason(self) -> &'static str {
        match self {
            ConnRefusal::NoCredentials => "no_credentials",
            ConnRefusal::UnknownDevice => "unknown_device",
            ConnRefusal::BadCredentials => "bad_credentials",
            ConnRefusal::WillNotOwned => "will_not_owned",
            ConnRefusal::RegistryChanged => "registry_changed",
        }
    }
}

impl Guard {
    pub async fn bind(
        addr: SocketAddr,
        cfg: GuardConfig,
        store: Arc<dyn Store>,
        refusals: Refusals,
    ) -> std::io::Result<Guard> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Guard {
            listener,
            cfg,
            store,
            refusals,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts devices until `shutdown`; each connection ends with it too.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = this.listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of file descriptors (or another resource):
                        // retrying at once would spin and flood the log.
                        // Counted, logged, and retried after a pause.
                        metrics::counter!("eldercare_mqtt_accept_errors_total").increment(1);
                        warn!(error = %e, "Accept failed; retrying in 100 ms.");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let this = this.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = this.connection(sock) => if let Err(e) = r {
                        debug!(%peer, error = %e, "Device connection ended.");
                    }
                }
            });
        }
    }

    async fn authenticate(&self, c: &mqttbytes::v4::Connect) -> Result<Device, ConnRefusal> {
        let will = c.last_will.as_ref();
        let login = c
            .login
            .as_ref()
            .filter(|l| !l.username.is_empty())
            .ok_or(ConnRefusal::NoCredentials)?;
        let device = match self.store.get_device(&login.username).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(ConnRefusal::UnknownDevice),
            Err(e) => {
                warn!(error = %e, "Registry lookup failed at CONNECT.");
                return Err(ConnRefusal::BadCredentials);
            }
        };
        if !verify_secret(&login.password, &device.secret_salt, &device.secret_hash) {
            return Err(ConnRefusal::BadCredentials);
        }
        if let Some(w) = will
            && topic_device_id(&w.topic) != Some(device.device_id.as_str())
        {
            return Err(ConnRefusal::WillNotOwned);
        }
        Ok(device)
    }

    async fn connection(&self, mut dev: TcpStream) -> std::io::Result<()> {
        let mut buf = BytesMut::with_capacity(4096);
        let Some(mut first) = read_frame(&mut dev, &mut buf).await? else {
            return Ok(());
        };
        if protocol_level(&first) == Some(5) {
            // MQTT 5 is not served yet: say so in the client's own protocol
            // (CONNACK, reason 0x84 unsupported protocol version) so it can
            // fall back to 3.1.1, instead of a bare close.
            metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => "unsupported_protocol").increment(1);
            info!(reason = "unsupported_protocol", "MQTT connection refused.");
            dev.write_all(&[0x20, 0x03, 0x00, 0x84, 0x00]).await?;
            return Ok(());
        }
        let Ok(Packet::Connect(connect)) = Packet::read(&mut first, MAX_PACKET) else {
            return Ok(());
        };
        let session = connect
            .login
            .as_ref()
            .map(|l| self.cfg.sessions.register(&l.username, &connect.client_id));
        let authenticated = match self.authenticate(&connect).await {
            Ok(_) if session.as_ref().is_none_or(|s| s.close.is_cancelled()) => {
                Err(ConnRefusal::RegistryChanged)
            }
            other => other,
        };
        let (device_id, mut delegation) = match authenticated {
            Ok(d) if d.kind == DeviceKind::Gateway => {
                let del = Delegation::new(d.elder_id.clone());
                (d.device_id, Some(del))
            }
            Ok(d) => (d.device_id, None),
            Err(r) => {
                metrics::counter!("eldercare_mqtt_connections_refused_total", "reason" => r.reason()).increment(1);
                info!(reason = r.reason(), "MQTT connection refused.");
                let code = match r {
                    ConnRefusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
                    ConnRefusal::RegistryChanged => ConnectReturnCode::ServiceUnavailable,
                    _ => ConnectReturnCode::NotAuthorized,
                };
                let mut out = BytesMut::new();
                let _ = ConnAck::new(code, false).write(&mut out);
                dev.write_all(&out).await?;
                return Ok(());
            }
        };
        // Authenticated: a session exists, since the login named the device.
        let Some(session) = session else {
            return Ok(());
        };
        session.set_live();
        let close = session.close.clone();
        metrics::counter!("eldercare_mqtt_connections_total").increment(1);
        debug!(%device_id, "Device connected.");

        // Forward the CONNECT with the device's identity fixed in the client
        // id, so one device can never take over another's session. The
        // last will stays here: the guard publishes it itself, into the
        // same queue as the device's messages, so it can never overtake
        // them (see below).
        let mut connect = connect;
        let will = connect.last_will.take();
        connect.client_id = if connect.client_id.is_empty() {
            format!("{device_id}~{}", rand::random::<u64>())
        } else {
            format!("{device_id}~{}", connect.client_id)
        };
        let internal =
            mqttbytes::v4::Login::new(device_id.clone(), self.cfg.internal_token.clone());
        let mut out = BytesMut::new();
        connect.login = Some(internal);
        Packet::Connect(connect)
            .write(&mut out, MAX_PACKET)
            .map_err(io_err)?;
        let mut broker = TcpStream::connect(self.cfg.broker_addr).await?;
        broker.set_nodelay(true)?;
        dev.set_nodelay(true)?;
        broker.write_all(&out).await?;

        let (mut br, mut bw) = broker.into_split();
        let (mut dr, dw) = dev.into_split();
        let dw = Arc::new(Mutex::new(dw));

        // Broker -> device: whole frames, so replies the guard writes
        // itself never land inside one.
        let to_dev = {
            let dw = dw.clone();
            async move {
                let mut b = BytesMut::with_capacity(4096);
                loop {
                    let frame = read_frame(&mut br, &mut b).await?;
                    let Some(frame) = frame else {
                        return Ok::<_, std::io::Error>(());
                    };
                    dw.lock().await.write_all(&frame).await?;
                }
            }
        };
        let own_cmd = format!("eldercare/v1/{device_id}/cmd");
        let mut clean = false;
        let from_dev = async {
            loop {
                // Closing is only taken between frames (reading is cancel
                // safe: bytes stay in `buf`), so the DISCONNECT never lands
                // inside a frame forwarded to the broker.
                let frame = tokio::select! {
                    biased;
                    _ = close.cancelled() => {
                        // A clean DISCONNECT, and no last will: the backend
                        // ended the session on purpose; the device was not
                        // lost.
                        clean = true;
                        bw.write_all(&[0xe0, 0x00]).await?;
                        return Ok(());
                    }
                    f = read_frame(&mut dr, &mut buf) => f?,
                };
                let Some(frame) = frame else {
                    return Ok::<_, std::io::Error>(());
                };
                let mut parse = BytesMut::from(&frame[..]);
                let packet = Packet::read(&mut parse, MAX_PACKET).map_err(io_err)?;
                let owned = |topic: &str, del: &Option<Delegation>| {
                    topic_device_id(topic) == Some(device_id.as_str())
                        || del.as_ref().is_some_and(|d| d.covers(topic))
                };
                // A gateway's list of devices is read again when it names
                // one not (or no longer) known to be its elder's.
                if let Some(d) = delegation.as_mut() {
                    let topics: Vec<&str> = match &packet {
                        Packet::Publish(p) => vec![p.topic.as_str()],
                        Packet::Subscribe(s) => s.filters.iter().map(|f| f.path.as_str()).collect(),
                        _ => Vec::new(),
                    };
                    if topics
                        .iter()
                        .any(|t| topic_device_id(t).is_some_and(|id| id != device_id) && d.stale(t))
                    {
                        d.refresh(self.store.as_ref()).await;
                    }
                }
                match packet {
                    Packet::Disconnect => {
                        // Said goodbye: no last will.
                        clean = true;
                        bw.write_all(&frame).await?;
                    }
                    Packet::Publish(p) if !owned(&p.topic, &delegation) => {
                        self.refusals.refuse(
                            &p.topic,
                            Some(&device_id),
                            &Refusal::TopicNotOwned {
                                sender: device_id.clone(),
                                topic: p.topic.clone(),
                            },
                            &p.payload,
                        );
                        match p.qos {
                            QoS::AtMostOnce => {}
                            QoS::AtLeastOnce => {
                                let mut o = BytesMut::new();
                                let _ = PubAck::new(p.pkid).write(&mut o);
                                dw.lock().await.write_all(&o).await?;
                            }
                            // A refused QoS 2 flow cannot be completed
                            // without the broker: end the connection.
                            QoS::ExactlyOnce => return Ok(()),
                        }
                    }
                    // Device -> backend traffic goes straight to the ingest
                    // pipeline rather than through the embedded broker: one
                    // loopback TCP crossing less per message, and a full
                    // pipeline slows the device down (the PUBACK waits)
                    // instead of queueing without bound. QoS 2 still takes
                    // the broker's path, which completes its handshake.
                    Packet::Publish(p) if p.qos != QoS::ExactlyOnce => {
                        let (qos, pkid) = (p.qos, p.pkid);
                        if self
                            .cfg
                            .intake
                            .send(Intake {
                                topic: p.topic,
                                payload: p.payload,
                            })
                            .await
                            .is_err()
                        {
                            // The pipeline has stopped: the server is going down.
                            return Ok(());
                        }
                        if qos == QoS::AtLeastOnce {
                            let mut o = BytesMut::new();
                            let _ = PubAck::new(pkid).write(&mut o);
                            dw.lock().await.write_all(&o).await?;
                        }
                    }
                    Packet::Subscribe(s) => {
                        let codes: Vec<SubscribeReasonCode> = s
                            .filters
                            .iter()
                            .map(|f| {
                                let cmd_of_ours = f.path == own_cmd
                                    || (f.path.ends_with("/cmd")
                                        && delegation.as_ref().is_some_and(|d| d.covers(&f.path)));
                                if cmd_of_ours {
                                    SubscribeReasonCode::Success(f.qos)
                                } else {
                                    SubscribeReasonCode::Failure
                                }
                            })
                            .collect();
                        if codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            bw.write_all(&frame).await?;
                        } else {
                            // Answer for the whole request ourselves: a
                            // device may only listen to its own commands.
                            metrics::counter!("eldercare_mqtt_subscriptions_refused_total")
                                .increment(1);
                            let mut o = BytesMut::new();
                            let _ = SubAck::new(
                                s.pkid,
                                codes
                                    .iter()
                                    .map(|c| match c {
                                        SubscribeReasonCode::Success(_) => {
                                            SubscribeReasonCode::Failure
                                        }
                                        other => *other,
                                    })
                                    .collect(),
                            )
                            .write(&mut o);
                            dw.lock().await.write_all(&o).await?;
                        }
                    }
                    _ => bw.write_all(&frame).await?,
                }
            }
        };
        let r = tokio::select! {
            r = to_dev => r,
            r = from_dev => r,
            // A session stuck writing to a device that does not read is
            // dropped anyway.
            _ = async {
                close.cancelled().await;
                tokio::time::sleep(CLOSE_GRACE).await;
            } => Ok(()),
        };
        // Lost without a goodbye (closed, broken, or timed out by the
        // broker's keep-alive): its last will, after everything it sent.
        // Not when the device has already connected again (a new session
        // took this one over): it is not lost, and its new session's
        // messages may already be ahead of this will.
        let taken_over = session.taken_over();
        if !clean
            && !taken_over
            && let Some(w) = will
        {
            let _ = self
                .cfg
                .intake
                .send(Intake {
                    topic: w.topic,
                    payload: w.message,
                })
                .await;
        }
        drop(session);
        r
    }
}

/// What a gateway's session may speak for: the devices registered to its
/// elder, as last read from the registry.
struct Delegation {
    elder_id: String,
    devices: std::collections::HashSet<String>,
    read_at: Option<std::time::Instant>,
    /// Ids lately looked for and not found, so a gateway naming one
    /// repeatedly does not make the registry be read for each message.
    missed: HashMap<String, std::time::Instant>,
}

impl Delegation {
    /// A moved or deleted device stops being covered within this long.
    const MAX_AGE: Duration = Duration::from_secs(30);
    /// A gateway naming a device that is not its own makes the registry
    /// be read again for that id at most this often.
    const MIN_INTERVAL: Duration = Duration::from_secs(1);

    fn new(elder_id: String) -> Delegation {
        Delegation {
            elder_id,
            devices: Default::default(),
            read_at: None,
            missed: HashMap::new(),
        }
    }

    fn covers(&self, topic: &str) -> bool {
        topic_device_id(topic).is_some_and(|id| self.devices.contains(id))
    }

    /// Whether the registry should be read before judging `topic`.
    fn stale(&mut self, topic: &str) -> bool {
        match self.read_at {
            None => true,
            Some(t) if t.elapsed() >= Self::MAX_AGE => true,
            Some(_) if self.covers(topic) => false,
            Some(_) => {
                let Some(id) = topic_device_id(topic) else {
                    return false;
                };
                let recent = self
                    .missed
                    .get(id)
                    .is_some_and(|t| t.elapsed() < Self::MIN_INTERVAL);
                if !recent {
                    if self.missed.len() >= 1024 {
                        self.missed.clear();
                    }
                    self.missed
                        .insert(id.to_string(), std::time::Instant::now());
                }
                !recent
            }
        }
    }

    async fn refresh(&mut self, store: &dyn Store) {
        self.read_at = Some(std::time::Instant::now());
        let mut after = None;
        let mut devices = std::collections::HashSet::new();
        loop {
            let page = match store
                .query_devices(&DeviceQuery {
                    elder_id: Some(self.elder_id.clone()),
                    after: after.clone(),
                    limit: 1000,
                })
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // Keep what was known; judged again at the next miss.
                    warn!(error = %e, "Registry lookup for a gateway failed.");
                    return;
                }
            };
            let full = page.len() == 1000;
            after = page.last().map(|d| d.device_id.clone());
            devices.extend(page.into_iter().map(|d| d.device_id));
            if !full {
                break;
            }
        }
        self.devices = devices;
    }
}

fn io_err(e: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
}

/// Reads one whole MQTT frame (fixed header included); `None` at EOF.
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Option<BytesMut>> {
    loop {
        match mqttbytes::check(buf.iter(), MAX_PACKET) {
            Ok(h) => return Ok(Some(buf.split_to(h.frame_length()))),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(io_err(e)),
        }
        if r.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// The protocol level byte of a CONNECT frame (4 for 3.1.1, 5 for MQTT 5).
fn protocol_level(frame: &[u8]) -> Option<u8> {
    // Fixed header: one type byte, then a 1–4 byte variable-length integer.
    let len_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = frame.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_closed_per_device_and_leave_when_they_end() {
        let s = Sessions::default();
        let a1 = s.register("a", "x");
        let a2 = s.register("a", "x");
        let b = s.register("b", "x");
        a1.set_live();
        a2.set_live();
        b.set_live();
        // Still checking its credentials: closed too, but not counted as live.
        let pending = s.register("a", "x");
        assert_eq!(s.live("a"), 2);
        assert_eq!(s.disconnect("a"), 2);
        assert!(a1.close.is_cancelled() && a2.close.is_cancelled());
        assert!(pending.close.is_cancelled(), "a CONNECT racing the change");
        assert!(!b.close.is_cancelled(), "other devices untouched");
        assert_eq!(s.disconnect("a"), 0);
        drop(b);
        assert_eq!(s.live("b"), 0);
        assert!(s.lock().is_empty(), "ended sessions leave no entry");
        drop((a1, a2, pending));
        assert!(s.lock().is_empty());
    }

    #[test]
    fn only_a_newer_session_with_the_same_client_id_takes_one_over() {
        let s = Sessions::default();
        let old = s.register("a", "x");
        let other = s.register("a", "y");
        let anonymous = s.register("a", "");
        let anonymous2 = s.register("a", "");
        for h in [&old, &other, &anonymous, &anonymous2] {
            h.set_live();
        }
        assert!(!old.taken_over(), "another client id is another session");
        assert!(!anonymous.taken_over(), "no client id: never the same");
        let pending = s.register("a", "x");
        assert!(!old.taken_over(), "not before the new one is past CONNECT");
        pending.set_live();
        assert!(old.taken_over());
        assert!(!pending.taken_over(), "the newest is not taken over");
        assert!(!s.register("b", "x").taken_over());
    }
}
