//! What the MQTT 5 tests against a stranger's client share: the test
//! registry and server, the operator's side (alerts raised and
//! acknowledged, stored readings), a paho-mqtt scenario run as a Python
//! script (`Paho`), and a raw MQTT 5 session's login, subscription and
//! QoS 1 publish.
#![allow(dead_code)]

use crate::raw5::{self, Client, Prop};
use crate::support::*;
use eldercare_proto::v1 as pb;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const ELDERS: &str = "elder_id,name,district,community\n\
E1,Test One,D1,C1\n\
E2,Test Two,D1,C2\n";
// A day's heartbeat: no device_offline alert joins the events read.
pub const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
btn-1,sos_button,E1,,s-btn-1,86400\n\
btn-2,sos_button,E1,,s-btn-2,86400\n\
btn-3,sos_button,E1,,s-btn-3,86400\n\
btn-4,sos_button,E1,,s-btn-4,86400\n\
btn-5,sos_button,E1,,s-btn-5,86400\n\
btn-6,sos_button,E1,,s-btn-6,86400\n\
band-1,vital_band,E1,,s-band-1,86400\n\
btn-9,sos_button,E2,,s-btn-9,86400\n";

/// The server over the test registry.
pub fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let data = dir.path().to_str().unwrap().to_string();
    import_csv(dir.path(), &["--data-dir", &data], ELDERS, DEVICES);
    Server::spawn(dir, tokens)
}

pub fn topic(device: &str, stream: &str) -> String {
    format!("eldercare/v1/{device}/{stream}")
}

