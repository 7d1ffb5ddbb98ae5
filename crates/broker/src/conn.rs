//! One logged-in device session on the wire: the packets the device
//! sends, judged by its [`Session`] and done (device messages straight
//! to the intake log, at QoS 2 with the handshake completed here, PINGREQ
//! answered here, its `cmd` subscriptions kept by the command hub or, for
//! a session the broker keeps, by the broker through the session's own
//! link), and commands written to the device in its protocol version.
//!
//! The listener, not the broker, times each device's keep-alive, since
//! only it sees every packet; and it holds the device to the session's
//! terms: commands in flight within the device's Receive Maximum, none
//! larger than the packet size it takes.
use crate::commands::{self, Command};
use crate::frame::{self, FrameError, FrameReader};
use crate::guard::{Shared, topic_for};
use crate::links::Link;
use crate::session::{Ending, Pace, PublishVerdict, Session, SubscribeVerdict};
use crate::terms::Terms;
use crate::wire::{self, Level, Why};
use bytes::{Bytes, BytesMut};
use eldercare_intake::Durable;
use eldercare_protocol::{Refusal, decode};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Packet, Publish, PublishProperties, QoS, Subscribe, SubscribeProperties, Unsubscribe,
    UnsubscribeProperties,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a closed session may take to finish the frame it is writing
/// before its socket is dropped regardless (a device that stops reading
/// must not keep a revoked session open).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Packets waiting to be written to one device.
const OUT_QUEUE: usize = 64;

/// An answer to a QoS 1 or 2 PUBLISH (PUBACK or PUBREC), sent in the
/// order the messages came.
pub(crate) struct Ack {
    /// PUBREC (QoS 2) rather than PUBACK.
    rec: bool,
    /// Sent once the message is durable in the intake log.
    wait: Option<Durable>,
    /// Refused (and kept as a dead letter): MQTT 3.1.1 cannot say why;
    /// MQTT 5 can.
    refused: Option<(Why, String)>,
}

impl Ack {
    fn durable(rec: bool, d: Durable) -> Ack {
        Ack {
            rec,
            wait: Some(d),
            refused: None,
        }
    }

    fn now(rec: bool) -> Ack {
        Ack {
            rec,
            wait: None,
            refused: None,
        }
    }

    fn refused(rec: bool, why: Why, text: String) -> Ack {
        Ack {
            rec,
            wait: None,
            refused: Some((why, text)),
        }
    }
}

/// How a session reaches the broker.
pub(crate) enum Broker {
    /// A session the broker keeps after its connection: a link of its own.
    Link(Link),
    /// One that keeps nothing: its commands through the hub.
    Hub(commands::Listener, mpsc::Receiver<Command>),
}

/// Where commands for the device come from.
enum Source {
    Link(LinkRx),
    Hub(mpsc::Receiver<Command>),
}

/// The device-to-backend half of one session.
pub(crate) struct Conn<'a> {
    shared: &'a Shared,
    level: Level,
    session: Session,
    /// The session's own link to the broker, when the broker keeps it.
    link: Option<LinkTx>,
    /// Its place in the command hub otherwise.
    hub: Option<commands::Listener>,
    commands: Option<Source>,
    /// QoS 2 packet ids received and answered with PUBREC, waiting for
    /// their PUBREL: a PUBLISH sent again under one is not taken again.
    qos2: HashSet<u16>,
    out: mpsc::Sender<Bytes>,
    out_rx: Option<mpsc::Receiver<Bytes>>,
    /// QoS 1 messages waiting for their PUBACK, in order.
    acks: mpsc::Sender<(u16, Ack)>,
    acks_rx: Option<mpsc::Receiver<(u16, Ack)>>,
    close: CancellationToken,
    /// Commands the device may still be sent before it acknowledges one
    /// (its Receive Maximum, MQTT 5 §3.1.2.11.3).
    room: Arc<Semaphore>,
    room_max: usize,
    device_max_packet: Option<u32>,
    /// Refusals may carry their reason (the device did not ask otherwise).
    problem_info: bool,
    /// The Session Expiry Interval of the device's MQTT 5 DISCONNECT.
    expiry_update: Option<u32>,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        level: Level,
        terms: &Terms,
        session: Session,
        broker: Broker,
        close: CancellationToken,
    ) -> Conn<'a> {
        let (link, hub, commands) = match broker {
            Broker::Link(l) => (Some(l.tx), None, Source::Link(l.rx)),
            Broker::Hub(l, rx) => (None, Some(l), Source::Hub(rx)),
        };
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (acks, acks_rx) = mpsc::channel(shared.cfg.settings.max_inflight);
        let room_max = usize::from(terms.device_receive_max);
        Conn {
            shared,
            level,
            session,
            link,
            hub,
            commands: Some(commands),
            qos2: HashSet::new(),
            out,
            out_rx: Some(out_rx),
            acks,
            acks_rx: Some(acks_rx),
            close,
            room: Arc::new(Semaphore::new(room_max)),
            room_max,
            device_max_packet: terms.device_max_packet,
            problem_info: terms.problem_info,
            expiry_update: None,
        }
    }
}

