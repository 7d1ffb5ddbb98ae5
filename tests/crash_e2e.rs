//! Acknowledged means kept: a device that has its PUBACK stops retrying,
//! so what was acknowledged must survive `kill -9` of the server the
//! moment after. Driven by a raw MQTT 3.1.1 client written from the spec
//! (not the project's simulator, not rumqttc), on SQLite and on
//! PostgreSQL.
//!
//! What must survive, and is checked:
//! - every SOS PUBACKed just before a `kill -9` is an alert occurrence
//!   after the restart, none twice (each press's evidence on its alert
//!   exactly once), the event log's `seq` gap-free and its hash chain
//!   intact (`eldercare audit verify`);
//! - every reading PUBACKed before a `kill -9` is stored exactly once.
//!
//! `CRASH_ROUNDS` (default 24) sets the SOS rounds; the figures with 200
//! rounds are in benches/RESULTS.md.
#[path = "../crates/store/tests/support/pg.rs"]
mod pg;
#[path = "support/raw_mqtt.rs"]
mod raw_mqtt;
mod support;

use eldercare_proto::v1 as pb;
use sqlx::Connection;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use support::*;

const BUTTONS: usize = 20;

/// A raw device connection.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn open(addr: &str, id: &str, secret: &str) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&raw_mqtt::connect(id, Some((id, secret)), 60, None))
            .unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted for {id}");
        Raw { s }
    }

    /// Reads one PUBACK (§3.4) and returns its packet id.
    fn puback(&mut self) -> u16 {
        let mut a = [0u8; 4];
        self.s.read_exact(&mut a).unwrap();
        assert_eq!(a[..2], [0x40, 0x02], "a PUBACK");
        u16::from_be_bytes([a[2], a[3]])
    }
}

fn registry(buttons: usize) -> (String, String) {
    let mut elders = String::from("elder_id,name,district,community\n");
    // A day's heartbeat: the rounds take minutes, and no offline alert
    // may join the SOS events counted.
    let mut devices = String::from("device_id,kind,elder_id,room,secret,heartbeat_s\n");
    for i in 0..buttons {
        elders += &format!("E{i},Test {i},D1,C1\n");
        devices += &format!("btn-{i},sos_button,E{i},,s-btn-{i},86400\n");
    }
    (elders, devices)
}

/// `kill -9`, and the exit reaped.
fn kill9(mut s: Server) -> Server {
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s
}

fn spawn_on(mut old: Server) -> Server {
    let dir = std::mem::replace(&mut old.dir, tempfile::tempdir().unwrap());
    let tokens = std::mem::take(&mut old.tokens);
    drop(old);
    Server::spawn(dir, tokens)
}

fn audit(storage: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .args(storage)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "audit verify: {text}");
    text
}

