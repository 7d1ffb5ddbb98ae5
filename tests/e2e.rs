//! End-to-end tests over real sockets: the real `eldercare` binary, real
//! MQTT clients (rumqttc, and mosquitto_pub as device makers use it) and a
//! real tonic gRPC client. Every wait is on an event, bounded by a
//! generous deadline that only turns a hang into a failure.
use eldercare_proto::v1 as pb;
use pb::alert_service_client::AlertServiceClient;
use prost::Message;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_eldercare");
/// Only turns a hang into a failure; no test relies on it for timing.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    mqtt: String,
    grpc: String,
    metrics: String,
    /// Lines the server prints to stdout after its ready line.
    lines: std::sync::mpsc::Receiver<String>,
    /// A bearer token per role: operator `op-1`, dispatcher `disp-1`,
    /// admin `adm-1`, viewer `view-1`.
    tokens: std::collections::HashMap<&'static str, String>,
}

/// Adds the bearer token to every call, as an operator console does.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Client = AlertServiceClient<InterceptedService<Channel, Bearer>>;

/// Issues a token with the CLI, as an administrator would.
fn add_token(dir: &std::path::Path, operator: &str, role: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "token",
            "add",
            "--operator",
            operator,
            "--role",
            role,
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const ELDERS: &str = "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags\n\
E1,Test One,D1,C1,,,,\n\
E2,Test Two,D1,C2,,,,\n\
E3,Test Three,D2,C3,,,,\n\
E4,Test Four,D2,C3,31.2,121.4,500,dementia\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\n\
btn-1,sos_button,E1,,s-btn-1\n\
band-1,vital_band,E1,,s-band-1\n\
btn-2,sos_button,E2,,s-btn-2\n\
band-2,vital_band,E2,,s-band-2\n\
btn-3,sos_button,E3,,s-btn-3\n\
gps-4,gps_watch,E4,,s-gps-4\n\
btn-4,sos_button,E4,,s-btn-4\n";

impl Server {
    /// Starts `eldercare serve` on free ports and imports the test registry
    /// with `eldercare import` while it runs.
    fn start() -> Server {
        Server::start_with_rules(None)
    }

    /// Like [`Server::start`], with a rule file of this text.
    fn start_with_rules(rules: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = rules {
            std::fs::write(dir.path().join("rules.toml"), text).unwrap();
        }
        let tokens = [
            ("operator", "op-1"),
            ("dispatcher", "disp-1"),
            ("admin", "adm-1"),
            ("viewer", "view-1"),
        ]
        .into_iter()
        .map(|(role, who)| (role, add_token(dir.path(), who, role)))
        .collect();
        let s = Server::spawn(dir, tokens);
        std::fs::write(s.dir.path().join("elders.csv"), ELDERS).unwrap();
        std::fs::write(s.dir.path().join("devices.csv"), DEVICES).unwrap();
        let out = Command::new(BIN)
            .arg("import")
            .arg("--data-dir")
            .arg(s.dir.path())
            .arg(s.dir.path().join("devices.csv"))
            .arg(s.dir.path().join("elders.csv"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    /// Stops the server with SIGTERM and starts it again on the same data
    /// (and rule file, if any); new ports. Waits off the runtime, so the
    /// test's own clients keep running (and close) meanwhile.
    async fn restart(mut self) -> Server {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let tokens = std::mem::take(&mut self.tokens);
        let status = tokio::task::spawn_blocking(move || {
            let st = self.child.wait();
            (st, self)
        })
        .await
        .unwrap()
        .0
        .unwrap();
        assert!(status.success());
        Server::spawn(dir, tokens)
    }

    /// Runs `eldercare serve` on free ports over `dir`, with its
    /// `rules.toml` when there is one.
    fn spawn(
        dir: tempfile::TempDir,
        tokens: std::collections::HashMap<&'static str, String>,
    ) -> Server {
        let rules_file = dir.path().join("rules.toml");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path());
        if rules_file.exists() {
            cmd.arg("--rules").arg(&rules_file);
        }
        let mut child = cmd
            // E2E_SERVER_LOG=debug shows what the server does, when a test fails.
            .env(
                "ELDERCARE_LOG",
                std::env::var("E2E_SERVER_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn eldercare serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(String::from))
                .unwrap_or_else(|| panic!("no {k}= in ready line {line:?}"))
        };
        Server {
            mqtt: field("mqtt"),
            grpc: field("grpc"),
            metrics: field("metrics"),
            child,
            dir,
            lines,
            tokens,
        }
    }

    /// An AlertService client with the operator's token.
    async fn grpc(&self) -> Client {
        self.grpc_as("operator").await
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn bearer(&self, role: &str) -> Bearer {
        Bearer(format!("Bearer {}", self.tokens[role]).parse().unwrap())
    }

    /// An AlertService client with the token of `role`.
    async fn grpc_as(&self, role: &str) -> Client {
        AlertServiceClient::with_interceptor(self.channel().await, self.bearer(role))
    }

    async fn subscribe(&self, after_seq: u64) -> tonic::Streaming<pb::AlertEvent> {
        self.grpc()
            .await
            .subscribe(pb::SubscribeRequest {
                after_seq,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// The Prometheus text from /metrics.
    fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    fn counter(&self, name: &str, label: &str) -> u64 {
        let m = self.metrics();
        m.lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    /// Waits until the counter reaches `want` (counting is asynchronous to
    /// the publisher), then returns it.
    async fn await_counter(&self, name: &str, label: &str, want: u64) -> u64 {
        let t = tokio::time::Instant::now();
        loop {
            let v = self.counter(name, label);
            if v >= want || t.elapsed() > DEADLINE {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Device {
    client: AsyncClient,
    events: tokio::sync::mpsc::UnboundedReceiver<Packet>,
}

/// Connects a device and returns the CONNACK outcome as an error string.
async fn connect(addr: &str, user: Option<(&str, &str)>, id: &str) -> Result<Device, String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut o = MqttOptions::new(id, host, port.parse().unwrap());
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let (client, mut el): (AsyncClient, EventLoop) = AsyncClient::new(o, 100);
    loop {
        match tokio::time::timeout(DEADLINE, el.poll())
            .await
            .expect("connect hung")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev {
                let _ = tx.send(p);
            }
        }
    });
    Ok(Device { client, events })
}

async fn device(s: &Server, id: &str) -> Device {
    let secret = format!("s-{id}");
    connect(&s.mqtt, Some((id, &secret)), id)
        .await
        .expect("device connects")
}

async fn publish(d: &Device, topic: &str, payload: impl Into<Vec<u8>>) {
    d.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

async fn sos(d: &Device, id: &str) {
    publish(
        d,
        &format!("eldercare/v1/{id}/event"),
        format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    )
    .await;
}

async fn next(stream: &mut tonic::Streaming<pb::AlertEvent>) -> pb::AlertEvent {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("no alert event arrived")
        .unwrap()
        .expect("stream ended")
}

#[tokio::test]
async fn json_sos_and_protobuf_fall_reach_a_grpc_subscriber() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn1 = device(&s, "btn-1").await;
    sos(&btn1, "btn-1").await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (ev.seq, a.kind.as_str(), a.elder_id.as_str()),
        (1, "sos", "E1")
    );
    assert_eq!(a.severity, pb::Severity::Critical as i32);
    assert_eq!(ev.kind, pb::AlertEventKind::Raised as i32);
    assert_eq!(a.district, "D1");

    let btn2 = device(&s, "btn-2").await;
    let fall = pb::DeviceMessage {
        ts_ms: now_ms(),
        seq: Some(1),
        body: Some(pb::device_message::Body::Event(pb::Event {
            r#type: "fall".into(),
            confidence: Some(0.9),
        })),
    };
    publish(&btn2, "eldercare/v1/btn-2/event/pb", fall.encode_to_vec()).await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (ev.seq, a.kind.as_str(), a.elder_id.as_str()),
        (2, "fall", "E2")
    );

    // A repeat folds into the open alert.
    sos(&btn1, "btn-1").await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::Updated as i32);
    assert_eq!(ev.alert.unwrap().occurrences, 2);

    let list = s
        .grpc()
        .await
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.alerts.len(), 2);
}

#[tokio::test]
async fn a_resumed_subscriber_gets_exactly_what_it_missed() {
    let s = Server::start();
    let btn = [
        device(&s, "btn-1").await,
        device(&s, "btn-2").await,
        device(&s, "btn-3").await,
    ];
    let mut sub = s.subscribe(0).await;
    sos(&btn[0], "btn-1").await;
    let first = next(&mut sub).await;
    assert_eq!(first.seq, 1);
    drop(sub);
    // While disconnected: three more events.
    let mut watcher = s.subscribe(1).await;
    sos(&btn[1], "btn-2").await;
    sos(&btn[2], "btn-3").await;
    sos(&btn[0], "btn-1").await;
    for want in 2..=4 {
        assert_eq!(next(&mut watcher).await.seq, want);
    }
    let mut resumed = s.subscribe(first.seq).await;
    let got: Vec<u64> = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .iter()
    .map(|e| e.seq)
    .collect();
    assert_eq!(got, vec![2, 3, 4]);
    // Then live, with no duplicate at the switch-over.
    let btn3 = &btn[2];
    publish(
        btn3,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {}, "type": "fall"}}"#, now_ms()),
    )
    .await;
    assert_eq!(next(&mut resumed).await.seq, 5);
}

#[tokio::test]
async fn every_kind_of_bad_input_is_refused_counted_and_disturbs_nothing() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-1").await;
    let t = now_ms();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "malformed_json",
            "eldercare/v1/band-1/vitals",
            b"{hr: 150".to_vec(),
        ),
        (
            "unknown_stream",
            "eldercare/v1/band-1/heart",
            br#"{"ts": 1, "hr": 70}"#.to_vec(),
        ),
        (
            "out_of_range",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": 300}}"#).into_bytes(),
        ),
        (
            "missing_field",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}}}"#).into_bytes(),
        ),
        (
            "invalid_field",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": "fast"}}"#).into_bytes(),
        ),
        (
            "stale_ts",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {}, "hr": 70}}"#, t - 25 * 3600 * 1000).into_bytes(),
        ),
        (
            "future_ts",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {}, "hr": 70}}"#, t + 10 * 60 * 1000).into_bytes(),
        ),
        (
            "payload_too_large",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": 70, "pad": "{}"}}"#, "x".repeat(5000)).into_bytes(),
        ),
        (
            "malformed_protobuf",
            "eldercare/v1/band-1/vitals/pb",
            vec![0xff, 0xff, 0xff, 0xff],
        ),
        (
            "bad_topic",
            "eldercare/v1/band-1/vitals/xml",
            br#"{}"#.to_vec(),
        ),
        // An SOS in an unknown stream's clothing must raise nothing.
        (
            "unknown_stream",
            "eldercare/v1/band-1/sos",
            br#"{"type": "sos"}"#.to_vec(),
        ),
    ];
    for (_, topic, payload) in &cases {
        publish(&band, topic, payload.clone()).await;
    }
    // A valid message from another device right after still alerts, and
    // is the first event: nothing bad raised anything.
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-2").await;
    let ev = next(&mut sub).await;
    assert_eq!((ev.seq, ev.alert.unwrap().elder_id.as_str()), (1, "E2"));

    let mut want = std::collections::HashMap::new();
    for (reason, _, _) in &cases {
        *want.entry(*reason).or_insert(0u64) += 1;
    }
    for (reason, n) in want {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            s.await_counter("eldercare_ingest_refused_total", &label, n)
                .await,
            n,
            "{reason}"
        );
    }
    // And each is kept, with its reason, for operators to inspect.
    let out = Command::new(BIN)
        .args(["dead-letters", "--limit", "50", "--data-dir"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for (reason, _, _) in &cases {
        assert!(text.contains(reason), "dead letters lack {reason}:\n{text}");
    }
}

#[tokio::test]
async fn wrong_secret_no_credentials_and_spoofing_are_refused_and_raise_nothing() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let e = connect(&s.mqtt, Some(("btn-1", "wrong")), "x1")
        .await
        .err()
        .expect("wrong secret refused");
    assert!(
        e.contains("BadUserNamePassword") || e.contains("refused"),
        "{e}"
    );
    let e = connect(&s.mqtt, None, "x2")
        .await
        .err()
        .expect("no credentials refused");
    assert!(e.contains("NotAuthorized") || e.contains("refused"), "{e}");
    let e = connect(&s.mqtt, Some(("ghost-9", "x")), "x3")
        .await
        .err()
        .expect("unknown device refused");
    assert!(!e.is_empty());
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "bad_credentials",
            1
        )
        .await,
        1
    );
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "no_credentials",
            1
        )
        .await,
        1
    );
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "unknown_device",
            1
        )
        .await,
        1
    );

    // btn-2, logged in correctly, publishes an SOS under btn-1's id.
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-1").await;
    assert_eq!(
        s.await_counter("eldercare_ingest_refused_total", "topic_not_owned", 1)
            .await,
        1
    );
    // It may not listen to another device's commands either.
    btn2.client
        .subscribe("eldercare/v1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Then a real SOS from btn-3: it is the first alert, the spoof raised none.
    let btn3 = device(&s, "btn-3").await;
    sos(&btn3, "btn-3").await;
    let ev = next(&mut sub).await;
    assert_eq!((ev.seq, ev.alert.unwrap().device_id.as_str()), (1, "btn-3"));
    let mut btn2 = btn2;
    let suback = loop {
        match tokio::time::timeout(DEADLINE, btn2.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Packet::SubAck(a) => break a,
            _ => continue,
        }
    };
    assert!(matches!(
        suback.return_codes[0],
        rumqttc::SubscribeReasonCode::Failure
    ));
}

