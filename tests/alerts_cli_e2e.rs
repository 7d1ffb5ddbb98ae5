//! `eldercare alerts watch | list | ack` end to end, as a shell user runs
//! them: the real server binary, SOS presses from the stock
//! `mosquitto_pub`, and the commands as child processes whose output is
//! read line by line, each read bounded by a deadline that only turns a
//! hang into a failure.
mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use support::*;

const ELDERS: &str = "elder_id,name,district,community\n\
E1,Test One,D1,C1\n\
E2,Test Two,D1,C2\n";
// A day's heartbeat: no device_offline alert joins the events counted.
const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
btn-1,sos_button,E1,,s-btn-1,86400\n\
btn-2,sos_button,E2,,s-btn-2,86400\n";

/// A data dir with the registry and a token per role, plus a second
/// operator `op-2`, and the server on it.
fn start() -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let op2 = add_token(dir.path(), "op-2", "operator");
    let data = dir.path().to_str().unwrap();
    import_csv(dir.path(), &["--data-dir", data], ELDERS, DEVICES);
    (Server::spawn(dir, tokens), op2)
}

/// An SOS press from `btn`, with `mosquitto_pub` at QoS 1 (it returns once
/// the server has acknowledged it).
fn press_sos(s: &Server, btn: &str) {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-q", "1", "-u", btn])
        .args(["-P", &format!("s-{btn}")])
        .args(["-t", &format!("eldercare/v1/{btn}/event")])
        .args(["-m", &format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms())])
        .output()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `eldercare alerts ARGS` against `grpc`, the token in the environment
