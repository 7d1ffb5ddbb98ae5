//! A PostgreSQL outage in the middle of a load, end to end: the real
//! binary on a throwaway PostgreSQL server that the test stops and starts
//! again. Alerts keep flowing to subscribers while the database is down;
//! when it is back, every alert event (gap-free, hash chain intact) and
//! every reading is in it.
#[path = "../crates/store/tests/support/pg.rs"]
mod pg;
mod support;

use eldercare_proto::v1 as pb;
use sqlx::Connection;
use std::process::Command;
use support::*;

const ELDERS: &str =
    "elder_id,name,district,community\nE1,Test One,D1,C1\nE2,Test Two,D1,C1\nE3,Test Three,D1,C1\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\n\
band-1,vital_band,E1,,s-band-1\n\
btn-1,sos_button,E1,,s-btn-1\n\
btn-2,sos_button,E2,,s-btn-2\n\
btn-3,sos_button,E3,,s-btn-3\n";

/// `n` normal vitals from the band, with seqs from `first`.
async fn vitals(band: &Device, first: u64, n: u64) {
    let t = now_ms();
    for i in first..first + n {
        publish(
            band,
            "eldercare/v1/band-1/vitals",
            format!(
                r#"{{"ts": {}, "seq": {i}, "hr": 72, "spo2": 97}}"#,
                t - 60_000 + i as i64
            ),
        )
        .await;
    }
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

/// Polls the database (there is no event for "written") until `sql`
/// counts `want`, or the deadline passes.
async fn await_count(url: &str, sql: &str, want: i64) -> i64 {
    let t = tokio::time::Instant::now();
    loop {
        let n = count(url, sql).await;
        if n >= want || t.elapsed() > DEADLINE {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stops_mid_load_and_no_alert_or_reading_is_lost() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("database_url = \"{}\"\n", db.url),
    )
    .unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    for (name, text) in [("elders.csv", ELDERS), ("devices.csv", DEVICES)] {
        let f = s.dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = Command::new(BIN)
            .args(["import", "--database-url", &db.url])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-1").await;
    let mut btn = Vec::new();
    for id in ["btn-1", "btn-2", "btn-3"] {
        btn.push(device(&s, id).await);
    }

    // Two buttons have been heard (the rule engine knows them) before the
    // outage, as in a running city; btn-3 speaks first during it.
    for (d, id) in btn.iter().zip(["btn-1", "btn-2"]) {
        publish(
            d,
            &format!("eldercare/v1/{id}/status"),
            format!(r#"{{"ts": {}, "battery_pct": 90}}"#, now_ms()),
        )
        .await;
    }
    assert!(
        s.await_metric("eldercare_ingest_accepted_total{stream=\"status\"}", |v| v
            >= 2.0)
            .await
            >= 2.0
    );

    // Before: readings and an SOS, stored as usual.
    vitals(&band, 1, 100).await;
    sos(&btn[0], "btn-1").await;
    assert_eq!(next(&mut sub).await.seq, 1);

    // The database goes away in the middle of the load.
    pg.pause().unwrap();
    vitals(&band, 101, 200).await;
    sos(&btn[1], "btn-2").await;
    let raised = next(&mut sub).await;
    assert_eq!(
        (
            raised.seq,
            raised.kind,
            raised.alert.as_ref().unwrap().elder_id.as_str()
        ),
        (2, pb::AlertEventKind::Raised as i32, "E2"),
        "alerts keep flowing while the database is down"
    );
    let acked = s
        .grpc()
        .await
        .acknowledge(pb::AlertActionRequest {
            alert_id: raised.alert.unwrap().id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
    assert_eq!(next(&mut sub).await.seq, 3);
    assert!(
        s.await_metric("eldercare_spool_events", |v| v >= 2.0).await >= 2.0,
        "the events are in the spool"
    );
    // A device new to the engine: its registry entry cannot be read now,
    // so the SOS is held, not lost.
    sos(&btn[2], "btn-3").await;
    assert!(s.await_metric("eldercare_ingest_held", |v| v >= 1.0).await >= 1.0);

    // Back.
    pg.resume().unwrap();
    vitals(&band, 301, 100).await;
    let late = next(&mut sub).await;
    assert_eq!(
        (late.seq, late.alert.unwrap().elder_id.as_str()),
        (4, "E3"),
        "the held SOS is raised once the registry answers"
    );
    assert_eq!(
        s.await_metric("eldercare_spool_events", |v| v == 0.0).await,
        0.0,
        "the spool is written"
    );

    // Nothing lost: every reading, every event in order, the chain intact.
    let readings = await_count(
        &db.url,
        "SELECT count(*) FROM readings WHERE device_id = 'band-1'",
        400,
    )
    .await;
    assert_eq!(readings, 400);
    assert_eq!(
        await_count(
            &db.url,
            "SELECT count(*) FROM readings WHERE device_id LIKE 'btn-%'",
            5
        )
        .await,
        5,
        "two status messages and three SOS"
    );
    assert_eq!(count(&db.url, "SELECT count(*) FROM alert_events").await, 4);
    assert_eq!(count(&db.url, "SELECT max(seq) FROM alert_events").await, 4);
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--database-url", &db.url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(out.contains("OK, 4 events"), "{out}");
    assert_eq!(s.metric("eldercare_spool_readings_dropped_total", ""), 0.0);
}
