//! End-to-end tests over real sockets: the real `eldercare` binary, real
//! MQTT clients (rumqttc, and mosquitto_pub as device makers use it) and a
//! real tonic gRPC client. Every wait is on an event, bounded by a
//! generous deadline that only turns a hang into a failure.
mod support;

use eldercare_proto::v1 as pb;
use pb::alert_service_client::AlertServiceClient;
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::process::Command;
use support::*;
use tonic::transport::Channel;

const ELDERS: &str = "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags\n\
E1,Test One,D1,C1,,,,\n\
E2,Test Two,D1,C2,,,,\n\
E3,Test Three,D2,C3,,,,\n\
E4,Test Four,D2,C3,31.2,121.4,500,dementia\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\n\
btn-1,sos_button,E1,,s-btn-1\n\
band-1,vital_band,E1,,s-band-1\n\
btn-2,sos_button,E2,,s-btn-2\n\
band-2,vital_band,E2,,s-band-2\n\
btn-3,sos_button,E3,,s-btn-3\n\
gps-4,gps_watch,E4,,s-gps-4\n\
btn-4,sos_button,E4,,s-btn-4\n";

impl Server {
    /// Starts `eldercare serve` on free ports and imports the test registry
    /// with `eldercare import` while it runs.
    fn start() -> Server {
        Server::start_with_rules(None)
    }

    /// Like [`Server::start`], with a rule file of this text.
    fn start_with_rules(rules: Option<&str>) -> Server {
        Server::start_with(rules, None)
    }

    /// Like [`Server::start`], with a rule file and a config file.
    fn start_with(rules: Option<&str>, config: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = rules {
            std::fs::write(dir.path().join("rules.toml"), text).unwrap();
        }
        if let Some(text) = config {
            std::fs::write(dir.path().join("config.toml"), text).unwrap();
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
}

#[tokio::test]
async fn json_sos_and_protobuf_fall_reach_a_grpc_subscriber() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn1 = device(&s, "btn-1").await;
    sos(&btn1, "btn-1").await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (ev.seq, a.kind.as_str(), a.elder_id.as_str()),
        (1, "sos", "E1")
    );
    assert_eq!(a.severity, pb::Severity::Critical as i32);
    assert_eq!(ev.kind, pb::AlertEventKind::Raised as i32);
    assert_eq!(a.district, "D1");

    let btn2 = device(&s, "btn-2").await;
    let fall = pb::DeviceMessage {
        ts_ms: now_ms(),
        seq: Some(1),
        body: Some(pb::device_message::Body::Event(pb::Event {
            r#type: "fall".into(),
            confidence: Some(0.9),
            ..Default::default()
        })),
    };
    publish(&btn2, "eldercare/v1/btn-2/event/pb", fall.encode_to_vec()).await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (ev.seq, a.kind.as_str(), a.elder_id.as_str()),
        (2, "fall", "E2")
    );

    // A repeat folds into the open alert.
    sos(&btn1, "btn-1").await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::Updated as i32);
    assert_eq!(ev.alert.unwrap().occurrences, 2);

    let list = s
        .grpc()
        .await
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.alerts.len(), 2);
}

#[tokio::test]
async fn a_resumed_subscriber_gets_exactly_what_it_missed() {
    let s = Server::start();
    let btn = [
        device(&s, "btn-1").await,
        device(&s, "btn-2").await,
        device(&s, "btn-3").await,
    ];
    let mut sub = s.subscribe(0).await;
    sos(&btn[0], "btn-1").await;
    let first = next(&mut sub).await;
    assert_eq!(first.seq, 1);
    drop(sub);
    // While disconnected: three more events.
    let mut watcher = s.subscribe(1).await;
    sos(&btn[1], "btn-2").await;
    sos(&btn[2], "btn-3").await;
    sos(&btn[0], "btn-1").await;
    for want in 2..=4 {
        assert_eq!(next(&mut watcher).await.seq, want);
    }
    let mut resumed = s.subscribe(first.seq).await;
    let got: Vec<u64> = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .iter()
    .map(|e| e.seq)
    .collect();
    assert_eq!(got, vec![2, 3, 4]);
    // Then live, with no duplicate at the switch-over.
    let btn3 = &btn[2];
    publish(
        btn3,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {}, "type": "fall"}}"#, now_ms()),
    )
    .await;
    assert_eq!(next(&mut resumed).await.seq, 5);
}

