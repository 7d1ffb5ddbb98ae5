//! The simulator binary against a real broker: Debian's `mosquitto`, on
//! a free port, anonymous (the simulated devices log in with ids and
//! secrets derived from the seed; mosquitto takes any). The runs use
//! `--no-register`, so no eldercare server or gRPC API is involved: what
//! is tested is the devices' side of MQTT (3.1.1 and 5, TLS, source
//! addresses, several processes, `cmd` messages), not eldercare's rules.
//! Without `mosquitto` installed these tests fail, saying so.
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto of the test's own, killed by PID when dropped; its log
/// goes to a file.
struct Mosquitto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts one with `extra` lines in its listener's configuration.
    fn start(dir: tempfile::TempDir, extra: &str) -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: install Debian's mosquitto (apt-get install mosquitto)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: keep reading the test's files after start (as root
        // it would change to the mosquitto user; otherwise this is moot).
        std::fs::write(
            &conf,
            format!(
                "user root\nlog_dest stdout\nlog_type all\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra}"
            ),
        )
        .unwrap();
        let log = dir.path().join("mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOSQUITTO}: {e}"));
        let mut m = Mosquitto {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!("mosquitto exited with {st}:\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The log lines of the simulator's sessions' logins.
    fn logins(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("New client connected from") && l.contains(" as sim-"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the simulator with `args`; its JSON result, after checking it
/// exited 0 within two minutes.
fn sim(dir: &Path, args: &[&str]) -> serde_json::Value {
    let result = dir.join("result.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eldercare-sim"))
        .args(args)
        .arg("--result")
        .arg(&result)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the simulator ran over two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    let text = std::fs::read_to_string(&result)
        .unwrap_or_else(|e| panic!("no result ({e})\nstdout:\n{out}\nstderr:\n{err}"));
    serde_json::from_str(&text).unwrap()
}

/// Publishes retained messages, so that whoever subscribes later gets
/// them at once.
async fn retain(addr: &str, msgs: &[(&str, &str)]) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut o = rumqttc::MqttOptions::new("test-retain", host, port.parse().unwrap());
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    for (topic, body) in msgs {
        client
            .publish(
                *topic,
                rumqttc::QoS::AtLeastOnce,
                true,
                body.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < msgs.len() {
        let ev = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("mosquitto answers")
            .unwrap();
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_speak_mqtt5_from_two_source_addresses_and_hear_alert_acks() {
    let broker = Mosquitto::start(tempfile::tempdir().unwrap(), "");
    // An acknowledgement waiting for each home's SOS button.
    retain(
        &broker.addr(),
        &[
            (
                "eldercare/v1/btn-00001/cmd",
                r#"{"type":"alert_ack","alert_id":"A-1","ts":1}"#,
            ),
            (
                "eldercare/v1/btn-00002/cmd",
                r#"{"type":"alert_ack","alert_id":"A-2","ts":1}"#,
            ),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = broker.addr();
    let r = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            sim(
                &dir,
                &[
                    "run",
                    "--no-register",
                    "--no-progress",
                    "--homes",
                    "2",
                    "--mqtt",
                    &addr,
                    "--mqtt5",
                    "--procs",
                    "2",
                    "--source-addrs",
                    "127.0.0.2-127.0.0.3",
                    "--duration-s",
                    "3",
                    "--rate",
                    "20",
                ],
            )
        }
    })
    .await
    .unwrap();

    assert_eq!(r["processes"], 2, "{r:#}");
    assert_eq!(r["homes"], 2);
    assert_eq!(r["connections"], 18, "one session per device");
    let c = &r["connect"];
    assert_eq!(c["sessions"], 18);
    assert_eq!(c["connacks"], 18);
    assert!(c["connacks_per_s"].as_f64().unwrap() > 0.0, "{c:#}");
    let all = c["all_connected_s"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&all), "{c:#}");
    assert!(
        c["first_connack_ms"].as_i64() <= c["last_connack_ms"].as_i64()
            && c["started_ms"].as_i64() <= c["first_connack_ms"].as_i64()
    );
    let m = &r["messages"];
    assert!(m["sent"].as_u64().unwrap() > 10, "{m:#}");
    assert!(m["acked"].as_u64().unwrap() > 0, "{m:#}");
    assert_eq!(m["connection_errors"], 0);
    assert_eq!(
        r["commands"]["alert_acks"], 2,
        "each home's button heard its ack"
    );
    assert_eq!(r["commands"]["subscriptions_refused"], 0);
    assert!(
        r["rate"]["puback_ms"].get("_buckets_us").is_none(),
        "no buckets in the result"
    );
    assert!(r["rate"]["puback_ms"]["count"].as_u64().unwrap() > 0);

    // What mosquitto saw: 18 MQTT 5 logins, from both source addresses.
    let logins = broker.logins();
    assert_eq!(logins.len(), 18, "{logins:#?}");
    assert!(logins.iter().all(|l| l.contains("(p5,")), "{logins:#?}");
    for src in ["127.0.0.2:", "127.0.0.3:"] {
        let n = logins.iter().filter(|l| l.contains(src)).count();
        assert!(n >= 4, "{n} sessions from {src}: {logins:#?}");
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files in `dir`: (ca, server cert, server key, client cert,
/// client key).
fn pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eldercare-sim test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        // A subject of its own: one equal to the issuer's reads as
        // self-signed to OpenSSL.
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf("127.0.0.1");
    let (client, client_key) = leaf("bed-00001");
    let files = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ]
    .map(|f| dir.join(f));
    for (path, text) in files
        .iter()
        .zip([ca_cert.pem(), server, server_key, client, client_key])
    {
        std::fs::write(path, text).unwrap();
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_over_tls_with_a_client_certificate_directly_and_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client, client_key] = pki(dir.path());
    let broker = Mosquitto::start(
        dir,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let addr = broker.addr();
    let out = tempfile::tempdir().unwrap();
    for (extra, protocol) in [
        (&[][..], "p5"),
        (&["--source-addrs", "127.0.0.4"][..], "p2"),
    ] {
        let mut args = vec![
            "run",
            "--no-register",
            "--no-progress",
            "--homes",
            "1",
            "--mqtt",
            &addr,
            "--duration-s",
            "2",
            "--rate",
            "10",
        ];
        let tls = [
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-cert",
            client.to_str().unwrap(),
            "--tls-key",
            client_key.to_str().unwrap(),
        ];
        args.extend(tls);
        args.extend(extra);
        if protocol == "p5" {
            args.push("--mqtt5");
        }
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let at = out.path().to_path_buf();
        let r = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            sim(&at, &args)
        })
        .await
        .unwrap();
        assert_eq!(r["connections"], 9, "{extra:?}: {r:#}");
        assert_eq!(r["messages"]["connection_errors"], 0, "{extra:?}");
        assert!(r["messages"]["acked"].as_u64().unwrap() > 0, "{extra:?}");
    }
    let logins = broker.logins();
    assert_eq!(logins.len(), 18, "{logins:#?}");
    // mosquitto logs MQTT 3.1.1 as p2 and MQTT 5 as p5.
    let relayed: Vec<&String> = logins.iter().filter(|l| l.contains("127.0.0.4:")).collect();
    assert_eq!(relayed.len(), 9, "{logins:#?}");
    assert!(relayed.iter().all(|l| l.contains("(p2,")), "{relayed:#?}");
    assert_eq!(logins.iter().filter(|l| l.contains("(p5,")).count(), 9);
}