/// How a session ended.
pub(crate) struct Ended {
    pub ending: Ending,
    /// The session's own link to the broker, unless the broker ended it.
    pub link: Option<LinkTx>,
    /// A Session Expiry Interval the device's MQTT 5 DISCONNECT set.
    pub expiry: Option<u32>,
}

/// Runs the session until it ends, and says how.
pub(crate) async fn serve<S>(
    mut conn: Conn<'_>,
    mut rd: ReadHalf<S>,
    wr: &mut WriteHalf<S>,
    reader: FrameReader,
) -> Ended
where
    S: AsyncRead + AsyncWrite,
{
    let (Some(out_rx), Some(acks_rx), Some(commands)) = (
        conn.out_rx.take(),
        conn.acks_rx.take(),
        conn.commands.take(),
    ) else {
        return Ended {
            ending: Ending::Lost,
            link: conn.link,
            expiry: None,
        };
    };
    let out = conn.out.clone();
    let close = conn.close.clone();
    let (level, problem_info, max_packet) = (conn.level, conn.problem_info, conn.device_max_packet);
    let to_device = ToDevice {
        level: conn.level,
        out: out.clone(),
        room: conn.room.clone(),
        max_packet: conn.device_max_packet,
    };
    let ending = tokio::select! {
        e = conn.run(&mut rd, reader) => e,
        _ = write_device(wr, out_rx) => Ending::Lost,
        e = to_device.run(commands) => e,
        e = acknowledge(acks_rx, Answers { level, problem_info, max_packet }, out) => e,
        // A session stuck writing to a device that does not read is
        // dropped anyway.
        _ = async {
            close.cancelled().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        } => Ending::Revoked,
    };
    Ended {
        ending,
        link: conn.link.filter(|_| ending != Ending::BrokerGone),
        expiry: conn.expiry_update,
    }
}

