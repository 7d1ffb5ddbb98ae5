//! The listener over real sockets on port 0, with a real SQLite registry,
//! the real embedded router and an intake log whose durability the test
//! controls. MQTT 5 packets are built and read with rumqttc's codec, not
//! the listener's own.
use super::*;
use crate::links::Router;
use bytes::BytesMut;
use eldercare_intake::{Intake, IntakeConfig, Journal, Record};
use eldercare_model::{DeviceKind, Elder};
use eldercare_store::{SqliteStore, Store};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttd::RouterConfig;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

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
    ) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Record>> + Send + '_>> {
        Ok(Box::new(std::iter::empty()))
    }
    fn release(&mut self, _upto: u64) -> std::io::Result<()> {
        Ok(())
    }
}

struct Fixture {
    addr: SocketAddr,
    gate: std::sync::mpsc::Sender<()>,
    store: Arc<SqliteStore>,
    router: Router,
    records: mpsc::Receiver<Record>,
    _intake: Intake,
    _dir: tempfile::TempDir,
}

/// The listener over a registry holding `btn-1` (secret `s`).
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
    let router = Router::start(RouterConfig {
        max_connections: 100,
        max_outgoing_packet_count: 200,
        max_segment_size: 1024 * 1024,
        max_segment_count: 2,
        ..Default::default()
    });
    let commands = crate::commands::Hub::default();
    let link = crate::commands::Hub::connect(&router).await.unwrap();
    tokio::spawn(commands.clone().run(link, CancellationToken::new()));
    let g = Guard::new(
        GuardConfig {
            router: router.clone(),
            commands: commands.clone(),
            sessions: Sessions::default(),
            intake: appender,
            settings: MqttSettings::default(),
        },
        dyn_store,
        refusals,
    );
    let l = g.bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.run(CancellationToken::new()));
    Fixture {
        addr,
        gate,
        store,
        router,
        records,
        _intake: intake,
        _dir: dir,
    }
}

fn connect(user: &str, pass: &str) -> BytesMut {
    let mut c = v4::Connect::new("fw");
    c.keep_alive = 30;
    c.login = Some(v4::Login::new(user, pass));
    let mut out = BytesMut::new();
    v4::Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
    out
}

fn publish(topic: &str, pkid: u16) -> BytesMut {
    let mut p = v4::Publish::new(
        topic,
        rumqttc::mqttbytes::QoS::AtLeastOnce,
        r#"{"type": "sos"}"#,
    );
    p.pkid = pkid;
    let mut out = BytesMut::new();
    v4::Packet::Publish(p).write(&mut out, usize::MAX).unwrap();
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
    // Answered by the listener itself.
    s.write_all(&frame::PINGREQ).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, frame::PINGRESP);
}

/// An MQTT 5 client over a raw socket.
struct V5 {
    s: TcpStream,
    buf: BytesMut,
}

