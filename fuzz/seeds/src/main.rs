//! Writes the seed corpus of each fuzz target: small, valid inputs that
//! show the fuzzer what real traffic and real files look like. Run again
//! after a protocol change; the files are committed.
use bytes::BytesMut;
use eldercare_proto::v1::{self as pb, DeviceMessage, device_message::Body};
use prost::Message;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Connect, LastWill, Login, Packet, Publish, Subscribe, SubscribeFilter, Unsubscribe,
};
use std::path::{Path, PathBuf};

/// The decoder targets' server clock (`NOW_MS` in fuzz/src/lib.rs): seed
/// times sit just before it.
const TS: i64 = 1_763_884_800_000 - 60_000;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    mqtt(&corpus.join("mqtt_frames"))?;
    json(&corpus.join("decode_json"))?;
    protobuf(&corpus.join("decode_protobuf"))?;
    registry(&corpus.join("registry_import"))?;
    Ok(())
}

fn dir(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(path)?;
    Ok(path.to_path_buf())
}

fn frames(packets: &[Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, 256 * 1024).expect("seed packet encodes");
    }
    let bytes = out.to_vec();
    let mut read = out;
    for p in packets {
        assert_eq!(
            &Packet::read(&mut read, 256 * 1024).expect("seed packet reads"),
            p
        );
    }
    bytes
}

/// Device sessions as byte streams: a CONNECT first, as the front end
/// requires, then what a device or gateway sends.
fn mqtt(path: &Path) -> std::io::Result<()> {
    let d = dir(path)?;
    let connect = |will: bool| {
        let mut c = Connect::new("band-0042");
        c.keep_alive = 60;
        c.login = Some(Login::new("band-0042", "s3cret-pw"));
        if will {
            c.last_will = Some(LastWill::new(
                "eldercare/v1/band-0042/status",
                br#"{"online": false}"#.to_vec(),
                QoS::AtLeastOnce,
                false,
            ));
        }
        Packet::Connect(c)
    };
    let publish = |qos: QoS, pkid: u16, stream: &str, payload: &[u8]| {
        let mut p = Publish::new(
            format!("eldercare/v1/band-0042/{stream}"),
            qos,
            payload.to_vec(),
        );
        p.pkid = pkid;
        Packet::Publish(p)
    };
    let mut subscribe = Subscribe::new_many([SubscribeFilter::new(
        "eldercare/v1/band-0042/cmd".into(),
        QoS::AtLeastOnce,
    )]);
    subscribe.pkid = 1;
    let mut unsubscribe = Unsubscribe::new("eldercare/v1/band-0042/cmd");
    unsubscribe.pkid = 4;
    let vitals = br#"{"ts": 1763884800000, "seq": 881, "hr": 134, "spo2": 95}"#;
    let mut pb_vitals = Vec::new();
    pb_message(
        7,
        Body::Vitals(pb::Vitals {
            hr: Some(72),
            spo2: Some(97),
            ..Default::default()
        }),
    )
    .encode(&mut pb_vitals)
    .expect("encodes");

    let seeds: [(&str, Vec<Packet>); 7] = [
        ("connect_v311", vec![connect(false)]),
        (
            "session_v311",
            vec![
                connect(true),
                Packet::Subscribe(subscribe),
                publish(QoS::AtLeastOnce, 2, "vitals", vitals),
                publish(QoS::AtMostOnce, 0, "vitals/pb", &pb_vitals),
                Packet::PingReq,
                Packet::Unsubscribe(unsubscribe),
                Packet::Disconnect,
            ],
        ),
        (
            "publish_qos0",
            vec![
                connect(false),
                publish(
                    QoS::AtMostOnce,
                    0,
                    "event",
                    br#"{"ts": 1763884800000, "type": "sos"}"#,
                ),
            ],
        ),
        (
            "publish_qos2",
            vec![
                connect(false),
                publish(QoS::ExactlyOnce, 3, "status", br#"{"online": true}"#),
                Packet::PubRel(rumqttc::mqttbytes::v4::PubRel::new(3)),
            ],
        ),
        (
            "pingreq",
            vec![connect(false), Packet::PingReq, Packet::PingReq],
        ),
        ("disconnect", vec![connect(true), Packet::Disconnect]),
        (
            "puback",
            vec![
                connect(false),
                Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(9)),
            ],
        ),
    ];
    for (name, packets) in seeds {
        std::fs::write(d.join(name), frames(&packets))?;
    }
    std::fs::write(d.join("connect_v5"), connect_v5())?;
    std::fs::write(d.join("session_v5"), session_v5())?;
    Ok(())
}

