//! Devices as they are sold, driven by a client we did not write: Debian's
//! `mosquitto_pub` speaking MQTT 5, MQTT over TLS with and without the
//! CA, and a gateway that proves who it is with a client certificate
//! instead of a secret. Each case checks what the device is told (exit
//! status, CONNACK and PUBACK reason codes as mosquitto_pub prints them)
//! and what the server did about it (an alert raised, or the refusal
//! counted).
#[path = "support/certs.rs"]
mod certs;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

const ELDERS: &str = "elder_id,name,district,community\n\
E1,Test One,D1,C1\n\
E2,Test Two,D1,C2\n";
// A day's heartbeat: no device_offline alert joins the events counted.
const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
btn-1,sos_button,E1,,s-btn-1,86400\n\
btn-2,sos_button,E2,,s-btn-2,86400\n\
gw-1,gateway,E1,,s-gw-1,86400\n";

fn sos_payload() -> String {
    format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms())
}

/// Runs `mosquitto_pub ARGS` to its end (it exits after one message).
fn mosquitto_pub(args: &[&str]) -> Output {
    let child = Command::new("mosquitto_pub")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(DEADLINE)
        .expect("mosquitto_pub did not exit")
        .unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// mosquitto's arguments for TLS to `localhost:port`, trusting `ca`, with
/// a client certificate, then `rest`.
fn tls_args(port: &str, ca: &Path, (cert, key): (&Path, &Path), rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["-h", "localhost", "-p", port, "--cafile", path_str(ca)]
        .iter()
        .chain(&["--cert", path_str(cert), "--key", path_str(key)])
        .map(|a| a.to_string())
        .collect();
    a.extend(rest.iter().map(|r| r.to_string()));
    a
}

/// `mosquitto_pub` with owned arguments.
fn mosquitto_pub_args(args: &[String]) -> Output {
    mosquitto_pub(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn host_port(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap()
}

/// The registry, tokens, and a server started with `config` (TOML) on
/// plain MQTT address `mqtt` ("off" for none).
fn start(config: Option<&str>, mqtt: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let data = dir.path().to_str().unwrap();
    import_csv(dir.path(), &["--data-dir", data], ELDERS, DEVICES);
    if let Some(c) = config {
        std::fs::write(dir.path().join("config.toml"), c).unwrap();
    }
    Server::spawn_on_all(
        dir,
        tokens,
        [mqtt, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"],
    )
}

/// A CA, the server's certificate from it, and the `[tls]` configuration
/// naming them (with `client_ca` when gateways bring certificates).
struct Pki {
    dir: tempfile::TempDir,
    ca: certs::Ca,
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = certs::ca("eldercare test CA");
        let ca_file = ca.write(&dir.path().join("ca.pem"));
        certs::server_cert(
            &ca,
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        );
        Pki { dir, ca, ca_file }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, client_certs: bool) -> String {
        let mut c = format!(
            "mqtts_addr = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            self.path("server.pem"),
            self.path("server.key"),
        );
        if client_certs {
            c.push_str(&format!("client_ca = {:?}\n", self.ca_file));
        }
        c
    }

    /// A client certificate naming `device` and its key.
    fn client(&self, ca: &certs::Ca, device: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{device}.pem")),
            self.path(&format!("{device}.key")),
        );
        certs::client_cert(ca, device, &cert, &key);
        (cert, key)
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn an_mqtt5_stock_client_raises_an_sos_and_is_told_why_a_message_is_refused() {
    let s = start(None, "127.0.0.1:0");
    let mut alerts = s.subscribe(0).await;
    let (host, port) = host_port(&s.mqtt);
    let v5 = ["-V", "mqttv5", "-d", "-h", host, "-p", port, "-q", "1"];
    let creds = ["-u", "btn-1", "-P", "s-btn-1"];

    let o = mosquitto_pub(
        &[
            &v5[..],
            &creds,
            &["-t", "eldercare/v1/btn-1/event", "-m", &sos_payload()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", said(&o));
    assert!(said(&o).contains("RC:0"), "{}", said(&o));
    let ev = next(&mut alerts).await;
    let alert = ev.alert.unwrap();
    assert_eq!(
        (alert.device_id.as_str(), alert.kind.as_str()),
        ("btn-1", "sos")
    );

    // Another device's topic: PUBACK "not authorized" (0x87), not a
    // silent acknowledgement; counted, and no alert.
    let o = mosquitto_pub(
        &[
            &v5[..],
            &creds,
            &["-t", "eldercare/v1/btn-2/event", "-m", &sos_payload()],
        ]
        .concat(),
    );
    assert!(
        said(&o).contains("received PUBACK (Mid: 1, RC:135)"),
        "{}",
        said(&o)
    );
    assert!(said(&o).contains("Not authorized"), "{}", said(&o));
    s.await_counter("eldercare_ingest_refused_total", "topic_not_owned", 1)
        .await;

    // Its own topic, a payload that cannot be taken: "payload format
    // invalid" (0x99) with the reason.
    let bad = format!(r#"{{"ts": {}, "type": "explode"}}"#, now_ms());
    let o = mosquitto_pub(
        &[
            &v5[..],
            &creds,
            &["-t", "eldercare/v1/btn-1/event", "-m", &bad],
        ]
        .concat(),
    );
    assert!(said(&o).contains("RC:153"), "{}", said(&o));

    // A wrong secret: CONNACK "bad user name or password" (0x86).
    let o = mosquitto_pub(
        &[
            &v5[..],
            &[
                "-u",
                "btn-1",
                "-P",
                "wrong",
                "-t",
                "eldercare/v1/btn-1/event",
                "-m",
                "x",
            ],
        ]
        .concat(),
    );
    assert!(!o.status.success());
    assert!(said(&o).contains("CONNACK (134)"), "{}", said(&o));

    // QoS 2 on its own topic: the whole handshake, the message taken once.
    let o = mosquitto_pub(
        &[
            &["-V", "mqttv5", "-d", "-h", host, "-p", port, "-q", "2"][..],
            &creds,
            &[
                "-t",
                "eldercare/v1/btn-1/status",
                "-m",
                r#"{"battery_pct": 80}"#,
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", said(&o));
    assert!(
        said(&o).contains("received PUBCOMP (Mid: 1, RC:0)"),
        "{}",
        said(&o)
    );

    // A QoS 2 message on another device's topic: PUBREC "not authorized",
    // and the session goes on (MQTT 3.1.1 could only close it).
    let o = mosquitto_pub(
        &[
            &["-V", "mqttv5", "-d", "-h", host, "-p", port, "-q", "2"][..],
            &creds,
            &["-t", "eldercare/v1/btn-2/event", "-m", &sos_payload()],
        ]
        .concat(),
    );
    assert!(said(&o).contains("Not authorized"), "{}", said(&o));
    assert!(said(&o).contains("sending DISCONNECT"), "{}", said(&o));
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_closed_total",
            "topic_not_owned_qos2"
        ),
        0
    );
}

#[tokio::test]
async fn mqtt_over_tls_raises_an_sos_with_the_ca_and_is_refused_without_it() {
    let pki = Pki::new();
    // Plain MQTT switched off: devices have TLS only.
    let mut s = start(Some(&pki.config(false)), "off");
    s.grpc_ca = Some(pki.ca_file.clone());
    assert_eq!(s.mqtt, "off");
    let mqtts = s.mqtts.clone().expect("mqtts= in the ready line");
    let (_, port) = host_port(&mqtts);
    let mut alerts = s.subscribe(0).await;
    let base = [
        "-h",
        "localhost",
        "-p",
        port,
        "-q",
        "1",
        "-u",
        "btn-1",
        "-P",
        "s-btn-1",
    ];
    let topic = ["-t", "eldercare/v1/btn-1/event"];

    let o = mosquitto_pub(
        &[
            &base[..],
            &topic,
            &["--cafile", path_str(&pki.ca_file), "-m", &sos_payload()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", said(&o));
    let alert = next(&mut alerts).await.alert.unwrap();
    assert_eq!(alert.device_id, "btn-1");
    // An operator's `eldercare alerts` reaches the gRPC over TLS with the
    // CA, and says why it cannot without it.
    let list = |ca: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["alerts", "list", "--state", "open"])
            .env("ELDERCARE_GRPC_ADDR", &s.grpc)
            .env("ELDERCARE_TOKEN", &s.tokens["operator"]);
        if let Some(ca) = ca {
            cmd.env("ELDERCARE_TLS_CA", ca);
        }
        cmd.output().unwrap()
    };
    let o = list(Some(&pki.ca_file));
    assert!(o.status.success(), "{}", said(&o));
    assert!(said(&o).contains(&alert.id), "{}", said(&o));
    let o = list(None);
    assert!(!o.status.success(), "{}", said(&o));

    // MQTT 5 over TLS too.
    let o = mosquitto_pub(
        &[
            &base[..],
            &topic,
            &[
                "-V",
                "mqttv5",
                "--cafile",
                path_str(&pki.ca_file),
                "-m",
                &sos_payload(),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", said(&o));

    // The system's CAs do not know this server: no connection, and
    // nothing of the device's crossed the network in clear text.
    let before = s.counter("eldercare_mqtt_connections_refused_total", "tls_handshake");
    let o = mosquitto_pub(
        &[
            &base[..],
            &topic,
            &["--capath", "/etc/ssl/certs", "-m", &sos_payload()],
        ]
        .concat(),
    );
    assert!(!o.status.success(), "{}", said(&o));
    s.await_counter(
        "eldercare_mqtt_connections_refused_total",
        "tls_handshake",
        before + 1,
    )
    .await;
    // Nor does the TLS port speak plain MQTT.
    let o = mosquitto_pub(&[&base[..], &topic, &["-m", &sos_payload()]].concat());
    assert!(!o.status.success(), "{}", said(&o));
}

#[tokio::test]
async fn a_gateway_with_a_client_certificate_publishes_for_its_devices() {
    let pki = Pki::new();
    let mut s = start(Some(&pki.config(true)), "127.0.0.1:0");
    s.grpc_ca = Some(pki.ca_file.clone());
    let mqtts = s.mqtts.clone().expect("mqtts= in the ready line");
    let (_, port) = host_port(&mqtts);
    let mut alerts = s.subscribe(0).await;
    let (gw_cert, gw_key) = pki.client(&pki.ca, "gw-1");
    let v5 = ["-V", "mqttv5", "-d", "-q", "1"];
    let tls = |cert: &Path, key: &Path| tls_args(port, &pki.ca_file, (cert, key), &v5);
    let run = |args: Vec<String>, topic: &str| {
        let mut a = args;
        a.extend(["-t".into(), topic.into(), "-m".into(), sos_payload()]);
        mosquitto_pub_args(&a)
    };

    // No user name, no secret: the certificate says it is gw-1, and gw-1
    // speaks for the devices of its elder.
    let o = run(tls(&gw_cert, &gw_key), "eldercare/v1/btn-1/event");
    assert!(o.status.success(), "{}", said(&o));
    assert!(said(&o).contains("RC:0"), "{}", said(&o));
    let alert = next(&mut alerts).await.alert.unwrap();
    assert_eq!(
        (alert.device_id.as_str(), alert.elder_id.as_str()),
        ("btn-1", "E1")
    );
    // Not for another elder's device.
    let o = run(tls(&gw_cert, &gw_key), "eldercare/v1/btn-2/event");
    assert!(said(&o).contains("RC:135"), "{}", said(&o));

    // A user name that is not the certificate's device: not authorized.
    let mut a = tls(&gw_cert, &gw_key);
    a.extend(["-u".into(), "btn-1".into(), "-P".into(), "s-btn-1".into()]);
    let o = run(a, "eldercare/v1/btn-1/event");
    assert!(said(&o).contains("CONNACK (135)"), "{}", said(&o));
    // A certificate from the right CA for a device the registry does not
    // hold: refused like a wrong secret.
    let (ghost_cert, ghost_key) = pki.client(&pki.ca, "gw-ghost");
    let o = run(tls(&ghost_cert, &ghost_key), "eldercare/v1/gw-ghost/event");
    assert!(said(&o).contains("CONNACK (134)"), "{}", said(&o));
    // A certificate from another CA: the handshake fails.
    let other = certs::ca("another CA");
    let (forged_cert, forged_key) = pki.client(&other, "gw-1");
    let o = run(tls(&forged_cert, &forged_key), "eldercare/v1/btn-1/event");
    assert!(!o.status.success(), "{}", said(&o));
    assert!(!said(&o).contains("CONNACK (0)"), "{}", said(&o));
}

#[tokio::test]
async fn a_gateway_over_mqtt5_and_tls_hears_that_help_is_coming_for_its_button() {
    use std::io::BufRead;
    let pki = Pki::new();
    let mut s = start(Some(&pki.config(true)), "127.0.0.1:0");
    s.grpc_ca = Some(pki.ca_file.clone());
    let mqtts = s.mqtts.clone().expect("mqtts= in the ready line");
    let (_, port) = host_port(&mqtts);
    let mut alerts = s.subscribe(0).await;
    let (gw_cert, gw_key) = pki.client(&pki.ca, "gw-1");
    // The gateway listens for its button's commands, as mosquitto_sub
    // (MQTT 5, TLS, its client certificate) and prints the first one.
    // Line-buffered (stdbuf), so each line is read as it is printed.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(tls_args(
            port,
            &pki.ca_file,
            (&gw_cert, &gw_key),
            &[
                "-V",
                "mqttv5",
                "-d",
                "-q",
                "1",
                "-t",
                "eldercare/v1/btn-1/cmd",
                "-C",
                "1",
            ],
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is required for this test: install mosquitto-clients");
    let (tx, lines) = std::sync::mpsc::channel();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut line = |what: &str| loop {
        let l = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("mosquitto_sub printed no {what}, only {seen:?}"));
        seen.push(l.clone());
        if l.contains(what) {
            return l;
        }
    };
    line("received SUBACK");
    // The server's certificate is renewed, from another CA, while the
    // gateway is connected: its session stays, new connections get the
    // new certificate (gateways' certificates are still checked against
    // the client CA, unchanged).
    let renewed = certs::ca("eldercare test CA, renewed");
    let renewed_ca = renewed.write(&pki.path("renewed-ca.pem"));
    certs::server_cert(&renewed, &pki.path("server.pem"), &pki.path("server.key"));
    s.reload_tls();
    s.grpc_ca = Some(renewed_ca.clone());
    let gw = (gw_cert.as_path(), gw_key.as_path());
    let status_msg = ["-t", "eldercare/v1/btn-1/status", "-m", "{}"];
    let old = mosquitto_pub_args(&tls_args(port, &pki.ca_file, gw, &status_msg));
    assert!(
        !old.status.success(),
        "the old CA no longer vouches: {}",
        said(&old)
    );
    let sos = sos_payload();
    let event = [
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-t",
        "eldercare/v1/btn-1/event",
        "-m",
        &sos,
    ];
    let o = mosquitto_pub_args(&tls_args(port, &renewed_ca, gw, &event));
    assert!(o.status.success(), "{}", said(&o));
    let alert = next(&mut alerts).await.alert.unwrap();
    s.grpc()
        .await
        .acknowledge(eldercare_proto::v1::AlertActionRequest {
            alert_id: alert.id.clone(),
            operator_id: "op-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cmd = line("alert_ack");
    let v: serde_json::Value = serde_json::from_str(&cmd).unwrap();
    assert_eq!(v["alert_id"].as_str(), Some(alert.id.as_str()));
    let status = sub.wait().unwrap();
    assert!(status.success(), "{status}");
}