pub fn event(kind: &str) -> String {
    format!(r#"{{"ts": {}, "type": "{kind}"}}"#, now_ms())
}

/// The next alert raised (other alert events skipped).
pub async fn raised(alerts: &mut tonic::Streaming<pb::AlertEvent>) -> pb::Alert {
    loop {
        let ev = next(alerts).await;
        if ev.kind == pb::AlertEventKind::Raised as i32 {
            return ev.alert.expect("a raised event carries its alert");
        }
    }
}

/// An operator acknowledges the alert: its device is sent `alert_ack`.
pub async fn acknowledge(s: &Server, alert_id: &str) {
    s.grpc()
        .await
        .acknowledge(pb::AlertActionRequest {
            alert_id: alert_id.into(),
            operator_id: "op-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The stored readings of one stream of a device, as JSON bodies.
pub async fn readings(s: &Server, device: &str, stream: &str) -> Vec<Value> {
    s.telemetry("operator")
        .await
        .list_readings(pb::ListReadingsRequest {
            subject: Some(pb::list_readings_request::Subject::DeviceId(device.into())),
            streams: vec![stream.into()],
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .readings
        .iter()
        .map(|r| serde_json::from_str(&r.json).unwrap())
        .collect()
}

/// Waits until a stored reading of the stream satisfies `ok` (readings
/// are stored asynchronously to the PUBACK); all of them then.
pub async fn await_reading(
    s: &Server,
    device: &str,
    stream: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let t = tokio::time::Instant::now();
    loop {
        let all = readings(s, device, stream).await;
        if all.iter().any(&ok) {
            return all;
        }
        assert!(
            t.elapsed() < DEADLINE,
            "no {what} among {device}'s {stream} readings: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A last will as the server stores it.
pub fn is_will(v: &Value) -> bool {
    v["online"] == Value::Bool(false)
}

/// The command a PUBLISH from the server carries, as JSON.
pub fn command(p: &raw5::Incoming) -> Value {
    serde_json::from_slice(&p.payload).unwrap()
}

// ---------------------------------------------------------------------
// paho-mqtt, driven as a script

/// Imports paho (or says which package is missing), and gives scenarios
/// `emit`, `step` and `Dev`: a paho MQTT 5 client logged in as a device,
/// its network loop on a thread of its own that never reconnects, and
/// its callbacks turned into events to wait for.
pub const PRELUDE: &str = r#"
import json, queue, socket, sys, threading, time
try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCodes
except ImportError as e:
    print(json.dumps({"ev": "missing", "error": str(e)}), flush=True)
    sys.exit(3)

HOST, PORT = sys.argv[1].rsplit(":", 1)
PORT = int(PORT)
DEADLINE = float(sys.argv[2])
ARGS = sys.argv[3:]

def emit(ev, **kw):
    kw["ev"] = ev
    print(json.dumps(kw), flush=True)

def step():
    """Waits until the test says go on."""
    if not sys.stdin.readline():
        sys.exit(0)

def props(kind, **kw):
    p = Properties(kind)
    for k, v in kw.items():
        setattr(p, k, v)
    return p

def code(rc):
    return rc.value if hasattr(rc, "value") else rc

class Dev:
    def __init__(self, device, client_id=None, secret=None):
        self.q = queue.Queue()
        self.stop = False
        self.thread = None
        cid = device if client_id is None else client_id
        c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        c.username_pw_set(device, secret if secret is not None else "s-" + device)
        put = lambda k, **v: self.q.put((k, v))
        c.on_connect = lambda c, u, flags, rc, p: put(
            "connack", session_present=flags.get("session present"),
            rc=code(rc), props=p.json() if p else {})
        c.on_subscribe = lambda c, u, mid, rcs, p: put(
            "suback", rcs=[code(r) for r in rcs])
        c.on_unsubscribe = lambda c, u, mid, p, rcs: put(
            "unsuback", rcs=[code(r) for r in (rcs if isinstance(rcs, list) else [rcs])])
        c.on_message = lambda c, u, m: put(
            "message", topic=m.topic, qos=m.qos, payload=m.payload.decode())
        c.on_disconnect = lambda c, u, rc, p=None: put("disconnect", rc=code(rc))
        self.c = c

    def _loop(self):
        while not self.stop:
            rc = self.c.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.q.put(("closed", {"rc": rc}))
                return

    def connect(self, clean_start, keepalive=60, **connect_props):
        p = props(PacketTypes.CONNECT, **connect_props) if connect_props else None
        self.c.connect(HOST, PORT, keepalive=keepalive, clean_start=clean_start,
                       properties=p)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self.expect("connack")

    def will(self, device, **will_props):
        p = props(PacketTypes.WILLMESSAGE, **will_props) if will_props else None
        self.c.will_set("eldercare/v1/%s/status" % device, '{"online": false}',
                        qos=1, properties=p)

    def expect(self, kind):
        until = time.monotonic() + DEADLINE
        seen = []
        while True:
            try:
                k, v = self.q.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                raise SystemExit("no %s within the deadline; saw %r" % (kind, seen))
            if k == kind:
                return v
            seen.append((k, v))

    def subscribe(self, topic, qos=1, **sub_props):
        p = props(PacketTypes.SUBSCRIBE, **sub_props) if sub_props else None
        self.c.subscribe(topic, qos, properties=p)
        return self.expect("suback")

    def publish(self, topic, payload, qos=1, retain=False, **pub_props):
        p = props(PacketTypes.PUBLISH, **pub_props) if pub_props else None
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=p)
        info.wait_for_publish(timeout=DEADLINE)
        if not info.is_published():
            raise SystemExit("no acknowledgement for %s" % topic)

    def disconnect(self, reason=None, **disc_props):
        rc = None if reason is None else ReasonCodes(PacketTypes.DISCONNECT, identifier=reason)
        p = props(PacketTypes.DISCONNECT, **disc_props) if disc_props else None
        self.c.disconnect(reasoncode=rc, properties=p)
        self.expect("closed")

    def drop(self):
        """Lost: the TCP connection closes without a DISCONNECT."""
        self.stop = True
        self.thread.join()
        s = self.c.socket()
        s.shutdown(socket.SHUT_RDWR)
        s.close()

def now_ms():
    return int(time.time() * 1000)
"#;

/// A running paho scenario.
pub struct Paho {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
    seen: Vec<Value>,
}

impl Paho {
    /// Runs `PRELUDE` + `script` against the server's MQTT address, with
    /// `args` after it (`ARGS` in the script).
    pub fn run(s: &Server, script: &str, args: &[&str]) -> Paho {
        let mut child = tokio::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .arg(&s.mqtt)
            .arg(DEADLINE.as_secs().to_string())
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("/usr/bin/python3 is required for this test");
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = err.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = stderr.next_line().await {
                let mut e = sink.lock().unwrap();
                e.push_str(&l);
                e.push('\n');
            }
        });
        Paho {
            stdin: child.stdin.take().unwrap(),
            out: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            err,
            seen: Vec::new(),
        }
    }

    /// The next event named `ev`; fails with what the script said if it
    /// ends first (or names the package when paho is missing).
    pub async fn event(&mut self, ev: &str) -> Value {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.out.next_line())
                .await
                .unwrap_or_else(|_| panic!("the paho script printed no {ev} event"));
            let Some(line) = line.unwrap() else {
                // Let stderr be read to its end.
                let status = self.child.wait().await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "the paho script ended ({status}) before its {ev} event; events {:?}; stderr:\n{}",
                    self.seen,
                    self.err.lock().unwrap()
                );
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("the paho script printed {line:?}"));
            if v["ev"] == "missing" {
                panic!(
                    "python3-paho-mqtt is required for this test (apt-get install python3-paho-mqtt): {}",
                    v["error"]
                );
            }
            self.seen.push(v.clone());
            if v["ev"] == ev {
                return v;
            }
        }
    }

    /// Lets the script go on past its `step()`.
    pub async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the script to end well.
    pub async fn finish(mut self) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the paho script did not end")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            status.success(),
            "the paho script failed ({status}); events {:?}; stderr:\n{}",
            self.seen,
            self.err.lock().unwrap()
        );
    }
}

// ---------------------------------------------------------------------
// Raw MQTT 5

/// Opens a raw MQTT 5 connection for `device` and reads its CONNACK,
/// which must accept it; the CONNACK's properties.
pub async fn raw_login(s: &Server, device: &str, props: &[Prop]) -> (Client, Vec<Prop>) {
    let mut c = Client::open(&s.mqtt).await;
    let secret = format!("s-{device}");
    c.send(&raw5::connect(
        device,
        Some((device, &secret)),
        60,
        true,
        props,
        None,
    ))
    .await;
    let p = c.next().await;
    let (present, rc, ack_props) = p.connack();
    assert_eq!((present, rc), (false, 0), "{p:?}");
    (c, ack_props)
}

/// Subscribes to the device's own `cmd` topic at QoS 1; SUBACK grants it.
pub async fn raw_subscribe_cmd(c: &mut Client, device: &str) {
    c.send(&raw5::subscribe(1, &[], &topic(device, "cmd"), 1))
        .await;
    let p = c.next().await;
    assert_eq!(p.kind(), raw5::SUBACK, "{p:?}");
    assert_eq!(p.suback(), (1, vec![1]), "{p:?}");
}

/// Publishes at QoS 1 and returns the PUBACK (reason code, properties).
pub async fn raw_publish(
    c: &mut Client,
    pkid: u16,
    t: &str,
    props: &[Prop],
    payload: &[u8],
) -> raw5::Packet {
    c.send(&raw5::publish(t, 1, pkid, props, payload)).await;
    let mut seen = Vec::new();
    let p = c.next_of(raw5::PUBACK, &mut seen).await;
    assert!(seen.is_empty(), "before the PUBACK: {seen:?}");
    assert_eq!(p.ack().0, pkid, "{p:?}");
    p
}

/// Reads until the socket closes; the reason of the DISCONNECT before,
/// which must be the only packet.
pub async fn disconnected(c: &mut Client) -> u8 {
    let seen = c.until_closed().await;
    assert_eq!(
        seen.len(),
        1,
        "one DISCONNECT, then the socket closes: {seen:?}"
    );
    seen[0].disconnect().0
}
