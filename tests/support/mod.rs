//! The harness of the end-to-end tests: the real `eldercare` binary on
//! free ports with its own data directory and a token per role, real
//! tonic clients and real MQTT devices (rumqttc). Every wait is on an
//! event, bounded by a generous deadline that only turns a hang into a
//! failure. Shared by the test binaries in `tests/`; each uses part of it.
#![allow(dead_code)]

use eldercare_proto::v1 as pb;
use pb::alert_service_client::AlertServiceClient;
use pb::registry_service_client::RegistryServiceClient;
use pb::telemetry_service_client::TelemetryServiceClient;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_eldercare");
/// Only turns a hang into a failure; no test relies on it for timing.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Debian's Python, whose grpcio and paho are the tests' stranger clients.
pub const PYTHON: &str = "/usr/bin/python3";

/// Fails, saying how to install it, when Debian's grpcio is missing.
pub fn require_python_grpcio() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Python's grpcio is not installed: the test calls the server with Debian's \
         python3-grpcio as a client of another make; install it with \
         `apt-get install python3-grpcio` (scripts/test does)"
    );
}

pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub mqtt: String,
    /// MQTT over TLS, when the server has a certificate (`mqtts=`).
    pub mqtts: Option<String>,
    /// The CA to trust when gRPC is served over TLS (set by the test).
    pub grpc_ca: Option<std::path::PathBuf>,
    pub grpc: String,
    pub metrics: String,
    /// The console's HTTP address (host:port), from `console=http://.../`.
    pub console: String,
    /// Lines the server prints to stdout after its ready line.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// A bearer token per role: operator `op-1`, dispatcher `disp-1`,
    /// admin `adm-1`, viewer `view-1`.
    pub tokens: std::collections::HashMap<&'static str, String>,
}

/// Adds the bearer token to every call, as an operator console does
/// (or none, for the refusal tests).