/// as the docs recommend; waits for it to exit.
fn alerts(grpc: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("alerts")
        .args(args)
        .env("ELDERCARE_GRPC_ADDR", grpc)
        .env("ELDERCARE_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    exited(cmd.spawn().unwrap())
}

/// The child's exit and output, within the deadline.
fn exited(child: Child) -> Output {
    let (tx, rx) = channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(DEADLINE)
        .expect("the command did not exit")
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines as they come, read on a thread of their own.
fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// `eldercare alerts watch --json` running as a child process.
struct Watch {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Watch {
    fn start(grpc: &str, token: &str) -> Watch {
        let mut child = Command::new(BIN)
            .args(["alerts", "watch", "--json", "--grpc-addr"])
            .arg(format!("http://{grpc}"))
            .env("ELDERCARE_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Watch {
            out: lines_of(child.stdout.take().unwrap()),
            err: lines_of(child.stderr.take().unwrap()),
            child,
        }
    }

    /// The next event it prints.
    fn next(&self) -> Value {
        let line = self
            .out
            .recv_timeout(DEADLINE)
            .expect("watch printed no event");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Waits for a line on its stderr containing `what`.
    fn says(&self, what: &str) -> String {
        loop {
            let l = self
                .err
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("watch never said {what:?}"));
            if l.contains(what) {
                return l;
            }
        }
    }

    /// SIGINT, as Ctrl-C; its exit status.
    fn interrupt(self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        exited(self.child).status
    }
}

/// `kill -9`, then the server again on the same data and the same MQTT
/// and gRPC ports.
fn kill9_and_restart(mut s: Server) -> Server {
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let tokens = std::mem::take(&mut s.tokens);
    let (mqtt, grpc) = (s.mqtt.clone(), s.grpc.clone());
    drop(s);
    Server::spawn_on(dir, tokens, [&mqtt, &grpc, "127.0.0.1:0"])
}

fn assert_event(ev: &Value, seq: u64, kind: &str, alert_id: Option<&str>) {
    assert_eq!(ev["seq"], seq, "{ev}");
    assert_eq!(ev["kind"], kind, "{ev}");
    if let Some(id) = alert_id {
        assert_eq!(ev["alert_id"], id, "{ev}");
    }
}

#[test]
fn watch_follows_acks_and_a_kill_9_restart_printing_every_seq_once() {
    let (s, op2) = start();
    let op = s.tokens["operator"].clone();
    let watch = Watch::start(&s.grpc, &op);
    let mut printed = Vec::new();

    press_sos(&s, "btn-1");
    let raised = watch.next();
    assert_event(&raised, 1, "raised", None);
    for (field, want) in [
        ("alert_kind", "sos"),
        ("elder_id", "E1"),
        ("severity", "critical"),
        ("state", "open"),
        ("community", "C1"),
    ] {
        assert_eq!(raised[field], want, "{field} in {raised}");
    }
    assert!(raised["actor"].is_null() && raised["summary"].as_str().is_some_and(|s| !s.is_empty()));
    let at = raised["at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok(),
        "at {at:?} is not RFC 3339"
    );
    let id1 = raised["alert_id"].as_str().unwrap().to_string();
    printed.push(raised);

    // Acknowledged from the command line; watch sees it.
    let out = alerts(&s.grpc, &op, &["ack", &id1, "--note", "on my way"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&id1) && shown.contains("acknowledged"),
        "{shown}"
    );
    let acked = watch.next();
    assert_event(&acked, 2, "acknowledged", Some(&id1));
    assert_eq!(
        (&acked["actor"], &acked["note"], &acked["state"]),
        (
            &Value::from("op-1"),
            &Value::from("on my way"),
            &Value::from("acknowledged")
        )
    );
    printed.push(acked);

    // Another operator is told who got there first; a viewer may not
    // acknowledge at all. Neither makes an event (the seqs below are
    // gap-free).
    let out = alerts(&s.grpc, &op2, &["ack", &id1]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already acknowledged by op-1"),
        "{}",
        text(&out.stderr)
    );
    let out = alerts(&s.grpc, &s.tokens["viewer"], &["ack", &id1]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // The server dies mid-stream and comes back on the same ports.
    let s = kill9_and_restart(s);
    watch.says("alert stream lost");
    // Raised and acknowledged whether or not watch is back yet.
    press_sos(&s, "btn-2");
    let raised = watch.next();
    assert_event(&raised, 3, "raised", None);
    assert_eq!(raised["elder_id"], "E2");
    let id2 = raised["alert_id"].as_str().unwrap().to_string();
    watch.says("reconnected");
    printed.push(raised);
    // A bare host:port works too (the server's own ELDERCARE_GRPC_ADDR form).
    let out = alerts(&s.grpc, &op, &["ack", &id2, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alert: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&alert["id"], &alert["state"]),
        (&Value::from(id2.as_str()), &Value::from("acknowledged"))
    );
    assert!(alert["acknowledged_at"].is_string());

    // Every event in the log, each printed exactly once and in order.
    let audit = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    let report = text(&audit.stdout);
    assert!(audit.status.success(), "{report}");
    let total: u64 = report
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {report:?}"));
    assert!(total >= 4, "{report}");
    while printed.last().unwrap()["seq"] != total {
        printed.push(watch.next());
    }
    let seqs: Vec<u64> = printed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert!(
        printed
            .iter()
            .any(|e| e["kind"] == "acknowledged" && e["alert_id"] == id2.as_str())
    );

    // The list agrees.
    let out = alerts(
        &s.grpc,
        &op,
        &["list", "--json", "--state", "acknowledged,dispatched"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ids: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(ids, want);
    let out = alerts(&s.grpc, &op, &["list", "--state", "open"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        text(&out.stdout)
    );

    // A reader that goes away (`| head`) ends watch quietly, with 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let gone = Command::new(BIN)
        .args(["alerts", "watch", "--json"])
        .env("ELDERCARE_GRPC_ADDR", &s.grpc)
        .env("ELDERCARE_TOKEN", &op)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exited(gone);
    assert!(out.status.success(), "{:?}", out.status);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Ctrl-C ends it with 0 too.
    assert!(watch.interrupt().success());
}

#[test]
fn refusals_exit_with_their_codes_and_say_why() {
    let (s, _) = start();
    let op = &s.tokens["operator"];

    let out = alerts(&s.grpc, op, &["ack", "no-such-alert"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no alert with id `no-such-alert`"),
        "{}",
        text(&out.stderr)
    );

    // An unknown token: refused, never retried, never printed.
    for args in [&["ack", "x"][..], &["list"], &["watch"]] {
        let out = alerts(&s.grpc, "not-a-token", args);
        assert_eq!(
            out.status.code(),
            Some(77),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains("does not accept this token"), "{err}");
        assert!(!err.contains("not-a-token"), "{err}");
    }

    // Nobody listening: exit 69 for one-shot commands.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = alerts(&addr, op, &["list"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}
