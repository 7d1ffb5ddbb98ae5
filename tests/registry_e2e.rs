//! End-to-end tests of the registry and telemetry services: the real
//! `eldercare` binary, real tonic clients over TCP, and real MQTT devices
//! (rumqttc). Every wait is on an event, or polls a condition where there
//! is no event to wait on, bounded by a generous deadline that only turns
//! a hang into a failure.
mod support;

use eldercare_proto::v1 as pb;
use rumqttc::MqttOptions;
use rumqttc::QoS;
use std::time::Duration;
use support::*;
use tonic::{Code, Status};

const ELDERS: &str = "elder_id,name,phone,address,district,community,home_lat,home_lon,safe_radius_m,flags\n\
E1,Test One,13800000001,1 Road,D1,C1,,,,lives_alone\n\
E2,Test Two,,,D1,C2,,,,\n\
E3,Test Three,,,D2,C3,31.2,121.4,500,dementia\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\n\
btn-1,sos_button,E1,,s-btn-1\n\
band-1,vital_band,E1,,s-band-1\n\
gps-1,gps_watch,E1,,s-gps-1\n\
band-2,vital_band,E2,,s-band-2\n";

impl Server {
    /// Starts the server and loads the test registry over gRPC.
    async fn with_registry() -> Server {
        let s = Server::with_tokens();
        let mut reg = s.registry("admin").await;
        for text in [ELDERS, DEVICES] {
            let r = reg
                .import(pb::ImportRequest { text: text.into() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.refused, 0, "{:?}", r.refused_rows);
        }
        s
    }
}

/// Options for device `user` logging in with `pass`.
fn options(addr: &str, user: &str, pass: &str) -> MqttOptions {
    mqtt_options(addr, &format!("{user}-test"), Some((user, pass)))
}

/// Connects `user` with `pass`; the CONNACK refusal as an error string.
async fn connect(addr: &str, user: &str, pass: &str) -> Result<Device, String> {
    connect_with(options(addr, user, pass)).await
}

/// The error of a call that must fail with `code`, its message containing
/// every one of `words`.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code, words: &[&str]) {
    let e = r.expect_err("the call should have been refused");
    assert_eq!(e.code(), code, "{e:?}");
    for w in words {
        assert!(e.message().contains(w), "{w:?} not in {:?}", e.message());
    }
}