#[derive(Clone)]
pub struct Bearer(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type Client = AlertServiceClient<InterceptedService<Channel, Bearer>>;

/// Issues a token with the CLI, as an administrator would.
pub fn add_token(dir: &std::path::Path, operator: &str, role: &str) -> String {
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

/// Loads a registry as an operator would: writes `elders.csv` and
/// `devices.csv` into `dir` and runs `eldercare import <storage> FILE` for
/// each (`storage`: e.g. `["--data-dir", path]` or `["--database-url", url]`).
pub fn import_csv(dir: &std::path::Path, storage: &[&str], elders: &str, devices: &str) {
    import_files(
        dir,
        storage,
        &[("elders.csv", elders), ("devices.csv", devices)],
    );
}

/// As [`import_csv`], for any registry files (name, contents), in order.
pub fn import_files(dir: &std::path::Path, storage: &[&str], files: &[(&str, &str)]) {
    for (name, text) in files {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        let out = Command::new(BIN)
            .arg("import")
            .args(storage)
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Points the server whose data directory is `dir` at the PostgreSQL
/// database `url` (its `config.toml`).
pub fn use_database(dir: &std::path::Path, url: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!("database_url = \"{url}\"\n"),
    )
    .unwrap();
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Server {
    /// Stops the server with SIGTERM and starts it again on the same data
    /// (and rule file, if any); new ports. Waits off the runtime, so the
    /// test's own clients keep running (and close) meanwhile.
    pub async fn restart(self) -> Server {
        let (dir, tokens) = self.stop().await;
        Server::spawn(dir, tokens)
    }

    /// Stops the server with SIGTERM (a clean stop: what is spooled and
    /// the local copies are on disk), checks it exited 0, and hands back
    /// its data directory and tokens. Waits off the runtime, so the test's
    /// own clients keep running (and close) meanwhile.
    pub async fn stop(mut self) -> (tempfile::TempDir, HashMap<&'static str, String>) {
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
        assert!(status.success(), "{status}");
        (dir, tokens)
    }

    /// Runs `eldercare serve` on free ports over `dir`, with its
    /// `rules.toml` when there is one.
    pub fn spawn(
        dir: tempfile::TempDir,
        tokens: std::collections::HashMap<&'static str, String>,
    ) -> Server {
        Server::spawn_on(dir, tokens, ["127.0.0.1:0"; 3])
    }

    /// Like [`Server::spawn`], listening on `[mqtt, grpc, metrics]`: a
    /// restart on the ports its clients already use.
    pub fn spawn_on(
        dir: tempfile::TempDir,
        tokens: std::collections::HashMap<&'static str, String>,
        [mqtt, grpc, metrics]: [&str; 3],
    ) -> Server {
        Server::spawn_on_all(dir, tokens, [mqtt, grpc, metrics, "127.0.0.1:0"])
    }

    /// Like [`Server::spawn_on`], the console's HTTP address too:
    /// `[mqtt, grpc, metrics, http]`.
    pub fn spawn_on_all(
        dir: tempfile::TempDir,
        tokens: std::collections::HashMap<&'static str, String>,
        [mqtt, grpc, metrics, http]: [&str; 4],
    ) -> Server {
        let rules_file = dir.path().join("rules.toml");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--mqtt-addr",
            mqtt,
            "--grpc-addr",
            grpc,
            "--metrics-addr",
            metrics,
            "--http-addr",
            http,
            "--data-dir",
        ])
        .arg(dir.path());
        if rules_file.exists() {
            cmd.arg("--rules").arg(&rules_file);
        }
        let config_file = dir.path().join("config.toml");
        if config_file.exists() {
            cmd.arg("--config").arg(&config_file);
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
            grpc_ca: None,
            mqtts: line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("mqtts=").map(String::from)),
            grpc: field("grpc"),
            metrics: field("metrics"),
            console: field("console")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            child,
            dir,
            lines,
            tokens,
        }
    }

    /// Sends SIGHUP and waits until the server says its TLS files are
    /// reloaded (a refusal fails the test).
    pub fn reload_tls(&self) {
        let pid = self.child.id().to_string();
        let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(hup.success(), "kill -HUP {pid}: {hup}");
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(l) if l == "tls reloaded" => return,
                Ok(l) if l.starts_with("tls refused") => panic!("{l}"),
                Ok(_) => {}
                Err(e) => panic!("no `tls reloaded` after SIGHUP: {e}"),
            }
        }
    }

    /// An AlertService client with the operator's token.
    pub async fn grpc(&self) -> Client {
        self.grpc_as("operator").await
    }

    pub async fn channel(&self) -> Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc)).unwrap();
        match &self.grpc_ca {
            None => endpoint.connect().await.unwrap(),
            Some(ca) => {
                let config = eldercare_tls::grpc_client_config(ca).unwrap();
                endpoint
                    .connect_with_connector(eldercare_api::tls::connector(config))
                    .await
                    .unwrap()
            }
        }
    }

    /// The token of `role`; `none` for no token at all.
    pub fn bearer(&self, role: &str) -> Bearer {
        Bearer(
            self.tokens
                .get(role)
                .map(|t| format!("Bearer {t}").parse().unwrap()),
        )
    }

    /// An AlertService client with the token of `role` (`none`: no token).
    pub async fn grpc_as(&self, role: &str) -> Client {
        AlertServiceClient::with_interceptor(self.channel().await, self.bearer(role))
    }

    pub async fn subscribe(&self, after_seq: u64) -> tonic::Streaming<pb::AlertEvent> {
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
    pub fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    pub fn counter(&self, name: &str, label: &str) -> u64 {
        let m = self.metrics();
        m.lines()
            .find(|l| is_metric(l, name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    /// Waits until the counter reaches `want` (counting is asynchronous to
    /// the publisher), then returns it.
    pub async fn await_counter(&self, name: &str, label: &str, want: u64) -> u64 {
        let t = tokio::time::Instant::now();
        loop {
            let v = self.counter(name, label);
            if v >= want || t.elapsed() > DEADLINE {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Issues a token per role, as an administrator would: operator
    /// `op-1`, dispatcher `disp-1`, admin `adm-1`, viewer `view-1`.
    pub fn issue_tokens(dir: &std::path::Path) -> HashMap<&'static str, String> {
        [
            ("operator", "op-1"),
            ("dispatcher", "disp-1"),
            ("admin", "adm-1"),
            ("viewer", "view-1"),
        ]
        .into_iter()
        .map(|(role, who)| (role, add_token(dir, who, role)))
        .collect()
    }

    /// The server on an empty registry, with a token per role.
    pub fn with_tokens() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Server::issue_tokens(dir.path());
        Server::spawn(dir, tokens)
    }

    pub async fn registry(&self, role: &str) -> Registry {
        RegistryServiceClient::with_interceptor(self.channel().await, self.bearer(role))
    }

    pub async fn telemetry(&self, role: &str) -> Telemetry {
        TelemetryServiceClient::with_interceptor(self.channel().await, self.bearer(role))
    }

    /// The value of the first metric line starting with `name` and
    /// containing `label`.
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| is_metric(l, name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls a metric (there is no event for it) until `ok` holds.
    pub async fn await_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let t = tokio::time::Instant::now();
        loop {
            let v = self.metric(name, "");
            if ok(v) || t.elapsed() > DEADLINE {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub type Registry = RegistryServiceClient<InterceptedService<Channel, Bearer>>;
pub type Telemetry = TelemetryServiceClient<InterceptedService<Channel, Bearer>>;

/// A connected MQTT device. `events` ends when the connection does.
pub struct Device {
    pub client: AsyncClient,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Packet>,
}

/// Options for a device connection to `addr` (host:port).
pub fn mqtt_options(addr: &str, client_id: &str, creds: Option<(&str, &str)>) -> MqttOptions {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut o = MqttOptions::new(client_id, host, port.parse().unwrap());
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    o
}

/// Connects; the CONNACK refusal as an error string.
pub async fn connect_with(o: MqttOptions) -> Result<Device, String> {
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
    // Stops polling at the first error, so the client never reconnects:
    // the channel closing is the event "the connection ended".
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev
                && tx.send(p).is_err()
            {
                break;
            }
        }
    });
    Ok(Device { client, events })
}

/// Connects a device (client id `id`), optionally with credentials.
pub async fn connect(addr: &str, user: Option<(&str, &str)>, id: &str) -> Result<Device, String> {
    connect_with(mqtt_options(addr, id, user)).await
}

/// The test registry's device `id`, whose secret is `s-<id>`.
pub async fn device(s: &Server, id: &str) -> Device {
    let secret = format!("s-{id}");
    connect(&s.mqtt, Some((id, &secret)), id)
        .await
        .expect("device connects")
}

pub async fn publish(d: &Device, topic: &str, payload: impl Into<Vec<u8>>) {
    d.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

/// An SOS from device `id`, now.
pub async fn sos(d: &Device, id: &str) {
    publish(
        d,
        &format!("eldercare/v1/{id}/event"),
        format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    )
    .await;
}

/// Waits until the server ends the device's connection.
pub async fn closed(d: &mut Device) {
    tokio::time::timeout(DEADLINE, async { while d.events.recv().await.is_some() {} })
        .await
        .expect("the server did not close the session");
}

pub async fn next(stream: &mut tonic::Streaming<pb::AlertEvent>) -> pb::AlertEvent {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("no alert event arrived")
        .unwrap()
        .expect("stream ended")
}

/// Whether a Prometheus text line is of the metric `name` (exactly: not
/// one whose name merely starts the same, as `_total` of a gauge does).
/// `name` may carry its labels, e.g. `x_total{stream="status"}`.
fn is_metric(line: &str, name: &str) -> bool {
    line.strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
}

/// The child's exit and output, within the deadline.
pub fn exited(child: std::process::Child) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(DEADLINE)
        .expect("the command did not exit")
        .unwrap()
}

/// Publishes `lines` from device `dev` (secret `s-<dev>`) to its `stream`
/// with the stock `mosquitto_pub -l` at QoS 1, one message a line, in
/// order, as a gateway uploading what it kept would; returns once it has
/// exited, every message acknowledged.
pub fn mosquitto_pub_lines(s: &Server, dev: &str, stream: &str, lines: &[String]) {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-q", "1", "-u", dev])
        .args(["-P", &format!("s-{dev}"), "-i", dev])
        .args(["-t", &format!("eldercare/v1/{dev}/{stream}"), "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients");
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = exited(child);
    assert!(
        out.status.success(),
        "mosquitto_pub for {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