/// An MQTT 5 session: the CONNECT above, a QoS 1 PUBLISH with a content
/// type, a SUBSCRIBE to its own `cmd`, and a DISCONNECT of reason code
/// alone (remaining length 1, as MQTT 5 allows).
fn session_v5() -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5 as m5;
    let mut out = bytes::BytesMut::new();
    let mut publish = m5::Publish::new(
        "eldercare/v1/band-0042/status",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        vec![0x08, 0x01],
        Some(m5::PublishProperties {
            content_type: Some("application/x-protobuf".into()),
            ..Default::default()
        }),
    );
    publish.pkid = 1;
    m5::Packet::Publish(publish)
        .write(&mut out, None)
        .expect("publish");
    let mut subscribe = m5::Subscribe::new(
        m5::Filter::new(
            "eldercare/v1/band-0042/cmd",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        ),
        None,
    );
    subscribe.pkid = 2;
    m5::Packet::Subscribe(subscribe)
        .write(&mut out, None)
        .expect("subscribe");
    let mut stream = connect_v5();
    stream.extend_from_slice(&out);
    stream.extend_from_slice(&[0xe0, 0x01, 0x00]);
    stream
}

/// An MQTT 5 CONNECT: clean start, username and password, keep alive 60,
/// no properties.
fn connect_v5() -> Vec<u8> {
    let mut body = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    string(&mut body, "MQTT");
    body.push(5); // protocol level
    body.push(0b1100_0010); // username, password, clean start
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(0); // properties length
    string(&mut body, "band-0042");
    string(&mut body, "band-0042");
    string(&mut body, "s3cret-pw");
    assert!(body.len() < 128, "one-byte remaining length");
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend(body);
    frame
}

/// `selector byte ++ payload`: the selector picks the stream, in the
/// order vitals, sleep, motion, location, event, status; its top bit, for
/// protobuf, says the plain topic with the MQTT 5 content type.
fn write_selected(d: &Path, name: &str, selector: u8, payload: &[u8]) -> std::io::Result<()> {
    let stream =
        ["vitals", "sleep", "motion", "location", "event", "status"][usize::from(selector & 0x7f)];
    let protobuf = d.ends_with("decode_protobuf");
    let (topic, content_type) = match (protobuf, selector & 0x80 != 0) {
        (true, false) => (format!("eldercare/v1/fuzz-0001/{stream}/pb"), None),
        (true, true) => (
            format!("eldercare/v1/fuzz-0001/{stream}"),
            Some(eldercare_protocol::PROTOBUF_CONTENT_TYPE),
        ),
        (false, _) => (format!("eldercare/v1/fuzz-0001/{stream}"), None),
    };
    if let Err(e) = eldercare_protocol::decode(&topic, payload, content_type, TS + 60_000) {
        panic!("seed {name} is refused: {e}");
    }
    let mut input = vec![selector];
    input.extend_from_slice(payload);
    std::fs::write(d.join(name), input)
}

