//! The MQTT listener against MQTT 3.1.1 to the letter, over raw TCP
//! sockets with packets encoded by hand: keep-alive reset by any packet
//! (embedded clients do not ping while they publish), keep-alive 0, the
//! CONNECT deadline, the cap on connections not logged in, the answers to
//! a bad login, and the rate limit of a babbling device. The real server
//! runs on free ports with its own data directory; every wait is on an
//! event (a packet, a closed socket, an alert), bounded by a deadline that
//! only turns a hang into a failure.
#[path = "support/raw_mqtt.rs"]
mod raw_mqtt;
mod support;
use raw_mqtt::{DISCONNECT, PINGREQ, PINGRESP, connect};

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ELDERS: &str = "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags\n\
E1,Test One,D1,C1,,,,\n\
E2,Test Two,D1,C2,,,,\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\n\
btn-1,sos_button,E1,,s-btn-1\n\
band-1,vital_band,E1,,s-band-1\n\
btn-2,sos_button,E2,,s-btn-2\n\
band-2,vital_band,E2,,s-band-2\n";

/// The server with this `[mqtt]` section (and rule file), and the test
/// registry imported.
fn start(mqtt: &str, rules: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), format!("[mqtt]\n{mqtt}\n")).unwrap();
    if let Some(r) = rules {
        std::fs::write(dir.path().join("rules.toml"), r).unwrap();
    }
    let tokens = Server::issue_tokens(dir.path());
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

/// PUBLISH with a text payload.
fn publish(topic: &str, qos: u8, pkid: u16, payload: &str) -> Vec<u8> {
    raw_mqtt::publish(topic, qos, pkid, payload.as_bytes())
}

fn vitals(hr: u32, seq: u64) -> String {
    format!(r#"{{"ts": {}, "seq": {seq}, "hr": {hr}}}"#, now_ms())
}

/// A raw MQTT connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next whole packet, as it came; `None` once the server closed
    /// the connection.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(n) = frame_len(&self.buf) {
                    return Some(self.buf.drain(..n).collect());
                }
                let mut chunk = [0u8; 4096];
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("nothing arrived, and the connection stayed open")
    }

    /// Logs in; the CONNACK as it came.
    async fn login(addr: &str, connect_packet: &[u8]) -> (Raw, Vec<u8>) {
        let mut r = Raw::open(addr).await;
        r.send(connect_packet).await;
        let ack = r.recv().await.expect("a CONNACK");
        (r, ack)
    }

    /// Waits until the server closes the connection; what it sent first.
    async fn until_closed(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 2 + i + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

fn puback(pkid: u16) -> Vec<u8> {
    let [hi, lo] = pkid.to_be_bytes();
    vec![0x40, 0x02, hi, lo]
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Whether the server has closed `s` (EOF or reset); `false` if it is
/// still open after `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(wait, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("the server sent something to a socket that never logged in"),
        Err(_) => false,
    }
}

// --- the tests ----------------------------------------------------------

