//! The storage contract, run against both backends: every test body below
//! runs once on SQLite (`sqlite::`) and once on a throwaway PostgreSQL
//! (`postgres::`), and must pass on both. Together they cover every
//! method of the `Store` trait.
//!
//!     cargo test -p eldercare-store --test conformance
//!     cargo test -p eldercare-store --test conformance postgres::
mod support;

use eldercare_model::{
    AlertEventKind, AlertKind, AlertState, Body, Carer, DeadLetter, Device, DeviceEvent,
    DeviceKind, Elder, EventType, Location, Motion, Provider, Reading, Severity, Silence, Sleep,
    Status, Stream, VisitAction, VisitPlan, Vitals,
};
use eldercare_store::{
    AlertQuery, DEAD_LETTER_CAPACITY, DeviceQuery, DeviceWrite, ElderDeletion, ElderQuery, HOUR_MS,
    NewAlertEvent, ReadingQuery, ReadingSubject, StoreError, StoredReading, VitalStat, VitalsHour,
};
use support::Backend;
use support::fixtures::{alert, event};

/// Runs each listed test body on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::support::Backend::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::support::Backend::postgres().await).await
                }
            )*
        }
    };
}

on_both_backends!(
    registry_upserts_say_what_was_new_and_changes_are_tracked,
    registry_writes_answer_what_happened,
    registry_lists_filter_and_page_by_id_in_byte_order,
    readings_keep_every_field_of_every_stream,
    readings_page_both_ways_and_latest_is_per_device_and_stream,
    readings_filter_by_subject_stream_and_range,
    latest_readings_are_the_newest_whether_recent_or_long_ago,
    vitals_are_aggregated_by_hour_for_long_ranges,
    a_large_batch_is_stored_whole,
    alert_events_are_gap_free_under_concurrent_appends,
    the_event_log_is_a_hash_chain_and_tampering_is_found,
    a_rule_decision_is_kept_once_and_takes_no_seq_again,
    alerts_keep_their_latest_state_and_their_history,
    alert_lists_filter_and_page,
    silences_are_kept_and_listed_while_active,
    dead_letters_are_kept_newest_first_up_to_the_capacity,
    readings_at_record_the_intake_position_with_the_batch,
    readings_keyed_record_their_own_log_position,
    readings_refused_for_their_content_are_left_out_and_the_rest_stored,
    readings_the_database_refuses_are_found_in_small_and_large_batches,
    providers_carers_and_plans_are_kept_and_deletes_refused_while_named,
    visit_events_keep_their_carer_and_action_in_any_batch,
);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn elder(id: &str, district: &str) -> Elder {
    Elder {
        elder_id: id.into(),
        name: format!("Name {id}"),
        district: Some(district.into()),
        timezone: "Asia/Shanghai".into(),
        night_start: "21:00".into(),
        night_end: "07:00".into(),
        ..Default::default()
    }
}

fn full_elder(id: &str) -> Elder {
    Elder {
        elder_id: id.into(),
        name: "王秀英".into(),
        phone: Some("+86 138 0000 0000".into()),
        address: Some("Room 302, 18 Lane 5, Huangpu".into()),
        district: Some("Huangpu".into()),
        community: Some("Nanjing East".into()),
        home_lat: Some(31.230416),
        home_lon: Some(121.473701),
        safe_radius_m: Some(250.5),
        flags: vec!["dementia".into(), "lives_alone".into()],
        timezone: "Asia/Shanghai".into(),
        night_start: "22:30".into(),
        night_end: "06:45".into(),
        contact_name: Some("Li Wei".into()),
        contact_phone: Some("+86 139 0000 0000".into()),
        check_in: Some("08:00-10:30".into()),
    }
}

fn device(id: &str, elder_id: &str) -> Device {
    Device {
        device_id: id.into(),
        kind: DeviceKind::VitalBand,
        elder_id: elder_id.into(),
        room: None,
        heartbeat_s: 300,
        secret_salt: "salt".into(),
        secret_hash: "hash".into(),
    }
}

fn stored(elder_id: &str, device_id: &str, ts: i64, seq: Option<u64>, body: Body) -> StoredReading {
    StoredReading {
        elder_id: elder_id.into(),
        reading: Reading {
            device_id: device_id.into(),
            seq,
            ts_ms: ts,
            body,
        },
    }
}

fn vitals_hr(hr: u32) -> Body {
    Body::Vitals(Vitals {
        hr: Some(hr),
        ..Default::default()
    })
}

fn status_battery(pct: u32) -> Body {
    Body::Status(Status {
        battery_pct: Some(pct),
        ..Default::default()
    })
}