fn ts(ms: i64) -> Option<eldercare_proto::wkt::Timestamp> {
    Some(eldercare_proto::wkt::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn ms(t: &Option<eldercare_proto::wkt::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn mask(paths: &[&str]) -> Option<eldercare_proto::wkt::FieldMask> {
    Some(eldercare_proto::wkt::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

fn elder(id: &str, name: &str, district: &str, community: &str) -> pb::Elder {
    pb::Elder {
        elder_id: id.into(),
        name: name.into(),
        district: district.into(),
        community: community.into(),
        ..Default::default()
    }
}

/// Polls the readings of `elder_id` (stored in batches, with no event to
/// wait on) until there are at least `want`.
async fn await_readings(t: &mut Telemetry, elder_id: &str, want: usize) -> Vec<pb::Reading> {
    let start = tokio::time::Instant::now();
    loop {
        let got = t
            .list_readings(pb::ListReadingsRequest {
                subject: Some(pb::list_readings_request::Subject::ElderId(elder_id.into())),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .readings;
        if got.len() >= want || start.elapsed() > DEADLINE {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn elders_are_created_read_listed_updated_and_deleted_with_clear_errors() {
    let s = Server::with_tokens();
    let mut reg = s.registry("admin").await;

    let full = pb::Elder {
        elder_id: "E1".into(),
        name: "Wang Li".into(),
        phone: "13800000001".into(),
        address: "1 Road, Flat 2".into(),
        district: "D1".into(),
        community: "C1".into(),
        home_lat: Some(31.230416),
        home_lon: Some(121.473701),
        safe_radius_m: Some(500.0),
        flags: vec!["lives_alone".into(), "dementia".into()],
        timezone: "Asia/Shanghai".into(),
        night_start: "22:00".into(),
        night_end: "06:30".into(),
        contact_name: "Wang Wei".into(),
        contact_phone: "13900000002".into(),
        check_in: "08:00-09:30".into(),
    };
    let created = reg
        .create_elder(pb::CreateElderRequest {
            elder: Some(full.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created, full);
    let got = reg
        .get_elder(pb::GetElderRequest {
            elder_id: "E1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, full, "every field kept");
    // Defaults are the import's.
    let minimal = reg
        .create_elder(pb::CreateElderRequest {
            elder: Some(elder("E2", "Li Na", "D1", "C2")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            minimal.timezone.as_str(),
            minimal.night_start.as_str(),
            minimal.night_end.as_str()
        ),
        ("Asia/Shanghai", "21:00", "07:00")
    );
    reg.create_elder(pb::CreateElderRequest {
        elder: Some(elder("E3", "Zhao Min", "D2", "C3")),
    })
    .await
    .unwrap();

    // Errors say which field and why.
    refused(
        reg.create_elder(pb::CreateElderRequest {
            elder: Some(elder("E1", "Again", "D1", "C1")),
        })
        .await,
        Code::AlreadyExists,
        &["E1"],
    );
    let bad = |f: fn(&mut pb::Elder)| {
        let mut e = elder("E9", "Someone", "D1", "C1");
        f(&mut e);
        pb::CreateElderRequest { elder: Some(e) }
    };
    refused(
        reg.create_elder(bad(|e| e.home_lat = Some(95.0))).await,
        Code::InvalidArgument,
        &["home_lat", "outside"],
    );
    refused(
        reg.create_elder(bad(|e| e.name.clear())).await,
        Code::InvalidArgument,
        &["missing required `name`"],
    );
    refused(
        reg.create_elder(bad(|e| e.flags = vec!["rich".into()]))
            .await,
        Code::InvalidArgument,
        &["unknown flag `rich`"],
    );
    refused(
        reg.create_elder(bad(|e| e.night_start = "9pm".into()))
            .await,
        Code::InvalidArgument,
        &["night_start", "HH:MM"],
    );
    refused(
        reg.create_elder(bad(|e| e.elder_id = "bad id".into()))
            .await,
        Code::InvalidArgument,
        &["elder_id"],
    );
    refused(
        reg.create_elder(pb::CreateElderRequest { elder: None })
            .await,
        Code::InvalidArgument,
        &["elder"],
    );
    refused(
        reg.get_elder(pb::GetElderRequest {
            elder_id: "E404".into(),
        })
        .await,
        Code::NotFound,
        &["E404"],
    );

    // An update mask changes only what it names; a named, unset field is cleared.
    let updated = reg
        .update_elder(pb::UpdateElderRequest {
            elder: Some(pb::Elder {
                elder_id: "E1".into(),
                phone: "13800000009".into(),
                ..Default::default()
            }),
            update_mask: mask(&["phone", "contact_name"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.phone, "13800000009");
    assert_eq!(updated.contact_name, "");
    assert_eq!(
        (updated.name.as_str(), updated.home_lat),
        ("Wang Li", Some(31.230416))
    );
    assert_eq!(
        reg.get_elder(pb::GetElderRequest {
            elder_id: "E1".into()
        })
        .await
        .unwrap()
        .into_inner(),
        updated
    );
    // Without a mask, the whole record is replaced.
    let replaced = reg
        .update_elder(pb::UpdateElderRequest {
            elder: Some(elder("E2", "Li Na", "D2", "C3")),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.district, "D2");
    refused(
        reg.update_elder(pb::UpdateElderRequest {
            elder: Some(elder("E404", "Nobody", "D1", "C1")),
            update_mask: None,
        })
        .await,
        Code::NotFound,
        &["E404"],
    );
    refused(
        reg.update_elder(pb::UpdateElderRequest {
            elder: Some(elder("E1", "x", "", "")),
            update_mask: mask(&["shoe_size"]),
        })
        .await,
        Code::InvalidArgument,
        &["update_mask", "shoe_size"],
    );
    refused(
        reg.update_elder(pb::UpdateElderRequest {
            elder: Some(pb::Elder {
                elder_id: "E1".into(),
                safe_radius_m: Some(-1.0),
                ..Default::default()
            }),
            update_mask: mask(&["safe_radius_m"]),
        })
        .await,
        Code::InvalidArgument,
        &["safe_radius_m"],
    );

    // Lists: in id order, filtered, paged.
    let list = |district: &str, community: &str, page_size: u32, page_token: String| {
        pb::ListEldersRequest {
            district: district.into(),
            community: community.into(),
            page_size,
            page_token,
        }
    };
    let all = reg
        .list_elders(list("", "", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = all.elders.iter().map(|e| e.elder_id.as_str()).collect();
    assert_eq!(
        (ids, all.next_page_token.as_str()),
        (vec!["E1", "E2", "E3"], "")
    );
    let p1 = reg
        .list_elders(list("D2", "", 1, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.elders[0].elder_id, "E2");
    assert!(!p1.next_page_token.is_empty());
    let p2 = reg
        .list_elders(list("D2", "", 1, p1.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.elders[0].elder_id, "E3");
    assert_eq!(p2.next_page_token, "", "the last page says so");
    let c3 = reg
        .list_elders(list("D2", "C3", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c3.elders.len(), 2);
    refused(
        reg.list_elders(list("", "", 5000, String::new())).await,
        Code::InvalidArgument,
        &["page_size"],
    );

    // An elder with devices cannot go.
    reg.create_device(pb::CreateDeviceRequest {
        device: Some(pb::Device {
            device_id: "btn-3".into(),
            kind: "sos_button".into(),
            elder_id: "E3".into(),
            ..Default::default()
        }),
        secret: String::new(),
    })
    .await
    .unwrap();
    refused(
        reg.delete_elder(pb::DeleteElderRequest {
            elder_id: "E3".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["E3", "1 device"],
    );
    reg.delete_device(pb::DeleteDeviceRequest {
        device_id: "btn-3".into(),
    })
    .await
    .unwrap();
    reg.delete_elder(pb::DeleteElderRequest {
        elder_id: "E3".into(),
    })
    .await
    .unwrap();
    refused(
        reg.get_elder(pb::GetElderRequest {
            elder_id: "E3".into(),
        })
        .await,
        Code::NotFound,
        &[],
    );
    refused(
        reg.delete_elder(pb::DeleteElderRequest {
            elder_id: "E3".into(),
        })
        .await,
        Code::NotFound,
        &["E3"],
    );
}

#[tokio::test]
async fn devices_are_managed_and_a_secret_is_shown_once_and_never_again() {
    let s = Server::with_registry().await;
    let mut reg = s.registry("admin").await;
    let band = |id: &str, elder_id: &str| pb::Device {
        device_id: id.into(),
        kind: "vital_band".into(),
        elder_id: elder_id.into(),
        ..Default::default()
    };

    // Created without a secret: one is generated and returned, once.
    let created = reg
        .create_device(pb::CreateDeviceRequest {
            device: Some(band("band-9", "E2")),
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    assert_eq!(secret.len(), 32);
    let dev = created.device.unwrap();
    assert_eq!((dev.heartbeat_s, dev.elder_id.as_str()), (300, "E2"));
    // It logs in with that secret, and nothing shows the secret again.
    let mut d = connect(&s.mqtt, "band-9", &secret).await.expect("logs in");
    let got = reg
        .get_device(pb::GetDeviceRequest {
            device_id: "band-9".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = reg
        .list_devices(pb::ListDevicesRequest {
            elder_id: "E2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    use prost::Message;
    for bytes in [got.encode_to_vec(), listed.encode_to_vec()] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is never readable afterwards"
        );
    }
    assert_eq!(got, dev);
    let ids: Vec<&str> = listed
        .devices
        .iter()
        .map(|d| d.device_id.as_str())
        .collect();
    assert_eq!(ids, ["band-2", "band-9"]);

    // A secret the request gives is not echoed.
    let given = reg
        .create_device(pb::CreateDeviceRequest {
            device: Some(pb::Device {
                device_id: "pir-1".into(),
                kind: "pir".into(),
                elder_id: "E1".into(),
                room: "bathroom".into(),
                heartbeat_s: 60,
            }),
            secret: "my-own-secret".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(given.secret, "");
    connect(&s.mqtt, "pir-1", "my-own-secret")
        .await
        .expect("logs in with the given secret");

    refused(
        reg.create_device(pb::CreateDeviceRequest {
            device: Some(band("band-9", "E1")),
            secret: String::new(),
        })
        .await,
        Code::AlreadyExists,
        &["band-9"],
    );
    refused(
        reg.create_device(pb::CreateDeviceRequest {
            device: Some(band("band-8", "E404")),
            secret: String::new(),
        })
        .await,
        Code::NotFound,
        &["unknown elder_id `E404`"],
    );
    refused(
        reg.create_device(pb::CreateDeviceRequest {
            device: Some(pb::Device {
                kind: "toaster".into(),
                ..band("band-8", "E1")
            }),
            secret: String::new(),
        })
        .await,
        Code::InvalidArgument,
        &["unknown kind `toaster`"],
    );
    refused(
        reg.create_device(pb::CreateDeviceRequest {
            device: Some(pb::Device {
                heartbeat_s: 5,
                ..band("band-8", "E1")
            }),
            secret: String::new(),
        })
        .await,
        Code::InvalidArgument,
        &["heartbeat_s", "10–86400"],
    );
    refused(
        reg.get_device(pb::GetDeviceRequest {
            device_id: "nope".into(),
        })
        .await,
        Code::NotFound,
        &["nope"],
    );

    // Update: move band-9 to E1 with a shorter heartbeat. Its secret stays,
    // and its session is untouched.
    let moved = reg
        .update_device(pb::UpdateDeviceRequest {
            device: Some(pb::Device {
                device_id: "band-9".into(),
                elder_id: "E1".into(),
                heartbeat_s: 120,
                ..Default::default()
            }),
            update_mask: mask(&["elder_id", "heartbeat_s"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            moved.kind.as_str(),
            moved.elder_id.as_str(),
            moved.heartbeat_s
        ),
        ("vital_band", "E1", 120)
    );
    connect(&s.mqtt, "band-9", &secret)
        .await
        .expect("an update keeps the secret");
    refused(
        reg.update_device(pb::UpdateDeviceRequest {
            device: Some(band("band-9", "E404")),
            update_mask: mask(&["elder_id"]),
        })
        .await,
        Code::NotFound,
        &["E404"],
    );
    refused(
        reg.update_device(pb::UpdateDeviceRequest {
            device: Some(band("ghost", "E1")),
            update_mask: None,
        })
        .await,
        Code::NotFound,
        &["ghost"],
    );
    refused(
        reg.update_device(pb::UpdateDeviceRequest {
            device: Some(band("band-9", "E1")),
            update_mask: mask(&["secret"]),
        })
        .await,
        Code::InvalidArgument,
        &["update_mask", "secret"],
    );

    // Lists page in id order.
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = reg
            .list_devices(pb::ListDevicesRequest {
                elder_id: "E1".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.devices.into_iter().map(|d| d.device_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids, ["band-1", "band-9", "btn-1", "gps-1", "pir-1"]);

    refused(
        reg.delete_device(pb::DeleteDeviceRequest {
            device_id: "ghost".into(),
        })
        .await,
        Code::NotFound,
        &["ghost"],
    );
    refused(
        reg.rotate_device_secret(pb::RotateDeviceSecretRequest {
            device_id: "ghost".into(),
        })
        .await,
        Code::NotFound,
        &["ghost"],
    );
    refused(
        reg.delete_device(pb::DeleteDeviceRequest {
            device_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        &["device_id"],
    );
    drop(d.client.disconnect().await);
    closed(&mut d).await;
}

#[tokio::test]
async fn import_over_grpc_reports_counts_refused_rows_by_line_and_secrets_once() {
    let s = Server::with_tokens();
    let mut reg = s.registry("admin").await;
    let elders = "elder_id,name,district,home_lat\n\
                  E1,\"Wang, Li\",D1,31.2\n\
                  E2,,D1,\n\
                  E3,Zhao,D2,95\n\
                  E4,Sun,D2,\n";
    let r = reg
        .import(pb::ImportRequest {
            text: elders.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.list, pb::RegistryList::Elders as i32);
    assert_eq!((r.imported, r.updated, r.refused), (2, 0, 2));
    let lines: Vec<u32> = r.refused_rows.iter().map(|x| x.line).collect();
    assert_eq!(lines, [3, 4]);
    assert!(
        r.refused_rows[0].reason.contains("name"),
        "{:?}",
        r.refused_rows
    );
    assert!(
        r.refused_rows[1].reason.contains("home_lat"),
        "{:?}",
        r.refused_rows
    );
    let e1 = reg
        .get_elder(pb::GetElderRequest {
            elder_id: "E1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((e1.name.as_str(), e1.home_lat), ("Wang, Li", Some(31.2)));

    // JSON lines; a device without a secret gets one, shown in this answer only.
    let devices = "{\"device_id\": \"btn-1\", \"kind\": \"sos_button\", \"elder_id\": \"E1\", \"secret\": \"s-btn-1\"}\n\
                   {\"device_id\": \"band-1\", \"kind\": \"vital_band\", \"elder_id\": \"E1\"}\n\
                   {\"device_id\": \"band-2\", \"kind\": \"vital_band\", \"elder_id\": \"E2\"}\n";
    let r = reg
        .import(pb::ImportRequest {
            text: devices.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.list, pb::RegistryList::Devices as i32);
    assert_eq!((r.imported, r.refused), (2, 1));
    assert_eq!(r.refused_rows[0].line, 3);
    assert!(
        r.refused_rows[0].reason.contains("unknown elder_id `E2`"),
        "{:?}",
        r.refused_rows
    );
    assert_eq!(r.generated_secrets.len(), 1);
    let issued = &r.generated_secrets[0];
    assert_eq!(issued.device_id, "band-1");
    connect(&s.mqtt, "band-1", &issued.secret)
        .await
        .expect("the generated secret works");
    connect(&s.mqtt, "btn-1", "s-btn-1")
        .await
        .expect("the given secret works");

    // Idempotent: the same file again updates, and issues no secret.
    let again = reg
        .import(pb::ImportRequest {
            text: devices.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.imported, again.updated), (0, 2));
    assert!(again.generated_secrets.is_empty());
    assert!(again.rekeyed_devices.is_empty());

    // A file giving a connected device a new secret revokes the old one
    // like a rotation: its session is closed.
    let mut btn = connect(&s.mqtt, "btn-1", "s-btn-1").await.unwrap();
    let rekey = reg
        .import(pb::ImportRequest {
            text: "device_id,kind,elder_id,secret\nbtn-1,sos_button,E1,s-btn-1-v2\n".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rekey.updated, rekey.rekeyed_devices.as_slice()),
        (1, ["btn-1".to_string()].as_slice())
    );
    closed(&mut btn).await;
    let e = connect(&s.mqtt, "btn-1", "s-btn-1")
        .await
        .err()
        .expect("the old secret no longer logs in");
    assert!(e.contains("BadUserNamePassword"), "{e}");
    connect(&s.mqtt, "btn-1", "s-btn-1-v2")
        .await
        .expect("the imported secret logs in");

    refused(
        reg.import(pb::ImportRequest {
            text: "colour,size\nred,9\n".into(),
        })
        .await,
        Code::InvalidArgument,
        &["elders list", "devices list"],
    );
}

#[tokio::test]
async fn rotation_closes_the_live_session_refuses_the_old_secret_and_the_new_one_works() {
    let s = Server::with_registry().await;
    let mut reg = s.registry("admin").await;
    let mut tel = s.telemetry("operator").await;
    let mut sub = s.subscribe(0).await;

    // The button is connected, with a last will as devices should set.
    let mut o = options(&s.mqtt, "btn-1", "s-btn-1");
    o.set_last_will(rumqttc::LastWill::new(
        "eldercare/v1/btn-1/status",
        r#"{"online": false}"#,
        QoS::AtLeastOnce,
        false,
    ));
    let mut old = connect_with(o).await.expect("connects with its secret");

    let r = reg
        .rotate_device_secret(pb::RotateDeviceSecretRequest {
            device_id: "btn-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.device_id.as_str(), r.sessions_closed), ("btn-1", 1));
    assert_eq!(r.secret.len(), 32);
    // The connected session is closed by the server.
    closed(&mut old).await;
    assert_eq!(
        s.await_metric("eldercare_mqtt_sessions_closed_total", |v| v >= 1.0)
            .await,
        1.0
    );

    // The old secret is refused at CONNECT.
    let e = connect(&s.mqtt, "btn-1", "s-btn-1")
        .await
        .err()
        .expect("the old secret no longer logs in");
    assert!(e.contains("BadUserNamePassword"), "{e}");

    // The new one works, and what it sends is accepted.
    let new = connect(&s.mqtt, "btn-1", &r.secret)
        .await
        .expect("the new secret logs in");
    publish(
        &new,
        "eldercare/v1/btn-1/event",
        format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    )
    .await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.device_id.as_str(), a.elder_id.as_str()),
        ("sos", "btn-1", "E1")
    );

    // The session was ended on purpose: the broker dropped its last will,
    // so no "offline" status was stored ahead of the SOS.
    let stored = await_readings(&mut tel, "E1", 1).await;
    let streams: Vec<&str> = stored.iter().map(|r| r.stream.as_str()).collect();
    assert_eq!(streams, ["event"]);

    // A rotation with nothing connected closes nothing.
    drop(new);
    let r2 = reg
        .rotate_device_secret(pb::RotateDeviceSecretRequest {
            device_id: "band-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.sessions_closed, 0);
    assert_ne!(r2.secret, r.secret);
}

#[tokio::test]
async fn a_deleted_device_is_disconnected_refused_and_forgotten_by_the_engine() {
    let s = Server::with_registry().await;
    let mut reg = s.registry("admin").await;
    let mut tel = s.telemetry("operator").await;
    let engine_devices = s
        .await_metric("eldercare_rule_engine_devices", |v| v >= 4.0)
        .await;
    assert_eq!(engine_devices, 4.0);

    let mut band = connect(&s.mqtt, "band-1", "s-band-1").await.unwrap();
    let t = now_ms();
    publish(
        &band,
        "eldercare/v1/band-1/vitals",
        format!(r#"{{"ts": {t}, "hr": 72, "spo2": 97}}"#),
    )
    .await;
    assert_eq!(await_readings(&mut tel, "E1", 1).await.len(), 1);

    let r = reg
        .delete_device(pb::DeleteDeviceRequest {
            device_id: "band-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sessions_closed, 1);
    closed(&mut band).await;
    // The engine learns it at once, not at its next periodic refresh.
    assert_eq!(
        s.await_metric("eldercare_rule_engine_devices", |v| v == 3.0)
            .await,
        3.0
    );
    let e = connect(&s.mqtt, "band-1", "s-band-1")
        .await
        .err()
        .expect("a deleted device cannot connect");
    // As for any unknown id: the same answer as a wrong secret.
    assert!(e.contains("BadUserNamePassword"), "{e}");
    refused(
        reg.get_device(pb::GetDeviceRequest {
            device_id: "band-1".into(),
        })
        .await,
        Code::NotFound,
        &[],
    );

    // The same id registered again for another elder: the engine must not
    // attribute its readings to the old one.
    let created = reg
        .create_device(pb::CreateDeviceRequest {
            device: Some(pb::Device {
                device_id: "band-1".into(),
                kind: "vital_band".into(),
                elder_id: "E2".into(),
                ..Default::default()
            }),
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let again = connect(&s.mqtt, "band-1", &created.secret).await.unwrap();
    publish(
        &again,
        "eldercare/v1/band-1/vitals",
        format!(r#"{{"ts": {}, "hr": 64, "spo2": 98}}"#, now_ms()),
    )
    .await;
    let e2 = await_readings(&mut tel, "E2", 1).await;
    assert_eq!(e2.len(), 1);
    assert!(e2[0].json.contains("64"), "{:?}", e2[0]);
    let e1 = await_readings(&mut tel, "E1", 1).await;
    assert_eq!(e1.len(), 1, "E1 keeps only its own past reading");
    assert!(e1[0].json.contains("72"), "{:?}", e1[0]);
}

#[tokio::test]
async fn telemetry_of_an_elder_and_a_device_over_a_range_and_the_latest_of_each_stream() {
    let s = Server::with_registry().await;
    let mut tel = s.telemetry("viewer").await;
    let band = connect(&s.mqtt, "band-1", "s-band-1").await.unwrap();
    let gps = connect(&s.mqtt, "gps-1", "s-gps-1").await.unwrap();
    let band2 = connect(&s.mqtt, "band-2", "s-band-2").await.unwrap();
    let now = now_ms();
    let min = 60_000;
    // Heart rate each minute for the last 40 minutes, newest 79.
    for i in 0..40 {
        publish(
            &band,
            "eldercare/v1/band-1/vitals",
            format!(
                r#"{{"ts": {}, "hr": {}, "spo2": 97}}"#,
                now - (40 - i) * min,
                40 + i
            ),
        )
        .await;
    }
    publish(
        &band,
        "eldercare/v1/band-1/status",
        format!(r#"{{"ts": {}, "battery_pct": 80}}"#, now - 5 * min),
    )
    .await;
    for (i, lat) in [31.20, 31.21, 31.22].iter().enumerate() {
        publish(
            &gps,
            "eldercare/v1/gps-1/location",
            format!(
                r#"{{"ts": {}, "lat": {lat}, "lon": 121.4}}"#,
                now - (20 - i as i64 * 5) * min
            ),
        )
        .await;
    }
    publish(
        &band2,
        "eldercare/v1/band-2/vitals",
        format!(r#"{{"ts": {}, "hr": 90}}"#, now - min),
    )
    .await;
    assert_eq!(await_readings(&mut tel, "E1", 44).await.len(), 44);
    assert_eq!(await_readings(&mut tel, "E2", 1).await.len(), 1);

    let req = |subject: pb::list_readings_request::Subject| pb::ListReadingsRequest {
        subject: Some(subject),
        ..Default::default()
    };
    use pb::list_readings_request::Subject;

    // The last 30 minutes of heart rate, newest first, in pages of 7.
    let mut r = req(Subject::ElderId("E1".into()));
    r.from = ts(now - 30 * min);
    r.to = ts(now);
    r.streams = vec!["vitals".into()];
    r.page_size = 7;
    let mut hr = Vec::new();
    loop {
        let page = tel.list_readings(r.clone()).await.unwrap().into_inner();
        assert!(page.readings.len() <= 7);
        for x in &page.readings {
            assert_eq!(
                (x.device_id.as_str(), x.stream.as_str()),
                ("band-1", "vitals")
            );
            let v: serde_json::Value = serde_json::from_str(&x.json).unwrap();
            hr.push((ms(&x.ts), v["hr"].as_u64().unwrap()));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        r.page_token = page.next_page_token;
    }
    let want: Vec<(i64, u64)> = (10..40)
        .rev()
        .map(|i| (now - (40 - i) * min, 40 + i as u64))
        .collect();
    assert_eq!(
        hr, want,
        "30 readings, newest first, none skipped or repeated"
    );

    // Where the GPS watch was, oldest first, by device.
    let mut r = req(Subject::DeviceId("gps-1".into()));
    r.order = pb::ReadingOrder::OldestFirst as i32;
    let fixes = tel.list_readings(r).await.unwrap().into_inner().readings;
    let lats: Vec<f64> = fixes
        .iter()
        .map(|x| {
            serde_json::from_str::<serde_json::Value>(&x.json).unwrap()["lat"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(lats, [31.20, 31.21, 31.22]);
    // A range selects by event time: from inclusive, to exclusive.
    let mut r = req(Subject::DeviceId("gps-1".into()));
    r.from = ts(now - 15 * min);
    r.to = ts(now - 10 * min);
    let one = tel.list_readings(r).await.unwrap().into_inner().readings;
    assert_eq!(one.len(), 1);
    assert_eq!(ms(&one[0].ts), now - 15 * min);

    // The latest of each stream of each device of E1.
    let latest = tel
        .latest_readings(pb::LatestReadingsRequest {
            elder_id: "E1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .readings;
    let got: Vec<(&str, &str, i64)> = latest
        .iter()
        .map(|x| (x.device_id.as_str(), x.stream.as_str(), ms(&x.ts)))
        .collect();
    assert_eq!(
        got,
        [
            ("gps-1", "location", now - 10 * min),
            ("band-1", "status", now - 5 * min),
            ("band-1", "vitals", now - min),
        ]
    );
    assert!(latest[2].json.contains("\"hr\":79"), "{:?}", latest[2]);

    // Vital signs by the hour: the 40 minutes fall in one or two UTC
    // hours; each hour's heart rate is that of its minutes.
    let hour = 3_600_000;
    let hourly = |from: i64, to: i64, elder: &str| pb::VitalsHourlyRequest {
        elder_id: elder.into(),
        from: ts(from),
        to: ts(to),
    };
    let hours = tel
        .vitals_hourly(hourly(now - 3 * hour, now, "E1"))
        .await
        .unwrap()
        .into_inner()
        .hours;
    let mut want: Vec<(i64, Vec<u64>)> = Vec::new();
    for i in 0..40 {
        let h = (now - (40 - i) * min) / hour * hour;
        match want.last_mut() {
            Some((last, hrs)) if *last == h => hrs.push(40 + i as u64),
            _ => want.push((h, vec![40 + i as u64])),
        }
    }
    let got: Vec<(i64, u32, Option<pb::VitalStat>, f64)> = hours
        .iter()
        .map(|h| {
            (
                ms(&h.hour),
                h.readings,
                h.hr,
                h.spo2.map(|s| s.avg).unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(i64, u32, Option<pb::VitalStat>, f64)> = want
        .iter()
        .map(|(h, hrs)| {
            let n = hrs.len() as u32;
            let stat = pb::VitalStat {
                count: n,
                avg: hrs.iter().sum::<u64>() as f64 / f64::from(n),
                min: *hrs.iter().min().unwrap() as f64,
                max: *hrs.iter().max().unwrap() as f64,
            };
            (*h, n, Some(stat), 97.0)
        })
        .collect();
    assert_eq!(got, want);
    assert!(hours.iter().all(|h| h.rr.is_none() && h.sys.is_none()));
    refused(
        tel.vitals_hourly(hourly(now - 401 * 24 * hour, now, "E1"))
            .await,
        Code::InvalidArgument,
        &["400 days"],
    );
    refused(
        tel.vitals_hourly(pb::VitalsHourlyRequest {
            elder_id: "E1".into(),
            from: None,
            to: ts(now),
        })
        .await,
        Code::InvalidArgument,
        &["`from`"],
    );
    refused(
        tel.vitals_hourly(hourly(now - hour, now, "E404")).await,
        Code::NotFound,
        &["E404"],
    );

    // Bad requests.
    let mut bad = req(Subject::ElderId("E1".into()));
    bad.from = ts(now);
    bad.to = ts(now - min);
    refused(
        tel.list_readings(bad.clone()).await,
        Code::InvalidArgument,
        &["from", "before", "to"],
    );
    bad.to = bad.from;
    refused(
        tel.list_readings(bad).await,
        Code::InvalidArgument,
        &["from"],
    );
    let mut bad = req(Subject::ElderId("E1".into()));
    bad.page_size = 5000;
    refused(
        tel.list_readings(bad).await,
        Code::InvalidArgument,
        &["page_size", "1000"],
    );
    let mut bad = req(Subject::ElderId("E1".into()));
    bad.streams = vec!["heart".into()];
    refused(
        tel.list_readings(bad).await,
        Code::InvalidArgument,
        &["unknown stream `heart`"],
    );
    let mut bad = req(Subject::ElderId("E1".into()));
    bad.to = Some(eldercare_proto::wkt::Timestamp {
        seconds: 1,
        nanos: 2_000_000_000,
    });
    refused(
        tel.list_readings(bad).await,
        Code::InvalidArgument,
        &["`to`"],
    );
    let mut bad = req(Subject::ElderId("E1".into()));
    bad.page_token = "garbage".into();
    refused(
        tel.list_readings(bad).await,
        Code::InvalidArgument,
        &["page_token"],
    );
    refused(
        tel.list_readings(pb::ListReadingsRequest::default()).await,
        Code::InvalidArgument,
        &["elder_id", "device_id"],
    );
    refused(
        tel.list_readings(req(Subject::ElderId("E404".into())))
            .await,
        Code::NotFound,
        &["E404"],
    );
    refused(
        tel.list_readings(req(Subject::DeviceId("ghost".into())))
            .await,
        Code::NotFound,
        &["ghost"],
    );
    refused(
        tel.latest_readings(pb::LatestReadingsRequest {
            elder_id: "E404".into(),
        })
        .await,
        Code::NotFound,
        &["E404"],
    );
}

#[tokio::test]
async fn roles_only_admin_writes_the_registry_and_admin_reads_no_telemetry() {
    let s = Server::with_registry().await;
    let create = || pb::CreateElderRequest {
        elder: Some(elder("E9", "Someone", "D1", "C1")),
    };
    for role in ["operator", "dispatcher", "viewer"] {
        let mut reg = s.registry(role).await;
        refused(
            reg.create_elder(create()).await,
            Code::PermissionDenied,
            &[role],
        );
        refused(
            reg.delete_device(pb::DeleteDeviceRequest {
                device_id: "btn-1".into(),
            })
            .await,
            Code::PermissionDenied,
            &[],
        );
        refused(
            reg.rotate_device_secret(pb::RotateDeviceSecretRequest {
                device_id: "btn-1".into(),
            })
            .await,
            Code::PermissionDenied,
            &[],
        );
        refused(
            reg.import(pb::ImportRequest {
                text: ELDERS.into(),
            })
            .await,
            Code::PermissionDenied,
            &[],
        );
        // Reading the registry is allowed.
        let e = reg
            .get_elder(pb::GetElderRequest {
                elder_id: "E1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.name, "Test One");
        // And telemetry.
        s.telemetry(role)
            .await
            .latest_readings(pb::LatestReadingsRequest {
                elder_id: "E1".into(),
            })
            .await
            .unwrap();
    }
    refused(
        s.registry("none").await.create_elder(create()).await,
        Code::Unauthenticated,
        &[],
    );
    refused(
        s.registry("none")
            .await
            .list_elders(pb::ListEldersRequest::default())
            .await,
        Code::Unauthenticated,
        &[],
    );
    refused(
        s.telemetry("none")
            .await
            .latest_readings(pb::LatestReadingsRequest {
                elder_id: "E1".into(),
            })
            .await,
        Code::Unauthenticated,
        &[],
    );
    let mut admin_tel = s.telemetry("admin").await;
    refused(
        admin_tel
            .list_readings(pb::ListReadingsRequest {
                subject: Some(pb::list_readings_request::Subject::ElderId("E1".into())),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["admin"],
    );
    refused(
        admin_tel
            .latest_readings(pb::LatestReadingsRequest {
                elder_id: "E1".into(),
            })
            .await,
        Code::PermissionDenied,
        &[],
    );
    // Nothing the refused calls asked for happened.
    refused(
        s.registry("admin")
            .await
            .get_elder(pb::GetElderRequest {
                elder_id: "E9".into(),
            })
            .await,
        Code::NotFound,
        &[],
    );
}

#[tokio::test]
async fn health_and_reflection_list_the_registry_and_telemetry_services() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let s = Server::with_tokens();
    let ch = s.channel().await;
    for service in [
        "eldercare.v1.RegistryService",
        "eldercare.v1.TelemetryService",
    ] {
        let h = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.status, ServingStatus::Serving as i32, "{service}");
    }
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer: {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "eldercare.v1.RegistryService",
        "eldercare.v1.TelemetryService",
    ] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
}

fn status_code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn every_role_against_every_registry_and_telemetry_rpc() {
    let s = Server::with_registry().await;
    const READ: &[&str] = &["operator", "dispatcher", "admin", "viewer"];
    const WRITE: &[&str] = &["admin"];
    const TELEMETRY: &[&str] = &["operator", "dispatcher", "viewer"];
    let table: &[(&str, &[&str])] = &[
        ("CreateElder", WRITE),
        ("UpdateElder", WRITE),
        ("GetElder", READ),
        ("ListElders", READ),
        ("DeleteElder", WRITE),
        ("CreateDevice", WRITE),
        ("UpdateDevice", WRITE),
        ("GetDevice", READ),
        ("ListDevices", READ),
        ("DeleteDevice", WRITE),
        ("RotateDeviceSecret", WRITE),
        ("Import", WRITE),
        ("UpsertProvider", WRITE),
        ("ListProviders", READ),
        ("DeleteProvider", WRITE),
        ("UpsertCarer", WRITE),
        ("ListCarers", READ),
        ("DeleteCarer", WRITE),
        ("UpsertVisitPlan", WRITE),
        ("ListVisitPlans", READ),
        ("DeleteVisitPlan", WRITE),
        ("ListReadings", TELEMETRY),
        ("LatestReadings", TELEMETRY),
        ("VitalsHourly", TELEMETRY),
    ];
    for role in ["operator", "dispatcher", "admin", "viewer", "none"] {
        let mut reg = s.registry(role).await;
        let mut tel = s.telemetry(role).await;
        for (rpc, roles) in table {
            // Requests that, when allowed, fail (or succeed) for other
            // reasons than who is asking; nothing here changes the registry.
            let got = match *rpc {
                "CreateElder" => {
                    status_code(reg.create_elder(pb::CreateElderRequest::default()).await)
                }
                "UpdateElder" => {
                    status_code(reg.update_elder(pb::UpdateElderRequest::default()).await)
                }
                "GetElder" => status_code(
                    reg.get_elder(pb::GetElderRequest {
                        elder_id: "E1".into(),
                    })
                    .await,
                ),
                "ListElders" => {
                    status_code(reg.list_elders(pb::ListEldersRequest::default()).await)
                }
                "DeleteElder" => status_code(
                    reg.delete_elder(pb::DeleteElderRequest {
                        elder_id: "nobody".into(),
                    })
                    .await,
                ),
                "CreateDevice" => {
                    status_code(reg.create_device(pb::CreateDeviceRequest::default()).await)
                }
                "UpdateDevice" => {
                    status_code(reg.update_device(pb::UpdateDeviceRequest::default()).await)
                }
                "GetDevice" => status_code(
                    reg.get_device(pb::GetDeviceRequest {
                        device_id: "btn-1".into(),
                    })
                    .await,
                ),
                "ListDevices" => {
                    status_code(reg.list_devices(pb::ListDevicesRequest::default()).await)
                }
                "DeleteDevice" => status_code(
                    reg.delete_device(pb::DeleteDeviceRequest {
                        device_id: "nothing".into(),
                    })
                    .await,
                ),
                "RotateDeviceSecret" => status_code(
                    reg.rotate_device_secret(pb::RotateDeviceSecretRequest {
                        device_id: "nothing".into(),
                    })
                    .await,
                ),
                "Import" => status_code(
                    reg.import(pb::ImportRequest {
                        text: "nonsense".into(),
                    })
                    .await,
                ),
                "UpsertProvider" => status_code(
                    reg.upsert_provider(pb::UpsertProviderRequest::default())
                        .await,
                ),
                "ListProviders" => status_code(
                    reg.list_providers(pb::ListProvidersRequest::default())
                        .await,
                ),
                "DeleteProvider" => status_code(
                    reg.delete_provider(pb::DeleteProviderRequest {
                        provider_id: "nobody".into(),
                    })
                    .await,
                ),
                "UpsertCarer" => {
                    status_code(reg.upsert_carer(pb::UpsertCarerRequest::default()).await)
                }
                "ListCarers" => {
                    status_code(reg.list_carers(pb::ListCarersRequest::default()).await)
                }
                "DeleteCarer" => status_code(
                    reg.delete_carer(pb::DeleteCarerRequest {
                        carer_id: "nobody".into(),
                    })
                    .await,
                ),
                "UpsertVisitPlan" => status_code(
                    reg.upsert_visit_plan(pb::UpsertVisitPlanRequest::default())
                        .await,
                ),
                "ListVisitPlans" => status_code(
                    reg.list_visit_plans(pb::ListVisitPlansRequest::default())
                        .await,
                ),
                "DeleteVisitPlan" => status_code(
                    reg.delete_visit_plan(pb::DeleteVisitPlanRequest {
                        plan_id: "nothing".into(),
                    })
                    .await,
                ),
                "ListReadings" => {
                    status_code(tel.list_readings(pb::ListReadingsRequest::default()).await)
                }
                "LatestReadings" => status_code(
                    tel.latest_readings(pb::LatestReadingsRequest {
                        elder_id: "E1".into(),
                    })
                    .await,
                ),
                "VitalsHourly" => status_code(
                    tel.vitals_hourly(pb::VitalsHourlyRequest {
                        elder_id: "E1".into(),
                        ..Default::default()
                    })
                    .await,
                ),
                other => unreachable!("{other}"),
            };
            if role == "none" {
                assert_eq!(got, Code::Unauthenticated, "{rpc} without a token");
            } else if roles.contains(&role) {
                assert!(
                    !matches!(got, Code::Unauthenticated | Code::PermissionDenied),
                    "{role} may call {rpc}, got {got:?}"
                );
            } else {
                assert_eq!(got, Code::PermissionDenied, "{role} must not call {rpc}");
            }
        }
    }
}

/// The first SUBACK a device receives.
async fn suback(d: &mut Device) -> rumqttc::mqttbytes::v4::SubAck {
    loop {
        match tokio::time::timeout(DEADLINE, d.events.recv())
            .await
            .expect("no SUBACK")
            .expect("connection ended")
        {
            rumqttc::Packet::SubAck(a) => return a,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_gateway_speaks_for_its_homes_devices_and_for_no_one_else() {
    use rumqttc::mqttbytes::v4::SubscribeReasonCode;
    let s = Server::with_registry().await;
    let mut reg = s.registry("admin").await;
    let import = |text: &'static str| pb::ImportRequest { text: text.into() };
    let r = reg
        .import(import(
            "device_id,kind,elder_id,room,secret\ngw-1,gateway,E1,,s-gw-1\n",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.refused, 0, "{:?}", r.refused_rows);
    let mut sub = s.subscribe(0).await;
    let mut gw = connect(&s.mqtt, "gw-1", "s-gw-1").await.unwrap();

    // For a device of its elder: taken as that device's own message.
    sos(&gw, "btn-1").await;
    let a = next(&mut sub).await.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.elder_id.as_str(), a.device_id.as_str()),
        ("sos", "E1", "btn-1")
    );
    // For another elder's device: refused, counted, nothing raised.
    publish(
        &gw,
        "eldercare/v1/band-2/event",
        format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    )
    .await;
    assert_eq!(
        s.await_counter("eldercare_ingest_refused_total", "topic_not_owned", 1)
            .await,
        1
    );
    // A device registered to its elder later is covered at once.
    let r = reg
        .import(import(
            "device_id,kind,elder_id,room,secret\nbtn-9,sos_button,E1,,s-btn-9\n",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.refused, 0);
    low_battery(&gw, "btn-9").await;
    let a = next(&mut sub).await.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.elder_id.as_str(), a.device_id.as_str()),
        ("low_battery", "E1", "btn-9")
    );

    // Commands: its devices' and its own, no one else's.
    gw.client
        .subscribe("eldercare/v1/btn-1/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let ack = suback(&mut gw).await;
    assert!(matches!(
        ack.return_codes[..],
        [SubscribeReasonCode::Success(_)]
    ));
    gw.client
        .subscribe("eldercare/v1/band-2/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let ack = suback(&mut gw).await;
    assert_eq!(ack.return_codes, [SubscribeReasonCode::Failure]);

    // An ordinary device still speaks only for itself.
    let band = connect(&s.mqtt, "band-1", "s-band-1").await.unwrap();
    sos(&band, "btn-1").await;
    assert_eq!(
        s.await_counter("eldercare_ingest_refused_total", "topic_not_owned", 2)
            .await,
        2
    );
    // Nothing was lost or raised by the refused messages: the next alert
    // is the next real one.
    low_battery(&gw, "gps-1").await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.alert.unwrap().device_id, "gps-1");
    assert_eq!(ev.seq, 3);
}

/// A status saying device `id`'s battery is at 10 %, sent by `d`.
async fn low_battery(d: &Device, id: &str) {
    publish(
        d,
        &format!("eldercare/v1/{id}/status"),
        format!(r#"{{"ts": {}, "battery_pct": 10}}"#, now_ms()),
    )
    .await;
}

#[tokio::test]
async fn a_device_connecting_again_takes_its_session_over_without_its_last_will() {
    let s = Server::with_registry().await;
    let mut tel = s.telemetry("viewer").await;
    let with_will = || {
        let mut o = options(&s.mqtt, "band-1", "s-band-1");
        o.set_last_will(rumqttc::LastWill::new(
            "eldercare/v1/band-1/status",
            r#"{"online": false}"#,
            QoS::AtLeastOnce,
            false,
        ));
        o
    };
    // Connected twice under the same client id, as a device reconnecting
    // before its old connection is noticed gone: the new session takes
    // the old one over...
    // A second connection of the device under another client id is
    // another session: it takes nothing over, and does not stop the
    // will below.
    let _other = connect_with(mqtt_options(
        &s.mqtt,
        "band-1-other",
        Some(("band-1", "s-band-1")),
    ))
    .await
    .unwrap();
    let mut old = connect_with(with_will()).await.unwrap();
    // The new session's event loop in a task of ours, to drop it at will.
    let (new, mut el) = rumqttc::AsyncClient::new(with_will(), 10);
    let (up_tx, up) = tokio::sync::oneshot::channel();
    let new_loop = tokio::spawn(async move {
        let mut up_tx = Some(up_tx);
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(t) = up_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the new session failed: {e}"),
            }
        }
    });
    tokio::time::timeout(DEADLINE, up)
        .await
        .expect("no CONNACK")
        .unwrap();
    closed(&mut old).await;
    // ...and the device is not reported lost: its next reading is the only
    // thing stored, no last will before it.
    new.publish(
        "eldercare/v1/band-1/vitals",
        QoS::AtLeastOnce,
        false,
        format!(r#"{{"ts": {}, "hr": 70}}"#, now_ms()),
    )
    .await
    .unwrap();
    let got = await_readings(&mut tel, "E1", 1).await;
    let streams: Vec<&str> = got.iter().map(|r| r.stream.as_str()).collect();
    assert_eq!(streams, ["vitals"]);

    // Lost for real (the connection dropped, no goodbye): the will is stored.
    new_loop.abort();
    let got = await_readings(&mut tel, "E1", 2).await;
    assert!(
        got.iter()
            .any(|r| r.stream == "status" && r.json.contains("\"online\":false")),
        "{got:?}"
    );
}

fn plan(id: &str, elder_id: &str, provider_id: &str) -> pb::VisitPlan {
    pb::VisitPlan {
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

#[tokio::test]
async fn providers_carers_and_visit_plans_are_managed_with_clear_refusals() {
    let s = Server::with_registry().await;
    let mut reg = s.registry("admin").await;
    let provider = |id: &str| pb::Provider {
        provider_id: id.into(),
        name: "Sunshine Home Care".into(),
        phone: "021-5555-0101".into(),
    };
    let upsert_provider = |p: pb::Provider| pb::UpsertProviderRequest { provider: Some(p) };
    let r = reg
        .upsert_provider(upsert_provider(provider("P1")))
        .await
        .unwrap()
        .into_inner();
    assert!(r.created);
    assert_eq!(r.provider, Some(provider("P1")));
    let r = reg
        .upsert_provider(upsert_provider(provider("P1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.created, "the same id again replaces it");
    reg.upsert_provider(upsert_provider(provider("P2")))
        .await
        .unwrap();
    refused(
        reg.upsert_provider(upsert_provider(provider("bad id")))
            .await,
        Code::InvalidArgument,
        &["provider_id", "A-Z"],
    );
    refused(
        reg.upsert_provider(upsert_provider(pb::Provider {
            name: String::new(),
            ..provider("P3")
        }))
        .await,
        Code::InvalidArgument,
        &["missing required `name`"],
    );
    let providers = reg
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(providers, [provider("P1"), provider("P2")]);

    let carer = |id: &str, p: &str| pb::Carer {
        carer_id: id.into(),
        provider_id: p.into(),
        name: "Zhang Min".into(),
    };
    let upsert_carer = |c: pb::Carer| pb::UpsertCarerRequest { carer: Some(c) };
    assert!(
        reg.upsert_carer(upsert_carer(carer("C1", "P1")))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    reg.upsert_carer(upsert_carer(carer("C2", "P2")))
        .await
        .unwrap();
    refused(
        reg.upsert_carer(upsert_carer(carer("C3", "P9"))).await,
        Code::NotFound,
        &["unknown provider_id `P9`"],
    );
    let of_p1 = reg
        .list_carers(pb::ListCarersRequest {
            provider_id: "P1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .carers;
    assert_eq!(of_p1, [carer("C1", "P1")]);
    let all = reg
        .list_carers(pb::ListCarersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .carers;
    assert_eq!(all.len(), 2);

    let upsert_plan = |p: pb::VisitPlan| pb::UpsertVisitPlanRequest { plan: Some(p) };
    assert!(
        reg.upsert_visit_plan(upsert_plan(plan("V1", "E1", "P1")))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    reg.upsert_visit_plan(upsert_plan(pb::VisitPlan {
        days: "daily".into(),
        ..plan("V2", "E3", "P2")
    }))
    .await
    .unwrap();
    for (bad, words) in [
        (
            pb::VisitPlan {
                days: "someday".into(),
                ..plan("V9", "E1", "P1")
            },
            &["`days`"][..],
        ),
        (
            pb::VisitPlan {
                window_end: "08:00".into(),
                ..plan("V9", "E1", "P1")
            },
            &["window_start", "not before", "window_end"][..],
        ),
        (
            pb::VisitPlan {
                window_start: "9am".into(),
                ..plan("V9", "E1", "P1")
            },
            &["window_start", "HH:MM"][..],
        ),
        (
            pb::VisitPlan {
                length_min: 721,
                ..plan("V9", "E1", "P1")
            },
            &["length_min", "1–720"][..],
        ),
        (
            pb::VisitPlan {
                service: "a service name far too long to be one".into(),
                ..plan("V9", "E1", "P1")
            },
            &["service", "32"][..],
        ),
    ] {
        refused(
            reg.upsert_visit_plan(upsert_plan(bad)).await,
            Code::InvalidArgument,
            words,
        );
    }
    refused(
        reg.upsert_visit_plan(upsert_plan(plan("V9", "E9", "P1")))
            .await,
        Code::NotFound,
        &["unknown elder_id `E9`"],
    );
    refused(
        reg.upsert_visit_plan(upsert_plan(plan("V9", "E1", "P9")))
            .await,
        Code::NotFound,
        &["unknown provider_id `P9`"],
    );
    let list = |elder_id: &str, provider_id: &str| pb::ListVisitPlansRequest {
        elder_id: elder_id.into(),
        provider_id: provider_id.into(),
    };
    let ids = |plans: Vec<pb::VisitPlan>| plans.into_iter().map(|p| p.plan_id).collect::<Vec<_>>();
    let plans = reg
        .list_visit_plans(list("", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(plans.plans), ["V1", "V2"]);
    let plans = reg
        .list_visit_plans(list("E3", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(plans.plans), ["V2"]);
    let plans = reg
        .list_visit_plans(list("", "P1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plans.plans, [plan("V1", "E1", "P1")]);
    let plans = reg
        .list_visit_plans(list("E3", "P1"))
        .await
        .unwrap()
        .into_inner();
    assert!(plans.plans.is_empty());

    // Still named: not deleted, and told why.
    refused(
        reg.delete_provider(pb::DeleteProviderRequest {
            provider_id: "P1".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["provider `P1`", "1 carer(s)", "1 visit plan(s)"],
    );
    // E3 has no device, only a plan.
    refused(
        reg.delete_elder(pb::DeleteElderRequest {
            elder_id: "E3".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["elder `E3`", "1 visit plan(s)"],
    );

    reg.delete_visit_plan(pb::DeleteVisitPlanRequest {
        plan_id: "V1".into(),
    })
    .await
    .unwrap();
    refused(
        reg.delete_visit_plan(pb::DeleteVisitPlanRequest {
            plan_id: "V1".into(),
        })
        .await,
        Code::NotFound,
        &["V1"],
    );
    reg.delete_carer(pb::DeleteCarerRequest {
        carer_id: "C1".into(),
    })
    .await
    .unwrap();
    refused(
        reg.delete_carer(pb::DeleteCarerRequest {
            carer_id: "C1".into(),
        })
        .await,
        Code::NotFound,
        &["C1"],
    );
    reg.delete_provider(pb::DeleteProviderRequest {
        provider_id: "P1".into(),
    })
    .await
    .unwrap();
    refused(
        reg.delete_provider(pb::DeleteProviderRequest {
            provider_id: "P1".into(),
        })
        .await,
        Code::NotFound,
        &["P1"],
    );
    refused(
        reg.delete_provider(pb::DeleteProviderRequest {
            provider_id: "bad id".into(),
        })
        .await,
        Code::InvalidArgument,
        &["provider_id"],
    );
}

#[tokio::test]
async fn an_elders_check_in_window_and_the_frail_flag() {
    let s = Server::with_tokens();
    let mut reg = s.registry("admin").await;
    let e = pb::Elder {
        check_in: "08:00-09:30".into(),
        flags: vec!["frail".into(), "lives_alone".into()],
        ..elder("E1", "Test One", "D1", "C1")
    };
    reg.create_elder(pb::CreateElderRequest {
        elder: Some(e.clone()),
    })
    .await
    .unwrap();
    let got = reg
        .get_elder(pb::GetElderRequest {
            elder_id: "E1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.check_in.as_str(), got.flags), ("08:00-09:30", e.flags));
    for bad in ["8-9", "10:00-09:00", "08:00"] {
        refused(
            reg.create_elder(pb::CreateElderRequest {
                elder: Some(pb::Elder {
                    check_in: bad.into(),
                    ..elder("E2", "Test Two", "D1", "C1")
                }),
            })
            .await,
            Code::InvalidArgument,
            &["check_in"],
        );
    }
    // Cleared through the update mask, as any optional field.
    let got = reg
        .update_elder(pb::UpdateElderRequest {
            elder: Some(pb::Elder {
                elder_id: "E1".into(),
                ..Default::default()
            }),
            update_mask: mask(&["check_in"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.check_in, "");
}

#[tokio::test]
async fn visit_registry_files_through_eldercare_import_and_over_grpc() {
    let s = Server::with_tokens();
    let files = s.dir.path().join("import");
    std::fs::create_dir(&files).unwrap();
    let write = |name: &str, text: &str| {
        let f = files.join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    // Given in the wrong order on purpose: each list loads after those it
    // names.
    let plans = write(
        "visit_plans.csv",
        "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
         V1,E1,P1,\"mon,thu\",09:00,10:30,45,bathing\n\
         V2,E9,P1,daily,09:00,10:30,45,meals\n",
    );
    let carers = write(
        "carers.csv",
        "carer_id,provider_id,name\nC1,P1,Zhang Min\nC2,P1,Qian Hong\n",
    );
    let providers = write(
        "providers.csv",
        "provider_id,name,phone\nP1,Sunshine Home Care,021-5555-0101\n",
    );
    let elders = write(
        "elders.csv",
        "elder_id,name,flags,check_in\nE1,Test One,frail;lives_alone,08:00-09:30\n",
    );
    let out = std::process::Command::new(BIN)
        .arg("import")
        .arg("--data-dir")
        .arg(s.dir.path())
        .args([&plans, &carers, &providers, &elders])
        .output()
        .unwrap();
    let (so, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "a refused row fails the command");
    assert!(
        err.contains("visit_plans.csv:3: refused: unknown elder_id `E9`"),
        "{err}"
    );
    assert!(
        so.contains("VisitPlans: 1 imported, 0 updated, 1 refused"),
        "{so}"
    );
    assert!(so.contains("Carers: 2 imported"), "{so}");
    assert!(
        !err.contains("Zhang") && !so.contains("Zhang"),
        "names are not echoed"
    );

    let mut reg = s.registry("viewer").await;
    let carers = reg
        .list_carers(pb::ListCarersRequest {
            provider_id: "P1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .carers;
    assert_eq!(carers.len(), 2);
    let plans = reg
        .list_visit_plans(pb::ListVisitPlansRequest {
            elder_id: "E1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plans;
    assert_eq!(
        plans,
        [pb::VisitPlan {
            days: "mon,thu".into(),
            window_end: "10:30".into(),
            length_min: 45,
            ..plan("V1", "E1", "P1")
        }]
    );
    let e1 = reg
        .get_elder(pb::GetElderRequest {
            elder_id: "E1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e1.check_in, "08:00-09:30");

    // The same kinds of file over gRPC, with the same answers.
    let mut reg = s.registry("admin").await;
    let r = reg
        .import(pb::ImportRequest {
            text: "{\"carer_id\": \"C3\", \"provider_id\": \"P1\", \"name\": \"Sun Li\"}\n\
                   {\"carer_id\": \"C4\", \"provider_id\": \"P7\", \"name\": \"Zhou Yan\"}\n"
                .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.list, pb::RegistryList::Carers as i32);
    assert_eq!((r.imported, r.refused), (1, 1));
    assert_eq!(r.refused_rows[0].line, 2);
    assert!(
        r.refused_rows[0]
            .reason
            .contains("unknown provider_id `P7`"),
        "{:?}",
        r.refused_rows
    );
    let r = reg
        .import(pb::ImportRequest {
            text: "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
                   V3,E1,P1,daily,18:00,17:00,30,meals\n"
                .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.list, pb::RegistryList::VisitPlans as i32);
    assert_eq!(r.refused_rows[0].line, 2);
    assert!(
        r.refused_rows[0].reason.contains("window_start"),
        "{:?}",
        r.refused_rows
    );
}
