//! What only the PostgreSQL backend has: its migrations, and the daily
//! partitions of the readings table, created ahead and dropped after the
//! retention. The clock is driven by passing "now" to `maintain`.
//!
//!     cargo test -p eldercare-store --test postgres
//!
//! The TimescaleDB path (hypertable, compression, retention policy,
//! hourly continuous aggregate) cannot run here: these machines'
//! PostgreSQL has no TimescaleDB. The tests check the fallback is taken.
mod support;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use eldercare_model::{Body, Motion, Reading, Status, Vitals};
use eldercare_store::postgres::{Layout, Maintenance};
use eldercare_store::{
    AlertLog, DeadLetters, PgOptions, PgStore, ReadingQuery, ReadingSubject, Registry,
    SpoolingStore, StoreError, StoredReading, Telemetry,
};
use sqlx::PgPool;
use std::sync::Arc;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

fn reading(device: &str, t: DateTime<Utc>, hr: u32) -> StoredReading {
    StoredReading {
        elder_id: "E1".into(),
        reading: Reading {
            device_id: device.into(),
            seq: Some(u64::from(hr)),
            ts_ms: t.timestamp_millis(),
            body: Body::Vitals(Vitals {
                hr: Some(hr),
                ..Default::default()
            }),
        },
    }
}