/// Runs the stock `mosquitto_pub` against the server as `user`/`pass`.
fn mosquitto_pub(
    s: &Server,
    extra: &[&str],
    user: &str,
    pass: &str,
    topic: &str,
    payload: &str,
) -> std::process::Output {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    Command::new("mosquitto_pub")
        .args(extra)
        .args([
            "-h", host, "-p", port, "-u", user, "-P", pass, "-t", topic, "-m", payload,
        ])
        .output()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients")
}

#[tokio::test]
async fn mosquitto_pub_sos_raises_an_alert() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let payload = format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms());
    let topic = "eldercare/v1/btn-1/event";
    let out = mosquitto_pub(&s, &["-q", "1"], "btn-1", "s-btn-1", topic, &payload);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = next(&mut sub).await;
    assert_eq!(ev.alert.unwrap().kind, "sos");
    // With a wrong password mosquitto_pub fails.
    let out = mosquitto_pub(&s, &[], "btn-1", "nope", topic, &payload);
    assert!(!out.status.success());
}

#[tokio::test]
async fn heart_rate_out_of_range_for_a_minute_raises_high_and_ack_reaches_the_device() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-2").await;
    let t0 = now_ms() - 70_000;
    for (i, dt) in [0, 30_000, 59_000].iter().enumerate() {
        publish(
            &band,
            "eldercare/v1/band-2/vitals",
            format!(r#"{{"ts": {}, "seq": {i}, "hr": 150}}"#, t0 + dt),
        )
        .await;
    }
    // Not yet 60 s: the next alert must come from the reading at +65 s.
    publish(
        &band,
        "eldercare/v1/band-2/vitals",
        format!(r#"{{"ts": {}, "seq": 9, "hr": 152}}"#, t0 + 65_000),
    )
    .await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.severity),
        ("vital_out_of_range", pb::Severity::High as i32)
    );
    assert!(a.summary.contains("152"), "{}", a.summary);
    assert_eq!(a.raised_at.unwrap().seconds, (t0 + 65_000) / 1000);

    // Acknowledge: the SOS device is told help is coming.
    let mut btn = device(&s, "btn-2").await;
    btn.client
        .subscribe("eldercare/v1/btn-2/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Packet::SubAck(_) = tokio::time::timeout(DEADLINE, btn.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    sos(&btn, "btn-2").await;
    let sos_alert = next(&mut sub).await.alert.unwrap();
    let mut g = s.grpc().await;
    let acked = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: sos_alert.id.clone(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
    let ev = next(&mut sub).await;
    assert_eq!(
        (ev.kind, ev.actor.as_str()),
        (pb::AlertEventKind::AcknowledgedEvent as i32, "op-1")
    );
    let cmd = loop {
        match tokio::time::timeout(DEADLINE, btn.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Packet::Publish(p) => break p,
            _ => continue,
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&cmd.payload).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["alert_id"].as_str()),
        (Some("alert_ack"), Some(sos_alert.id.as_str()))
    );

    let again = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: sos_alert.id.clone(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let missing = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: "nope".into(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn duplicates_by_seq_are_dropped() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    let p = format!(r#"{{"ts": {}, "seq": 5, "type": "sos"}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-1/event", p.clone()).await;
    publish(&btn, "eldercare/v1/btn-1/event", p).await;
    assert_eq!(next(&mut sub).await.seq, 1);
    assert_eq!(
        s.await_counter("eldercare_ingest_duplicates_total", "", 1)
            .await,
        1
    );
    // The next event is a fresh press, not the duplicate folding in.
    let btn3 = device(&s, "btn-3").await;
    sos(&btn3, "btn-3").await;
    assert_eq!(next(&mut sub).await.alert.unwrap().elder_id, "E3");
}

// Multi-threaded so the client's connection keeps running while this
// thread blocks waiting for the server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_even_with_a_subscriber_attached() {
    let mut s = Server::start();
    let mut sub = s.subscribe(0).await;
    let st = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The subscriber is told, and can resume from its last seq elsewhere.
    let end = tokio::time::timeout(DEADLINE, sub.message())
        .await
        .expect("stream not closed");
    assert!(!matches!(end, Ok(Some(_))), "no event expected: {end:?}");
}

#[tokio::test]
async fn health_and_reflection_serve_stock_tools() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let s = Server::start();
    let ch = Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let h = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "eldercare.v1.AlertService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, ServingStatus::Serving as i32);

    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer: {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"eldercare.v1.AlertService".to_string()),
        "{names:?}"
    );
}