/// A client publishing more often than its keep-alive sends no PINGREQ
/// (MQTT 3.1.1 §3.1.2.10: any packet resets the timer). Keep-alive 2 s,
/// a QoS 1 PUBLISH each second for 20 s: still connected, every PUBACK
/// in order, and no last will.
#[tokio::test]
async fn publishing_keeps_a_session_alive_without_pingreq() {
    let s = start("", None);
    let (mut dev, ack) = Raw::login(
        &s.mqtt,
        &connect(
            "band-1-fw",
            Some(("band-1", "s-band-1")),
            2,
            Some(("eldercare/v1/band-1/status", r#"{"online": false}"#)),
        ),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for pkid in 1..=20u16 {
        tick.tick().await;
        dev.send(&publish(
            "eldercare/v1/band-1/vitals",
            1,
            pkid,
            &vitals(70, pkid.into()),
        ))
        .await;
        let got = dev.recv().await;
        assert_eq!(
            got,
            Some(puback(pkid)),
            "PUBACK {pkid} (session cut by its keep-alive?)"
        );
    }
    // Still there, and answered by the listener itself.
    dev.send(&PINGREQ).await;
    assert_eq!(dev.recv().await.as_deref(), Some(&PINGRESP[..]));
    dev.send(&DISCONNECT).await;
    assert!(dev.until_closed().await.is_empty());
    // Everything it sent is through the pipeline, and no will with it:
    // a will would have come before the DISCONNECT.
    assert_eq!(
        s.await_counter("eldercare_ingest_accepted_total", "stream=\"vitals\"", 20)
            .await,
        20
    );
    assert_eq!(
        s.counter("eldercare_ingest_accepted_total", "stream=\"status\""),
        0,
        "the last will was published"
    );
    assert_eq!(
        s.counter("eldercare_mqtt_connections_closed_total", "keep_alive"),
        0
    );
}

/// Keep-alive 4 s and then nothing at all: closed after 1.5 x 4 = 6 s,
/// and the last will published (a device_offline alert).
#[tokio::test]
async fn silence_for_one_and_a_half_keep_alives_ends_the_session_with_its_will() {
    let s = start("", Some("[offline]\ngrace_s = 1\n"));
    let mut sub = s.subscribe(0).await;
    let (mut dev, ack) = Raw::login(
        &s.mqtt,
        &connect(
            "band-2-fw",
            Some(("band-2", "s-band-2")),
            4,
            Some(("eldercare/v1/band-2/status", r#"{"online": false}"#)),
        ),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    let t0 = Instant::now();
    assert!(dev.until_closed().await.is_empty());
    let after = t0.elapsed();
    eprintln!("closed {after:?} after the CONNACK (keep-alive 4 s)");
    assert!(
        after >= Duration::from_millis(5_900) && after < Duration::from_millis(7_500),
        "closed after {after:?}, not ~6 s"
    );
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.subject.as_str()),
        ("device_offline", "band-2")
    );
    assert_eq!(
        s.counter("eldercare_mqtt_connections_closed_total", "keep_alive"),
        1
    );
}

/// Keep-alive 0 switches the mechanism off (§3.1.2.10) and is legal.
#[tokio::test]
async fn keep_alive_zero_is_accepted() {
    let s = start("", None);
    let (mut dev, ack) = Raw::login(
        &s.mqtt,
        &connect("btn-1-fw", Some(("btn-1", "s-btn-1")), 0, None),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    dev.send(&publish(
        "eldercare/v1/btn-1/status",
        1,
        7,
        r#"{"battery_pct": 80}"#,
    ))
    .await;
    assert_eq!(dev.recv().await, Some(puback(7)));
    dev.send(&PINGREQ).await;
    assert_eq!(dev.recv().await.as_deref(), Some(&PINGRESP[..]));
}

/// An unknown device and a wrong secret get the same bytes (no way to
/// list device ids), but are counted apart.
#[tokio::test]
async fn unknown_device_and_wrong_secret_look_the_same_on_the_wire() {
    let s = start("", None);
    let (mut a, ack_a) = Raw::login(
        &s.mqtt,
        &connect("x", Some(("ghost-9", "s-ghost-9")), 30, None),
    )
    .await;
    let (mut b, ack_b) =
        Raw::login(&s.mqtt, &connect("x", Some(("btn-1", "wrong")), 30, None)).await;
    assert_eq!(ack_a, ack_b);
    assert_eq!(ack_a, [0x20, 0x02, 0x00, 0x04], "bad user name or password");
    assert!(a.until_closed().await.is_empty());
    assert!(b.until_closed().await.is_empty());
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "\"unknown_device\""
        ),
        1
    );
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "\"bad_credentials\""
        ),
        1
    );
}

/// Opens `n` sockets to the listener: every other one sends the first 20
/// bytes of a CONNECT announcing more, the others nothing. Each task
/// reports when its socket is open, then waits for the server to close it
/// and returns how long it was open (at least: timed from before the
/// connection was made).
fn stalled_sockets(
    addr: &str,
    n: usize,
) -> (
    tokio::task::JoinSet<Duration>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let (opened_tx, opened) = tokio::sync::mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (addr, opened_tx) = (addr.to_string(), opened_tx.clone());
        set.spawn(async move {
            // Before the connection exists, so the server's timer starts
            // after it.
            let at = Instant::now();
            let mut c = TcpStream::connect(&addr).await.unwrap();
            if i % 2 == 1 {
                let full = connect("stalled", Some(("btn-1", "s-btn-1")), 30, None);
                c.write_all(&full[..20]).await.unwrap();
            }
            opened_tx.send(()).unwrap();
            assert!(closed_within(&mut c, DEADLINE * 4).await, "never closed");
            at.elapsed()
        });
    }
    (set, opened)
}