#[tokio::test]
async fn every_kind_of_bad_input_is_refused_counted_and_disturbs_nothing() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-1").await;
    let t = now_ms();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "malformed_json",
            "eldercare/v1/band-1/vitals",
            b"{hr: 150".to_vec(),
        ),
        (
            "unknown_stream",
            "eldercare/v1/band-1/heart",
            br#"{"ts": 1, "hr": 70}"#.to_vec(),
        ),
        (
            "out_of_range",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": 300}}"#).into_bytes(),
        ),
        (
            "missing_field",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}}}"#).into_bytes(),
        ),
        (
            "invalid_field",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": "fast"}}"#).into_bytes(),
        ),
        (
            "stale_ts",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {}, "hr": 70}}"#, t - 25 * 3600 * 1000).into_bytes(),
        ),
        (
            "future_ts",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {}, "hr": 70}}"#, t + 10 * 60 * 1000).into_bytes(),
        ),
        (
            "payload_too_large",
            "eldercare/v1/band-1/vitals",
            format!(r#"{{"ts": {t}, "hr": 70, "pad": "{}"}}"#, "x".repeat(5000)).into_bytes(),
        ),
        (
            "malformed_protobuf",
            "eldercare/v1/band-1/vitals/pb",
            vec![0xff, 0xff, 0xff, 0xff],
        ),
        (
            "bad_topic",
            "eldercare/v1/band-1/vitals/xml",
            br#"{}"#.to_vec(),
        ),
        // An SOS in an unknown stream's clothing must raise nothing.
        (
            "unknown_stream",
            "eldercare/v1/band-1/sos",
            br#"{"type": "sos"}"#.to_vec(),
        ),
    ];
    for (_, topic, payload) in &cases {
        publish(&band, topic, payload.clone()).await;
    }
    // A valid message from another device right after still alerts, and
    // is the first event: nothing bad raised anything.
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-2").await;
    let ev = next(&mut sub).await;
    assert_eq!((ev.seq, ev.alert.unwrap().elder_id.as_str()), (1, "E2"));

    let mut want = std::collections::HashMap::new();
    for (reason, _, _) in &cases {
        *want.entry(*reason).or_insert(0u64) += 1;
    }
    for (reason, n) in want {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            s.await_counter("eldercare_ingest_refused_total", &label, n)
                .await,
            n,
            "{reason}"
        );
    }
    // And each is kept, with its reason, for operators to inspect.
    let out = Command::new(BIN)
        .args(["dead-letters", "--limit", "50", "--data-dir"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for (reason, _, _) in &cases {
        assert!(text.contains(reason), "dead letters lack {reason}:\n{text}");
    }
}

#[tokio::test]
async fn wrong_secret_no_credentials_and_spoofing_are_refused_and_raise_nothing() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let e = connect(&s.mqtt, Some(("btn-1", "wrong")), "x1")
        .await
        .err()
        .expect("wrong secret refused");
    assert!(
        e.contains("BadUserNamePassword") || e.contains("refused"),
        "{e}"
    );
    let e = connect(&s.mqtt, None, "x2")
        .await
        .err()
        .expect("no credentials refused");
    assert!(e.contains("NotAuthorized") || e.contains("refused"), "{e}");
    let e = connect(&s.mqtt, Some(("ghost-9", "x")), "x3")
        .await
        .err()
        .expect("unknown device refused");
    assert!(!e.is_empty());
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "bad_credentials",
            1
        )
        .await,
        1
    );
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "no_credentials",
            1
        )
        .await,
        1
    );
    assert_eq!(
        s.await_counter(
            "eldercare_mqtt_connections_refused_total",
            "unknown_device",
            1
        )
        .await,
        1
    );

    // btn-2, logged in correctly, publishes an SOS under btn-1's id.
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-1").await;
    assert_eq!(
        s.await_counter("eldercare_ingest_refused_total", "topic_not_owned", 1)
            .await,
        1
    );
    // It may not listen to another device's commands either.
    btn2.client
        .subscribe("eldercare/v1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Then a real SOS from btn-3: it is the first alert, the spoof raised none.
    let btn3 = device(&s, "btn-3").await;
    sos(&btn3, "btn-3").await;
    let ev = next(&mut sub).await;
    assert_eq!((ev.seq, ev.alert.unwrap().device_id.as_str()), (1, "btn-3"));
    let mut btn2 = btn2;
    let suback = loop {
        match tokio::time::timeout(DEADLINE, btn2.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Packet::SubAck(a) => break a,
            _ => continue,
        }
    };
    assert!(matches!(
        suback.return_codes[0],
        rumqttc::SubscribeReasonCode::Failure
    ));
}

/// Runs the stock `mosquitto_pub` against the server as `user`/`pass`.
fn mosquitto_pub(
    s: &Server,
    extra: &[&str],
    user: &str,
    pass: &str,
    topic: &str,
    payload: &str,
) -> std::process::Output {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    Command::new("mosquitto_pub")
        .args(extra)
        .args([
            "-h", host, "-p", port, "-u", user, "-P", pass, "-t", topic, "-m", payload,
        ])
        .output()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients")
}

#[tokio::test]
async fn mosquitto_pub_sos_raises_an_alert() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let payload = format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms());
    let topic = "eldercare/v1/btn-1/event";
    let out = mosquitto_pub(&s, &["-q", "1"], "btn-1", "s-btn-1", topic, &payload);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = next(&mut sub).await;
    assert_eq!(ev.alert.unwrap().kind, "sos");
    // With a wrong password mosquitto_pub fails.
    let out = mosquitto_pub(&s, &[], "btn-1", "nope", topic, &payload);
    assert!(!out.status.success());
}