/// Rounds of "an SOS from one of the buttons, `kill -9` the moment its
/// PUBACK arrives, restart", then the alert log is checked against what
/// was acknowledged.
async fn sos_rounds_survive_kill_9(storage: Vec<String>, mut s: Server, rounds: usize) {
    let storage: Vec<&str> = storage.iter().map(String::as_str).collect();
    let mut pressed: HashMap<String, Vec<i64>> = HashMap::new();
    let t0 = now_ms() - 3_600_000;
    for round in 0..rounds {
        let id = format!("btn-{}", round % BUTTONS);
        let ts = t0 + round as i64 * 1000;
        let mqtt = s.mqtt.clone();
        let (raw, acked) = tokio::task::spawn_blocking({
            let id = id.clone();
            move || {
                let mut raw = Raw::open(&mqtt, &id, &format!("s-{id}"));
                // The counter restarts, as after a battery change: a
                // reused seq with a new ts is a new press.
                let payload = format!(r#"{{"ts": {ts}, "seq": 1, "type": "sos"}}"#);
                raw.s
                    .write_all(&raw_mqtt::publish(
                        &format!("eldercare/v1/{id}/event"),
                        1,
                        7,
                        payload.as_bytes(),
                    ))
                    .unwrap();
                let pkid = raw.puback();
                (raw, pkid)
            }
        })
        .await
        .unwrap();
        assert_eq!(acked, 7);
        s = kill9(s);
        drop(raw);
        pressed.entry(id).or_default().push(ts);
        s = spawn_on(s);
    }

    // Every acknowledged press is on its button's alert once.
    let mut sub = s.subscribe(0).await;
    let mut latest: BTreeMap<String, pb::Alert> = BTreeMap::new();
    let mut seqs = Vec::new();
    let distinct = pressed.len();
    // One event per press: a Raised and then an Updated per fold.
    for _ in 0..rounds {
        let ev = next(&mut sub).await;
        seqs.push(ev.seq);
        let a = ev.alert.unwrap();
        latest.insert(a.elder_id.clone(), a);
    }
    assert_eq!(
        seqs,
        (1..=rounds as u64).collect::<Vec<_>>(),
        "seq gap-free"
    );
    assert_eq!(latest.len(), distinct, "one SOS alert per button");
    for a in latest.values() {
        let btn = a.device_id.clone();
        let want = &pressed[&btn];
        assert_eq!(
            a.occurrences as usize,
            want.len(),
            "{btn}: every acknowledged press, none twice"
        );
        let mut got: Vec<i64> = a
            .readings
            .iter()
            .map(|r| {
                let t = r.ts.as_ref().expect("reading time");
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
            })
            .collect();
        got.sort();
        assert_eq!(&got, want, "{btn}: each press's evidence exactly once");
    }
    let report = audit(&storage);
    assert!(
        report.contains(&format!("OK, {rounds} events")),
        "no event beyond the presses: {report}"
    );
}

/// 100,000 readings from ten raw devices, all PUBACKed, then `kill -9` at
/// once; after the restart each is stored exactly once.
async fn acknowledged_readings_survive_kill_9(s: Server, count: impl AsyncCount) {
    let per_device = 10_000u32;
    let devices = 10usize;
    let mqtt = s.mqtt.clone();
    let t0 = now_ms() - 2 * 3_600_000;
    let handles: Vec<_> = (0..devices)
        .map(|d| {
            let mqtt = mqtt.clone();
            std::thread::spawn(move || {
                let id = format!("btn-{d}");
                let mut raw = Raw::open(&mqtt, &id, &format!("s-{id}"));
                let mut reader = raw.s.try_clone().unwrap();
                // A reader for the PUBACKs beside the writer: the
                // client keeps many in flight, as MQTT allows.
                let acks = std::thread::spawn(move || {
                    let mut n = 0u32;
                    let mut a = [0u8; 4];
                    while n < per_device {
                        reader.read_exact(&mut a).unwrap();
                        assert_eq!(a[0], 0x40);
                        n += 1;
                    }
                    n
                });
                let topic = format!("eldercare/v1/{id}/status");
                let mut buf = Vec::new();
                for i in 0..per_device {
                    let payload = format!(
                        r#"{{"ts": {}, "seq": {}, "battery_pct": {}}}"#,
                        t0 + i64::from(i),
                        i + 1,
                        50 + i % 50
                    );
                    buf.extend(raw_mqtt::publish(
                        &topic,
                        1,
                        (i % 60_000 + 1) as u16,
                        payload.as_bytes(),
                    ));
                    if buf.len() > 32 * 1024 {
                        raw.s.write_all(&buf).unwrap();
                        buf.clear();
                    }
                }
                raw.s.write_all(&buf).unwrap();
                let acked = acks.join().unwrap();
                (raw, acked)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for h in handles {
        let (raw, acked) = tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap();
        assert_eq!(acked, per_device);
        conns.push(raw);
    }
    let s = kill9(s);
    drop(conns);
    let s = spawn_on(s);
    let want = i64::from(per_device) * devices as i64;
    // Nothing to await but the rows: poll the store, bounded.
    let t = tokio::time::Instant::now();
    let mut n = 0;
    while t.elapsed() < DEADLINE * 4 {
        n = count.rows(&s).await;
        if n >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(n, want, "every acknowledged reading stored");
    // Stopped cleanly: whatever a duplicate would add has been written.
    let s = s.restart().await;
    assert_eq!(count.rows(&s).await, want, "none stored twice");
    assert_eq!(count.distinct(&s).await, want, "each (device, seq) once");
}

trait AsyncCount {
    async fn rows(&self, s: &Server) -> i64;
    async fn distinct(&self, s: &Server) -> i64;
}

struct SqliteCount;

async fn sqlite_scalar(s: &Server, sql: &str) -> i64 {
    let url = format!(
        "sqlite://{}?mode=ro",
        s.dir.path().join("eldercare.db").display()
    );
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

impl AsyncCount for SqliteCount {
    async fn rows(&self, s: &Server) -> i64 {
        sqlite_scalar(s, "SELECT count(*) FROM readings").await
    }
    async fn distinct(&self, s: &Server) -> i64 {
        sqlite_scalar(
            s,
            "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings)",
        )
        .await
    }
}

struct PgCount(String);

async fn pg_scalar(url: &str, sql: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

impl AsyncCount for PgCount {
    async fn rows(&self, _: &Server) -> i64 {
        pg_scalar(&self.0, "SELECT count(*) FROM readings").await
    }
    async fn distinct(&self, _: &Server) -> i64 {
        pg_scalar(
            &self.0,
            "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings) d",
        )
        .await
    }
}

fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// A bulk load from ten devices: far beyond a real device's rate, which
/// the listener would otherwise slow down and cut off.
const BULK: &str = "[mqtt]\nrate_msgs_per_s = 1000000.0\nrate_burst = 1000000\n";

fn sqlite_server(config: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let (elders, devices) = registry(BUTTONS);
    import_csv(
        dir.path(),
        &["--data-dir", dir.path().to_str().unwrap()],
        &elders,
        &devices,
    );
    let tokens = Server::issue_tokens(dir.path());
    Server::spawn(dir, tokens)
}

async fn pg_server(pg: &pg::PgServer, config: &str) -> (Server, pg::TestDb) {
    let db = pg.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("database_url = \"{}\"\n{config}", db.url),
    )
    .unwrap();
    let (elders, devices) = registry(BUTTONS);
    import_csv(dir.path(), &["--database-url", &db.url], &elders, &devices);
    let tokens = Server::issue_tokens(dir.path());
    (Server::spawn(dir, tokens), db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sos_acknowledged_before_kill_9_is_raised_once() {
    let s = sqlite_server("");
    let dir = s.dir.path().to_str().unwrap().to_string();
    sos_rounds_survive_kill_9(vec!["--data-dir".into(), dir], s, rounds()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_readings_acknowledged_before_kill_9_are_stored_once() {
    acknowledged_readings_survive_kill_9(sqlite_server(BULK), SqliteCount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sos_acknowledged_before_kill_9_is_raised_once() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let (s, db) = pg_server(&pg, "").await;
    sos_rounds_survive_kill_9(vec!["--database-url".into(), db.url.clone()], s, rounds()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readings_acknowledged_before_kill_9_are_stored_once() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let (s, db) = pg_server(&pg, BULK).await;
    acknowledged_readings_survive_kill_9(s, PgCount(db.url.clone())).await;
}

fn ms(t: &eldercare_proto::wkt::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// A person leaves bed at night; the server is killed with `kill -9`
/// 5 s later and started again. The out-of-bed alert is raised when it
/// is due counting from the moment they left, as without the restart, not
/// a whole `after_s` after the restart: at the first sign of the home
/// (the bed sensor's heartbeat, every half second here) past that moment,
/// since the rules that infer from absence judge only as far as the home
/// has shown evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_bed_episode_spanning_kill_9_is_raised_when_due() {
    const AFTER_S: i64 = 30;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        format!("[out_of_bed]\nafter_s = {AFTER_S}\nmoving_window_s = 10\n"),
    )
    .unwrap();
    // Night now, in UTC: from an hour ago to two hours ahead.
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let now = chrono::Utc::now();
    let elders = format!(
        "elder_id,name,district,community,timezone,night_start,night_end\n\
         E0,Test Zero,D1,C1,UTC,{},{}\n",
        hm(now - chrono::Duration::hours(1)),
        hm(now + chrono::Duration::hours(2))
    );
    let devices = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
                   bed-0,sleep_sensor,E0,,s-bed-0,86400\n";
    import_csv(
        dir.path(),
        &["--data-dir", dir.path().to_str().unwrap()],
        &elders,
        devices,
    );
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    let mqtt = s.mqtt.clone();
    let left_at = now_ms();
    let raw = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::open(&mqtt, "bed-0", "s-bed-0");
        let topic = "eldercare/v1/bed-0/sleep";
        for (i, (ts, in_bed)) in [(left_at - 600_000, true), (left_at, false)]
            .into_iter()
            .enumerate()
        {
            let p = format!(r#"{{"ts": {ts}, "in_bed": {in_bed}}}"#);
            raw.s
                .write_all(&raw_mqtt::publish(topic, 1, i as u16 + 1, p.as_bytes()))
                .unwrap();
            raw.puback();
        }
        raw
    })
    .await
    .unwrap();
    // The episode runs on the wall clock: let part of it pass before the
    // crash (there is no event to wait for; this is the scenario itself).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let s = kill9(s);
    drop(raw);
    let s = spawn_on(s);
    let mut sub = s.subscribe(0).await;
    // The bed sensor reconnects and reports its status: evidence that the
    // home is heard, and that nobody is back in bed.
    let mqtt = s.mqtt.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = stop.clone();
    let heartbeats = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::open(&mqtt, "bed-0", "s-bed-0");
        let mut id = 10u16;
        while !beating.load(std::sync::atomic::Ordering::SeqCst) {
            let p = format!(r#"{{"ts": {}, "online": true}}"#, now_ms());
            raw.s
                .write_all(&raw_mqtt::publish(
                    "eldercare/v1/bed-0/status",
                    1,
                    id,
                    p.as_bytes(),
                ))
                .unwrap();
            raw.puback();
            id += 1;
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let ev = tokio::time::timeout(DEADLINE * 2, sub.message())
        .await
        .expect("the out-of-bed alert")
        .unwrap()
        .unwrap();
    let a = ev.alert.unwrap();
    assert_eq!(a.kind, "out_of_bed_too_long");
    let due = left_at + AFTER_S * 1000;
    let detected = ms(a.detected_at.as_ref().unwrap());
    assert!(
        detected >= due - 100,
        "not before it is due: {} ms early",
        due - detected
    );
    assert!(
        detected <= due + 1_000,
        "raised {} ms after it was due; a timer started over at the restart would be {} s late",
        detected - due,
        5
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    heartbeats.await.unwrap();
}

/// A QoS 1 redelivery (DUP flag, same packet id and payload, MQTT 3.1.1
/// §4.4) is the same press: one alert occurrence. A reused `seq` with a
/// new `ts` (a counter restarted after a battery change) is a new press.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_is_one_press_and_a_reused_seq_with_a_new_ts_is_another() {
    let s = sqlite_server("");
    let mut sub = s.subscribe(0).await;
    let mqtt = s.mqtt.clone();
    let t = now_ms();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::open(&mqtt, "btn-1", "s-btn-1");
        let topic = "eldercare/v1/btn-1/event";
        let first = format!(r#"{{"ts": {t}, "seq": 5, "type": "sos"}}"#);
        raw.s
            .write_all(&raw_mqtt::publish(topic, 1, 1, first.as_bytes()))
            .unwrap();
        assert_eq!(raw.puback(), 1);
        // The PUBACK "was lost": the device sends it again, DUP set.
        let dup = raw_mqtt::redelivered(raw_mqtt::publish(topic, 1, 1, first.as_bytes()));
        raw.s.write_all(&dup).unwrap();
        assert_eq!(raw.puback(), 1);
        // Minutes later, after a battery change: seq 5 again, a new ts.
        let again = format!(r#"{{"ts": {}, "seq": 5, "type": "sos"}}"#, t + 180_000);
        raw.s
            .write_all(&raw_mqtt::publish(topic, 1, 1, again.as_bytes()))
            .unwrap();
        assert_eq!(raw.puback(), 1);
    })
    .await
    .unwrap();
    let raised = next(&mut sub).await;
    let folded = next(&mut sub).await;
    assert_eq!(raised.seq, 1);
    assert_eq!(folded.seq, 2);
    let a = folded.alert.unwrap();
    assert_eq!(
        a.occurrences, 2,
        "the reboot's press counts, the redelivery does not"
    );
    assert_eq!(
        s.await_counter("eldercare_ingest_duplicates_total", "", 1)
            .await,
        1
    );
    let report = audit(&["--data-dir", s.dir.path().to_str().unwrap()]);
    assert!(report.contains("OK, 2 events"), "{report}");
}