fn all_of(device: &str) -> ReadingQuery {
    ReadingQuery {
        subject: ReadingSubject::Device(device.into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: false,
        after: None,
        limit: 100_000,
    }
}

/// Readings per table that holds them: a day's partition or the default.
async fn placement(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn store(url: &str, retention_days: u32) -> PgStore {
    PgStore::connect(
        url,
        PgOptions {
            retention_days,
            partitions_ahead: 7,
            max_connections: 8,
        },
    )
    .await
    .unwrap()
}

/// Everything that describes the schema and the migrations applied.
async fn schema(pool: &PgPool) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT format('migration %s %s %s %s', version, encode(checksum, 'hex'), installed_on, success)
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let objects: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s', c.relkind, c.relname) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    out.extend(objects);
    out
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_reapply_as_a_no_op() {
    let db = support::pg::fresh_db().await;
    let raw = PgPool::connect(&db.url).await.unwrap();
    let before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(before, 0, "an empty database");

    let s = store(&db.url, 400).await;
    let first = schema(&raw).await;
    let applied: Vec<&String> = first
        .iter()
        .filter(|l| l.starts_with("migration"))
        .collect();
    assert_eq!(applied.len(), PgStore::migrator().iter().count());
    assert!(applied.iter().all(|l| l.ends_with(" t")), "{applied:?}");
    for table in [
        "r elders",
        "r devices",
        "p readings",
        "r readings_default",
        "r alerts",
        "r alert_events",
        "r alert_chain_head",
        "r silences",
        "r dead_letters",
        "r reading_streams",
        "S readings_id_seq",
    ] {
        assert!(first.iter().any(|l| l == table), "{table} in {first:?}");
    }
    // No TimescaleDB on this machine: the migration fell back to daily
    // partitions instead of failing.
    assert_eq!(s.layout(), Some(Layout::Partitioned));
    let timescale: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            .fetch_one(&raw)
            .await
            .unwrap();
    assert_eq!(timescale, 0);

    // Again, explicitly and by a second connect: nothing changes, not even
    // the time the migrations were installed.
    PgStore::migrator().run(&raw).await.unwrap();
    let again = store(&db.url, 400).await;
    assert_eq!(schema(&raw).await, first);
    // And the store works after it.
    again
        .insert_readings(&[reading("d1", at(2026, 1, 1, 0), 70)])
        .await
        .unwrap();
    assert_eq!(s.query_readings(&all_of("d1")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn partitions_are_created_ahead_and_expired_ones_dropped() {
    let db = support::pg::fresh_db().await;
    let s = store(&db.url, 30).await;
    assert!(s.partitions().await.unwrap().is_empty());

    let now = at(2026, 3, 10, 12);
    let m = s.maintain(now).await.unwrap();
    // From yesterday to a week ahead.
    let ahead = days(day(2026, 3, 9), day(2026, 3, 17));
    assert_eq!(
        m,
        Maintenance {
            created: ahead.clone(),
            ..Default::default()
        }
    );
    assert_eq!(s.partitions().await.unwrap(), ahead);
    assert_eq!(
        s.maintain(now).await.unwrap(),
        Maintenance::default(),
        "a second run changes nothing"
    );

    s.insert_readings(&[
        reading("d1", at(2026, 3, 9, 10), 61),
        reading("d1", at(2026, 3, 10, 12), 62),
        reading("d1", at(2026, 3, 11, 0), 63),
        reading("d1", at(2026, 3, 17, 23), 64),
    ])
    .await
    .unwrap();
    assert_eq!(
        placement(s.pool()).await,
        [
            ("readings_p20260309".to_string(), 1),
            ("readings_p20260310".to_string(), 1),
            ("readings_p20260311".to_string(), 1),
            ("readings_p20260317".to_string(), 1),
        ],
        "each reading in its day's partition, none in the default"
    );

    // 31 days on: the cutoff is 2026-03-11 12:00, so the days that ended
    // by then go, and the 11th (which may hold readings newer than the
    // cutoff) stays.
    let later = now + Days::new(31);
    let m = s.maintain(later).await.unwrap();
    assert_eq!(m.dropped, [day(2026, 3, 9), day(2026, 3, 10)]);
    assert_eq!(m.created, days(day(2026, 4, 9), day(2026, 4, 17)));
    assert_eq!((m.moved, m.expired), (0, 0));
    let mut want = days(day(2026, 3, 11), day(2026, 3, 17));
    want.extend(days(day(2026, 4, 9), day(2026, 4, 17)));
    assert_eq!(s.partitions().await.unwrap(), want);
    let hrs: Vec<String> = s
        .query_readings(&all_of("d1"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.json)
        .collect();
    assert_eq!(hrs, [r#"{"hr":63}"#, r#"{"hr":64}"#]);

    // Much later still: every old day is gone, whatever the gap.
    let m = s.maintain(at(2027, 1, 1, 0)).await.unwrap();
    assert_eq!(m.dropped.len(), want.len());
    assert_eq!(
        s.partitions().await.unwrap(),
        days(day(2026, 12, 31), day(2027, 1, 8))
    );
    assert!(s.query_readings(&all_of("d1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn readings_for_a_day_without_a_partition_wait_in_the_default_and_move_in() {
    let db = support::pg::fresh_db().await;
    let s = store(&db.url, 400).await;
    // No maintenance has run: everything lands in the default partition,
    // and nothing is refused for its time.
    s.insert_readings(&[
        reading("d1", at(2025, 1, 1, 0), 60),
        reading("d1", at(2026, 5, 1, 9), 61),
        reading("d1", at(2026, 5, 1, 10), 62),
        reading("d1", at(2026, 6, 30, 0), 63),
    ])
    .await
    .unwrap();
    assert_eq!(
        placement(s.pool()).await,
        [("readings_default".to_string(), 4)]
    );
    let before = s.query_readings(&all_of("d1")).await.unwrap();

    let m = s.maintain(at(2026, 5, 1, 8)).await.unwrap();
    // 2025-01-01 is past the 400 days; 2026-06-30 is beyond the week ahead.
    assert_eq!(m.expired, 1);
    assert_eq!(m.moved, 2);
    assert_eq!(m.created, days(day(2026, 4, 30), day(2026, 5, 8)));
    assert_eq!(
        placement(s.pool()).await,
        [
            ("readings_default".to_string(), 1),
            ("readings_p20260501".to_string(), 2)
        ]
    );
    // Moved rows keep their ids, so page tokens stay valid.
    assert_eq!(
        s.query_readings(&all_of("d1")).await.unwrap(),
        before[1..].to_vec()
    );

    // When the far day comes within the week ahead, it gets its partition
    // and its reading moves in.
    let m = s.maintain(at(2026, 6, 25, 8)).await.unwrap();
    assert_eq!(m.moved, 1);
    assert!(m.created.contains(&day(2026, 6, 30)));
    assert_eq!(
        placement(s.pool()).await,
        [
            ("readings_p20260501".to_string(), 2),
            ("readings_p20260630".to_string(), 1)
        ]
    );
    // A late reading for a past day without a partition waits in the
    // default, and the next run gives that day a partition too.
    s.insert_readings(&[reading("d1", at(2026, 6, 1, 12), 64)])
        .await
        .unwrap();
    let m = s.maintain(at(2026, 6, 25, 9)).await.unwrap();
    assert_eq!((m.created, m.moved), (vec![day(2026, 6, 1)], 1));
    assert_eq!(s.query_readings(&all_of("d1")).await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_while_readings_arrive_loses_nothing() {
    // Ingest keeps writing, into days with and without partitions, while
    // maintenance (from two servers at once) creates partitions and moves
    // readings out of the default: no insert may fail or deadlock, and
    // every reading must be there at the end.
    let db = support::pg::fresh_db().await;
    let a = store(&db.url, 400).await;
    let b = store(&db.url, 400).await;
    let start = at(2026, 8, 1, 0);
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            for batch in 0..60u32 {
                let rows: Vec<StoredReading> = (0..50u32)
                    .map(|i| {
                        n += 1;
                        let t = start
                            + chrono::Duration::hours(i64::from((batch * 50 + i) % (24 * 20)));
                        reading("w", t, 20 + n % 200)
                    })
                    .collect();
                a.insert_readings(&rows).await.unwrap();
            }
            n
        })
    };
    let maintainers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                for k in 0..12u64 {
                    s.maintain(start + Days::new(k)).await.unwrap();
                }
            })
        })
        .collect();
    let written = writer.await.unwrap();
    for m in maintainers {
        m.await.unwrap();
    }
    a.maintain(start + Days::new(12)).await.unwrap();
    let stored = a.query_readings(&all_of("w")).await.unwrap();
    assert_eq!(stored.len() as u32, written);
    // Every day up to 12 days ahead now has its partition.
    let parts = a.partitions().await.unwrap();
    assert!(
        days(day(2026, 7, 31), day(2026, 8, 20))
            .iter()
            .all(|d| parts.contains(d))
    );
    assert_eq!(
        placement(a.pool())
            .await
            .iter()
            .find(|(t, _)| t == "readings_default"),
        None,
        "the default partition emptied"
    );
}

#[tokio::test]
async fn a_reading_the_columns_cannot_hold_fails_its_batch_and_writes_nothing() {
    let db = support::pg::fresh_db().await;
    let s = store(&db.url, 400).await;
    let mut bad = reading("d1", at(2026, 1, 1, 0), 70);
    bad.reading.body = Body::Status(Status {
        battery_pct: Some(70_000),
        ..Default::default()
    });
    let err = s
        .insert_readings(&[reading("d1", at(2026, 1, 1, 0), 71), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange(_)), "{err}");
    let mut ancient = reading("d1", at(2026, 1, 1, 0), 72);
    ancient.reading.ts_ms = -300_000_000_000_000;
    assert!(matches!(
        s.insert_readings(&[ancient]).await,
        Err(StoreError::OutOfRange(_))
    ));
    assert!(s.query_readings(&all_of("d1")).await.unwrap().is_empty());
}

/// A batch large enough for COPY stores exactly what UNNEST stores in
/// small batches: every stream, NULLs, the widest values, awkward text
/// (tabs, quotes, backslashes, newlines, non-ASCII, an empty room), ids
/// in batch order, and the (device, stream) pairs; an unstorable value
/// still fails the whole batch.
#[tokio::test]
async fn large_batches_by_copy_store_what_small_batches_store() {
    use eldercare_model::{DeviceEvent, EventType, Location, Motion, Sleep};
    let n = eldercare_store::postgres::COPY_MIN + 7;
    let t = at(2026, 9, 1, 0);
    let device = |i: usize| format!("dev\t\"{}\\\n\u{e9}", i % 13);
    let readings: Vec<StoredReading> = (0..n)
        .map(|i| {
            let mut r = reading(
                &device(i),
                t + chrono::Duration::milliseconds((i / 3) as i64),
                60,
            );
            r.elder_id = format!("E,{}", i % 5);
            r.reading.seq = (i % 4 != 0).then_some(if i == 1 { u64::MAX } else { i as u64 });
            r.reading.body = match i % 7 {
                0 => Body::Vitals(Vitals {
                    hr: Some(250),
                    spo2: None,
                    rr: Some(12),
                    temp_c: Some(36.6),
                    sys: Some(140),
                    dia: None,
                }),
                1 => Body::Sleep(Sleep {
                    in_bed: i % 2 == 0,
                    hr: None,
                    rr: Some(14),
                    movement: Some(0.35),
                }),
                2 => Body::Motion(Motion {
                    room: if i % 2 == 0 { "" } else { "living\troom \\N" }.into(),
                    motion: i % 3 == 0,
                }),
                3 => Body::Location(Location {
                    lat: -89.123456789012,
                    lon: 179.987654321098,
                    accuracy_m: None,
                }),
                4 => Body::Event(DeviceEvent {
                    kind: [EventType::Sos, EventType::Fall, EventType::SosCancel][i % 3],
                    confidence: Some(0.93),
                    carer: None,
                    action: None,
                }),
                5 => Body::Status(Status {
                    online: Some(false),
                    battery_pct: Some(100),
                    rssi: Some(i32::MIN),
                    fw: Some("1.4.2-\u{4e2d}\n".into()),
                }),
                _ => Body::Status(Status::default()),
            };
            r
        })
        .collect();
    let (db_copy, db_unnest) = (support::pg::fresh_db().await, support::pg::fresh_db().await);
    let (by_copy, by_unnest) = (
        store(&db_copy.url, 400).await,
        store(&db_unnest.url, 400).await,
    );
    by_copy.insert_readings(&readings).await.unwrap();
    for chunk in readings.chunks(500) {
        by_unnest.insert_readings(chunk).await.unwrap();
    }
    for i in 0..13 {
        let a = by_copy.query_readings(&all_of(&device(i))).await.unwrap();
        let b = by_unnest.query_readings(&all_of(&device(i))).await.unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, b, "device {i}");
    }
    let pairs = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i16)>(
            "SELECT device_id, stream FROM reading_streams ORDER BY 1, 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let got = pairs(by_copy.pool().clone()).await;
    assert!(!got.is_empty());
    assert_eq!(got, pairs(by_unnest.pool().clone()).await);

    // One unstorable value in a COPY-sized batch writes nothing.
    let mut bad = readings.clone();
    bad[n - 1].reading.ts_ms = i64::MIN;
    sqlx::query("TRUNCATE readings, reading_streams")
        .execute(by_copy.pool())
        .await
        .unwrap();
    assert!(by_copy.insert_readings(&bad).await.is_err());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(by_copy.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// The bug this guards against: one motion reading with a NUL in its room
/// was refused by PostgreSQL (SQLSTATE 22021), taken for an outage by the
/// spool and retried forever, every later reading waiting behind it.
#[tokio::test]
async fn a_nul_in_text_is_a_refusal_not_an_outage_and_holds_nothing_back() {
    let db = support::pg::fresh_db().await;
    let s = Arc::new(store(&db.url, 400).await);
    let mut nul = reading("pir-1", at(2026, 1, 1, 0), 71);
    nul.reading.body = Body::Motion(Motion {
        room: "bed\0room".into(),
        motion: true,
    });
    let batch = [
        reading("pir-1", at(2026, 1, 1, 0), 70),
        nul,
        reading("pir-1", at(2026, 1, 1, 0), 72),
    ];
    // The database's own answer is a data exception: class 22.
    let err = s.insert_readings(&batch).await.unwrap_err();
    match &err {
        StoreError::Db(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("22021")),
        other => panic!("{other}"),
    }
    assert!(err.is_refusal() && !err.is_outage());

    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolingStore::open(s.clone(), dir.path(), 1000)
        .await
        .unwrap();
    // Through the spool without a position: the other two are stored,
    // the refused one kept as a dead letter, nothing spooled.
    spool.insert_readings(&batch).await.unwrap();
    assert_eq!(spool.spooled(), (0, 0));
    let seqs =
        |v: Vec<eldercare_store::ReadingRecord>| v.iter().filter_map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.query_readings(&all_of("pir-1")).await.unwrap()),
        vec![70, 72]
    );
    let letters = s.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, eldercare_store::STORE_REFUSED);
    assert!(letters[0].detail.contains("22021"), "{}", letters[0].detail);
    // With a position: refused and handed back, the position recorded.
    let refused = spool.insert_readings_at(&batch, 3).await.unwrap();
    assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.intake_position().await.unwrap(), Some(3));
    assert_eq!(
        seqs(s.query_readings(&all_of("pir-1")).await.unwrap()),
        vec![70, 72, 70, 72]
    );
    // And later readings are not held back.
    spool
        .insert_readings_at(&[reading("pir-1", at(2026, 1, 1, 0), 73)], 4)
        .await
        .unwrap();
    assert_eq!(spool.spooled(), (0, 0));
    assert_eq!(s.query_readings(&all_of("pir-1")).await.unwrap().len(), 5);
}

/// The server's way in: a lazy store that fails at once, as an outage,
/// until it is prepared; and preparing tells "not there" (wait) from
/// "there but refusing us" (a configuration error, exit at start).
#[tokio::test]
async fn a_lazy_store_is_an_outage_until_prepared_and_config_errors_are_told_apart() {
    // Nothing listens on this port: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let away = PgStore::lazy(
        &format!("postgres://postgres:pw@127.0.0.1:{port}/eldercare"),
        PgOptions::default(),
    )
    .unwrap();
    assert!(!away.is_ready());
    assert_eq!(away.layout(), None);
    let err = away.get_device("btn-1").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.is_outage(),
        "{err}"
    );
    let err = away.prepare().await.unwrap_err();
    assert!(err.is_outage() && !err.is_config(), "{err}");
    assert!(!away.is_ready());
    // The retry loop gives up when told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    assert!(
        !away
            .prepare_when_reachable(std::time::Duration::from_millis(10), &stop)
            .await
    );

    // There, but refusing: no such database, no such role, a bad URL.
    let server = support::pg::server();
    for url in [
        server.url("no_such_database"),
        format!("postgres://no_such_role@127.0.0.1:{}/postgres", server.port),
    ] {
        let s = PgStore::lazy(&url, PgOptions::default()).unwrap();
        let err = s.prepare().await.unwrap_err();
        assert!(err.is_config() && !err.is_refusal(), "{url}: {err}");
    }
    let err = PgStore::lazy("postgres://db:notaport/x", PgOptions::default()).unwrap_err();
    assert!(err.is_config(), "{err}");

    // There: prepared once, then it serves.
    let db = support::pg::fresh_db().await;
    let s = PgStore::lazy(&db.url, PgOptions::default()).unwrap();
    assert!(s.get_device("btn-1").await.unwrap_err().is_outage());
    assert!(
        s.prepare_when_reachable(
            std::time::Duration::from_millis(10),
            &tokio_util::sync::CancellationToken::new()
        )
        .await
    );
    assert!(s.is_ready());
    assert_eq!(s.layout(), Some(Layout::Partitioned));
    assert_eq!(s.get_device("btn-1").await.unwrap(), None);
    s.prepare().await.unwrap();
}

