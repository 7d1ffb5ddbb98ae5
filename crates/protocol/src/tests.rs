use super::*;
use eldercare_model::{Body, EventType, Status};
use eldercare_proto::v1::{DeviceMessage, Event, device_message};
use prost::Message;

const NOW: i64 = 1_763_884_800_000;

fn json(topic: &str, payload: &str) -> Result<Reading, Refusal> {
    decode(topic, payload.as_bytes(), None, NOW)
}

fn reason(r: Result<Reading, Refusal>) -> &'static str {
    r.expect_err("should be refused").reason()
}

#[test]
fn spec_examples_decode() {
    let r = json(
        "eldercare/v1/band-0042/vitals",
        r#"{"ts": 1763884800000, "seq": 881, "hr": 134, "spo2": 95}"#,
    )
    .unwrap();
    assert_eq!(r.seq, Some(881));
    assert!(matches!(r.body, Body::Vitals(ref v) if v.hr == Some(134) && v.spo2 == Some(95)));

    let r = json(
        "eldercare/v1/bed-0042/sleep",
        r#"{"ts": "2025-11-23T15:50:00+08:00", "in_bed": false}"#,
    )
    .unwrap();
    assert_eq!(r.ts_ms, 1_763_884_200_000);

    let r = json(
        "eldercare/v1/btn-0042/event",
        r#"{"ts": 1763884800000, "type": "sos"}"#,
    )
    .unwrap();
    assert!(matches!(r.body, Body::Event(ref e) if e.kind == EventType::Sos));
}

#[test]
fn topics() {
    assert_eq!(reason(json("eldercare/v1/a/heart", "{}")), "unknown_stream");
    assert_eq!(reason(json("eldercare/v2/a/vitals", "{}")), "bad_topic");
    assert_eq!(reason(json("eldercare/v1/a b/vitals", "{}")), "bad_topic");
    assert_eq!(reason(json("eldercare/v1/a/vitals/xml", "{}")), "bad_topic");
    let long = "x".repeat(65);
    assert_eq!(
        reason(json(&format!("eldercare/v1/{long}/vitals"), "{}")),
        "bad_topic"
    );
    assert_eq!(
        topic_device_id("eldercare/v1/dev-1/vitals/pb"),
        Some("dev-1")
    );
}