#[test]
fn import_reports_refused_rows_by_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let elders = dir.path().join("e.csv");
    std::fs::write(
        &elders,
        "elder_id,name\nOK1,Someone\nBAD 2,Other\n,Nobody\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("import")
        .arg("--data-dir")
        .arg(dir.path())
        .arg(&elders)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("e.csv:3: refused") && err.contains("e.csv:4: refused"),
        "{err}"
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(so.contains("1 imported, 0 updated, 2 refused"), "{so}");
    // Personal data is not echoed back in the refusal reasons.
    assert!(!err.contains("Other") && !err.contains("Nobody"), "{err}");
}

#[test]
fn an_mqtt5_client_is_told_the_protocol_is_unsupported() {
    let s = Server::start();
    let out = mosquitto_pub(
        &s,
        &["-V", "mqttv5"],
        "btn-1",
        "s-btn-1",
        "eldercare/v1/btn-1/event",
        "{}",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("protocol"), "{err}");
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "unsupported_protocol"
        ),
        1
    );
}

async fn subscribe_in(s: &Server, language: &str) -> tonic::Streaming<pb::AlertEvent> {
    s.grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            language: language.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_quick_sos_cancel_resolves_it_as_a_false_alarm_in_either_language() {
    let s = Server::start();
    let mut zh = s.subscribe(0).await;
    let mut en = subscribe_in(&s, "en").await;
    let btn = device(&s, "btn-3").await;
    let t = now_ms();
    publish(
        &btn,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {t}, "type": "sos"}}"#),
    )
    .await;
    let raised_zh = next(&mut zh).await.alert.unwrap();
    let raised_en = next(&mut en).await.alert.unwrap();
    assert_eq!(raised_zh.summary, "紧急呼叫按钮被按下");
    assert_eq!(raised_en.summary, "SOS button pressed");
    assert_eq!(
        (raised_en.summary_en.as_str(), raised_en.summary_zh.as_str()),
        ("SOS button pressed", "紧急呼叫按钮被按下")
    );
    // Pressed cancel eight seconds later (device clock).
    publish(
        &btn,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {}, "type": "sos_cancel"}}"#, t + 8_000),
    )
    .await;
    let ev = next(&mut en).await;
    let a = ev.alert.unwrap();
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(
        (
            a.id.as_str(),
            a.state,
            a.outcome.as_str(),
            ev.actor.as_str()
        ),
        (
            raised_en.id.as_str(),
            pb::AlertState::Resolved as i32,
            "false_alarm",
            ""
        )
    );
    assert!(ev.note.contains("8 s"), "{}", ev.note);
    let bad = s
        .grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            language: "fr".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn low_battery_goes_to_the_operations_queue_and_clears_itself() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-2").await;
    let status = |pct: u32| format!(r#"{{"ts": {}, "battery_pct": {pct}}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-2/status", status(12)).await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.queue.as_str(), a.subject.as_str()),
        ("low_battery", "operations", "btn-2")
    );
    assert_eq!(a.severity, pb::Severity::Low as i32);
    publish(&btn, "eldercare/v1/btn-2/status", status(20)).await;
    publish(&btn, "eldercare/v1/btn-2/status", status(35)).await;
    let ev = next(&mut sub).await;
    let b = ev.alert.unwrap();
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!((b.id, b.outcome.as_str()), (a.id, "cleared"));
}

