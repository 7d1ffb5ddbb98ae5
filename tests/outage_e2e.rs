//! A PostgreSQL outage end to end: the real binary on a throwaway
//! PostgreSQL server that the test stops and starts again, in the middle
//! of a load and across a restart of the server. Alerts keep flowing to
//! subscribers while the database is down; when it is back, every alert
//! event (gap-free, hash chain intact) and every reading is in it. A
//! carer's visit made while it is down is judged then, and kept whole.
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

/// Each device sends a status, and the server has taken them all: the
/// rule engine knows the devices from here on.
async fn heard(s: &Server, devices: &[(&Device, &str)]) {
    for (d, id) in devices {
        publish(
            d,
            &format!("eldercare/v1/{id}/status"),
            format!(r#"{{"ts": {}, "battery_pct": 90}}"#, now_ms()),
        )
        .await;
    }
    let n = devices.len() as f64;
    assert!(
        s.await_metric("eldercare_ingest_accepted_total{stream=\"status\"}", |v| v
            >= n)
            .await
            >= n
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
    use_database(dir.path(), &db.url);
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    import_csv(s.dir.path(), &["--database-url", &db.url], ELDERS, DEVICES);
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-1").await;
    let mut btn = Vec::new();
    for id in ["btn-1", "btn-2", "btn-3"] {
        btn.push(device(&s, id).await);
    }

    // Two buttons have been heard (the rule engine knows them) before the
    // outage, as in a running city; btn-3 speaks first during it.
    heard(&s, &[(&btn[0], "btn-1"), (&btn[1], "btn-2")]).await;

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
    // A device that has not spoken yet, new to the rule engine: the
    // registry cannot be read now, but the local copy has it (read when
    // it connected), so its SOS is attributed and raised at once.
    sos(&btn[2], "btn-3").await;
    let sos3 = next(&mut sub).await;
    assert_eq!(
        (sos3.seq, sos3.alert.unwrap().elder_id.as_str()),
        (4, "E3"),
        "attributed from the local copy of the registry"
    );
    assert_eq!(s.metric("eldercare_ingest_held", ""), 0.0);

    // Back.
    pg.resume().unwrap();
    vitals(&band, 301, 100).await;
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

/// A hotline restarted while its database is down keeps taking SOS calls:
/// it starts, authenticates devices against its local copy of the
/// registry, numbers alert events on from the chain head it kept, knows
/// the alerts left open, and writes everything to the database when it
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_restarts_during_an_outage_and_still_raises_alerts() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    use_database(dir.path(), &db.url);
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    import_csv(s.dir.path(), &["--database-url", &db.url], ELDERS, DEVICES);

    // A first run on the database: two buttons connect and speak (the
    // server reads them, and their elders, from the registry), and one
    // raises an SOS that stays open.
    let mut sub = s.subscribe(0).await;
    let btn1 = device(&s, "btn-1").await;
    let btn2 = device(&s, "btn-2").await;
    heard(&s, &[(&btn1, "btn-1"), (&btn2, "btn-2")]).await;
    sos(&btn1, "btn-1").await;
    let first = next(&mut sub).await;
    assert_eq!(first.seq, 1);
    let first_alert = first.alert.unwrap().id;
    drop((btn1, btn2, sub));
    let (dir, tokens) = s.stop().await;
    let spool = dir.path().join("spool");
    for f in ["registry.json", "desk.json", "head.json"] {
        let meta = std::fs::metadata(spool.join(f))
            .unwrap_or_else(|e| panic!("{f} after a clean stop: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
    // Registered while the server is down: it has never read this one.
    import_files(
        dir.path(),
        &["--database-url", &db.url],
        &[(
            "more-devices.csv",
            "device_id,kind,elder_id,room,secret\nbtn-9,sos_button,E3,,s-btn-9\n",
        )],
    );

    // The database goes away, then the server starts again.
    pg.pause().unwrap();
    let s = Server::spawn(dir, tokens);
    let mut sub = s.subscribe(1).await;

    // A known device logs in with its secret (checked against the local
    // copy: a wrong one is still refused as such) and calls for help.
    let wrong = connect(&s.mqtt, Some(("btn-2", "not-its-secret")), "btn-2-x")
        .await
        .err()
        .expect("a wrong secret is refused during the outage too");
    assert!(wrong.contains("BadUserNamePassword"), "{wrong}");
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-2").await;
    let raised = next(&mut sub).await;
    assert_eq!(
        (
            raised.seq,
            raised.kind,
            raised.alert.as_ref().unwrap().elder_id.as_str()
        ),
        (2, pb::AlertEventKind::Raised as i32, "E2"),
        "the next gap-free seq, from the chain head kept on disk"
    );
    // An operator acknowledges it, and the alert left open by the first
    // run, which the desk knows from its local copy.
    let mut ops = s.grpc().await;
    for id in [raised.alert.unwrap().id, first_alert] {
        let acked = ops
            .acknowledge(pb::AlertActionRequest {
                alert_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledging {id}: {e}"))
            .into_inner();
        assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
    }
    let acks: Vec<(u64, i32)> = [next(&mut sub).await, next(&mut sub).await]
        .iter()
        .map(|e| (e.seq, e.kind))
        .collect();
    let ack = pb::AlertEventKind::AcknowledgedEvent as i32;
    assert_eq!(acks, vec![(3, ack), (4, ack)]);
    assert_eq!(s.metric("eldercare_spool_events", ""), 3.0);

    // A device the local copy does not know cannot be checked now: the
    // server says it is unavailable, not that the login is wrong.
    let unknown = connect(&s.mqtt, Some(("btn-9", "s-btn-9")), "btn-9")
        .await
        .err()
        .expect("an unknown device is not let in during the outage");
    assert!(unknown.contains("ServiceUnavailable"), "{unknown}");

    // Back: the spool is written, in order, and the chain is whole.
    pg.resume().unwrap();
    assert_eq!(
        s.await_metric("eldercare_spool_events", |v| v == 0.0).await,
        0.0,
        "the spool is written once the database answers"
    );
    assert_eq!(
        await_count(&db.url, "SELECT count(*) FROM alert_events", 4).await,
        4
    );
    assert_eq!(count(&db.url, "SELECT max(seq) FROM alert_events").await, 4);
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM alerts WHERE state = 'ACKNOWLEDGED'"
        )
        .await,
        2
    );
    assert_eq!(s.metric("eldercare_spool_seq_conflicts_total", ""), 0.0);
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--database-url", &db.url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(out.contains("OK, 4 events"), "{out}");
    // And the device registered meanwhile gets in now.
    device(&s, "btn-9").await;
}

/// Waiting mends an unreachable database, not one that refuses the
/// server: a database that does not exist, a role it does not know, a URL
/// that does not parse stop the start with code 64 and say why, and the
/// password never appears.
#[tokio::test]
async fn a_database_that_refuses_the_server_stops_it_at_start() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    for (url, why) in [
        (
            format!(
                "postgres://postgres:pw-123@127.0.0.1:{}/no_such_database",
                pg.port
            ),
            "does not exist",
        ),
        (
            format!(
                "postgres://no_such_role:pw-123@127.0.0.1:{}/postgres",
                pg.port
            ),
            "no_such_role",
        ),
        (
            "postgres://x:pw-123@db:notaport/db".to_string(),
            "--database-url",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--mqtt-addr", "127.0.0.1:0", "--grpc-addr"])
            .args([
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--http-addr",
            ])
            .args(["127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--database-url", &url])
            .env("ELDERCARE_LOG", "warn,rumqttd=off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{url}: {stderr}");
        assert!(stderr.contains(why), "{url}: {stderr}");
        assert!(!stderr.contains("pw-123"), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ready"),
            "{url}"
        );
    }
}

/// A carer's visit while the database is down: the tag reads and the
/// entrance motion are PUBACKed, the visit is judged from what the rule
/// engine holds (recorded, borne out, with its follow-up call), and once
/// the database is back the alert events and the tag reads, carer and
/// action included, are all in it. A check-in sent through the API then,
/// which needs the registry, is refused as unavailable, not half kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_while_the_database_is_down_is_judged_and_kept() {
    let pg = pg::PgServer::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    use_database(dir.path(), &db.url);
    // Judged 10 s after the check-out instead of 5 min.
    std::fs::write(dir.path().join("rules.toml"), "[visits]\nmargin_s = 10\n").unwrap();
    let devices = "device_id,kind,elder_id,room,secret\n\
                   btn-1,sos_button,E1,,s-btn-1\n\
                   pirent-1,pir,E1,entrance,s-pirent-1\n";
    import_files(
        dir.path(),
        &["--database-url", &db.url],
        &[
            ("elders.csv", ELDERS),
            ("devices.csv", devices),
            (
                "providers.csv",
                "provider_id,name,phone\nPR1,Provider One,\n",
            ),
            (
                "carers.csv",
                "carer_id,provider_id,name\nC1,PR1,Carer One\n",
            ),
            (
                "visit_plans.csv",
                "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
                 meals-1,E1,PR1,daily,00:00,23:59,1,meals\n",
            ),
        ],
    );
    // Registered before the server starts: it reads the plans then.
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    let ent = device(&s, "pirent-1").await;
    heard(&s, &[(&btn, "btn-1"), (&ent, "pirent-1")]).await;

    pg.pause().unwrap();
    let t = now_ms();
    let tag = |action: &str, ts: i64| {
        format!(r#"{{"ts": {ts}, "type": "visit", "carer": "C1", "action": "{action}"}}"#)
    };
    publish(
        &ent,
        "eldercare/v1/pirent-1/motion",
        format!(
            r#"{{"ts": {}, "room": "entrance", "motion": true}}"#,
            t - 52_000
        ),
    )
    .await;
    publish(&btn, "eldercare/v1/btn-1/event", tag("in", t - 50_000)).await;
    publish(&btn, "eldercare/v1/btn-1/event", tag("out", t)).await;
    let mut kinds = Vec::new();
    let mut last_seq = 0;
    while !(kinds.contains(&"visit".to_string()) && kinds.contains(&"follow_up".to_string())) {
        let ev = next(&mut sub).await;
        last_seq = ev.seq;
        let a = ev.alert.unwrap();
        if a.kind == "visit" {
            assert!(a.recorded, "borne out by the entrance motion: {a:?}");
        }
        kinds.push(a.kind);
    }
    let refused = pb::visit_service_client::VisitServiceClient::with_interceptor(
        s.channel().await,
        s.bearer("operator"),
    )
    .check_in(pb::CheckInRequest {
        elder_id: "E1".into(),
        carer_id: "C1".into(),
        action: "in".into(),
        at: None,
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    pg.resume().unwrap();
    assert_eq!(
        s.await_metric("eldercare_spool_events", |v| v == 0.0).await,
        0.0,
        "the spool is written"
    );
    assert_eq!(
        await_count(
            &db.url,
            "SELECT count(DISTINCT visit_action) FROM readings WHERE carer = 'C1'",
            2
        )
        .await,
        2,
        "both tag reads, with their carer and action"
    );
    assert_eq!(
        count(&db.url, "SELECT max(seq) FROM alert_events").await,
        last_seq as i64
    );
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--database-url", &db.url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(out.contains(&format!("OK, {last_seq} events")), "{out}");
}