/// The JSON payloads of docs/device-protocol.md, one or more per stream
/// (times moved to just before the targets' clock).
fn json(path: &Path) -> std::io::Result<()> {
    let d = dir(path)?;
    let seeds: [(&str, u8, &str); 11] = [
        (
            "vitals",
            0,
            r#"{"ts": 1763884740000, "seq": 881, "hr": 134, "spo2": 95}"#,
        ),
        (
            "vitals_all",
            0,
            r#"{"ts": 1763884740000, "seq": 882, "hr": 72, "spo2": 97, "rr": 16, "temp_c": 36.6, "sys": 128, "dia": 82}"#,
        ),
        (
            "sleep",
            1,
            r#"{"ts": "2025-11-23T15:59:00+08:00", "in_bed": false}"#,
        ),
        (
            "sleep_in_bed",
            1,
            r#"{"ts": 1763884740000, "in_bed": true, "hr": 58, "rr": 0, "movement": 0.05}"#,
        ),
        (
            "motion",
            2,
            r#"{"ts": 1763884740000, "room": "bathroom", "motion": true}"#,
        ),
        (
            "location",
            3,
            r#"{"ts": 1763884740000, "lat": 31.2304, "lon": 121.4737, "accuracy_m": 12.5}"#,
        ),
        ("event_sos", 4, r#"{"ts": 1763884740000, "type": "sos"}"#),
        (
            "event_fall",
            4,
            r#"{"ts": "2025-11-23T07:59:00Z", "seq": 12, "type": "fall", "confidence": 0.92}"#,
        ),
        (
            "event_cancel",
            4,
            r#"{"ts": 1763884740000, "type": "sos_cancel"}"#,
        ),
        (
            "status",
            5,
            r#"{"ts": 1763884740000, "online": true, "battery_pct": 18, "rssi": -71, "fw": "2.4.1"}"#,
        ),
        ("status_will", 5, r#"{"online": false}"#),
    ];
    for (name, selector, payload) in seeds {
        write_selected(&d, name, selector, payload.as_bytes())?;
    }
    Ok(())
}

fn pb_message(seq: u64, body: Body) -> DeviceMessage {
    DeviceMessage {
        ts_ms: TS,
        seq: Some(seq),
        body: Some(body),
    }
}

/// One `DeviceMessage` per stream, as a device would send on the `/pb`
/// topic; two more with the selector's top bit set (plain topic, MQTT 5
/// content type).
fn protobuf(path: &Path) -> std::io::Result<()> {
    let d = dir(path)?;
    let seeds: [(&str, u8, DeviceMessage); 10] = [
        (
            "vitals",
            0,
            pb_message(
                1,
                Body::Vitals(pb::Vitals {
                    hr: Some(72),
                    spo2: Some(97),
                    rr: Some(16),
                    temp_c: Some(36.6),
                    sys: Some(128),
                    dia: Some(82),
                }),
            ),
        ),
        (
            "sleep",
            1,
            pb_message(
                2,
                Body::Sleep(pb::Sleep {
                    in_bed: true,
                    hr: Some(58),
                    rr: Some(12),
                    movement: Some(0.1),
                }),
            ),
        ),
        // serde_json reads this `movement` back from the stored JSON one
        // unit in the last place off, and `lon` in the next seed two.
        (
            "sleep_movement_float",
            1,
            pb_message(
                2,
                Body::Sleep(pb::Sleep {
                    in_bed: true,
                    hr: Some(58),
                    rr: Some(12),
                    movement: Some(f64::from_bits(0x3fb9_9999_9989_999a)),
                }),
            ),
        ),
        (
            "motion",
            2,
            pb_message(
                3,
                Body::Motion(pb::Motion {
                    room: "bathroom".into(),
                    motion: true,
                }),
            ),
        ),
        (
            "location",
            3,
            pb_message(
                4,
                Body::Location(pb::Location {
                    lat: 31.2304,
                    lon: 121.4737,
                    accuracy_m: Some(12.5),
                }),
            ),
        ),
        (
            "location_tiny_floats",
            3,
            pb_message(
                4,
                Body::Location(pb::Location {
                    lat: f64::from_bits(0x907e_ff3f_fb40_3a97),
                    lon: f64::from_bits(0x006a_1b40_1033_2a5f),
                    accuracy_m: Some(f64::from_bits(0x4029_0000_002f_b500)),
                }),
            ),
        ),
        (
            "event",
            4,
            pb_message(
                5,
                Body::Event(pb::Event {
                    r#type: "fall".into(),
                    confidence: Some(0.92),
                }),
            ),
        ),
        (
            "status",
            5,
            pb_message(
                6,
                Body::Status(pb::Status {
                    online: Some(true),
                    battery_pct: Some(18),
                    rssi: Some(-71),
                    fw: Some("2.4.1".into()),
                }),
            ),
        ),
        (
            "event_sos_content_type",
            0x80 | 4,
            pb_message(
                7,
                Body::Event(pb::Event {
                    r#type: "sos".into(),
                    confidence: None,
                }),
            ),
        ),
        (
            "status_will_content_type",
            0x80 | 5,
            DeviceMessage {
                ts_ms: 0,
                seq: None,
                body: Some(Body::Status(pb::Status {
                    online: Some(false),
                    ..Default::default()
                })),
            },
        ),
    ];
    for (name, selector, msg) in seeds {
        write_selected(&d, name, selector, &msg.encode_to_vec())?;
    }
    Ok(())
}

/// elders.csv and devices.csv as docs/registry-import.md describes them,
/// and the same lists as JSON lines.
fn registry(path: &Path) -> std::io::Result<()> {
    let d = dir(path)?;
    let files: [(&str, &str); 5] = [
        (
            "elders.csv",
            "elder_id,name,phone,address,district,community,home_lat,home_lon,safe_radius_m,flags,timezone,night_start,night_end,contact_name,contact_phone\n\
             E0001,Wang Li,13800000001,\"12 Huaihai Road, Flat 3\",Xuhui,Tianping,31.2050,121.4420,500,lives_alone;age80plus,Asia/Shanghai,21:30,06:30,Wang Jun,13900000001\n\
             E0002,\"Zhao, Mei\",,,Xuhui,Tianping,,,,dementia,,,,,\n\
             E0003,Sun Hua,13800000003,3 Yan'an Road,Jing'an,Nanjing West,31.2290,121.4590,800,disabled;low_income,UTC,22:00,07:00,,\n",
        ),
        (
            "devices.csv",
            "device_id,kind,elder_id,room,heartbeat_s,secret\n\
             bed-0001,sleep_sensor,E0001,bedroom,300,pw-bed-0001\n\
             band-0001,vital_band,E0001,,120,\n\
             pir-0001,pir,E0001,bathroom,600,pw-pir-0001\n\
             watch-0001,gps_watch,E0002,,,\n\
             btn-0001,sos_button,E0002,living,86400,pw-btn-0001\n\
             gw-0001,gateway,E0003,,60,pw-gw-0001\n",
        ),
        (
            "elders.jsonl",
            "{\"elder_id\": \"E0004\", \"name\": \"Qian Fang\", \"home_lat\": 31.2, \"home_lon\": 121.5, \"safe_radius_m\": 300, \"flags\": \"lives_alone\", \"night_start\": \"20:45\"}\n\
             {\"elder_id\": \"E0005\", \"name\": \"Li Na\", \"timezone\": \"Asia/Urumqi\", \"contact_phone\": null}\n",
        ),
        (
            "devices.jsonl",
            "{\"device_id\": \"pir-0004\", \"kind\": \"pir\", \"elder_id\": \"E0004\", \"room\": \"kitchen\", \"heartbeat_s\": 900}\n\
             {\"device_id\": \"btn-0004\", \"kind\": \"sos_button\", \"elder_id\": \"E0004\", \"secret\": \"pw-btn-0004\"}\n",
        ),
        // A blank secret: generated, as in CSV.
        (
            "devices_blank_secret.jsonl",
            "{\"device_id\": \"band-0004\", \"kind\": \"vital_band\", \"elder_id\": \"E0004\", \"room\": \"\", \"secret\": \"\"}\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(d.join(name), text)?;
    }
    Ok(())
}