impl V5 {
    async fn connect(addr: SocketAddr, props: m5::ConnectProperties) -> (V5, m5::ConnAck) {
        let mut c = V5 {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        let mut conn = m5::Connect {
            keep_alive: 0,
            client_id: "fw5".into(),
            clean_start: true,
            properties: Some(props),
        };
        conn.keep_alive = 0;
        c.send(m5::Packet::Connect(
            conn,
            None,
            Some(m5::Login::new("btn-1", "s")),
        ))
        .await;
        let m5::Packet::ConnAck(ack) = c.next().await else {
            panic!("no CONNACK")
        };
        (c, ack)
    }

    async fn send(&mut self, p: m5::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> m5::Packet {
        loop {
            match m5::Packet::read(&mut self.buf, None) {
                Ok(p) => return p,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read_buf(&mut self.buf))
                .await
                .expect("nothing arrived")
                .unwrap();
            assert!(n > 0, "closed");
        }
    }

    async fn publish(&mut self, topic: &str, pkid: u16, payload: &str, ct: Option<&str>) {
        let props = ct.map(|c| m5::PublishProperties {
            content_type: Some(c.into()),
            ..Default::default()
        });
        let mut p = m5::Publish::new(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            payload.to_string(),
            props,
        );
        p.pkid = pkid;
        self.send(m5::Packet::Publish(p)).await;
    }
}

#[tokio::test]
async fn mqtt5_is_told_the_limits_and_why_a_message_is_refused() {
    let mut f = guard().await;
    let props = m5::ConnectProperties {
        session_expiry_interval: Some(u32::MAX),
        ..m5::ConnectProperties::new()
    };
    let (mut c, ack) = V5::connect(f.addr, props).await;
    assert_eq!(ack.code, m5::ConnectReturnCode::Success);
    let p = ack.properties.expect("MQTT 5 CONNACK properties");
    let s = MqttSettings::default();
    assert_eq!(p.receive_max, Some(64));
    assert_eq!(p.max_packet_size, Some(256 * 1024));
    assert_eq!(
        p.server_keep_alive,
        Some(s.max_keep_alive_s),
        "asked for none"
    );
    assert_eq!(p.session_expiry_interval, Some(s.max_session_expiry_s));
    assert_eq!(p.wildcard_subscription_available, Some(0));

    // Another device's topic: not authorized, said so.
    c.publish("eldercare/v1/btn-9/event", 1, r#"{"type":"sos"}"#, None)
        .await;
    let m5::Packet::PubAck(a) = c.next().await else {
        panic!()
    };
    assert_eq!((a.pkid, a.reason), (1, m5::PubAckReason::NotAuthorized));
    // Its own topic, a payload that cannot be taken: payload format
    // invalid, with the reason.
    let ts = chrono::Utc::now().timestamp_millis();
    c.publish(
        "eldercare/v1/btn-1/vitals",
        2,
        &format!(r#"{{"ts": {ts}, "hr": 900}}"#),
        None,
    )
    .await;
    let m5::Packet::PubAck(a) = c.next().await else {
        panic!()
    };
    assert_eq!(
        (a.pkid, a.reason),
        (2, m5::PubAckReason::PayloadFormatInvalid)
    );
    let why = a
        .properties
        .and_then(|p| p.reason_string)
        .unwrap_or_default();
    assert!(why.contains("hr"), "{why}");
    // A good message waits for durability like any other; a protobuf
    // content type on the plain topic takes the protobuf path.
    c.publish(
        "eldercare/v1/btn-1/event",
        3,
        &format!(r#"{{"ts": {ts}, "type": "sos"}}"#),
        None,
    )
    .await;
    f.gate.send(()).unwrap();
    let m5::Packet::PubAck(a) = c.next().await else {
        panic!()
    };
    assert_eq!((a.pkid, a.reason), (3, m5::PubAckReason::Success));
    assert_eq!(
        f.records.recv().await.unwrap().topic,
        "eldercare/v1/btn-1/event"
    );
    let mut p = m5::Publish::new(
        "eldercare/v1/btn-1/status",
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        vec![0x08, 0x01],
        Some(m5::PublishProperties {
            content_type: Some("application/x-protobuf".into()),
            ..Default::default()
        }),
    );
    p.pkid = 0;
    c.send(m5::Packet::Publish(p)).await;
    f.gate.send(()).unwrap();
    assert_eq!(
        f.records.recv().await.unwrap().topic,
        "eldercare/v1/btn-1/status/pb"
    );
}

#[tokio::test]
async fn mqtt5_commands_arrive_on_its_own_cmd_and_a_foreign_subscription_is_not_authorized() {
    let f = guard().await;
    let (mut c, _) = V5::connect(f.addr, m5::ConnectProperties::new()).await;
    c.send(m5::Packet::Subscribe(m5::Subscribe::new(
        m5::Filter::new(
            "eldercare/v1/btn-2/cmd",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        ),
        None,
    )))
    .await;
    let m5::Packet::SubAck(a) = c.next().await else {
        panic!()
    };
    assert_eq!(a.return_codes, vec![m5::SubscribeReasonCode::NotAuthorized]);
    let mut sub = m5::Subscribe::new(
        m5::Filter::new(
            "eldercare/v1/btn-1/cmd",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        ),
        None,
    );
    sub.pkid = 2;
    c.send(m5::Packet::Subscribe(sub)).await;
    let m5::Packet::SubAck(a) = c.next().await else {
        panic!()
    };
    assert_eq!(a.pkid, 2);
    assert_eq!(
        a.return_codes,
        vec![m5::SubscribeReasonCode::Success(
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        )]
    );
    // The backend sends a command through the broker.
    let mut backend = f.router.link("backend", true).await.unwrap();
    backend
        .tx
        .publish("eldercare/v1/btn-1/cmd", r#"{"type":"alert_ack"}"#)
        .unwrap();
    let m5::Packet::Publish(p) = c.next().await else {
        panic!()
    };
    assert_eq!(&p.topic[..], b"eldercare/v1/btn-1/cmd");
    assert_eq!(&p.payload[..], br#"{"type":"alert_ack"}"#);
}