async fn registry_upserts_say_what_was_new_and_changes_are_tracked(b: Backend) {
    let s = &b.store;
    let e1 = full_elder("E1");
    assert!(s.upsert_elder(&e1).await.unwrap(), "new");
    assert!(!s.upsert_elder(&e1).await.unwrap(), "already there");
    assert_eq!(s.get_elder("E1").await.unwrap(), Some(e1.clone()));
    assert_eq!(s.get_elder("E9").await.unwrap(), None);
    assert!(s.upsert_elder(&elder("E2", "D1")).await.unwrap());

    let d1 = device("d1", "E1");
    assert!(s.upsert_device(&d1).await.unwrap());
    // The import's upsert replaces everything, the secret included.
    let d1b = Device {
        kind: DeviceKind::SleepSensor,
        room: Some("bedroom".into()),
        heartbeat_s: 60,
        secret_salt: "salt2".into(),
        secret_hash: "hash2".into(),
        ..d1.clone()
    };
    assert!(!s.upsert_device(&d1b).await.unwrap());
    assert_eq!(s.get_device("d1").await.unwrap(), Some(d1b.clone()));
    assert_eq!(s.get_device("nope").await.unwrap(), None);
    assert!(s.upsert_device(&device("d2", "E2")).await.unwrap());

    let ids = |v: Vec<Elder>| v.into_iter().map(|e| e.elder_id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_elders(None).await.unwrap()), ["E1", "E2"]);
    assert_eq!(s.list_devices(None).await.unwrap().len(), 2);

    // Only what is written at or after a time is listed as changed since.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = now_ms();
    let mut e2 = elder("E2", "D2");
    e2.community = Some("C9".into());
    assert!(!s.upsert_elder(&e2).await.unwrap());
    assert!(s.update_device(&device("d2", "E1")).await.unwrap() == DeviceWrite::Written);
    assert_eq!(s.list_elders(Some(t)).await.unwrap(), vec![e2]);
    let changed = s.list_devices(Some(t)).await.unwrap();
    assert_eq!(
        changed
            .iter()
            .map(|d| (d.device_id.as_str(), d.elder_id.as_str()))
            .collect::<Vec<_>>(),
        [("d2", "E1")]
    );
    assert!(
        s.list_elders(Some(now_ms() + 60_000))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn registry_writes_answer_what_happened(b: Backend) {
    let s = &b.store;
    assert!(s.insert_elder(&elder("E1", "D1")).await.unwrap());
    assert!(!s.insert_elder(&elder("E1", "D9")).await.unwrap());
    assert_eq!(
        s.get_elder("E1")
            .await
            .unwrap()
            .unwrap()
            .district
            .as_deref(),
        Some("D1"),
        "a refused insert changes nothing"
    );
    assert!(!s.update_elder(&elder("E9", "D1")).await.unwrap());
    let mut full = full_elder("E1");
    full.flags = vec![];
    assert!(s.update_elder(&full).await.unwrap());
    assert_eq!(s.get_elder("E1").await.unwrap(), Some(full.clone()));
    // The check-in window is cleared as any optional field.
    full.check_in = None;
    assert!(s.update_elder(&full).await.unwrap());
    assert_eq!(s.get_elder("E1").await.unwrap(), Some(full));

    assert_eq!(
        s.insert_device(&device("b1", "NOBODY")).await.unwrap(),
        DeviceWrite::UnknownElder
    );
    assert_eq!(
        s.insert_device(&device("b1", "E1")).await.unwrap(),
        DeviceWrite::Written
    );
    assert_eq!(
        s.insert_device(&device("b1", "E1")).await.unwrap(),
        DeviceWrite::AlreadyExists
    );
    let mut moved = device("b1", "NOBODY");
    assert_eq!(
        s.update_device(&moved).await.unwrap(),
        DeviceWrite::UnknownElder
    );
    moved.elder_id = "E1".into();
    moved.heartbeat_s = 60;
    moved.room = Some("kitchen".into());
    moved.kind = DeviceKind::Pir;
    moved.secret_hash = "ignored".into();
    assert_eq!(s.update_device(&moved).await.unwrap(), DeviceWrite::Written);
    let got = s.get_device("b1").await.unwrap().unwrap();
    assert_eq!(
        (
            got.heartbeat_s,
            got.room.as_deref(),
            got.kind,
            got.secret_hash.as_str()
        ),
        (60, Some("kitchen"), DeviceKind::Pir, "hash"),
        "an update keeps the secret"
    );
    assert_eq!(
        s.update_device(&device("b9", "E1")).await.unwrap(),
        DeviceWrite::NotFound
    );
    assert!(s.set_device_secret("b1", "s2", "h2").await.unwrap());
    assert!(!s.set_device_secret("b9", "s2", "h2").await.unwrap());
    let got = s.get_device("b1").await.unwrap().unwrap();
    assert_eq!(
        (got.secret_salt.as_str(), got.secret_hash.as_str()),
        ("s2", "h2")
    );

    s.insert_device(&device("b2", "E1")).await.unwrap();
    assert_eq!(
        s.delete_elder("E1").await.unwrap(),
        ElderDeletion::HasDevices(2)
    );
    assert_eq!(s.delete_elder("E9").await.unwrap(), ElderDeletion::NotFound);
    assert!(s.delete_device("b1").await.unwrap());
    assert!(!s.delete_device("b1").await.unwrap());
    assert!(s.delete_device("b2").await.unwrap());
    assert_eq!(s.delete_elder("E1").await.unwrap(), ElderDeletion::Deleted);
    assert!(s.get_elder("E1").await.unwrap().is_none());
    assert_eq!(s.delete_elder("E1").await.unwrap(), ElderDeletion::NotFound);
}

async fn registry_lists_filter_and_page_by_id_in_byte_order(b: Backend) {
    let s = &b.store;
    // Byte order: '-' < digits < upper case < lower case, whatever the
    // database's locale would say.
    for (id, d) in [
        ("E3", "D1"),
        ("E1", "D1"),
        ("E2", "D2"),
        ("E4", "D1"),
        ("e0", "D1"),
        ("E-9", "D1"),
        ("E10", "D1"),
    ] {
        let mut e = elder(id, d);
        e.community = Some(if id == "E4" { "C2" } else { "C1" }.into());
        s.insert_elder(&e).await.unwrap();
    }
    let ids = |v: Vec<Elder>| v.into_iter().map(|e| e.elder_id).collect::<Vec<_>>();
    let mut q = ElderQuery {
        district: Some("D1".into()),
        limit: 2,
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = ids(s.query_elders(&q).await.unwrap());
        if page.is_empty() {
            break;
        }
        q.after = page.last().cloned();
        pages.push(page);
    }
    assert_eq!(
        pages,
        [vec!["E-9", "E1"], vec!["E10", "E3"], vec!["E4", "e0"]]
    );
    let q = ElderQuery {
        community: Some("C2".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(s.query_elders(&q).await.unwrap()), ["E4"]);
    let q = ElderQuery {
        district: Some("D1".into()),
        community: Some("C1".into()),
        after: Some("E3".into()),
        limit: 10,
    };
    assert_eq!(ids(s.query_elders(&q).await.unwrap()), ["e0"]);

    for (d, e) in [("b2", "E2"), ("b1", "E1"), ("b3", "E1"), ("B4", "E1")] {
        s.insert_device(&device(d, e)).await.unwrap();
    }
    let devs = |q: DeviceQuery| {
        let s = s.clone();
        async move {
            s.query_devices(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.device_id)
                .collect::<Vec<_>>()
        }
    };
    let q = DeviceQuery {
        elder_id: Some("E1".into()),
        after: None,
        limit: 10,
    };
    assert_eq!(devs(q).await, ["B4", "b1", "b3"]);
    let q = DeviceQuery {
        elder_id: None,
        after: Some("b1".into()),
        limit: 1,
    };
    assert_eq!(devs(q).await, ["b2"]);
}

async fn readings_keep_every_field_of_every_stream(b: Backend) {
    let s = &b.store;
    let bodies = [
        Body::Vitals(Vitals {
            hr: Some(72),
            spo2: Some(97),
            rr: Some(16),
            temp_c: Some(36.6),
            sys: Some(128),
            dia: Some(82),
        }),
        Body::Vitals(Vitals {
            temp_c: Some(37.25),
            ..Default::default()
        }),
        Body::Sleep(Sleep {
            in_bed: true,
            hr: Some(58),
            rr: Some(14),
            movement: Some(0.35),
        }),
        Body::Sleep(Sleep {
            in_bed: false,
            ..Default::default()
        }),
        Body::Motion(Motion {
            room: "bathroom".into(),
            motion: true,
        }),
        Body::Motion(Motion {
            room: "卧室 \"north\"\t\\".into(),
            motion: false,
        }),
        Body::Location(Location {
            lat: 31.230416,
            lon: 121.473701,
            accuracy_m: Some(12.5),
        }),
        Body::Location(Location {
            lat: -33.868_812_345_678,
            lon: -0.000_001,
            accuracy_m: None,
        }),
        Body::Event(DeviceEvent {
            kind: EventType::Sos,
            confidence: None,
            carer: None,
            action: None,
        }),
        Body::Event(DeviceEvent {
            kind: EventType::Fall,
            confidence: Some(0.93),
            carer: None,
            action: None,
        }),
        Body::Event(DeviceEvent {
            kind: EventType::SosCancel,
            confidence: Some(1.0),
            carer: None,
            action: None,
        }),
        Body::Status(Status {
            online: Some(true),
            battery_pct: Some(87),
            rssi: Some(-67),
            fw: Some("1.4.2-rc.1, \"beta\"".into()),
        }),
        Body::Status(Status::default()),
        Body::Event(DeviceEvent {
            kind: EventType::Visit,
            confidence: None,
            carer: Some("carer-7".into()),
            action: Some(VisitAction::In),
        }),
        Body::Event(DeviceEvent {
            kind: EventType::Visit,
            confidence: None,
            carer: Some("carer-7".into()),
            action: Some(VisitAction::Out),
        }),
        Body::Event(DeviceEvent {
            kind: EventType::CheckIn,
            confidence: None,
            carer: None,
            action: None,
        }),
    ];
    let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let seqs = [Some(7), None, Some(u64::MAX), Some(0)];
    let batch: Vec<StoredReading> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            stored(
                "E1",
                "dev-1",
                base + i as i64 * 1001,
                seqs[i % seqs.len()],
                body.clone(),
            )
        })
        .collect();
    s.insert_readings(&batch).await.unwrap();
    s.insert_readings(&[]).await.unwrap();
    let q = ReadingQuery {
        subject: ReadingSubject::Device("dev-1".into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: false,
        after: None,
        limit: 100,
    };
    let got = s.query_readings(&q).await.unwrap();
    assert_eq!(got.len(), batch.len());
    for (r, want) in got.iter().zip(&batch) {
        assert_eq!(
            (
                r.elder_id.as_str(),
                r.device_id.as_str(),
                r.stream,
                r.ts_ms,
                r.seq,
                r.json.as_str()
            ),
            (
                "E1",
                "dev-1",
                want.reading.stream(),
                want.reading.ts_ms,
                want.reading.seq,
                want.reading.body.to_json().as_str()
            ),
            "{}",
            b.name
        );
    }
    // The JSON is the protocol's, absent fields left out.
    assert_eq!(got[3].json, r#"{"in_bed":false}"#);
    assert_eq!(got[12].json, "{}");
}

async fn readings_page_both_ways_and_latest_is_per_device_and_stream(b: Backend) {
    let s = &b.store;
    s.insert_elder(&elder("E1", "D1")).await.unwrap();
    s.insert_elder(&elder("E2", "D1")).await.unwrap();
    s.insert_device(&device("band", "E1")).await.unwrap();
    s.insert_device(&device("pir", "E1")).await.unwrap();
    let v = |ts, hr| stored("E1", "band", ts, None, vitals_hr(hr));
    let st = |dev: &str, ts, pct| stored("E1", dev, ts, None, status_battery(pct));
    // Two readings share ts 2000: paging must neither skip nor repeat one.
    s.insert_readings(&[
        v(1000, 70),
        v(2000, 71),
        v(2000, 72),
        v(3000, 73),
        st("band", 1500, 90),
        st("pir", 500, 40),
        st("pir", 2500, 39),
    ])
    .await
    .unwrap();
    let mut q = ReadingQuery {
        subject: ReadingSubject::Device("band".into()),
        from: Some(1000),
        to: Some(3000),
        streams: vec![Stream::Vitals],
        newest_first: true,
        after: None,
        limit: 2,
    };
    let mut seen = Vec::new();
    loop {
        let page = s.query_readings(&q).await.unwrap();
        seen.extend(page.iter().map(|r| r.json.clone()));
        match page.last() {
            Some(r) if page.len() == 2 => q.after = Some((r.ts_ms, r.id)),
            _ => break,
        }
    }
    assert_eq!(
        seen,
        [r#"{"hr":72}"#, r#"{"hr":71}"#, r#"{"hr":70}"#],
        "to is exclusive"
    );
    q.newest_first = false;
    q.after = None;
    seen.clear();
    loop {
        let page = s.query_readings(&q).await.unwrap();
        seen.extend(page.iter().map(|r| r.json.clone()));
        match page.last() {
            Some(r) if page.len() == 2 => q.after = Some((r.ts_ms, r.id)),
            _ => break,
        }
    }
    assert_eq!(seen, [r#"{"hr":70}"#, r#"{"hr":71}"#, r#"{"hr":72}"#]);

    let q = ReadingQuery {
        subject: ReadingSubject::Elder("E1".into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: false,
        after: None,
        limit: 3,
    };
    let first: Vec<i64> = s
        .query_readings(&q)
        .await
        .unwrap()
        .iter()
        .map(|r| r.ts_ms)
        .collect();
    assert_eq!(first, [500, 1000, 1500]);

    let row = |d: &str, stream: &'static str, ts: i64, json: &str| {
        (d.to_string(), stream, ts, json.to_string())
    };
    let latest = |elder: &'static str| {
        let s = s.clone();
        async move {
            s.latest_readings(elder)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.device_id.clone(),
                        r.stream.as_str(),
                        r.ts_ms,
                        r.json.clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        latest("E1").await,
        [
            row("band", "status", 1500, r#"{"battery_pct":90}"#),
            row("pir", "status", 2500, r#"{"battery_pct":39}"#),
            row("band", "vitals", 3000, r#"{"hr":73}"#)
        ]
    );
    assert!(s.latest_readings("NOBODY").await.unwrap().is_empty());

    // A device moved to another elder: its readings stay attributed to
    // the first, so neither elder's latest shows them.
    let mut moved = device("pir", "E2");
    moved.kind = DeviceKind::Pir;
    assert_eq!(s.update_device(&moved).await.unwrap(), DeviceWrite::Written);
    assert_eq!(latest("E1").await.len(), 2);
    assert!(latest("E2").await.is_empty());
    s.insert_readings(&[stored("E2", "pir", 2600, None, status_battery(38))])
        .await
        .unwrap();
    assert_eq!(
        latest("E2").await,
        [row("pir", "status", 2600, r#"{"battery_pct":38}"#)]
    );
    // A deleted device's readings stay, but it has no latest any more.
    assert!(s.delete_device("band").await.unwrap());
    assert!(latest("E1").await.is_empty());
    let q = ReadingQuery {
        subject: ReadingSubject::Device("band".into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: true,
        after: None,
        limit: 100,
    };
    assert_eq!(s.query_readings(&q).await.unwrap().len(), 5);
}

async fn readings_filter_by_subject_stream_and_range(b: Backend) {
    let s = &b.store;
    let mut batch = Vec::new();
    for i in 0..30i64 {
        let (elder, dev) = if i % 3 == 0 {
            ("E2", "band-2")
        } else {
            ("E1", "band-1")
        };
        let body = match i % 5 {
            0 => vitals_hr(60 + i as u32),
            1 => status_battery(i as u32),
            2 => Body::Motion(Motion {
                room: "hall".into(),
                motion: i % 2 == 0,
            }),
            3 => Body::Event(DeviceEvent {
                kind: EventType::Fall,
                confidence: Some(0.5),
                carer: None,
                action: None,
            }),
            _ => Body::Sleep(Sleep {
                in_bed: true,
                ..Default::default()
            }),
        };
        batch.push(stored(elder, dev, 10_000 + i * 100, Some(i as u64), body));
    }
    s.insert_readings(&batch).await.unwrap();
    let want = |f: &dyn Fn(&StoredReading) -> bool, newest_first: bool| {
        let mut v: Vec<i64> = batch
            .iter()
            .filter(|r| f(r))
            .map(|r| r.reading.ts_ms)
            .collect();
        if newest_first {
            v.reverse();
        }
        v
    };
    let run = |q: ReadingQuery| {
        let s = s.clone();
        async move {
            s.query_readings(&q)
                .await
                .unwrap()
                .iter()
                .map(|r| r.ts_ms)
                .collect::<Vec<_>>()
        }
    };
    let q = ReadingQuery {
        subject: ReadingSubject::Elder("E1".into()),
        from: Some(10_500),
        to: Some(12_000),
        streams: vec![Stream::Status, Stream::Motion],
        newest_first: false,
        after: None,
        limit: 100,
    };
    assert_eq!(
        run(q.clone()).await,
        want(
            &|r| r.elder_id == "E1"
                && (10_500..12_000).contains(&r.reading.ts_ms)
                && matches!(r.reading.stream(), Stream::Status | Stream::Motion),
            false
        )
    );
    let q = ReadingQuery {
        subject: ReadingSubject::Device("band-2".into()),
        from: None,
        to: Some(11_200),
        streams: vec![],
        newest_first: true,
        ..q
    };
    assert_eq!(
        run(q.clone()).await,
        want(
            &|r| r.reading.device_id == "band-2" && r.reading.ts_ms < 11_200,
            true
        )
    );
    // A page token past everything, either way, yields nothing.
    let q = ReadingQuery {
        after: Some((0, 0)),
        ..q
    };
    assert!(run(q.clone()).await.is_empty());
    let q = ReadingQuery {
        newest_first: false,
        after: Some((i64::MAX, i64::MAX)),
        ..q
    };
    assert!(run(q.clone()).await.is_empty());
    // Bounds far outside any storable time select everything.
    let q = ReadingQuery {
        from: Some(i64::MIN),
        to: Some(i64::MAX),
        after: None,
        ..q
    };
    assert_eq!(run(q).await.len(), 10);
    let q = ReadingQuery {
        subject: ReadingSubject::Elder("NOBODY".into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: false,
        after: None,
        limit: 10,
    };
    assert!(run(q).await.is_empty());
}

async fn a_large_batch_is_stored_whole(b: Backend) {
    let s = &b.store;
    let batch: Vec<StoredReading> = (0..5000)
        .map(|i| {
            stored(
                "E1",
                &format!("dev-{}", i % 50),
                1_000_000 + i,
                Some(i as u64),
                vitals_hr(60 + (i % 100) as u32),
            )
        })
        .collect();
    s.insert_readings(&batch).await.unwrap();
    let q = ReadingQuery {
        subject: ReadingSubject::Elder("E1".into()),
        from: None,
        to: None,
        streams: vec![],
        newest_first: false,
        after: None,
        limit: 10_000,
    };
    let got = s.query_readings(&q).await.unwrap();
    assert_eq!(got.len(), 5000);
    assert!(
        got.iter()
            .zip(&batch)
            .all(|(r, w)| r.seq == w.reading.seq && r.device_id == w.reading.device_id)
    );
}

async fn alert_events_are_gap_free_under_concurrent_appends(b: Backend) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = b.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let ev = s
                    .append_alert_event(event(
                        AlertEventKind::Raised,
                        alert(&format!("a{t}-{i}")),
                        i as i64,
                    ))
                    .await
                    .unwrap();
                seqs.push(ev.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each task's seqs rise"
        );
        all.extend(seqs);
    }
    all.sort();
    let n = (TASKS * EACH) as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "every seq once, no gap");
    assert_eq!(b.store.last_seq().await.unwrap(), n);
    let logged: Vec<u64> = b
        .store
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(logged, (1..=n).collect::<Vec<_>>());
    let report = b.store.verify_chain().await.unwrap();
    assert_eq!((report.checked, report.first_break), (n, None));
}

async fn the_event_log_is_a_hash_chain_and_tampering_is_found(b: Backend) {
    let s = &b.store;
    let mut hashes = Vec::new();
    for (i, id) in ["a1", "a2", "a1", "a3"].iter().enumerate() {
        let ev = s
            .append_alert_event(event(AlertEventKind::Raised, alert(id), i as i64))
            .await
            .unwrap();
        assert_eq!(ev.hash.len(), 64);
        hashes.push(ev.hash);
    }
    let first = s.events_after(0, 10).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.hash.clone()).collect::<Vec<_>>(),
        hashes
    );
    // The first event chains to the empty hash, as on every backend.
    assert_eq!(
        hashes[0],
        eldercare_store::event_hash(
            "",
            1,
            AlertEventKind::Raised,
            "a1",
            "",
            0,
            None,
            &serde_json::to_string(&alert("a1")).unwrap()
        )
    );
    let ok = s.verify_chain().await.unwrap();
    assert_eq!((ok.checked, ok.first_break), (4, None));
    assert_eq!(s.events_of_alert("a1").await.unwrap().len(), 2);

    // Someone edits who acted on event 3.
    b.exec("UPDATE alert_events SET actor = 'nobody' WHERE seq = 3")
        .await;
    let bad = s.verify_chain().await.unwrap();
    assert_eq!(bad.first_break.map(|b| b.0), Some(3));
    // Rewriting its hash too breaks the link to event 4.
    let forged = eldercare_store::event_hash(
        &hashes[1],
        3,
        AlertEventKind::Raised,
        "a1",
        "nobody",
        2,
        None,
        &serde_json::to_string(&alert("a1")).unwrap(),
    );
    b.exec(&format!(
        "UPDATE alert_events SET hash = '{forged}' WHERE seq = 3"
    ))
    .await;
    let bad = s.verify_chain().await.unwrap();
    assert_eq!(bad.first_break.map(|b| b.0), Some(4));
    // A deleted event is a gap.
    b.exec("DELETE FROM alert_events WHERE seq = 2").await;
    let bad = s.verify_chain().await.unwrap();
    assert_eq!(bad.first_break, Some((2, "seq missing".into())));
    assert_eq!(bad.checked, 3);
}

/// A cluster's desk may be handed a decision again (after taking over,
/// or a stale desk): its event is kept once, and the refused second one
/// takes no seq, so the log stays gap-free and chained.
async fn a_rule_decision_is_kept_once_and_takes_no_seq_again(b: Backend) {
    let s = &b.store;
    assert_eq!(s.last_decision().await.unwrap(), 0);
    let mut first = event(AlertEventKind::Raised, alert("a1"), 100);
    first.decision = Some(41);
    assert_eq!(s.append_alert_event(first.clone()).await.unwrap().seq, 1);
    let mut again = first.clone();
    again.kind = AlertEventKind::Updated;
    match s.append_alert_event(again).await {
        Err(StoreError::DecisionKept(41)) => {}
        other => panic!("a second event of decision 41 must be refused: {other:?}"),
    }
    // An operator's event (no decision) and the next decision follow on.
    let op = event(AlertEventKind::Acknowledged, alert("a1"), 110);
    assert_eq!(s.append_alert_event(op.clone()).await.unwrap().seq, 2);
    assert_eq!(s.append_alert_event(op).await.unwrap().seq, 3);
    let mut next = event(AlertEventKind::Updated, alert("a1"), 120);
    next.decision = Some(42);
    assert_eq!(s.append_alert_event(next).await.unwrap().seq, 4);
    assert_eq!(s.last_decision().await.unwrap(), 42);
    assert_eq!(s.last_seq().await.unwrap(), 4);
    let chain = s.verify_chain().await.unwrap();
    assert_eq!((chain.checked, chain.first_break), (4, None));
}

async fn alerts_keep_their_latest_state_and_their_history(b: Backend) {
    let s = &b.store;
    assert_eq!(s.last_seq().await.unwrap(), 0);
    assert!(s.events_after(0, 10).await.unwrap().is_empty());
    assert!(s.get_alert("a1").await.unwrap().is_none());
    let ev = s
        .append_alert_event(event(AlertEventKind::Raised, alert("a1"), 100))
        .await
        .unwrap();
    assert_eq!(ev.seq, 1);
    let mut acked = alert("a1");
    acked.state = AlertState::Acknowledged;
    acked.occurrences = 2;
    acked.acknowledged_at = Some(150);
    acked.updated_at = 150;
    acked.factors = vec!["pulse 142 (3)".into()];
    acked.window = Some((90, 140));
    acked.score = Some(7);
    let ack = s
        .append_alert_event(NewAlertEvent {
            kind: AlertEventKind::Acknowledged,
            alert: acked.clone(),
            actor: "op-zhang".into(),
            at: 150,
            note: Some("called the daughter / 已联系女儿".into()),
            decision: None,
        })
        .await
        .unwrap();
    assert_eq!(ack.seq, 2);
    let mut other = alert("a2");
    other.elder_id = "E2".into();
    s.append_alert_event(event(AlertEventKind::Raised, other.clone(), 160))
        .await
        .unwrap();
    let mut resolved = acked.clone();
    resolved.state = AlertState::Resolved;
    resolved.outcome = Some("false_alarm".into());
    resolved.resolved_at = Some(200);
    s.append_alert_event(event(AlertEventKind::Resolved, resolved.clone(), 200))
        .await
        .unwrap();

    assert_eq!(s.get_alert("a1").await.unwrap(), Some(resolved.clone()));
    assert_eq!(s.get_alert("a2").await.unwrap(), Some(other.clone()));
    let history = s.events_of_alert("a1").await.unwrap();
    assert_eq!(
        history.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
        [
            (1, AlertEventKind::Raised),
            (2, AlertEventKind::Acknowledged),
            (4, AlertEventKind::Resolved)
        ]
    );
    assert_eq!(history[1], ack, "stored as returned");
    assert_eq!(history[1].alert, acked);
    let page: Vec<u64> = s
        .events_after(1, 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, [2, 3]);
    assert!(s.events_after(4, 10).await.unwrap().is_empty());
    assert_eq!(s.last_seq().await.unwrap(), 4);
    assert_eq!(s.unresolved_alerts().await.unwrap(), vec![other]);
    assert!(s.events_of_alert("nope").await.unwrap().is_empty());
}

async fn alert_lists_filter_and_page(b: Backend) {
    let s = &b.store;
    #[allow(clippy::type_complexity)]
    let specs: [(
        &str,
        &str,
        Option<&str>,
        AlertKind,
        Severity,
        AlertState,
        i64,
    ); 6] = [
        (
            "a1",
            "E1",
            Some("C1"),
            AlertKind::Sos,
            Severity::Critical,
            AlertState::Open,
            1000,
        ),
        (
            "a2",
            "E1",
            Some("C1"),
            AlertKind::Fall,
            Severity::High,
            AlertState::Acknowledged,
            2000,
        ),
        (
            "a3",
            "E2",
            Some("C2"),
            AlertKind::LowBattery,
            Severity::Low,
            AlertState::Resolved,
            3000,
        ),
        (
            "a4",
            "E2",
            Some("C2"),
            AlertKind::VitalOutOfRange,
            Severity::Medium,
            AlertState::Dispatched,
            4000,
        ),
        (
            "a5",
            "E3",
            None,
            AlertKind::DeviceOffline,
            Severity::Low,
            AlertState::Open,
            4000,
        ),
        (
            "a6",
            "E1",
            Some("C1"),
            AlertKind::Inactivity,
            Severity::Medium,
            AlertState::Resolved,
            5000,
        ),
    ];
    for (id, elder, community, kind, severity, state, raised_at) in specs {
        let mut a = alert(id);
        a.elder_id = elder.into();
        a.community = community.map(String::from);
        a.kind = kind;
        a.severity = severity;
        a.raised_at = raised_at;
        // Raised open, then moved to its state: the list sees the latest.
        s.append_alert_event(event(AlertEventKind::Raised, a.clone(), raised_at))
            .await
            .unwrap();
        if state != AlertState::Open {
            a.state = state;
            s.append_alert_event(event(AlertEventKind::Updated, a, raised_at + 1))
                .await
                .unwrap();
        }
    }
    let list = |q: AlertQuery| {
        let s = s.clone();
        async move {
            s.list_alerts(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    let all = AlertQuery {
        limit: 100,
        ..Default::default()
    };
    // Newest first; a4 and a5 share raised_at and are ordered by id.
    assert_eq!(
        list(all.clone()).await,
        ["a6", "a5", "a4", "a3", "a2", "a1"]
    );
    let q = AlertQuery {
        states: vec![AlertState::Open, AlertState::Acknowledged],
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a5", "a2", "a1"]);
    let q = AlertQuery {
        min_severity: Some(Severity::High),
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a2", "a1"]);
    let q = AlertQuery {
        elder_id: Some("E1".into()),
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a6", "a2", "a1"]);
    let q = AlertQuery {
        community: Some("C2".into()),
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a4", "a3"]);
    let q = AlertQuery {
        kinds: vec![AlertKind::Sos, AlertKind::LowBattery],
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a3", "a1"]);
    let q = AlertQuery {
        raised_from: Some(2000),
        raised_to: Some(4000),
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a3", "a2"], "to is exclusive");
    let q = AlertQuery {
        elder_id: Some("E1".into()),
        states: vec![AlertState::Resolved],
        min_severity: Some(Severity::Medium),
        ..all.clone()
    };
    assert_eq!(list(q).await, ["a6"]);
    let q = AlertQuery {
        kinds: vec![AlertKind::GeofenceExit],
        ..all.clone()
    };
    assert!(list(q).await.is_empty());

    // Paging by (raised_at, id) crosses the tie without a skip or repeat.
    let mut q = AlertQuery {
        limit: 2,
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = s.list_alerts(&q).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        q.after = Some((last.raised_at, last.id.clone()));
        pages.push(page.into_iter().map(|a| a.id).collect::<Vec<_>>());
    }
    assert_eq!(pages, [["a6", "a5"], ["a4", "a3"], ["a2", "a1"]]);
    let q = AlertQuery {
        limit: 10,
        after: Some((4000, "a5".into())),
        ..Default::default()
    };
    assert_eq!(list(q).await, ["a4", "a3", "a2", "a1"]);

    let mut unresolved: Vec<String> = s
        .unresolved_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    unresolved.sort();
    assert_eq!(unresolved, ["a1", "a2", "a4", "a5"]);
}

async fn silences_are_kept_and_listed_while_active(b: Backend) {
    let s = &b.store;
    let mut sil = Silence {
        id: "s1".into(),
        kind: AlertKind::DeviceOffline,
        elder_id: None,
        device_id: Some("gps-1".into()),
        reason: "device being replaced".into(),
        created_by: "op-1".into(),
        created_at: 100,
        until: 200,
        ended_at: None,
    };
    s.insert_silence(&sil).await.unwrap();
    let other = Silence {
        id: "s2".into(),
        kind: AlertKind::Inactivity,
        elder_id: Some("E1".into()),
        device_id: None,
        reason: "in hospital / 住院".into(),
        created_by: "op-2".into(),
        created_at: 50,
        until: 1000,
        ended_at: None,
    };
    s.insert_silence(&other).await.unwrap();
    assert_eq!(
        s.silences(Some(150)).await.unwrap(),
        vec![other.clone(), sil.clone()],
        "by creation"
    );
    assert_eq!(s.silences(Some(99)).await.unwrap(), vec![other.clone()]);
    assert_eq!(s.silences(Some(200)).await.unwrap(), vec![other.clone()]);
    assert_eq!(
        s.silences(Some(49)).await.unwrap(),
        vec![],
        "not before it was made"
    );
    sil.ended_at = Some(120);
    s.insert_silence(&sil).await.unwrap();
    assert_eq!(s.silences(Some(150)).await.unwrap(), vec![other.clone()]);
    assert_eq!(
        s.silences(Some(110)).await.unwrap(),
        vec![other.clone(), sil.clone()]
    );
    // A re-insert changes only the end: the rest stays as first written.
    let mut changed = sil.clone();
    changed.reason = "something else".into();
    changed.until = 300;
    s.insert_silence(&changed).await.unwrap();
    let all = s.silences(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[1],
        Silence {
            until: 300,
            ..sil.clone()
        }
    );
}

async fn dead_letters_are_kept_newest_first_up_to_the_capacity(b: Backend) {
    let s = &b.store;
    assert!(s.dead_letters(10).await.unwrap().is_empty());
    let letter = |n: i64| DeadLetter {
        id: 0,
        received_at: 1_700_000_000_000 + n,
        topic: format!("eldercare/v1/dev-{n}/vitals"),
        sender: (n % 2 == 0).then(|| format!("dev-{n}")),
        reason: "out_of_range".into(),
        detail: format!("hr {n} outside 20–250"),
        payload: vec![0xff, 0x00, n as u8, b'{'],
    };
    // Fill to one short of the capacity, then three more through the store.
    b.prefill_dead_letters(DEAD_LETTER_CAPACITY - 1).await;
    for n in 1..=3 {
        s.insert_dead_letter(&letter(n)).await.unwrap();
    }
    let kept = s
        .dead_letters((DEAD_LETTER_CAPACITY + 10) as u32)
        .await
        .unwrap();
    assert_eq!(kept.len() as i64, DEAD_LETTER_CAPACITY, "capped");
    let newest: Vec<DeadLetter> = kept.iter().take(3).cloned().collect();
    for (got, n) in newest.iter().zip([3, 2, 1]) {
        assert_eq!(
            DeadLetter {
                id: 0,
                ..got.clone()
            },
            letter(n),
            "round trip"
        );
    }
    assert!(kept.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    // The two oldest were dropped, and only they.
    assert_eq!(kept.last().unwrap().id, 3);
    assert_eq!(newest[0].id, DEAD_LETTER_CAPACITY + 2);
    assert_eq!(s.dead_letters(2).await.unwrap(), newest[..2].to_vec());
}

async fn latest_readings_are_the_newest_whether_recent_or_long_ago(b: Backend) {
    let s = &b.store;
    s.insert_elder(&elder("E1", "D1")).await.unwrap();
    s.insert_elder(&elder("E2", "D1")).await.unwrap();
    for d in ["band", "btn", "pir"] {
        s.insert_device(&device(d, "E1")).await.unwrap();
    }
    let now = now_ms();
    let hour = 3_600_000;
    let day = 24 * hour;
    let sos = Body::Event(DeviceEvent {
        kind: EventType::Sos,
        confidence: None,
        carer: None,
        action: None,
    });
    s.insert_readings(&[
        // Reporting now, with history.
        stored("E1", "band", now - 90 * day, None, vitals_hr(60)),
        stored("E1", "band", now - hour, None, vitals_hr(61)),
        stored("E1", "band", now - 2 * hour, None, vitals_hr(62)),
        stored("E1", "band", now - 5 * day, None, status_battery(50)),
        // One SOS, months ago, and a heartbeat today.
        stored("E1", "btn", now - 200 * day, None, sos.clone()),
        stored("E1", "btn", now - 10 * hour, None, status_battery(90)),
        // Only long ago.
        stored("E1", "pir", now - 40 * day, None, status_battery(30)),
        stored("E1", "pir", now - 41 * day, None, status_battery(31)),
        // Newer, but attributed to someone else before the device moved.
        stored("E2", "pir", now - hour, None, status_battery(29)),
    ])
    .await
    .unwrap();
    let got: Vec<(String, &str, i64)> = s
        .latest_readings("E1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.device_id, r.stream.as_str(), now - r.ts_ms))
        .collect();
    let row = |d: &str, stream: &'static str, ago: i64| (d.to_string(), stream, ago);
    assert_eq!(
        got,
        [
            row("btn", "event", 200 * day),
            row("band", "status", 5 * day),
            row("btn", "status", 10 * hour),
            row("pir", "status", 40 * day),
            row("band", "vitals", hour),
        ]
    );
}

async fn vitals_are_aggregated_by_hour_for_long_ranges(b: Backend) {
    let s = &b.store;
    s.insert_elder(&elder("E1", "D1")).await.unwrap();
    s.insert_elder(&elder("E2", "D1")).await.unwrap();
    s.insert_device(&device("band", "E1")).await.unwrap();
    let day = 24 * HOUR_MS;
    // Whole hours: one now, one long ago (past the partitions made ahead).
    let h0 = now_ms() / HOUR_MS * HOUR_MS - 5 * HOUR_MS;
    let old = h0 - 300 * day;
    let v = |hr: Option<u32>, spo2: Option<u32>, temp_c: Option<f64>, bp: Option<(u32, u32)>| {
        Body::Vitals(Vitals {
            hr,
            spo2,
            rr: None,
            temp_c,
            sys: bp.map(|b| b.0),
            dia: bp.map(|b| b.1),
        })
    };
    s.insert_readings(&[
        // Just before the range.
        stored("E1", "band", old - 1, None, vitals_hr(200)),
        stored("E1", "band", old, None, vitals_hr(58)),
        stored(
            "E1",
            "band",
            h0,
            None,
            v(Some(60), Some(97), Some(36.5), None),
        ),
        stored(
            "E1",
            "band",
            h0 + 10_000,
            None,
            v(Some(70), None, None, Some((130, 85))),
        ),
        stored(
            "E1",
            "band",
            h0 + HOUR_MS - 1,
            None,
            v(None, Some(95), None, None),
        ),
        // Not vitals: the sleep sensor's heart rate is not in the band's hours.
        stored(
            "E1",
            "band",
            h0 + HOUR_MS,
            None,
            Body::Sleep(Sleep {
                in_bed: true,
                hr: Some(50),
                rr: Some(12),
                ..Default::default()
            }),
        ),
        stored("E1", "band", h0 + 2 * HOUR_MS + 5, None, vitals_hr(80)),
        // Someone else's.
        stored("E2", "band", h0 + 5, None, vitals_hr(120)),
        // At the range's end, which is exclusive.
        stored("E1", "band", h0 + 3 * HOUR_MS, None, vitals_hr(90)),
    ])
    .await
    .unwrap();
    let stat = |count: u64, avg: f64, min: f64, max: f64| {
        Some(VitalStat {
            count,
            avg,
            min,
            max,
        })
    };
    let got = s.vitals_hourly("E1", old, h0 + 3 * HOUR_MS).await.unwrap();
    assert_eq!(
        got,
        [
            VitalsHour {
                hour: old,
                readings: 1,
                hr: stat(1, 58.0, 58.0, 58.0),
                ..Default::default()
            },
            VitalsHour {
                hour: h0,
                readings: 3,
                hr: stat(2, 65.0, 60.0, 70.0),
                spo2: stat(2, 96.0, 95.0, 97.0),
                temp_c: stat(1, 36.5, 36.5, 36.5),
                sys: stat(1, 130.0, 130.0, 130.0),
                dia: stat(1, 85.0, 85.0, 85.0),
                rr: None,
            },
            VitalsHour {
                hour: h0 + 2 * HOUR_MS,
                readings: 1,
                hr: stat(1, 80.0, 80.0, 80.0),
                ..Default::default()
            },
        ]
    );
    // A sub-range, and an elder with no vitals in it.
    let got = s.vitals_hourly("E1", h0, h0 + HOUR_MS).await.unwrap();
    assert_eq!(got.iter().map(|h| h.hour).collect::<Vec<_>>(), [h0]);
    assert!(s.vitals_hourly("E2", old, h0).await.unwrap().is_empty());
}

fn motion_in(room: &str) -> Body {
    Body::Motion(Motion {
        room: room.into(),
        motion: true,
    })
}

/// The seqs of a device's stored readings, in stored order.
async fn seqs_of(b: &Backend, device: &str) -> Vec<u64> {
    b.store
        .query_readings(&ReadingQuery {
            subject: ReadingSubject::Device(device.into()),
            from: None,
            to: None,
            streams: vec![],
            newest_first: false,
            after: None,
            limit: 10_000,
        })
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.seq)
        .collect()
}

/// `n` motion readings of `device`, seqs `from..from + n`, one ts, so
/// stored order is the batch's.
fn motions(device: &str, from: u64, n: u64) -> Vec<StoredReading> {
    (from..from + n)
        .map(|i| stored("E1", device, 1_700_000_000_000, Some(i), motion_in("hall")))
        .collect()
}

/// A cluster's partitions each record how far their own log is stored,
/// apart from one another and from a single node's intake position, in
/// a small batch and in one large enough for COPY on PostgreSQL.
async fn readings_keyed_record_their_own_log_position(b: Backend) {
    let s = &b.store;
    assert_eq!(s.keyed_position("partition-1").await.unwrap(), None);
    let small = motions("pir-1", 1, 3);
    assert!(
        s.insert_readings_keyed(&small, "partition-1", 7)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.insert_readings_keyed(&motions("pir-1", 4, 1), "partition-1", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.keyed_position("partition-1").await.unwrap(),
        Some(7),
        "positions only grow"
    );
    assert_eq!(s.keyed_position("partition-2").await.unwrap(), None);
    assert_eq!(
        s.intake_position().await.unwrap(),
        None,
        "the single node's is apart"
    );
    let big = motions("pir-2", 1, 2500);
    assert!(
        s.insert_readings_keyed(&big, "partition-2", 30)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.keyed_position("partition-2").await.unwrap(), Some(30));
    assert!(
        s.insert_readings_keyed(&[], "partition-1", 9)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.keyed_position("partition-1").await.unwrap(), Some(9));
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 2, 3, 4]);
}

async fn readings_at_record_the_intake_position_with_the_batch(b: Backend) {
    let s = &b.store;
    assert_eq!(s.intake_position().await.unwrap(), None, "never recorded");
    assert!(
        s.insert_readings_at(&motions("pir-1", 1, 3), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.intake_position().await.unwrap(), Some(5));
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 2, 3]);

    // Positions only grow: an older one is stored but does not move it.
    assert!(
        s.insert_readings_at(&motions("pir-1", 4, 1), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.intake_position().await.unwrap(), Some(5));
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 2, 3, 4]);

    // A batch with nothing to store still covers its messages.
    assert!(s.insert_readings_at(&[], 9).await.unwrap().is_empty());
    assert_eq!(s.intake_position().await.unwrap(), Some(9));

    // Large enough for COPY on PostgreSQL: the position goes with it.
    let big = motions("pir-2", 1, 2500);
    assert!(s.insert_readings_at(&big, 20).await.unwrap().is_empty());
    assert_eq!(s.intake_position().await.unwrap(), Some(20));
    assert_eq!(seqs_of(&b, "pir-2").await, (1..=2500).collect::<Vec<_>>());

    // A position the database cannot hold writes nothing at all.
    let err = s
        .insert_readings_at(&motions("pir-3", 1, 2), u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange(_)), "{err}");
    assert_eq!(s.intake_position().await.unwrap(), Some(20));
    assert!(seqs_of(&b, "pir-3").await.is_empty());
    let max = i64::MAX as u64;
    s.insert_readings_at(&motions("pir-3", 1, 1), max)
        .await
        .unwrap();
    assert_eq!(s.intake_position().await.unwrap(), Some(max));
}

async fn readings_refused_for_their_content_are_left_out_and_the_rest_stored(b: Backend) {
    let s = &b.store;
    let t = 1_700_000_000_000;
    let batch = vec![
        stored("E1", "pir-1", t, Some(1), motion_in("hall")),
        // NUL: PostgreSQL's text cannot hold it, so neither backend takes it.
        stored("E1", "pir-1", t, Some(2), motion_in("bed\0room")),
        stored("E1", "pir-1", t, Some(3), motion_in("kitchen")),
        stored(
            "E1",
            "pir-1",
            t,
            Some(4),
            Body::Status(Status {
                fw: Some("1.0\0".into()),
                ..Default::default()
            }),
        ),
        // Beyond the readings table's smallint.
        stored("E1", "pir-1", t, Some(5), vitals_hr(40_000)),
        // Beyond a timestamptz.
        stored("E1", "pir-1", i64::MIN, Some(6), motion_in("hall")),
        stored("E1\0", "pir-1", t, Some(7), motion_in("hall")),
        stored("E1", "pir-1", t, Some(8), motion_in("bath")),
    ];
    let refused = s.insert_readings_at(&batch, 42).await.unwrap();
    assert_eq!(
        refused.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![1, 3, 4, 5, 6]
    );
    for (r, field) in refused.iter().zip(["room", "fw", "hr", "ts", "elder_id"]) {
        assert!(r.reason.contains(&format!("`{field}`")), "{}", r.reason);
        // The reason names the field, never the value.
        assert!(
            !r.reason.contains("40000") && !r.reason.contains("bed"),
            "{}",
            r.reason
        );
    }
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 3, 8]);
    assert_eq!(s.intake_position().await.unwrap(), Some(42));

    // Everything refused: nothing stored, the position still recorded.
    let refused = s.insert_readings_at(&batch[1..2], 43).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].index, 0);
    assert_eq!(s.intake_position().await.unwrap(), Some(43));
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 3, 8]);
}

async fn readings_the_database_refuses_are_found_in_small_and_large_batches(b: Backend) {
    let s = &b.store;
    b.refuse_device_in_database("refuse-me").await;
    // A small batch (UNNEST on PostgreSQL) with one refused reading.
    let mut small = motions("pir-1", 1, 5);
    small[2] = stored(
        "E1",
        "refuse-me",
        1_700_000_000_000,
        Some(99),
        motion_in("hall"),
    );
    let refused = s.insert_readings_at(&small, 7).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].index, 2);
    assert!(
        refused[0].reason.starts_with("refused by the database ("),
        "{}",
        refused[0].reason
    );
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 2, 4, 5]);
    assert_eq!(s.intake_position().await.unwrap(), Some(7));

    // A large batch (COPY) with two, far apart: found by splitting, the
    // other 2,998 stored in order with the position, in one transaction.
    let mut big = motions("pir-2", 1, 3000);
    for i in [10, 2900] {
        big[i] = stored(
            "E1",
            "refuse-me",
            1_700_000_000_000,
            Some(i as u64),
            motion_in("hall"),
        );
    }
    let refused = s.insert_readings_at(&big, 8).await.unwrap();
    assert_eq!(
        refused.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![10, 2900]
    );
    let expected: Vec<u64> = (1..=3000).filter(|i| *i != 11 && *i != 2901).collect();
    assert_eq!(seqs_of(&b, "pir-2").await, expected);
    assert!(seqs_of(&b, "refuse-me").await.is_empty());
    assert_eq!(s.intake_position().await.unwrap(), Some(8));

    // The all-or-nothing write refuses the whole batch, as a refusal
    // (not an outage: retrying it would fail the same way).
    let err = s.insert_readings(&small).await.unwrap_err();
    assert!(err.is_refusal() && !err.is_outage(), "{err}");
    assert_eq!(seqs_of(&b, "pir-1").await, vec![1, 2, 4, 5]);
}

fn plan(id: &str, elder_id: &str, provider_id: &str) -> VisitPlan {
    VisitPlan {
        plan_id: id.into(),
        elder_id: elder_id.into(),
        provider_id: provider_id.into(),
        days: "mon,wed,fri".into(),
        window_start: "09:00".into(),
        window_end: "11:00".into(),
        length_min: 60,
        service: "bathing".into(),
    }
}

async fn providers_carers_and_plans_are_kept_and_deletes_refused_while_named(b: Backend) {
    let s = &b.store;
    let p1 = Provider {
        provider_id: "P1".into(),
        name: "阳光护理".into(),
        phone: Some("021-5555 0101".into()),
    };
    assert!(s.upsert_provider(&p1).await.unwrap(), "new");
    let p1b = Provider {
        phone: None,
        ..p1.clone()
    };
    assert!(!s.upsert_provider(&p1b).await.unwrap(), "updated");
    assert!(
        s.upsert_provider(&Provider {
            provider_id: "P2".into(),
            name: "Second".into(),
            phone: None,
        })
        .await
        .unwrap()
    );
    assert_eq!(s.list_providers().await.unwrap()[0], p1b);
    assert_eq!(s.list_providers().await.unwrap().len(), 2);

    let c1 = Carer {
        carer_id: "C1".into(),
        provider_id: "P1".into(),
        name: "张护工".into(),
    };
    assert!(s.upsert_carer(&c1).await.unwrap());
    assert!(!s.upsert_carer(&c1).await.unwrap());
    assert_eq!(s.list_carers().await.unwrap(), vec![c1.clone()]);
    // A carer of no registered provider: refused, nothing written.
    let orphan = Carer {
        carer_id: "C2".into(),
        provider_id: "P9".into(),
        ..c1.clone()
    };
    assert!(matches!(
        s.upsert_carer(&orphan).await,
        Err(StoreError::RegistryConflict(why)) if why.contains("P9")
    ));
    assert_eq!(s.list_carers().await.unwrap().len(), 1);

    s.upsert_elder(&full_elder("E1")).await.unwrap();
    let v1 = plan("V1", "E1", "P2");
    assert!(s.upsert_visit_plan(&v1).await.unwrap());
    let v1b = VisitPlan {
        days: "daily".into(),
        length_min: 720,
        ..v1.clone()
    };
    assert!(!s.upsert_visit_plan(&v1b).await.unwrap());
    assert_eq!(s.list_visit_plans().await.unwrap(), vec![v1b.clone()]);
    for bad in [plan("V2", "E9", "P1"), plan("V2", "E1", "P9")] {
        assert!(matches!(
            s.upsert_visit_plan(&bad).await,
            Err(StoreError::RegistryConflict(_))
        ));
    }

    // Named by a carer, or by a plan: not deleted.
    for p in ["P1", "P2"] {
        match s.delete_provider(p).await {
            Err(StoreError::RegistryConflict(why)) => assert!(why.contains(p), "{why}"),
            other => panic!("{}: {p}: {other:?}", b.name),
        }
    }
    assert_eq!(s.list_providers().await.unwrap().len(), 2);
    // An elder with a plan: not deleted either.
    assert_eq!(
        s.delete_elder("E1").await.unwrap(),
        ElderDeletion::HasVisitPlans(1)
    );

    assert!(s.delete_carer("C1").await.unwrap());
    assert!(!s.delete_carer("C1").await.unwrap());
    assert!(s.delete_provider("P1").await.unwrap());
    assert!(!s.delete_provider("P1").await.unwrap());
    assert!(s.delete_visit_plan("V1").await.unwrap());
    assert!(!s.delete_visit_plan("V1").await.unwrap());
    assert!(s.delete_provider("P2").await.unwrap());
    assert!(s.list_providers().await.unwrap().is_empty());
    assert_eq!(s.delete_elder("E1").await.unwrap(), ElderDeletion::Deleted);
}

async fn visit_events_keep_their_carer_and_action_in_any_batch(b: Backend) {
    let s = &b.store;
    let visit = |i: u64| {
        Body::Event(DeviceEvent {
            kind: EventType::Visit,
            confidence: None,
            carer: Some(format!("carer-{}", i % 7)),
            action: Some(if i.is_multiple_of(2) {
                VisitAction::In
            } else {
                VisitAction::Out
            }),
        })
    };
    // Small batches and large ones take different paths (PostgreSQL:
    // UNNEST and COPY): both keep the visit's fields.
    for (device, n) in [("small", 3u64), ("large", 2500)] {
        let batch: Vec<StoredReading> = (0..n)
            .map(|i| stored("E1", device, 1_000_000 + i as i64, Some(i), visit(i)))
            .collect();
        s.insert_readings(&batch).await.unwrap();
        let got = s
            .query_readings(&ReadingQuery {
                subject: ReadingSubject::Device(device.into()),
                from: None,
                to: None,
                streams: vec![Stream::Event],
                newest_first: false,
                after: None,
                limit: 10_000,
            })
            .await
            .unwrap();
        assert_eq!(got.len() as u64, n, "{}", b.name);
        for (r, want) in got.iter().zip(&batch) {
            assert_eq!(r.json, want.reading.body.to_json(), "{}", b.name);
        }
        assert_eq!(
            got[1].json,
            r#"{"type":"visit","carer":"carer-1","action":"out"}"#
        );
    }
}