impl Conn<'_> {
    /// Reads packets until the session ends, and says how it ended.
    async fn run<R: AsyncRead>(&mut self, rd: &mut ReadHalf<R>, mut reader: FrameReader) -> Ending {
        let start = Instant::now();
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
            // safe).
            let next = tokio::select! {
                biased;
                // No last will: the backend ended the session on purpose;
                // the device was not lost.
                _ = self.close.cancelled() => return Ending::Revoked,
                _ = &mut keep_alive, if expires.is_some() => return Ending::KeepAliveExpired,
                f = reader.next(rd) => f,
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
        if frame::packet_type(&frame) == frame::AUTH_TYPE {
            // Extended authentication is never offered (MQTT 5 §4.12).
            return Err(Ending::ProtocolError);
        }
        let qos_pkid = wire::publish_qos_pkid(&frame);
        let packet = self
            .level
            .read(&mut frame, usize::MAX)
            .map_err(|_| Ending::Malformed)?;
        match packet {
            Packet::PingReq(_) => self.send(Bytes::from_static(&frame::PINGRESP)).await,
            Packet::Disconnect(d, props) => Err({
                self.expiry_update = props.and_then(|p| p.session_expiry_interval);
                if d.reason_code
                    == rumqttd::protocol::DisconnectReasonCode::DisconnectWithWillMessage
                {
                    Ending::DisconnectedWithWill
                } else {
                    // Said goodbye: no last will.
                    Ending::Disconnected
                }
            }),
            // A second CONNECT is a protocol violation (MQTT 3.1.1 §3.1.0-2,
            // MQTT 5 §3.1.0-2).
            Packet::Connect(..) => Err(Ending::ProtocolError),
            Packet::Publish(p, props) => {
                let (qos, pkid) = qos_pkid.ok_or(Ending::Malformed)?;
                self.publish(p, props, qos, pkid).await
            }
            Packet::Subscribe(s, props) => self.subscribe(s, props).await,
            Packet::Unsubscribe(u, props) => self.unsubscribe(u, props).await,
            // The second half of a QoS 2 message the device sent.
            Packet::PubRel(r, _) => {
                let known = self.qos2.remove(&r.pkid);
                self.send(self.level.pubcomp(r.pkid, known).freeze()).await
            }
            // The device acknowledged a command: room for the next one.
            p @ (Packet::PubAck(..) | Packet::PubComp(..) | Packet::PubRec(..)) => {
                if matches!(p, Packet::PubAck(..) | Packet::PubComp(..)) {
                    self.acknowledged();
                }
                match self.link {
                    Some(_) => self.forward(p).await,
                    None => Ok(()),
                }
            }
            // What only a server sends.
            _ => Err(Ending::Malformed),
        }
    }

    async fn publish(
        &mut self,
        p: Publish,
        props: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
    ) -> Result<(), Ending> {
        if props.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
            // Never offered (Topic Alias Maximum 0 in the CONNACK).
            return Err(Ending::TopicAlias);
        }
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(Ending::Malformed),
        };
        if std::str::from_utf8(&p.topic).is_err() {
            return Err(Ending::Malformed);
        }
        let content_type = props.as_ref().and_then(|p| p.content_type.as_deref());
        let topic = topic_for(&p.topic, content_type);
        if self
            .session
            .wants_registry([topic.as_str()], Instant::now())
        {
            self.read_delegation().await;
        }
        let rec = qos == QoS::ExactlyOnce;
        match self.session.publish(&topic, qos) {
            // Device -> backend traffic goes straight to the intake log
            // rather than through the broker: a full log slows the device
            // down instead of queueing without bound.
            PublishVerdict::Intake => {
                if rec && self.qos2.contains(&pkid) {
                    // Sent again before its PUBREL: taken once already.
                    return self.ack(pkid, Ack::now(true)).await;
                }
                if self.level.is_v5()
                    && qos != QoS::AtMostOnce
                    && let Err(r) = decode(&topic, &p.payload, None, now_ms())
                {
                    // MQTT 5 can say it: "payload format invalid", with the
                    // reason, instead of an answer that looks like success.
                    self.refuse(&topic, &p.payload, &r);
                    let why = Ack::refused(rec, Why::PayloadFormatInvalid, r.to_string());
                    return self.ack(pkid, why).await;
                }
                if let Some(durable) = self
                    .shared
                    .intake(qos, self.session.elder_id().clone(), topic, p.payload)
                    .await?
                {
                    if rec {
                        self.qos2.insert(pkid);
                    }
                    self.ack(pkid, Ack::durable(rec, durable)).await?;
                }
                Ok(())
            }
            PublishVerdict::Refuse { ack } => {
                self.refuse_not_owned(&topic, &p.payload);
                if ack {
                    let why = Ack::refused(false, Why::NotAuthorized, "topic not owned".into());
                    self.ack(pkid, why).await?;
                }
                Ok(())
            }
            PublishVerdict::RefuseAndClose => {
                self.refuse_not_owned(&topic, &p.payload);
                if !self.level.is_v5() {
                    // 3.1.1 cannot refuse a QoS 2 message but by closing.
                    return Err(Ending::RefusedQos2);
                }
                let why = Ack::refused(true, Why::NotAuthorized, "topic not owned".into());
                self.ack(pkid, why).await
            }
        }
    }

    fn refuse_not_owned(&self, topic: &str, payload: &[u8]) {
        let sender = self.session.device_id().to_string();
        self.refuse(
            topic,
            payload,
            &Refusal::TopicNotOwned {
                sender,
                topic: topic.to_string(),
            },
        );
    }

    fn refuse(&self, topic: &str, payload: &[u8], why: &Refusal) {
        let sender = self.session.device_id();
        self.shared
            .refusals
            .refuse(topic, Some(sender), why, payload);
    }

    async fn subscribe(
        &mut self,
        s: Subscribe,
        props: Option<SubscribeProperties>,
    ) -> Result<(), Ending> {
        if self
            .session
            .wants_registry(s.filters.iter().map(|f| f.path.as_str()), Instant::now())
        {
            self.read_delegation().await;
        }
        match self.session.subscribe(&s.filters) {
            SubscribeVerdict::Forward => match &mut self.hub {
                Some(hub) => {
                    let granted: Vec<u8> = s
                        .filters
                        .iter()
                        .map(|f| hub.subscribe(&f.path, f.qos as u8))
                        .collect();
                    let ack = self.level.suback(s.pkid, &granted);
                    self.send(ack.freeze()).await
                }
                None => self.forward(Packet::Subscribe(s, props)).await,
            },
            SubscribeVerdict::Refuse => {
                metrics::counter!("eldercare_mqtt_subscriptions_refused_total").increment(1);
                let ack = self.level.suback_refused(s.pkid, s.filters.len());
                self.send(ack.freeze()).await
            }
        }
    }

    async fn unsubscribe(
        &mut self,
        u: Unsubscribe,
        props: Option<UnsubscribeProperties>,
    ) -> Result<(), Ending> {
        match &mut self.hub {
            Some(hub) => {
                let had: Vec<bool> = u.filters.iter().map(|f| hub.unsubscribe(f)).collect();
                let ack = self.level.unsuback(u.pkid, &had);
                self.send(ack.freeze()).await
            }
            None => self.forward(Packet::Unsubscribe(u, props)).await,
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

    async fn send(&self, frame: Bytes) -> Result<(), Ending> {
        self.out.send(frame).await.map_err(|_| Ending::Lost)
    }

    /// To the session's own link (there is one: the caller checked).
    async fn forward(&mut self, p: Packet) -> Result<(), Ending> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        link.send(p)
            .await
            .map(|_| ())
            .map_err(|_| Ending::BrokerGone)
    }

    fn acknowledged(&self) {
        if self.room.available_permits() < self.room_max {
            self.room.add_permits(1);
        }
    }
}