#[tokio::test]
async fn heart_rate_out_of_range_for_a_minute_raises_high_and_ack_reaches_the_device() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let band = device(&s, "band-2").await;
    let t0 = now_ms() - 70_000;
    for (i, dt) in [0, 30_000, 59_000].iter().enumerate() {
        publish(
            &band,
            "eldercare/v1/band-2/vitals",
            format!(r#"{{"ts": {}, "seq": {i}, "hr": 150}}"#, t0 + dt),
        )
        .await;
    }
    // Not yet 60 s: the next alert must come from the reading at +65 s.
    publish(
        &band,
        "eldercare/v1/band-2/vitals",
        format!(r#"{{"ts": {}, "seq": 9, "hr": 152}}"#, t0 + 65_000),
    )
    .await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.severity),
        ("vital_out_of_range", pb::Severity::High as i32)
    );
    assert!(a.summary.contains("152"), "{}", a.summary);
    assert_eq!(a.raised_at.unwrap().seconds, (t0 + 65_000) / 1000);

    // Acknowledge: the SOS device is told help is coming.
    let mut btn = device(&s, "btn-2").await;
    btn.client
        .subscribe("eldercare/v1/btn-2/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Packet::SubAck(_) = tokio::time::timeout(DEADLINE, btn.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    sos(&btn, "btn-2").await;
    let sos_alert = next(&mut sub).await.alert.unwrap();
    let mut g = s.grpc().await;
    let acked = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: sos_alert.id.clone(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
    let ev = next(&mut sub).await;
    assert_eq!(
        (ev.kind, ev.actor.as_str()),
        (pb::AlertEventKind::AcknowledgedEvent as i32, "op-1")
    );
    let cmd = loop {
        match tokio::time::timeout(DEADLINE, btn.events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Packet::Publish(p) => break p,
            _ => continue,
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&cmd.payload).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["alert_id"].as_str()),
        (Some("alert_ack"), Some(sos_alert.id.as_str()))
    );

    let again = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: sos_alert.id.clone(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let missing = g
        .acknowledge(pb::AlertActionRequest {
            alert_id: "nope".into(),
            operator_id: "op-1".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn duplicates_by_seq_are_dropped() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    let p = format!(r#"{{"ts": {}, "seq": 5, "type": "sos"}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-1/event", p.clone()).await;
    publish(&btn, "eldercare/v1/btn-1/event", p).await;
    assert_eq!(next(&mut sub).await.seq, 1);
    assert_eq!(
        s.await_counter("eldercare_ingest_duplicates_total", "", 1)
            .await,
        1
    );
    // The next event is a fresh press, not the duplicate folding in.
    let btn3 = device(&s, "btn-3").await;
    sos(&btn3, "btn-3").await;
    assert_eq!(next(&mut sub).await.alert.unwrap().elder_id, "E3");
}

// Multi-threaded so the client's connection keeps running while this
// thread blocks waiting for the server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_even_with_a_subscriber_attached() {
    let mut s = Server::start();
    let mut sub = s.subscribe(0).await;
    let st = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The subscriber is told, and can resume from its last seq elsewhere.
    let end = tokio::time::timeout(DEADLINE, sub.message())
        .await
        .expect("stream not closed");
    assert!(!matches!(end, Ok(Some(_))), "no event expected: {end:?}");
}

#[tokio::test]
async fn health_and_reflection_serve_stock_tools() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let s = Server::start();
    let ch = Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let h = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "eldercare.v1.AlertService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, ServingStatus::Serving as i32);

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
    assert!(
        names.contains(&"eldercare.v1.AlertService".to_string()),
        "{names:?}"
    );
}

#[test]
fn import_reports_refused_rows_by_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let elders = dir.path().join("e.csv");
    std::fs::write(
        &elders,
        "elder_id,name\nOK1,Someone\nBAD 2,Other\n,Nobody\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("import")
        .arg("--data-dir")
        .arg(dir.path())
        .arg(&elders)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("e.csv:3: refused") && err.contains("e.csv:4: refused"),
        "{err}"
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(so.contains("1 imported, 0 updated, 2 refused"), "{so}");
    // Personal data is not echoed back in the refusal reasons.
    assert!(!err.contains("Other") && !err.contains("Nobody"), "{err}");
}

#[test]
fn an_mqtt_3_1_client_is_told_the_protocol_is_unsupported() {
    // 3.1.1 and 5 are served; the older 3.1 is refused in its own terms.
    let s = Server::start();
    let out = mosquitto_pub(
        &s,
        &["-V", "mqttv31"],
        "btn-1",
        "s-btn-1",
        "eldercare/v1/btn-1/event",
        "{}",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("protocol"), "{err}");
    assert_eq!(
        s.counter(
            "eldercare_mqtt_connections_refused_total",
            "unsupported_protocol"
        ),
        1
    );
}

async fn subscribe_in(s: &Server, language: &str) -> tonic::Streaming<pb::AlertEvent> {
    s.grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            language: language.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_quick_sos_cancel_resolves_it_as_a_false_alarm_in_either_language() {
    let s = Server::start();
    let mut zh = s.subscribe(0).await;
    let mut en = subscribe_in(&s, "en").await;
    let btn = device(&s, "btn-3").await;
    let t = now_ms();
    publish(
        &btn,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {t}, "type": "sos"}}"#),
    )
    .await;
    let raised_zh = next(&mut zh).await.alert.unwrap();
    let raised_en = next(&mut en).await.alert.unwrap();
    assert_eq!(raised_zh.summary, "紧急呼叫按钮被按下");
    assert_eq!(raised_en.summary, "SOS button pressed");
    assert_eq!(
        (raised_en.summary_en.as_str(), raised_en.summary_zh.as_str()),
        ("SOS button pressed", "紧急呼叫按钮被按下")
    );
    // Pressed cancel eight seconds later (device clock).
    publish(
        &btn,
        "eldercare/v1/btn-3/event",
        format!(r#"{{"ts": {}, "type": "sos_cancel"}}"#, t + 8_000),
    )
    .await;
    let ev = next(&mut en).await;
    let a = ev.alert.unwrap();
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(
        (
            a.id.as_str(),
            a.state,
            a.outcome.as_str(),
            ev.actor.as_str()
        ),
        (
            raised_en.id.as_str(),
            pb::AlertState::Resolved as i32,
            "false_alarm",
            ""
        )
    );
    assert!(ev.note.contains("8 s"), "{}", ev.note);
    let bad = s
        .grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            language: "fr".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn low_battery_goes_to_the_operations_queue_and_clears_itself() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-2").await;
    let status = |pct: u32| format!(r#"{{"ts": {}, "battery_pct": {pct}}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-2/status", status(12)).await;
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.queue.as_str(), a.subject.as_str()),
        ("low_battery", "operations", "btn-2")
    );
    assert_eq!(a.severity, pb::Severity::Low as i32);
    publish(&btn, "eldercare/v1/btn-2/status", status(20)).await;
    publish(&btn, "eldercare/v1/btn-2/status", status(35)).await;
    let ev = next(&mut sub).await;
    let b = ev.alert.unwrap();
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!((b.id, b.outcome.as_str()), (a.id, "cleared"));
}

#[tokio::test]
async fn a_lost_connection_is_noticed_by_its_last_will_and_clears_on_return() {
    let s = Server::start_with_rules(Some("[offline]\ngrace_s = 1\n"));
    let mut sub = s.subscribe(0).await;
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let mut o = MqttOptions::new("gps-4-watch", host, port.parse().unwrap());
    o.set_credentials("gps-4", "s-gps-4");
    o.set_last_will(rumqttc::LastWill::new(
        "eldercare/v1/gps-4/status",
        r#"{"online": false}"#,
        QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut el) = AsyncClient::new(o, 10);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    // The watch loses its connection: no DISCONNECT, the socket just goes.
    drop(el);
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.subject.as_str(), a.queue.as_str()),
        ("device_offline", "gps-4", "operations")
    );
    // Back: heard again, the alert clears itself.
    let gps = device(&s, "gps-4").await;
    publish(
        &gps,
        "eldercare/v1/gps-4/location",
        format!(r#"{{"ts": {}, "lat": 31.2, "lon": 121.4}}"#, now_ms()),
    )
    .await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(ev.alert.unwrap().outcome, "cleared");
}

#[tokio::test]
async fn a_dementia_patient_leaving_the_safe_zone_is_high_and_coming_back_updates_it() {
    let s = Server::start();
    let mut sub = subscribe_in(&s, "en").await;
    let gps = device(&s, "gps-4").await;
    let t = now_ms();
    // Fixes 1.1 km north of home, one minute apart, in the daytime or at
    // night depending on when the test runs: check the severity by clock.
    for (i, north_m) in [1100.0, 1150.0, 100.0].into_iter().enumerate() {
        let lat = 31.2 + north_m / 111_195.0;
        publish(
            &gps,
            "eldercare/v1/gps-4/location",
            format!(
                r#"{{"ts": {}, "lat": {lat}, "lon": 121.4, "accuracy_m": 10}}"#,
                t + i as i64 * 60_000 - 180_000
            ),
        )
        .await;
    }
    let ev = next(&mut sub).await;
    let a = ev.alert.unwrap();
    assert_eq!(a.kind, "geofence_exit");
    assert!(
        a.severity == pb::Severity::High as i32 || a.severity == pb::Severity::Critical as i32,
        "dementia: HIGH by day, CRITICAL at night; got {}",
        a.severity
    );
    assert_eq!(a.readings.len(), 2, "both fixes outside are evidence");
    let ev = next(&mut sub).await;
    assert_eq!(ev.kind, pb::AlertEventKind::Updated as i32);
    assert!(ev.note.contains("Back inside"), "{}", ev.note);
    assert!(ev.alert.unwrap().summary.contains("Back inside"));
}

#[test]
fn a_bad_rule_file_is_refused_at_start_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[vitals]\npulse_high = \"fast\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vitals.pulse_high"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_rules_and_keeps_what_the_engine_saw() {
    let s = Server::start_with_rules(Some("[vitals]\nhold_s = 600\n"));
    let mut sub = subscribe_in(&s, "en").await;
    let band = device(&s, "band-1").await;
    let t0 = now_ms() - 120_000;
    let hr = |dt: i64| format!(r#"{{"ts": {}, "hr": 150}}"#, t0 + dt);
    for dt in [0, 20_000, 40_000, 60_000] {
        publish(&band, "eldercare/v1/band-1/vitals", hr(dt)).await;
    }
    // A marker through the same pipeline: once its alert is out, the four
    // readings before it have been judged (and raised nothing, at 600 s).
    let btn = device(&s, "btn-1").await;
    sos(&btn, "btn-1").await;
    assert_eq!(next(&mut sub).await.alert.unwrap().kind, "sos");

    std::fs::write(s.dir.path().join("rules.toml"), "[vitals]\nhold_s = 30\n").unwrap();
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let line = s
        .lines
        .recv_timeout(DEADLINE)
        .expect("the server reports the reload");
    assert!(line.starts_with("tokens reloaded"), "{line}");
    let line = s
        .lines
        .recv_timeout(DEADLINE)
        .expect("the server reports the reload");
    assert!(line.starts_with("rules reloaded"), "{line}");
    publish(&band, "eldercare/v1/band-1/vitals", hr(80_000)).await;
    let a = next(&mut sub).await.alert.unwrap();
    assert_eq!(a.kind, "vital_out_of_range");
    // The stretch began before the reload: the engine kept it.
    assert_eq!(a.window_start.unwrap().seconds, t0.div_euclid(1000));
    assert!(a.summary.contains("for 80 s"), "{}", a.summary);
}

#[tokio::test]
async fn after_a_restart_an_open_low_battery_alert_still_clears_itself() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    let status = |pct: u32| format!(r#"{{"ts": {}, "battery_pct": {pct}}}"#, now_ms());
    publish(&btn, "eldercare/v1/btn-1/status", status(9)).await;
    let raised = next(&mut sub).await;
    assert_eq!(raised.alert.as_ref().unwrap().kind, "low_battery");
    drop((sub, btn));

    let s = s.restart().await;
    let mut sub = s.subscribe(raised.seq).await;
    let btn = device(&s, "btn-1").await;
    // Still low: not raised a second time. Charged: cleared.
    publish(&btn, "eldercare/v1/btn-1/status", status(8)).await;
    publish(&btn, "eldercare/v1/btn-1/status", status(80)).await;
    let ev = next(&mut sub).await;
    assert_eq!(ev.seq, raised.seq + 1, "nothing in between");
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(ev.alert.unwrap().id, raised.alert.unwrap().id);
}

/// The alert of the next event, which must be of `kind`.
async fn expect(
    stream: &mut tonic::Streaming<pb::AlertEvent>,
    kind: pb::AlertEventKind,
) -> (pb::AlertEvent, pb::Alert) {
    let ev = next(stream).await;
    assert_eq!(
        pb::AlertEventKind::try_from(ev.kind).unwrap(),
        kind,
        "unexpected event {ev:?}"
    );
    let a = ev.alert.clone().unwrap();
    (ev, a)
}

fn action(id: &str) -> pb::AlertActionRequest {
    pb::AlertActionRequest {
        alert_id: id.into(),
        ..Default::default()
    }
}

fn resolve(id: &str, outcome: &str) -> pb::ResolveRequest {
    pb::ResolveRequest {
        alert_id: id.into(),
        outcome: outcome.into(),
        ..Default::default()
    }
}

fn dispatch(id: &str, t: pb::ResponderType, name: &str) -> pb::DispatchRequest {
    pb::DispatchRequest {
        alert_id: id.into(),
        responder: Some(pb::Responder {
            r#type: t as i32,
            name: name.into(),
            phone: "138 0000 0000".into(),
        }),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn the_alert_lifecycle_over_grpc_with_every_refusal() {
    use pb::AlertEventKind as K;
    use tonic::Code;
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    sos(&btn, "btn-1").await;
    let (_, a) = expect(&mut sub, K::Raised).await;
    let id = a.id.as_str();
    let mut op = s.grpc().await;
    let mut disp = s.grpc_as("dispatcher").await;

    // Not yet acknowledged: no dispatch, no "handled by phone".
    let e = disp
        .dispatch(dispatch(id, pb::ResponderType::CommunityWorker, "Wang"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("OPEN"), "{}", e.message());
    assert_eq!(
        code(disp.resolve(resolve(id, "handled_by_phone")).await),
        Code::FailedPrecondition
    );

    let acked = op.acknowledge(action(id)).await.unwrap().into_inner();
    assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
    assert!(acked.acknowledged_at.is_some());
    expect(&mut sub, K::AcknowledgedEvent).await;

    // Bad arguments say what is wrong.
    let e = disp
        .dispatch(pb::DispatchRequest {
            alert_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "responder is required")
    );
    let e = disp
        .dispatch(dispatch(id, pb::ResponderType::Unspecified, "Wang"))
        .await
        .unwrap_err();
    assert!(e.message().contains("responder.type"), "{}", e.message());
    let e = disp.resolve(resolve(id, "fixed")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("fixed"), "{}", e.message());
    let e = op
        .add_note(pb::AlertActionRequest {
            alert_id: id.into(),
            operator_id: "someone-else".into(),
            note: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "the token decides who acts"
    );
    let e = op.add_note(action(id)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "note is required")
    );

    let d = disp
        .dispatch(dispatch(id, pb::ResponderType::CommunityWorker, "Wang"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, pb::AlertState::Dispatched as i32);
    assert_eq!(d.responder.as_ref().unwrap().name, "Wang");
    let (ev, _) = expect(&mut sub, K::DispatchedEvent).await;
    assert_eq!(ev.actor, "disp-1");
    // A second responder: the ambulance.
    let d = disp
        .dispatch(dispatch(id, pb::ResponderType::Ambulance120, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.responder.unwrap().r#type,
        pb::ResponderType::Ambulance120 as i32
    );
    expect(&mut sub, K::DispatchedEvent).await;
    let mut note = action(id);
    note.note = "daughter on her way".into();
    disp.add_note(note).await.unwrap();
    expect(&mut sub, K::Note).await;
    let esc = op.escalate(action(id)).await.unwrap().into_inner();
    assert_eq!(esc.escalations, 1);
    expect(&mut sub, K::Escalated).await;
    let done = disp
        .resolve(resolve(id, "sent_to_hospital"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (done.state, done.outcome.as_str()),
        (pb::AlertState::Resolved as i32, "sent_to_hospital")
    );
    expect(&mut sub, K::ResolvedEvent).await;

    // Resolved is final, but can take notes.
    assert_eq!(
        code(op.acknowledge(action(id)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(op.escalate(action(id)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(disp.resolve(resolve(id, "false_alarm")).await),
        Code::FailedPrecondition
    );
    let mut late = action(id);
    late.note = "follow-up call tomorrow".into();
    op.add_note(late).await.unwrap();
    expect(&mut sub, K::Note).await;
    assert_eq!(
        code(op.acknowledge(action("no-such-alert")).await),
        Code::NotFound
    );
    assert_eq!(
        code(disp.resolve(resolve("no-such-alert", "false_alarm")).await),
        Code::NotFound
    );

    // The whole story, with who did what.
    let full = op
        .get_alert(pb::GetAlertRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let story: Vec<(i32, &str)> = full
        .history
        .iter()
        .map(|h| (h.kind, h.actor.as_str()))
        .collect();
    assert_eq!(
        story,
        vec![
            (K::Raised as i32, ""),
            (K::AcknowledgedEvent as i32, "op-1"),
            (K::DispatchedEvent as i32, "disp-1"),
            (K::DispatchedEvent as i32, "disp-1"),
            (K::Note as i32, "disp-1"),
            (K::Escalated as i32, "op-1"),
            (K::ResolvedEvent as i32, "disp-1"),
            (K::Note as i32, "op-1"),
        ]
    );
    assert!(full.history.iter().all(|h| h.hash.len() == 64));

    // A false alarm can be closed straight from OPEN.
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-2").await;
    let (_, b) = expect(&mut sub, K::Raised).await;
    let r = op
        .resolve(resolve(&b.id, "false_alarm"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome, "false_alarm");
}

#[tokio::test]
async fn every_role_against_every_rpc() {
    use tonic::Code;
    let s = Server::start();
    let allowed: &[(&str, &[&str])] = &[
        ("Subscribe", &["operator", "dispatcher", "viewer"]),
        ("ListAlerts", &["operator", "dispatcher", "viewer"]),
        ("GetAlert", &["operator", "dispatcher", "viewer"]),
        ("Stats", &["operator", "dispatcher", "viewer"]),
        ("ListSilences", &["operator", "dispatcher", "viewer"]),
        ("Acknowledge", &["operator"]),
        ("Escalate", &["operator"]),
        ("CreateSilence", &["operator"]),
        ("EndSilence", &["operator"]),
        ("Dispatch", &["operator", "dispatcher"]),
        ("Resolve", &["operator", "dispatcher"]),
        ("AddNote", &["operator", "dispatcher"]),
    ];
    for role in ["operator", "dispatcher", "admin", "viewer", "none"] {
        let mut c = s.grpc_as(role).await;
        for (rpc, roles) in allowed {
            let got = match *rpc {
                "Subscribe" => code(c.subscribe(pb::SubscribeRequest::default()).await),
                "ListAlerts" => code(c.list_alerts(pb::ListAlertsRequest::default()).await),
                "GetAlert" => code(
                    c.get_alert(pb::GetAlertRequest {
                        id: "x".into(),
                        ..Default::default()
                    })
                    .await,
                ),
                "Stats" => code(c.stats(pb::StatsRequest::default()).await),
                "ListSilences" => code(c.list_silences(pb::ListSilencesRequest::default()).await),
                "Acknowledge" => code(c.acknowledge(action("x")).await),
                "Escalate" => code(c.escalate(action("x")).await),
                "CreateSilence" => {
                    code(c.create_silence(pb::CreateSilenceRequest::default()).await)
                }
                "EndSilence" => code(
                    c.end_silence(pb::EndSilenceRequest { id: "x".into() })
                        .await,
                ),
                "Dispatch" => code(
                    c.dispatch(dispatch("x", pb::ResponderType::FamilyDoctor, "Li"))
                        .await,
                ),
                "Resolve" => code(c.resolve(resolve("x", "false_alarm")).await),
                "AddNote" => code(
                    c.add_note(pb::AlertActionRequest {
                        alert_id: "x".into(),
                        note: "n".into(),
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
    // A token that is not in the file.
    let mut c = AlertServiceClient::with_interceptor(
        s.channel().await,
        Bearer(Some("Bearer ect_forged".parse().unwrap())),
    );
    assert_eq!(
        code(c.list_alerts(pb::ListAlertsRequest::default()).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn an_unanswered_alert_is_escalated_then_reminded_until_acknowledged() {
    use pb::AlertEventKind as K;
    let s = Server::start_with(None, Some("[escalation]\ncritical_s = 1\n"));
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    sos(&btn, "btn-1").await;
    let (_, a) = expect(&mut sub, K::Raised).await;
    let (ev, e1) = expect(&mut sub, K::Escalated).await;
    assert_eq!((e1.escalations, ev.actor.as_str()), (1, ""));
    assert!(ev.note.contains("Not acknowledged"), "{}", ev.note);
    let (ev, e2) = expect(&mut sub, K::Escalated).await;
    assert_eq!(e2.escalations, 2);
    assert!(ev.note.starts_with("Reminder 2"), "{}", ev.note);
    s.grpc().await.acknowledge(action(&a.id)).await.unwrap();
    // Reminders may have crossed with the acknowledgement; after it, none.
    loop {
        let ev = next(&mut sub).await;
        if ev.kind == K::AcknowledgedEvent as i32 {
            break;
        }
        assert_eq!(ev.kind, K::Escalated as i32);
    }
    let btn2 = device(&s, "btn-2").await;
    sos(&btn2, "btn-2").await;
    let (_, b) = expect(&mut sub, K::Raised).await;
    assert_eq!(
        b.elder_id, "E2",
        "nothing for the acknowledged alert in between"
    );
}

#[tokio::test]
async fn a_silenced_alert_is_stored_marked_muted_and_reaches_only_the_operations_queue() {
    use pb::AlertEventKind as K;
    use tonic::Code;
    let s = Server::start();
    let mut op = s.grpc().await;
    let until = Some(eldercare_proto::wkt::Timestamp {
        seconds: now_ms() / 1000 + 3600,
        nanos: 0,
    });
    let silence = |elder: &str, device: &str, reason: &str| pb::CreateSilenceRequest {
        kind: "sos".into(),
        elder_id: elder.into(),
        device_id: device.into(),
        reason: reason.into(),
        until,
    };
    for (req, why) in [
        (silence("E3", "", ""), "reason"),
        (silence("E3", "btn-3", "x"), "exactly one"),
        (
            pb::CreateSilenceRequest {
                until: Some(eldercare_proto::wkt::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..silence("E3", "", "x")
            },
            "future",
        ),
        (
            pb::CreateSilenceRequest {
                kind: "nap".into(),
                ..silence("E3", "", "x")
            },
            "unknown alert kind",
        ),
    ] {
        let e = op.create_silence(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
    let sil = op
        .create_silence(silence("E3", "", "in hospital until Friday"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sil.created_by, "op-1");
    let listed = op
        .list_silences(pb::ListSilencesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.silences.len(), 1);

    let sub_in = |queue: &'static str| {
        let s = &s;
        async move {
            s.grpc()
                .await
                .subscribe(pb::SubscribeRequest {
                    queue: queue.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut hotline = sub_in("hotline").await;
    let mut operations = sub_in("operations").await;
    let btn3 = device(&s, "btn-3").await;
    sos(&btn3, "btn-3").await;
    let (_, muted) = expect(&mut operations, K::Raised).await;
    assert!(muted.muted);
    assert_eq!(
        (muted.queue.as_str(), muted.silence_id.as_str()),
        ("operations", sil.id.as_str())
    );
    // The hotline does not see it: its next event is another elder's SOS.
    let btn1 = device(&s, "btn-1").await;
    sos(&btn1, "btn-1").await;
    let (_, other) = expect(&mut hotline, K::Raised).await;
    assert_eq!((other.elder_id.as_str(), other.muted), ("E1", false));
    // Still stored and listed.
    let stored = op
        .get_alert(pb::GetAlertRequest {
            id: muted.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.muted);

    // Ended: the next SOS of E3 rings the hotline again.
    op.end_silence(pb::EndSilenceRequest { id: sil.id.clone() })
        .await
        .unwrap();
    assert_eq!(
        code(op.end_silence(pb::EndSilenceRequest { id: sil.id }).await),
        Code::NotFound
    );
    op.resolve(resolve(&muted.id, "false_alarm")).await.unwrap();
    sos(&btn3, "btn-3").await;
    let (_, again) = expect(&mut hotline, K::Raised).await;
    assert_eq!((again.elder_id.as_str(), again.muted), ("E3", false));
    let bad = s
        .grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            queue: "vip".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_subscribers_get_everything_while_a_stalled_one_is_cut_off_and_resumes() {
    const EVENTS: u64 = 300;
    let s = Server::start_with(
        None,
        Some("subscriber_buffer = 8\nsubscriber_stall_s = 1.0\n"),
    );
    // Each reader reports every seq it gets; the next SOS goes out once all
    // 19 have the previous event, so "promptly" is checked event by event.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut readers = Vec::new();
    for _ in 0..19 {
        let mut sub = s.subscribe(0).await;
        let seen_tx = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while (seqs.len() as u64) < EVENTS {
                let seq = next(&mut sub).await.seq;
                seqs.push(seq);
                let _ = seen_tx.send(seq);
            }
            seqs
        }));
    }
    // The stalled client also keeps a small HTTP/2 window, as a phone on a
    // bad network would, so the server's buffer is what fills.
    let small = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut stalled = AlertServiceClient::with_interceptor(small, s.bearer("viewer"))
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let btn = device(&s, "btn-1").await;
    for i in 1..=EVENTS {
        sos(&btn, "btn-1").await;
        let mut n = 0;
        while n < 19 {
            let seq = tokio::time::timeout(DEADLINE, seen.recv())
                .await
                .expect("a reader stopped receiving")
                .unwrap();
            assert_eq!(seq, i);
            n += 1;
        }
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), (1..=EVENTS).collect::<Vec<_>>());
    }
    assert_eq!(
        s.await_counter("eldercare_subscribers_cut_off_total", "", 1)
            .await,
        1,
        "the stalled subscriber, and only it, is cut off"
    );
    // Now the stalled one reads: what was buffered, then the cut.
    let mut got = Vec::new();
    let status = loop {
        match tokio::time::timeout(DEADLINE, stalled.message())
            .await
            .expect("hang")
        {
            Ok(Some(ev)) => got.push(ev.seq),
            Ok(None) => panic!("ended without telling why"),
            Err(st) => break st,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let last: u64 = status
        .metadata()
        .get("eldercare-last-seq")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        status.message().contains(&format!("after_seq = {last}")),
        "{}",
        status.message()
    );
    assert!(last < EVENTS, "it was cut off before the end");
    assert_eq!(got, (1..=last).collect::<Vec<_>>());
    let mut resumed = s.subscribe(last).await;
    for want in last + 1..=EVENTS {
        assert_eq!(next(&mut resumed).await.seq, want);
    }
}

#[tokio::test]
async fn audit_verify_finds_a_tampered_event() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let btn = device(&s, "btn-1").await;
    for _ in 0..3 {
        sos(&btn, "btn-1").await;
        next(&mut sub).await;
    }
    let verify = |dir: &std::path::Path| {
        Command::new(BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let ok = verify(s.dir.path());
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK, 3 events"));
    // Someone rewrites who acted on event 2, straight in the database.
    let url = format!("sqlite://{}", s.dir.path().join("eldercare.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE alert_events SET actor = 'op-9' WHERE seq = 2")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let bad = verify(s.dir.path());
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("BROKEN at seq 2"), "{out}");
}

#[tokio::test]
async fn stats_count_by_kind_and_measure_answer_times() {
    let s = Server::start();
    let mut sub = s.subscribe(0).await;
    let t0 = now_ms() - 1000;
    let mut op = s.grpc().await;
    for id in ["btn-1", "btn-2", "btn-3"] {
        let d = device(&s, id).await;
        sos(&d, id).await;
        let a = next(&mut sub).await.alert.unwrap();
        if id != "btn-3" {
            op.acknowledge(action(&a.id)).await.unwrap();
            next(&mut sub).await;
        }
    }
    let range = |community: &str| pb::StatsRequest {
        from: Some(eldercare_proto::wkt::Timestamp {
            seconds: t0 / 1000 - 60,
            nanos: 0,
        }),
        to: Some(eldercare_proto::wkt::Timestamp {
            seconds: now_ms() / 1000 + 60,
            nanos: 0,
        }),
        community: community.into(),
    };
    let st = op.stats(range("")).await.unwrap().into_inner();
    assert_eq!((st.total, st.hotline_total, st.acknowledged), (3, 3, 2));
    assert_eq!(st.by_kind.len(), 1);
    assert_eq!(
        (st.by_kind[0].kind.as_str(), st.by_kind[0].count),
        ("sos", 3)
    );
    assert!(
        (st.acknowledged_within_60s - 2.0 / 3.0).abs() < 1e-9,
        "{st:?}"
    );
    assert!((st.acknowledged_within_180s - 2.0 / 3.0).abs() < 1e-9);
    let c1 = op.stats(range("C1")).await.unwrap().into_inner();
    assert_eq!((c1.total, c1.acknowledged_within_60s), (1, 1.0));
    let list = |kinds: &[&str], community: &str| pb::ListAlertsRequest {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        community: community.into(),
        ..Default::default()
    };
    let got = op
        .list_alerts(list(&["sos"], "C1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.alerts.len(), 1);
    assert_eq!(got.alerts[0].community, "C1");
    assert!(
        op.list_alerts(list(&["fall"], ""))
            .await
            .unwrap()
            .into_inner()
            .alerts
            .is_empty()
    );
    assert_eq!(
        code(op.list_alerts(list(&["nap"], "")).await),
        tonic::Code::InvalidArgument
    );
    let e = op.stats(pb::StatsRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let m = s.metrics();
    assert!(
        m.contains("eldercare_alert_answer_seconds"),
        "answer-time histogram exported"
    );
}

#[tokio::test]
async fn an_admin_reloads_the_rules_over_the_api_and_a_bad_file_is_refused_with_its_key() {
    use pb::admin_service_client::AdminServiceClient;
    let s = Server::start_with_rules(Some("[vitals]\nhold_s = 60\n"));
    let admin = |role: &'static str| {
        let s = &s;
        async move { AdminServiceClient::with_interceptor(s.channel().await, s.bearer(role)) }
    };
    std::fs::write(
        s.dir.path().join("rules.toml"),
        "[vitals]\nhold_s = 30\n[elders.E1.vitals]\npulse_high = 150\n",
    )
    .unwrap();
    let r = admin("admin")
        .await
        .reload_rules(pb::ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(r.file.ends_with("rules.toml"), "{}", r.file);
    assert_eq!(r.elder_overrides, 1);
    let line = s.lines.recv_timeout(DEADLINE).unwrap();
    assert!(line.starts_with("rules reloaded"), "{line}");

    std::fs::write(s.dir.path().join("rules.toml"), "[vitals]\nhold_s = -1\n").unwrap();
    let e = admin("admin")
        .await
        .reload_rules(pb::ReloadRulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("vitals.hold_s"), "{}", e.message());
    for role in ["operator", "dispatcher", "viewer"] {
        let e = admin(role)
            .await
            .reload_rules(pb::ReloadRulesRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{role}");
    }

    let plain = Server::start();
    let e = AdminServiceClient::with_interceptor(plain.channel().await, plain.bearer("admin"))
        .reload_rules(pb::ReloadRulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
}

#[cfg(unix)]
#[tokio::test]
async fn a_revoked_token_stops_working_after_sighup() {
    let s = Server::start();
    let mut op = s.grpc().await;
    op.list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap();
    let list = Command::new(BIN)
        .args(["token", "list", "--data-dir"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("op-1\toperator"), "{listed}");
    assert!(!listed.contains(&s.tokens["operator"]), "never the token");
    let out = Command::new(BIN)
        .args(["token", "revoke", "--operator", "op-1", "--data-dir"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let line = s
        .lines
        .recv_timeout(DEADLINE)
        .expect("the server reports the reload");
    assert_eq!(line, "tokens reloaded (3)");
    let e = op
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // The other roles' tokens still work.
    s.grpc_as("viewer")
        .await
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .unwrap();
}