#[tokio::test]
async fn a_lost_connection_is_noticed_by_its_last_will_and_clears_on_return() {
    let s = Server::start_with_rules(Some("[offline]\ngrace_s = 1\n"));
    let mut sub = s.subscribe(0).await;
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let mut o = MqttOptions::new("gps-4-watch", host, port.parse().unwrap());
    o.set_credentials("gps-4", "s-gps-4");
    o.set_last_will(rumqttc::LastWill::new(
        "eldercare/v1/gps-4/status",
        r#"{"online": false}"#,
        QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut el) = AsyncClient::new(o, 10);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    // The watch loses its connection: no DISCONNECT, the socket just goes.
    drop(el);
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.subject.as_str(), a.queue.as_str()),
        ("device_offline", "gps-4", "operations")
    );
    // Back: heard again, the alert clears itself.
    let gps = device(&s, "gps-4").await;
    publish(
        &gps,
        "eldercare/v1/gps-4/location",
        format!(r#"{{"ts": {}, "lat": 31.2, "lon": 121.4}}"#, now_ms()),
    )
    .await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(ev.alert.unwrap().outcome, "cleared");
}

#[tokio::test]
async fn a_dementia_patient_leaving_the_safe_zone_is_high_and_coming_back_updates_it() {
    let s = Server::start();
    let mut sub = subscribe_in(&s, "en").await;
    let gps = device(&s, "gps-4").await;
    let t = now_ms();
    // Fixes 1.1 km north of home, one minute apart, in the daytime or at
    // night depending on when the test runs: check the severity by clock.
    for (i, north_m) in [1100.0, 1150.0, 100.0].into_iter().enumerate() {
        let lat = 31.2 + north_m / 111_195.0;
        publish(
            &gps,
            "eldercare/v1/gps-4/location",
            format!(
                r#"{{"ts": {}, "lat": {lat}, "lon": 121.4, "accuracy_m": 10}}"#,
                t + i as i64 * 60_000 - 180_000
            ),
        )
        .await;
    }
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(a.kind, "geofence_exit");
    assert!(
        a.severity == pb::Severity::High as i32 || a.severity == pb::Severity::Critical as i32,
        "dementia: HIGH by day, CRITICAL at night; got {}",
        a.severity
    );
    assert_eq!(a.readings.len(), 2, "both fixes outside are evidence");
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::Updated as i32);
    assert!(ev.note.contains("Back inside"), "{}", ev.note);
    assert!(ev.alert.unwrap().summary.contains("Back inside"));
}