/// Sockets that never send a CONNECT, or send half of one and stall, are
/// closed after the connect timeout (1 s here), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_without_a_whole_connect_are_closed_after_the_connect_timeout() {
    let s = start(
        "connect_timeout_s = 1.0\nmax_pending_connections = 5000",
        None,
    );
    let (mut idle, _opened) = stalled_sockets(&s.mqtt, 2000);
    // Each is closed after its second, none before, none much later.
    let mut longest = Duration::ZERO;
    while let Some(open_for) = idle.join_next().await {
        let open_for = open_for.unwrap();
        assert!(
            open_for >= Duration::from_millis(950),
            "closed after {open_for:?}"
        );
        longest = longest.max(open_for);
    }
    eprintln!("the last of 2,000 stalled sockets was closed {longest:?} after it opened");
    assert!(longest < Duration::from_secs(5), "{longest:?}");
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "connect_timeout"
        ),
        2000
    );
}

/// While 2,000 sockets are open without a whole CONNECT (half of them
/// with part of one), a real device logs in at once: nothing waits on a
/// slow socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logs_in_at_once_while_2000_stalled_sockets_are_open() {
    let s = start(
        "connect_timeout_s = 60.0\nmax_pending_connections = 5000",
        None,
    );
    let (idle, mut opened) = stalled_sockets(&s.mqtt, 2000);
    for _ in 0..2000 {
        opened.recv().await.unwrap();
    }
    // All accepted by the server (there is no event for it: its gauge).
    assert_eq!(
        s.await_metric("eldercare_mqtt_pending_connections", |v| v >= 2000.0)
            .await,
        2000.0
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (mut dev, ack) = Raw::login(
            &s.mqtt,
            &connect("btn-2-fw", Some(("btn-2", "s-btn-2")), 30, None),
        )
        .await;
        times.push(t.elapsed());
        assert_eq!(ack, CONNACK_OK);
        dev.send(&DISCONNECT).await;
        assert!(dev.until_closed().await.is_empty());
    }
    eprintln!("CONNECT -> CONNACK beside 2,000 stalled sockets: {times:?}");
    let worst = times.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(1), "{times:?}");
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "connect_timeout"
        ),
        0,
        "still open"
    );
    drop(idle);
}

/// A CONNECT announcing 256 KiB is refused from its header, before its
/// body is read (the limit for a CONNECT is 64 KiB).
#[tokio::test]
async fn an_oversized_connect_is_refused_from_its_header() {
    let s = start("connect_timeout_s = 30.0", None);
    let mut c = TcpStream::connect(&s.mqtt).await.unwrap();
    // Remaining length 262,144, then the start of a body.
    c.write_all(&[0x10, 0x80, 0x80, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T'])
        .await
        .unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(5)).await,
        "closed at once, not after the 30 s connect timeout"
    );
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "connect_too_large",
            1
        )
        .await,
        1
    );
}

/// Beyond the cap on connections not yet logged in, new sockets are
/// closed at once and counted; once the others go, devices get in again.
#[tokio::test]
async fn beyond_the_pending_cap_new_sockets_are_closed_at_once() {
    let s = start(
        "connect_timeout_s = 60.0\nmax_pending_connections = 50",
        None,
    );
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(&s.mqtt).await.unwrap());
    }
    // Accepted by the server (there is no event for it: its gauge).
    assert_eq!(
        s.await_metric("eldercare_mqtt_pending_connections", |v| v >= 50.0)
            .await,
        50.0
    );
    for _ in 0..10 {
        let mut c = TcpStream::connect(&s.mqtt).await.unwrap();
        assert!(closed_within(&mut c, Duration::from_secs(2)).await);
    }
    // A device too, while the cap is reached.
    let mut r = Raw::open(&s.mqtt).await;
    r.send(&connect("btn-1-fw", Some(("btn-1", "s-btn-1")), 30, None))
        .await;
    assert!(r.until_closed().await.is_empty());
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "too_many_pending"
        ),
        11
    );
    drop(held);
    // Seen closing by the server (its gauge), each freeing its place.
    assert_eq!(
        s.await_metric("eldercare_mqtt_pending_connections", |v| v == 0.0)
            .await,
        0.0
    );
    let (_dev, ack) = Raw::login(
        &s.mqtt,
        &connect("btn-1-fw", Some(("btn-1", "s-btn-1")), 30, None),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
}