/// The devices registered to `elder_id`; `None` when the registry could
/// not be read.
async fn read_devices_of(
    store: &dyn eldercare_store::Registry,
    elder_id: &str,
) -> Option<HashSet<String>> {
    let mut after = None;
    let mut devices = HashSet::new();
    loop {
        let page = match store
            .query_devices(&eldercare_store::DeviceQuery {
                elder_id: Some(elder_id.to_string()),
                after: after.clone(),
                limit: 1000,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Registry lookup for a gateway failed.");
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
async fn write_device<W: AsyncWrite>(
    wr: &mut WriteHalf<W>,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(f) = next {
            batch.extend_from_slice(&f);
            next = if batch.len() < 64 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        wr.write_all(&batch).await?;
        wr.flush().await?;
        batch.clear();
    }
    Ok(())
}

/// Broker -> device: the session's link, written in the device's version
/// and within its terms.
struct ToDevice {
    level: Level,
    out: mpsc::Sender<Bytes>,
    room: Arc<Semaphore>,
    max_packet: Option<u32>,
}

impl ToDevice {
    async fn run(self, source: Source) -> Ending {
        match source {
            Source::Link(rx) => self.relay_link(rx).await,
            Source::Hub(rx) => self.relay_hub(rx).await,
        }
    }

    /// Commands from the hub: numbered here (the session keeps nothing,
    /// so nothing is sent again after the connection).
    async fn relay_hub(self, mut rx: mpsc::Receiver<Command>) -> Ending {
        let mut last_pkid: u16 = 0;
        while let Some(c) = rx.recv().await {
            let pkid = if c.qos == 0 {
                0
            } else {
                last_pkid = last_pkid.checked_add(1).unwrap_or(1);
                last_pkid
            };
            let frame = self.level.command(&c.topic, &c.payload, c.qos, pkid);
            if let Err(end) = self.deliver(frame).await {
                return end;
            }
        }
        // The hub is gone: the server is stopping.
        std::future::pending().await
    }

    /// Within the device's terms: never larger than it takes, QoS 1 within
    /// its Receive Maximum.
    async fn deliver(&self, frame: BytesMut) -> Result<(), Ending> {
        if self.max_packet.is_some_and(|m| frame.len() > m as usize) {
            // MQTT 5 §3.1.2.11.4: never sent; dropped as if delivered.
            metrics::counter!("eldercare_mqtt_commands_too_large_total").increment(1);
            return Ok(());
        }
        if wire::publish_qos_pkid(&frame).is_some_and(|(q, _)| q > 0) {
            match self.room.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return Err(Ending::Lost),
            }
        }
        self.out
            .send(frame.freeze())
            .await
            .map_err(|_| Ending::Lost)
    }

    async fn relay_link(self, mut rx: LinkRx) -> Ending {
        loop {
            let n = match rx.next().await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                // The broker ended the link: another connection with the
                // same client id took the session over.
                Err(_) => return Ending::BrokerGone,
            };
            if matches!(n, Notification::Unschedule) {
                if rx.wake().await.is_err() {
                    return Ending::BrokerGone;
                }
                continue;
            }
            let Some(packet) = Option::<Packet>::from(n) else {
                continue;
            };
            let mut frame = BytesMut::new();
            if let Err(e) = self.level.write(packet, &mut frame) {
                debug!(error = %e, "A broker packet could not be written for the device.");
                continue;
            }
            if let Err(end) = self.deliver(frame).await {
                return end;
            }
        }
    }
}

/// How the session answers: its version, whether refusals may say why,
/// and the largest packet the device takes.
#[derive(Clone, Copy)]
struct Answers {
    level: Level,
    problem_info: bool,
    max_packet: Option<u32>,
}

impl Answers {
    /// The PUBACK or PUBREC for `ack`: a refusal's reason is left out when
    /// the device asked for none, or when it would make the packet larger
    /// than the device takes (MQTT 5 §3.4.2.2.2).
    fn frame(self, pkid: u16, ack: &Ack) -> BytesMut {
        let build = |text: Option<String>| {
            let refused = ack.refused.as_ref().map(|(why, _)| (*why, text));
            if ack.rec {
                self.level.pubrec(pkid, refused)
            } else {
                self.level.puback(pkid, refused)
            }
        };
        let text = ack.refused.as_ref().map(|(_, t)| t.clone());
        let full = build(text.filter(|_| self.problem_info));
        match self.max_packet {
            Some(m) if full.len() > m as usize => build(None),
            _ => full,
        }
    }
}

/// Sends each PUBACK or PUBREC once its message may be acknowledged, in
/// the order the messages came.
async fn acknowledge(
    mut rx: mpsc::Receiver<(u16, Ack)>,
    answers: Answers,
    out: mpsc::Sender<Bytes>,
) -> Ending {
    while let Some((pkid, mut ack)) = rx.recv().await {
        if let Some(d) = ack.wait.take()
            && d.await.is_err()
        {
            // Not kept (the disk failed, or the server is stopping): no
            // answer, and the session ends, so the device sends it again.
            return Ending::IntakeClosed;
        }
        let frame = answers.frame(pkid, &ack);
        if out.send(frame.freeze()).await.is_err() {
            return Ending::Lost;
        }
    }
    // The reading half is gone; it says how the session ended.
    std::future::pending().await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