#[test]
fn a_bad_rule_file_is_refused_at_start_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[vitals]\npulse_high = \"fast\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vitals.pulse_high"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_rules_and_keeps_what_the_engine_saw() {
    let s = Server::start_with_rules(Some("[vitals]\nhold_s = 600\n"));
    let mut sub = subscribe_in(&s, "en").await;
    let band = device(&s, "band-1").await;
    let t0 = now_ms() - 120_000;
    let hr = |dt: i64| format!(r#"{{"ts": {}, "hr": 150}}"#, t0 + dt);
    for dt in [0, 20_000, 40_000, 60_000] {
        publish(&band, "eldercare/v1/band-1/vitals", hr(dt)).await;
    }
    // A marker through the same pipeline: once its alert is out, the four
    // readings before it have been judged (and raised nothing, at 600 s).
    let btn = device(&s, "btn-1").await;
    sos(&btn, "btn-1").await;
    assert_eq!(next(&mut sub).await.alert.unwrap().kind, "sos");

    std::fs::write(s.dir.path().join("rules.toml"), "[vitals]\nhold_s = 30\n").unwrap();
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let line = s
        .lines
        .recv_timeout(DEADLINE)
        .expect("the server reports the reload");
    assert!(line.starts_with("rules reloaded"), "{line}");
    publish(&band, "eldercare/v1/band-1/vitals", hr(80_000)).await;
    let a = next(&mut sub).await.alert.unwrap();
    assert_eq!(a.kind, "vital_out_of_range");
    // The stretch began before the reload: the engine kept it.
    assert_eq!(a.window_start.unwrap().seconds, t0.div_euclid(1000));
    assert!(a.summary.contains("for 80 s"), "{}", a.summary);
}

#[tokio::test]
async fn after_a_restart_an_open_low_battery_alert_still_clears_itself() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    let status = |pct: u32| format!(r#"{{"ts": {}, "battery_pct": {pct}}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-1/status", status(9)).await;
    let raised = next(&mut sub).await;
    assert_eq!(raised.alert.as_ref().unwrap().kind, "low_battery");
    drop((sub, btn));

    let s = s.restart().await;
    let mut sub = s.subscribe(raised.seq).await;
    let btn = device(&s, "btn-1").await;
    // Still low: not raised a second time. Charged: cleared.
    publish(&btn, "eldercare/v1/btn-1/status", status(8)).await;
    publish(&btn, "eldercare/v1/btn-1/status", status(80)).await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.seq, raised.seq + 1, "nothing in between");
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(ev.alert.unwrap().id, raised.alert.unwrap().id);
}