/// A device sending 1,000 msg/s is slowed to its rate (50 msg/s, burst
/// 200) and, as it persists, cut off; a device of another home is not
/// affected: its SOS raises an alert at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_babbling_device_is_slowed_then_cut_off_and_another_home_is_unaffected() {
    let s = start(
        "rate_msgs_per_s = 50.0\nrate_burst = 200\nrate_cutoff_window_s = 4.0",
        None,
    );
    let mut sub = s.subscribe(0).await;
    let (babbler, ack) = Raw::login(
        &s.mqtt,
        &connect("band-1-fw", Some(("band-1", "s-band-1")), 60, None),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    let (mut rd, mut wr) = babbler.s.into_split();
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        // 1,000 QoS 0 messages a second, in batches of ten.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0u64;
        loop {
            tick.tick().await;
            let mut batch = Vec::new();
            for _ in 0..10 {
                sent += 1;
                batch.extend(publish(
                    "eldercare/v1/band-1/vitals",
                    0,
                    0,
                    &vitals(70, sent),
                ));
            }
            if wr.write_all(&batch).await.is_err() {
                return sent;
            }
        }
    });
    // Meanwhile, an SOS from another home.
    let (mut btn, ack) = Raw::login(
        &s.mqtt,
        &connect("btn-2-fw", Some(("btn-2", "s-btn-2")), 60, None),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    tokio::time::sleep(Duration::from_millis(500)).await; // into the flood
    let t = Instant::now();
    btn.send(&publish(
        "eldercare/v1/btn-2/event",
        1,
        1,
        &format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    ))
    .await;
    assert_eq!(btn.recv().await, Some(puback(1)));
    let ev = next(&mut sub).await;
    let sos_latency = t.elapsed();
    let a = ev.alert.unwrap();
    assert_eq!((a.kind.as_str(), a.elder_id.as_str()), ("sos", "E2"));
    eprintln!("SOS of another home raised in {sos_latency:?} during the flood");
    assert!(sos_latency < Duration::from_secs(2), "{sos_latency:?}");

    // The babbler is cut off: its socket closes.
    let mut b = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the babbler was never cut off");
    let cut_after = started.elapsed();
    let sent = flood.await.unwrap();
    eprintln!("babbler cut off after {cut_after:?} having written {sent} messages");
    // Slowed for more than half of the 4 s window: about 2 s after its
    // burst ran out.
    assert!(
        cut_after >= Duration::from_secs(2) && cut_after < Duration::from_secs(10),
        "{cut_after:?}"
    );
    // A routine message from another device after the cut (low battery:
    // an alert at once). Routine messages keep one order through the
    // log, so once its alert is out, everything the babbler got in is
    // counted.
    let (mut band2, ack) = Raw::login(
        &s.mqtt,
        &connect("band-2-fw", Some(("band-2", "s-band-2")), 60, None),
    )
    .await;
    assert_eq!(ack, CONNACK_OK);
    band2
        .send(&publish(
            "eldercare/v1/band-2/status",
            1,
            1,
            &format!(r#"{{"ts": {}, "battery_pct": 12}}"#, now_ms()),
        ))
        .await;
    assert_eq!(band2.recv().await, Some(puback(1)));
    let ev = next(&mut sub).await;
    assert_eq!(ev.alert.unwrap().kind, "low_battery");
    let accepted = s.counter("eldercare_ingest_accepted_total", "stream=\"vitals\"");
    eprintln!("{accepted} of the babbler's readings were taken in");
    let accepted = accepted as f64;
    let allowed = 200.0 + 50.0 * cut_after.as_secs_f64() + 50.0;
    assert!(
        accepted <= allowed,
        "{accepted} readings taken from the babbler, at most {allowed} allowed"
    );
    assert!(s.counter("eldercare_mqtt_rate_limited_total", "") >= 1);
    assert_eq!(
        s.counter("eldercare_mqtt_connections_closed_total", "rate_limit"),
        1
    );
    // The SOS button's session lives on.
    btn.send(&PINGREQ).await;
    assert_eq!(btn.recv().await.as_deref(), Some(&PINGRESP[..]));
}