#[test]
fn each_kind_of_bad_input_has_its_reason() {
    let t = "eldercare/v1/d/vitals";
    assert_eq!(reason(json(t, "{not json")), "malformed_json");
    assert_eq!(reason(json(t, "[1,2]")), "malformed_json");
    assert_eq!(reason(json(t, r#"{"hr": 70}"#)), "missing_field");
    assert_eq!(reason(json(t, r#"{"ts": 1763884800000}"#)), "missing_field");
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "hr": 251}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "hr": -3}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "spo2": 49}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "temp_c": 45.5}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "sys": 80, "dia": 90}"#)),
        "out_of_range"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "hr": "fast"}"#)),
        "invalid_field"
    );
    assert_eq!(
        reason(json(t, r#"{"ts": 1763884800000, "hr": 70.5}"#)),
        "invalid_field"
    );
    let stale = NOW - MAX_PAST_MS - 1;
    assert_eq!(
        reason(json(t, &format!(r#"{{"ts": {stale}, "hr": 70}}"#))),
        "stale_ts"
    );
    let future = NOW + MAX_FUTURE_MS + 1;
    assert_eq!(
        reason(json(t, &format!(r#"{{"ts": {future}, "hr": 70}}"#))),
        "future_ts"
    );
    let big = format!(
        r#"{{"ts": 1763884800000, "hr": 70, "pad": "{}"}}"#,
        "x".repeat(4100)
    );
    assert_eq!(reason(json(t, &big)), "payload_too_large");

    let s = "eldercare/v1/d/sleep";
    assert_eq!(reason(json(s, r#"{"ts": 1763884800000}"#)), "missing_field");
    assert_eq!(
        reason(json(
            s,
            r#"{"ts": 1763884800000, "in_bed": true, "movement": 2}"#
        )),
        "out_of_range"
    );
    let m = "eldercare/v1/d/motion";
    assert_eq!(
        reason(json(
            m,
            r#"{"ts": 1763884800000, "room": "", "motion": true}"#
        )),
        "invalid_field"
    );
    let l = "eldercare/v1/d/location";
    assert_eq!(
        reason(json(l, r#"{"ts": 1763884800000, "lat": 91, "lon": 0}"#)),
        "out_of_range"
    );
    let e = "eldercare/v1/d/event";
    assert_eq!(
        reason(json(e, r#"{"ts": 1763884800000, "type": "party"}"#)),
        "invalid_field"
    );
    assert_eq!(
        reason(json(
            e,
            r#"{"ts": 1763884800000, "type": "fall", "confidence": 1.5}"#
        )),
        "out_of_range"
    );
    let st = "eldercare/v1/d/status";
    assert_eq!(
        reason(json(st, r#"{"ts": 1763884800000, "battery_pct": 101}"#)),
        "out_of_range"
    );
}

#[test]
fn boundaries_are_inclusive() {
    let t = "eldercare/v1/d/vitals";
    json(
        t,
        r#"{"ts": 1763884800000, "hr": 20, "spo2": 100, "rr": 0, "temp_c": 45.0}"#,
    )
    .unwrap();
    json(
        t,
        r#"{"ts": 1763884800000, "hr": 250, "sys": 260, "dia": 160}"#,
    )
    .unwrap();
    json(
        t,
        &format!(r#"{{"ts": {}, "hr": 70}}"#, NOW + MAX_FUTURE_MS),
    )
    .unwrap();
}

#[test]
fn protobuf_topic_and_content_type() {
    let msg = DeviceMessage {
        ts_ms: NOW,
        seq: Some(7),
        body: Some(device_message::Body::Event(Event {
            r#type: "fall".into(),
            confidence: Some(0.9),
            ..Default::default()
        })),
    };
    let bytes = msg.encode_to_vec();
    let r = decode("eldercare/v1/d/event/pb", &bytes, None, NOW).unwrap();
    assert!(matches!(r.body, Body::Event(ref e) if e.kind == EventType::Fall));
    let r = decode(
        "eldercare/v1/d/event",
        &bytes,
        Some(PROTOBUF_CONTENT_TYPE),
        NOW,
    )
    .unwrap();
    assert_eq!(r.seq, Some(7));
    assert_eq!(
        decode("eldercare/v1/d/vitals/pb", &bytes, None, NOW)
            .unwrap_err()
            .reason(),
        "invalid_field"
    );
    assert_eq!(
        decode("eldercare/v1/d/event/pb", b"\xff\xff\xff", None, NOW)
            .unwrap_err()
            .reason(),
        "malformed_protobuf"
    );
}

#[test]
fn an_undated_last_will_is_stamped_on_arrival_and_other_streams_need_ts() {
    let r = json("eldercare/v1/gps-1/status", r#"{"online": false}"#).unwrap();
    assert_eq!(r.ts_ms, NOW);
    assert_eq!(
        r.body,
        Body::Status(Status {
            online: Some(false),
            ..Default::default()
        })
    );
    assert_eq!(
        reason(json("eldercare/v1/band-1/vitals", r#"{"hr": 70}"#)),
        "missing_field"
    );
}

#[test]
fn control_characters_in_text_are_refused_in_json() {
    let m = "eldercare/v1/d/motion";
    // NUL, the rest of C0, DEL and C1: each refused, naming the field.
    for c in [
        "\\u0000", "\\u0001", "\\n", "\\t", "\\u001f", "\\u007f", "\\u0085", "\\u009f",
    ] {
        let payload = format!(r#"{{"ts": 1763884800000, "room": "bed{c}room", "motion": true}}"#);
        let why = json(m, &payload).expect_err(c);
        assert_eq!(why.reason(), "control_character", "{c}");
        assert_eq!(
            why,
            Refusal::ControlCharacter {
                field: "room".into()
            }
        );
    }
    // Just outside both ranges: printable, accepted.
    for c in [" ", "~", "\\u00a0", "卧室"] {
        let payload = format!(r#"{{"ts": 1763884800000, "room": "bed{c}room", "motion": true}}"#);
        json(m, &payload).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let st = "eldercare/v1/d/status";
    assert_eq!(
        json(st, r#"{"ts": 1763884800000, "fw": "1.2\u0000"}"#).unwrap_err(),
        Refusal::ControlCharacter { field: "fw".into() }
    );
    let e = "eldercare/v1/d/event";
    assert_eq!(
        reason(json(e, r#"{"ts": 1763884800000, "type": "sos\u0000"}"#)),
        "control_character"
    );
    assert_eq!(
        reason(json(
            "eldercare/v1/d/vitals",
            r#"{"ts": "2025-11-23T15:50:00\u0000+08:00", "hr": 70}"#
        )),
        "control_character"
    );
    assert!(Refusal::REASONS.contains(&"control_character"));
}

#[test]
fn control_characters_in_text_are_refused_in_protobuf() {
    use eldercare_proto::v1::{Motion, Status as PbStatus};
    let motion = |room: &str| {
        DeviceMessage {
            ts_ms: NOW,
            seq: None,
            body: Some(device_message::Body::Motion(Motion {
                room: room.into(),
                motion: true,
            })),
        }
        .encode_to_vec()
    };
    let t = "eldercare/v1/d/motion/pb";
    for room in ["bed\0room", "\u{1b}[2J", "bath\u{7f}", "hall\u{9b}"] {
        assert_eq!(
            decode(t, &motion(room), None, NOW).unwrap_err(),
            Refusal::ControlCharacter {
                field: "room".into()
            },
            "{room:?}"
        );
    }
    decode(t, &motion("卧室"), None, NOW).unwrap();

    let status = DeviceMessage {
        ts_ms: NOW,
        seq: None,
        body: Some(device_message::Body::Status(PbStatus {
            fw: Some("2.0\0".into()),
            ..Default::default()
        })),
    };
    assert_eq!(
        decode(
            "eldercare/v1/d/status/pb",
            &status.encode_to_vec(),
            None,
            NOW
        )
        .unwrap_err()
        .reason(),
        "control_character"
    );
    let event = DeviceMessage {
        ts_ms: NOW,
        seq: None,
        body: Some(device_message::Body::Event(Event {
            r#type: "fall\0".into(),
            confidence: None,
            ..Default::default()
        })),
    };
    assert_eq!(
        decode("eldercare/v1/d/event/pb", &event.encode_to_vec(), None, NOW)
            .unwrap_err()
            .reason(),
        "control_character"
    );
}

#[test]
fn a_carers_tag_read_decodes_in_json_and_protobuf() {
    let r = json(
        "eldercare/v1/gw-0042/event",
        r#"{"ts": 1763884800000, "type": "visit", "carer": "C-0042", "action": "in"}"#,
    )
    .unwrap();
    let Body::Event(e) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(e.kind, EventType::Visit);
    assert_eq!(e.carer.as_deref(), Some("C-0042"));
    assert_eq!(e.action, Some(eldercare_model::VisitAction::In));

    let msg = DeviceMessage {
        ts_ms: NOW,
        seq: None,
        body: Some(device_message::Body::Event(Event {
            r#type: "visit".into(),
            carer: Some("C7".into()),
            action: Some("out".into()),
            ..Default::default()
        })),
    };
    let r = decode("eldercare/v1/gw/event/pb", &msg.encode_to_vec(), None, NOW).unwrap();
    assert!(matches!(r.body, Body::Event(ref e)
        if e.action == Some(eldercare_model::VisitAction::Out) && e.carer.as_deref() == Some("C7")));

    let r = json(
        "eldercare/v1/btn/event",
        r#"{"ts": 1763884800000, "type": "check_in"}"#,
    )
    .unwrap();
    assert!(matches!(r.body, Body::Event(ref e) if e.kind == EventType::CheckIn));
}

#[test]
fn a_visit_without_its_carer_or_action_is_refused_with_the_field() {
    let t = "eldercare/v1/gw/event";
    let refused = |p: &str| json(t, p).expect_err("should be refused");
    let r = refused(r#"{"ts": 1763884800000, "type": "visit", "action": "in"}"#);
    assert_eq!(r.reason(), "missing_field");
    assert!(r.to_string().contains("carer"), "{r}");
    let r = refused(r#"{"ts": 1763884800000, "type": "visit", "carer": "C1"}"#);
    assert_eq!(r.reason(), "missing_field");
    assert!(r.to_string().contains("action"), "{r}");
    let r =
        refused(r#"{"ts": 1763884800000, "type": "visit", "carer": "C1", "action": "sideways"}"#);
    assert_eq!(r.reason(), "invalid_field");
    let r = refused(r#"{"ts": 1763884800000, "type": "visit", "carer": "C 1", "action": "in"}"#);
    assert_eq!(r.reason(), "invalid_field");
    let long = "c".repeat(65);
    let r = refused(&format!(
        r#"{{"ts": 1763884800000, "type": "visit", "carer": "{long}", "action": "in"}}"#
    ));
    assert_eq!(r.reason(), "invalid_field");
    let r =
        refused(r#"{"ts": 1763884800000, "type": "visit", "carer": "C\u00001", "action": "in"}"#);
    assert_eq!(r.reason(), "control_character");
    let r = refused(r#"{"ts": 1763884800000, "type": "wave"}"#);
    assert!(r.to_string().contains("visit or check_in"), "{r}");
}
