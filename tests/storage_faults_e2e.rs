//! One bad row never blocks another, end to end on PostgreSQL, with the
//! stock `mosquitto_pub` as the device: a motion reading whose `room`
//! holds a NUL (which PostgreSQL's text refuses) is refused at decode
//! with its reason and kept as a dead letter, and the readings after it,
//! of the same device and of another, are stored at once.
#[path = "../crates/store/tests/support/pg.rs"]
mod pg;
mod support;

use sqlx::Connection;
use std::process::Command;
use support::*;

const ELDERS: &str = "elder_id,name,district,community\nE1,Test One,D1,C1\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
pir-1,pir,E1,bedroom,s-pir-1,86400\n\
band-1,vital_band,E1,,s-band-1,86400\n";

fn mosquitto_pub(s: &Server, user: &str, topic: &str, payload: &str) {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-q", "1", "-h", host, "-p", port, "-u", user])
        .args(["-P", &format!("s-{user}"), "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_reading_is_refused_alone_and_the_next_readings_are_stored() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    use_database(dir.path(), &db.url);
    import_csv(dir.path(), &["--database-url", &db.url], ELDERS, DEVICES);
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    let t = now_ms();
    // JSON's escape for NUL: valid JSON, a string PostgreSQL cannot hold.
    mosquitto_pub(
        &s,
        "pir-1",
        "eldercare/v1/pir-1/motion",
        &format!(r#"{{"ts": {t}, "room": "bed\u0000room", "motion": true}}"#),
    );
    for i in 1..=25 {
        mosquitto_pub(
            &s,
            "pir-1",
            "eldercare/v1/pir-1/motion",
            &format!(
                r#"{{"ts": {}, "seq": {i}, "room": "bedroom", "motion": true}}"#,
                t + i
            ),
        );
        mosquitto_pub(
            &s,
            "band-1",
            "eldercare/v1/band-1/vitals",
            &format!(r#"{{"ts": {}, "seq": {i}, "hr": 70}}"#, t + i),
        );
    }
    assert_eq!(
        s.await_counter("eldercare_ingest_refused_total", "control_character", 1)
            .await,
        1,
        "refused with its reason, and counted"
    );
    // The 50 good readings, written by the next batches (100 ms apart).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n = count(&db.url, "SELECT count(*) FROM readings").await;
        if n >= 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(n, 50, "every good reading stored, none held back");
    assert_eq!(
        s.metric("eldercare_spool_readings", ""),
        0.0,
        "nothing spooled"
    );
    let out = Command::new(BIN)
        .args(["dead-letters", "--database-url", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("control_character") && text.contains("pir-1"),
        "the refused reading is a dead letter with its reason: {text}"
    );
}