#[tokio::test]
async fn two_servers_appending_to_one_chain_keep_it_gap_free_and_intact() {
    // Each store remembers the head it last wrote and appends in one
    // statement guarded by it; the other store's appends make that
    // memory stale, and the append must then take the head's lock.
    use eldercare_model::AlertEventKind;
    use support::fixtures::{alert, event};
    let db = support::pg::fresh_db().await;
    let (a, b) = (store(&db.url, 30).await, store(&db.url, 30).await);
    let mut seqs = Vec::new();
    for i in 0..20 {
        let s = if i % 3 == 0 { &a } else { &b };
        let ev = s
            .append_alert_event(event(AlertEventKind::Raised, alert(&format!("x{i}")), i))
            .await
            .unwrap();
        seqs.push(ev.seq);
    }
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<u64>>(),
        "in turn: every seq once"
    );
    // And at once, from both.
    let mut tasks = Vec::new();
    for (t, s) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                s.append_alert_event(event(
                    AlertEventKind::Raised,
                    alert(&format!("y{t}-{i}")),
                    i,
                ))
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let logged: Vec<u64> = a
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        logged,
        (1..=80).collect::<Vec<u64>>(),
        "no gap, no seq twice"
    );
    let report = b.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_break), (80, None));
    let q = eldercare_store::AlertQuery {
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(
        a.list_alerts(&q).await.unwrap().len(),
        80,
        "each alert's row"
    );
}
