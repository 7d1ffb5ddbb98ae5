//! The MQTT 5 contract of docs/device-protocol.md held against a client
//! the project did not write: Debian's Python paho-mqtt 1.6.1 speaking
//! MQTT 5, and, where paho cannot say or show something (a PUBACK's
//! reason code and properties, a topic alias never offered, AUTH, a
//! second CONNECT), MQTT 5 packets written by hand from the OASIS
//! specification (tests/support/raw_mqtt5.rs).
//!
//! Each paho scenario is a short script run with `/usr/bin/python3 -c`
//! after a common prelude: it prints one JSON line per event (a CONNACK
//! and its properties, a SUBACK, a command received, the connection
//! closed) and, where the test must act in between (acknowledge an
//! alert, look at the stored readings), waits for a line on its stdin.
//! Every wait is on an event, bounded by `support::DEADLINE`; the only
//! timed waits are a will's or a session's own delay (2 s or less) and a
//! short quiet window that shows a command is held back.
#[path = "support/mqtt5_fixtures.rs"]
mod fixtures;
#[path = "support/raw_mqtt5.rs"]
mod raw5;
mod support;

use eldercare_proto::v1 as pb;
use fixtures::*;
use raw5::{Prop, Read, prop};
use serde_json::Value;
use std::time::Duration;
use support::*;

// ---------------------------------------------------------------------
// 1. Session expiry and resumption

const SESSION_SCRIPT: &str = r#"
# A kept session: its subscription, and a command sent while away.
d = Dev("btn-1", "btn-1-fw")
emit("connack", **d.connect(False, SessionExpiryInterval=300))
emit("suback", **d.subscribe("eldercare/v1/btn-1/cmd", 1))
d.publish("eldercare/v1/btn-1/event", json.dumps({"ts": now_ms(), "type": "sos"}))
emit("published")
step()
d.disconnect()
emit("away")
step()
d = Dev("btn-1", "btn-1-fw")
emit("resumed", **d.connect(False, SessionExpiryInterval=300))
emit("message", **d.expect("message"))
d.disconnect()
d = Dev("btn-1", "btn-1-fw")
emit("clean", **d.connect(True, SessionExpiryInterval=300))
d.disconnect()

# A session of 1 s is gone 2 s later.
d = Dev("btn-3", "btn-3-fw")
d.connect(False, SessionExpiryInterval=1)
d.subscribe("eldercare/v1/btn-3/cmd", 1)
d.disconnect()
time.sleep(2)
d = Dev("btn-3", "btn-3-fw")
emit("after_expiry", **d.connect(False, SessionExpiryInterval=1))
d.disconnect()

# More than a day is granted as a day, and said so.
d = Dev("btn-4", "btn-4-fw")
emit("capped", **d.connect(True, SessionExpiryInterval=10 * 86400))
d.disconnect()

# An empty client id: the server assigns one, and it resumes the session.
d = Dev("btn-5", "")
a = d.connect(False, SessionExpiryInterval=300)
emit("assigned", **a)
d.subscribe("eldercare/v1/btn-5/cmd", 1)
d.disconnect()
d = Dev("btn-5", a["props"]["AssignedClientIdentifier"])
emit("assigned_resumed", **d.connect(False, SessionExpiryInterval=300))
d.disconnect()
"#;

#[tokio::test]
async fn a_kept_session_comes_back_with_its_subscription_and_the_commands_sent_meanwhile() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let mut py = Paho::run(&s, SESSION_SCRIPT, &[]);

    let a = py.event("connack").await;
    assert_eq!(
        (&a["rc"], &a["session_present"]),
        (&0.into(), &0.into()),
        "{a}"
    );
    assert_eq!(py.event("suback").await["rcs"], serde_json::json!([1]));
    py.event("published").await;
    let alert = raised(&mut alerts).await;
    assert_eq!(
        (alert.device_id.as_str(), alert.kind.as_str()),
        ("btn-1", "sos")
    );
    py.go().await;
    py.event("away").await;
    // Acknowledged while the device is away: the command waits in its
    // kept session.
    acknowledge(&s, &alert.id).await;
    py.go().await;

    let a = py.event("resumed").await;
    assert_eq!(
        a["session_present"], 1,
        "clean start 0 within the expiry: {a}"
    );
    let m = py.event("message").await;
    assert_eq!(m["topic"], "eldercare/v1/btn-1/cmd", "{m}");
    assert_eq!(m["qos"], 1, "commands are QoS 1: {m}");
    let cmd: Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        (cmd["type"].as_str(), cmd["alert_id"].as_str()),
        (Some("alert_ack"), Some(alert.id.as_str()))
    );
    let a = py.event("clean").await;
    assert_eq!(a["session_present"], 0, "clean start 1 starts afresh: {a}");

    let a = py.event("after_expiry").await;
    assert_eq!(a["session_present"], 0, "expired after 1 s: {a}");
    let a = py.event("capped").await;
    assert_eq!(a["props"]["SessionExpiryInterval"], 86_400, "{a}");

    let a = py.event("assigned").await;
    let id = a["props"]["AssignedClientIdentifier"]
        .as_str()
        .unwrap_or("");
    assert!(!id.is_empty(), "an empty client id is given one: {a}");
    let a = py.event("assigned_resumed").await;
    assert_eq!(
        a["session_present"], 1,
        "the assigned id names the session: {a}"
    );
    py.finish().await;
}

// ---------------------------------------------------------------------
// 2. Will delay

const WILL_SCRIPT: &str = r#"
# btn-1: lost, back within its will delay of 2 s: no will.
d = Dev("btn-1", "w")
d.will("btn-1", WillDelayInterval=2)
d.connect(False, SessionExpiryInterval=60)
d.drop()
d = Dev("btn-1", "w")
d.will("btn-1", WillDelayInterval=2)
emit("back", **d.connect(False, SessionExpiryInterval=60))
time.sleep(3)  # the will's delay, passed
d.publish("eldercare/v1/btn-1/status", json.dumps({"ts": now_ms(), "battery_pct": 55}))
emit("barrier")
d.disconnect()

# btn-2: lost, no delay: the will at once.
d = Dev("btn-2")
d.will("btn-2")
d.connect(True)
d.drop()
emit("lost")

# btn-3: DISCONNECT 0x04 asks for the will.
d = Dev("btn-3")
d.will("btn-3", WillDelayInterval=0)
d.connect(True)
d.disconnect(0x04)
emit("with_will")

# btn-4 and btn-5: a normal DISCONNECT, short (e0 00) and with its
# reason code alone (e0 01 00): no will.
d = Dev("btn-4")
d.will("btn-4")
d.connect(True)
d.disconnect()
d = Dev("btn-5")
d.will("btn-5")
d.connect(True)
d.disconnect(0x00)
for dev in ("btn-4", "btn-5"):
    d = Dev(dev, dev + "-again")
    d.connect(True)
    d.publish("eldercare/v1/%s/status" % dev, json.dumps({"ts": now_ms(), "battery_pct": 60}))
    d.disconnect()
emit("goodbyes")

# btn-6: a will delay longer than the session (expiry 0): the session
# ends with the connection, and the will goes with it.
d = Dev("btn-6")
d.will("btn-6", WillDelayInterval=30)
d.connect(True)
d.drop()
emit("short_session")
"#;

#[tokio::test]
async fn a_delayed_will_waits_and_is_dropped_when_the_device_comes_back() {
    let s = start();
    let mut py = Paho::run(&s, WILL_SCRIPT, &[]);
    let a = py.event("back").await;
    assert_eq!(a["session_present"], 1, "{a}");
    py.event("barrier").await;
    let all = await_reading(&s, "btn-1", "status", "battery reading", |v| {
        v["battery_pct"] == 55
    })
    .await;
    assert!(
        !all.iter().any(is_will),
        "back within the will delay, yet the will was published: {all:?}"
    );

    py.event("lost").await;
    await_reading(&s, "btn-2", "status", "last will", is_will).await;
    py.event("with_will").await;
    await_reading(&s, "btn-3", "status", "last will", is_will).await;
    py.event("goodbyes").await;
    for dev in ["btn-4", "btn-5"] {
        let all = await_reading(&s, dev, "status", "battery reading", |v| {
            v["battery_pct"] == 60
        })
        .await;
        assert!(
            !all.iter().any(is_will),
            "{dev} said goodbye, yet its will was published: {all:?}"
        );
    }
    py.event("short_session").await;
    await_reading(&s, "btn-6", "status", "last will", is_will).await;
    py.finish().await;
}

// ---------------------------------------------------------------------
// 3. Request Problem Information 0

/// §3.1.2.11.7 [MQTT-3.1.2-29]: with Request Problem Information 0 a
/// PUBACK carries its reason code alone, no Reason String; without it
/// the reason is given.
#[tokio::test]
async fn a_refusal_is_explained_on_puback_only_when_problem_information_is_requested() {
    let s = start();
    let bad = format!(r#"{{"ts": {}, "type": "explode"}}"#, now_ms());
    for (rpi, explained) in [(Some(0), false), (Some(1), true), (None, true)] {
        let props: Vec<Prop> = rpi
            .map(|v| Prop::Byte(prop::REQUEST_PROBLEM_INFO, v))
            .into_iter()
            .collect();
        let (mut c, _) = raw_login(&s, "btn-1", &props).await;
        let p = raw_publish(&mut c, 1, &topic("btn-1", "event"), &[], bad.as_bytes()).await;
        let (_, rc, props) = p.ack();
        assert_eq!(rc, 0x99, "payload format invalid: {p:?}");
        let reason = raw5::find(&props, prop::REASON_STRING);
        assert_eq!(
            reason.is_some(),
            explained,
            "Request Problem Information {rpi:?}: {props:?}"
        );
        assert!(
            explained || raw5::find(&props, prop::USER_PROPERTY).is_none(),
            "{props:?}"
        );
        c.send(&raw5::DISCONNECT_NORMAL).await;
    }
}

// ---------------------------------------------------------------------
// 4. The client's Receive Maximum

#[tokio::test]
async fn commands_are_sent_within_the_devices_receive_maximum() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let (mut c, _) = raw_login(&s, "btn-1", &[Prop::Two(prop::RECEIVE_MAX, 1)]).await;
    raw_subscribe_cmd(&mut c, "btn-1").await;
    let t = topic("btn-1", "event");
    let p = raw_publish(&mut c, 1, &t, &[], event("sos").as_bytes()).await;
    assert_eq!(p.ack().1, 0, "{p:?}");
    let fall = format!(
        r#"{{"ts": {}, "type": "fall", "confidence": 0.95}}"#,
        now_ms()
    );
    let p = raw_publish(&mut c, 2, &t, &[], fall.as_bytes()).await;
    assert_eq!(p.ack().1, 0, "{p:?}");
    let first = raised(&mut alerts).await;
    let second = raised(&mut alerts).await;
    acknowledge(&s, &first.id).await;
    acknowledge(&s, &second.id).await;

    let one = c.next().await.publish();
    assert_eq!((one.topic.as_str(), one.qos), ("eldercare/v1/btn-1/cmd", 1));
    // Both commands are due; the device takes one at a time.
    match c.read_within(Duration::from_millis(700)).await {
        Read::Quiet => {}
        other => panic!("a second command before the first was acknowledged: {other:?}"),
    }
    // Acknowledged with its reason code alone (remaining length 3).
    c.send(&raw5::puback(one.pkid, Some(0))).await;
    let two = c.next().await.publish();
    assert_eq!(two.qos, 1);
    c.send(&raw5::puback(two.pkid, None)).await;
    let mut ids = vec![
        command(&one)["alert_id"].as_str().unwrap().to_string(),
        command(&two)["alert_id"].as_str().unwrap().to_string(),
    ];
    ids.sort();
    let mut want = vec![first.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    c.send(&raw5::PINGREQ).await;
    assert_eq!(c.next().await.kind(), raw5::PINGRESP);
    c.send(&raw5::DISCONNECT_NORMAL).await;
}

// ---------------------------------------------------------------------
// 5. The client's Maximum Packet Size

#[tokio::test]
async fn a_command_larger_than_the_devices_maximum_packet_size_is_never_sent() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    const MAX: usize = 40;
    let (mut c, _) = raw_login(
        &s,
        "btn-1",
        &[Prop::Four(prop::MAX_PACKET_SIZE, MAX as u32)],
    )
    .await;
    raw_subscribe_cmd(&mut c, "btn-1").await;
    let p = raw_publish(
        &mut c,
        1,
        &topic("btn-1", "event"),
        &[],
        event("sos").as_bytes(),
    )
    .await;
    assert_eq!(p.ack().1, 0);
    let alert = raised(&mut alerts).await;
    acknowledge(&s, &alert.id).await;
    // The command (some 100 bytes) is dropped and counted.
    s.await_counter("eldercare_mqtt_commands_too_large_total", "", 1)
        .await;
    assert_eq!(s.counter("eldercare_mqtt_commands_too_large_total", ""), 1);
    c.send(&raw5::PINGREQ).await;
    let p = c.next().await;
    assert_eq!(p.kind(), raw5::PINGRESP, "nothing but the PINGRESP: {p:?}");
    assert!(p.size <= MAX);

    // Room for a command: it arrives. (Another elder's button: an open
    // SOS of E1 would take a second one as more evidence.)
    let (mut c2, _) = raw_login(&s, "btn-9", &[Prop::Four(prop::MAX_PACKET_SIZE, 256)]).await;
    raw_subscribe_cmd(&mut c2, "btn-9").await;
    raw_publish(
        &mut c2,
        1,
        &topic("btn-9", "event"),
        &[],
        event("sos").as_bytes(),
    )
    .await;
    let alert = raised(&mut alerts).await;
    acknowledge(&s, &alert.id).await;
    let p = c2.next().await;
    assert!(p.size <= 256, "{p:?}");
    assert_eq!(command(&p.publish())["alert_id"], alert.id.as_str());
}

// ---------------------------------------------------------------------
// 6. A topic alias, never offered

#[tokio::test]
async fn a_topic_alias_ends_the_session_with_disconnect_0x94() {
    let s = start();
    for (n, t) in [(1u16, topic("btn-1", "event")), (2, String::new())] {
        let (mut c, ack) = raw_login(&s, "btn-1", &[]).await;
        // Topic Alias Maximum absent: 0, none may be used (§3.2.2.3.8).
        assert!(
            raw5::find(&ack, prop::TOPIC_ALIAS_MAX)
                .is_none_or(|p| *p == Prop::Two(prop::TOPIC_ALIAS_MAX, 0)),
            "{ack:?}"
        );
        c.send(&raw5::publish(
            &t,
            1,
            1,
            &[Prop::Two(prop::TOPIC_ALIAS, 1)],
            event("sos").as_bytes(),
        ))
        .await;
        let seen = c.until_closed().await;
        assert_eq!(
            seen.len(),
            1,
            "one DISCONNECT, then the socket closes: {seen:?}"
        );
        assert_eq!(seen[0].disconnect().0, 0x94, "{:?}", seen[0]);
        s.await_counter(
            "eldercare_mqtt_connections_closed_total",
            "topic_alias",
            u64::from(n),
        )
        .await;
    }
    assert_eq!(
        s.counter("eldercare_mqtt_connections_closed_total", "topic_alias"),
        2
    );
}

// ---------------------------------------------------------------------
// 7. Keep-alive 0, user properties, payload format, content type

const PROPERTIES_SCRIPT: &str = r#"
d = Dev("btn-1")
emit("connack", **d.connect(True, keepalive=0, UserProperty=[("fw", "2.1.0"), ("model", "B-7")]))
d.publish("eldercare/v1/btn-1/event", json.dumps({"ts": now_ms(), "type": "sos"}),
          UserProperty=[("trace", "a1")], PayloadFormatIndicator=1,
          ContentType="application/json", MessageExpiryInterval=120)
emit("sos")
d.disconnect()
d = Dev("band-1")
d.connect(True)
d.publish("eldercare/v1/band-1/vitals", bytes.fromhex(ARGS[0]),
          ContentType="application/x-protobuf")
emit("protobuf")
d.publish("eldercare/v1/band-1/status", json.dumps({"ts": now_ms(), "battery_pct": 80}),
          qos=1, retain=True)
emit("retained")
d.disconnect()
"#;

#[tokio::test]
async fn properties_a_device_may_send_are_taken() {
    use prost::Message;
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let pb_vitals = pb::DeviceMessage {
        ts_ms: now_ms(),
        seq: Some(1),
        body: Some(pb::device_message::Body::Vitals(pb::Vitals {
            hr: Some(77),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let hex: String = pb_vitals.iter().map(|b| format!("{b:02x}")).collect();
    let mut py = Paho::run(&s, PROPERTIES_SCRIPT, &[&hex]);
    let a = py.event("connack").await;
    assert_eq!(a["rc"], 0, "{a}");
    assert_eq!(
        a["props"]["ServerKeepAlive"], 3600,
        "keep-alive 0: the server's hour: {a}"
    );
    assert_eq!(a["props"]["ReceiveMaximum"], 64, "{a}");
    assert_eq!(a["props"]["MaximumPacketSize"], 262_144, "{a}");
    assert_eq!(a["props"]["WildcardSubscriptionAvailable"], 0, "{a}");
    assert_eq!(a["props"]["SubscriptionIdentifierAvailable"], 0, "{a}");
    assert_eq!(a["props"]["SharedSubscriptionAvailable"], 0, "{a}");
    assert!(
        a["props"].get("TopicAliasMaximum").is_none_or(|v| v == 0),
        "{a}"
    );

    py.event("sos").await;
    let alert = raised(&mut alerts).await;
    assert_eq!(
        (alert.device_id.as_str(), alert.kind.as_str()),
        ("btn-1", "sos")
    );

    py.event("protobuf").await;
    await_reading(&s, "band-1", "vitals", "protobuf reading", |v| {
        v["hr"] == 77
    })
    .await;
    py.event("retained").await;
    await_reading(&s, "band-1", "status", "retained reading", |v| {
        v["battery_pct"] == 80
    })
    .await;
    py.finish().await;
    assert_eq!(
        s.counter("eldercare_ingest_refused_total", ""),
        0,
        "nothing refused: {}",
        s.metrics()
    );

    // The same, raw, to see each PUBACK's reason code: success.
    let (mut c, _) = raw_login(&s, "band-1", &[]).await;
    let props = [
        Prop::Byte(prop::PAYLOAD_FORMAT, 1),
        Prop::Pair(prop::USER_PROPERTY, "k".into(), "v".into()),
        Prop::Pair(prop::USER_PROPERTY, "k".into(), "v2".into()),
    ];
    let json = format!(r#"{{"ts": {}, "hr": 81}}"#, now_ms());
    let p = raw_publish(
        &mut c,
        1,
        &topic("band-1", "vitals"),
        &props,
        json.as_bytes(),
    )
    .await;
    assert_eq!(p.ack().1, 0, "{p:?}");
    let ct = [Prop::Str(
        prop::CONTENT_TYPE,
        "application/x-protobuf".into(),
    )];
    let mut again = pb::DeviceMessage::decode(&pb_vitals[..]).unwrap();
    again.seq = Some(2);
    let p = raw_publish(
        &mut c,
        2,
        &topic("band-1", "vitals"),
        &ct,
        &again.encode_to_vec(),
    )
    .await;
    assert_eq!(p.ack().1, 0, "{p:?}");
    // JSON under the protobuf content type is not protobuf.
    let p = raw_publish(&mut c, 3, &topic("band-1", "vitals"), &ct, json.as_bytes()).await;
    assert_eq!(p.ack().1, 0x99, "{p:?}");
    c.send(&raw5::DISCONNECT_NORMAL).await;
}

// ---------------------------------------------------------------------
// 8. Extended authentication, AUTH, a second CONNECT

const AUTH_SCRIPT: &str = r#"
d = Dev("btn-1")
emit("connack", **d.connect(True, AuthenticationMethod="SCRAM-SHA-1",
                            AuthenticationData=b"n,,n=btn-1,r=abc"))
emit("closed", **d.expect("closed"))
"#;

#[tokio::test]
async fn extended_authentication_is_refused_and_a_second_connect_ends_the_session() {
    let s = start();
    let mut py = Paho::run(&s, AUTH_SCRIPT, &[]);
    let a = py.event("connack").await;
    assert_eq!(a["rc"], 0x8c, "Bad authentication method: {a}");
    py.event("closed").await;
    py.finish().await;
    s.await_counter(
        "eldercare_mqtt_connections_refused_total",
        "bad_auth_method",
        1,
    )
    .await;

    // AUTH (type 15) after a plain login: the session closes.
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    c.send(&raw5::packet(0xf0, &[0x18, 0x00])).await;
    let rc = disconnected(&mut c).await;
    assert!(rc >= 0x80, "an error closes it: {rc:#x}");

    // AUTH instead of CONNECT: no session at all.
    let mut c = raw5::Client::open(&s.mqtt).await;
    c.send(&raw5::packet(0xf0, &[0x18, 0x00])).await;
    let seen = c.until_closed().await;
    assert!(
        seen.iter()
            .all(|p| p.kind() != raw5::CONNACK || p.connack().1 >= 0x80),
        "{seen:?}"
    );

    // A second CONNECT on a logged-in session.
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    c.send(&raw5::connect(
        "btn-1",
        Some(("btn-1", "s-btn-1")),
        60,
        true,
        &[],
        None,
    ))
    .await;
    let rc = disconnected(&mut c).await;
    assert!(rc >= 0x80, "an error closes it: {rc:#x}");
}

// ---------------------------------------------------------------------
// 9. What else a client may do

#[tokio::test]
async fn qos2_on_an_own_topic_completes_and_raises_the_alert_once() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    c.send(&raw5::publish(
        &topic("btn-1", "event"),
        2,
        7,
        &[],
        event("sos").as_bytes(),
    ))
    .await;
    let rec = c.next().await;
    assert_eq!(rec.kind(), raw5::PUBREC, "{rec:?}");
    let (pkid, rc, _) = rec.ack();
    assert_eq!((pkid, rc), (7, 0), "{rec:?}");
    c.send(&raw5::pubrel(7)).await;
    let comp = c.next().await;
    assert_eq!(comp.kind(), raw5::PUBCOMP, "{comp:?}");
    assert_eq!(comp.ack().0, 7);
    let alert = raised(&mut alerts).await;
    assert_eq!(
        (alert.device_id.as_str(), alert.kind.as_str()),
        ("btn-1", "sos")
    );
    c.send(&raw5::PINGREQ).await;
    assert_eq!(c.next().await.kind(), raw5::PINGRESP);
    c.send(&raw5::DISCONNECT_NORMAL).await;
}

#[tokio::test]
async fn unsubscribe_stops_commands_and_a_takeover_says_so() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    raw_subscribe_cmd(&mut c, "btn-1").await;
    c.send(&raw5::unsubscribe(2, &topic("btn-1", "cmd"))).await;
    let p = c.next().await;
    assert_eq!(p.kind(), raw5::UNSUBACK, "{p:?}");
    assert_eq!(p.suback(), (2, vec![0]), "{p:?}");
    raw_publish(
        &mut c,
        1,
        &topic("btn-1", "event"),
        &[],
        event("sos").as_bytes(),
    )
    .await;
    let alert = raised(&mut alerts).await;
    acknowledge(&s, &alert.id).await;
    // No command now; a PINGRESP is all that comes.
    c.send(&raw5::PINGREQ).await;
    let p = c.next().await;
    assert_eq!(p.kind(), raw5::PINGRESP, "{p:?}");
    match c.read_within(Duration::from_millis(500)).await {
        Read::Quiet => {}
        other => panic!("unsubscribed, yet: {other:?}"),
    }

    // The same client id connects again: the old connection is told.
    let (_c2, _) = raw_login(&s, "btn-1", &[]).await;
    assert_eq!(disconnected(&mut c).await, 0x8e, "session taken over");
}

#[tokio::test]
async fn a_subscription_identifier_the_server_does_not_offer_is_refused_or_honoured() {
    let s = start();
    let mut alerts = s.subscribe(0).await;
    let (mut c, ack) = raw_login(&s, "btn-1", &[]).await;
    assert_eq!(
        raw5::find(&ack, 0x29),
        Some(&Prop::Byte(0x29, 0)),
        "Subscription Identifiers Available 0: {ack:?}"
    );
    c.send(&raw5::subscribe(
        1,
        &[Prop::Vbi(prop::SUBSCRIPTION_ID, 5)],
        &topic("btn-1", "cmd"),
        1,
    ))
    .await;
    let p = match c.read_within(DEADLINE).await {
        Read::Packet(p) => p,
        other => panic!("{other:?}"),
    };
    match p.kind() {
        // Refused: "Subscription Identifiers not supported" (0xA1) on the
        // SUBACK, or on a DISCONNECT.
        raw5::SUBACK => {
            let (_, codes) = p.suback();
            if codes == [0xa1] {
                return;
            }
            assert_eq!(codes, [1], "{p:?}");
        }
        raw5::DISCONNECT => {
            assert_eq!(p.disconnect().0, 0xa1, "{p:?}");
            return;
        }
        _ => panic!("{p:?}"),
    }
    // Granted: the session works, and commands still reach the device.
    raw_publish(
        &mut c,
        1,
        &topic("btn-1", "event"),
        &[],
        event("sos").as_bytes(),
    )
    .await;
    let alert = raised(&mut alerts).await;
    acknowledge(&s, &alert.id).await;
    let cmd = c.next().await.publish();
    assert_eq!(command(&cmd)["alert_id"], alert.id.as_str());
}

/// A payload the server checks at once and refuses (0x99), with a reason
/// it would like to give.
fn bad_event() -> String {
    format!(r#"{{"ts": {}, "type": "explode"}}"#, now_ms())
}

/// MQTT 5 §3.1.2.11.4 [MQTT-3.1.2-24]: the server never sends a packet
/// larger than the client's Maximum Packet Size; a Reason String that
/// would make a PUBACK or a DISCONNECT too large is left out
/// ([MQTT-3.4.2-3], [MQTT-3.14.2-3]).
#[tokio::test]
async fn no_acknowledgement_or_goodbye_exceeds_the_devices_maximum_packet_size() {
    let s = start();
    const MAX: usize = 24;
    let (mut c, _) = raw_login(
        &s,
        "btn-1",
        &[Prop::Four(prop::MAX_PACKET_SIZE, MAX as u32)],
    )
    .await;
    c.send(&raw5::publish(
        &topic("btn-1", "event"),
        1,
        1,
        &[],
        bad_event().as_bytes(),
    ))
    .await;
    let p = c.next().await;
    assert_eq!((p.kind(), p.ack().1), (raw5::PUBACK, 0x99), "{p:?}");
    assert!(
        p.size <= MAX,
        "a PUBACK of {} bytes to a device that takes at most {MAX}: {p:?}",
        p.size
    );

    c.send(&raw5::publish(
        &topic("btn-1", "event"),
        1,
        2,
        &[Prop::Two(prop::TOPIC_ALIAS, 1)],
        bad_event().as_bytes(),
    ))
    .await;
    let seen = c.until_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].disconnect().0, 0x94, "{:?}", seen[0]);
    assert!(
        seen[0].size <= MAX,
        "a DISCONNECT of {} bytes to a device that takes at most {MAX}: {:?}",
        seen[0].size,
        seen[0]
    );
}

const EXPIRY_ZERO_SCRIPT: &str = r#"
for i in range(30):
    d = Dev("btn-2", "btn-2-fw")
    d.connect(False)
    d.subscribe("eldercare/v1/btn-2/cmd", 1)
    d.disconnect()
    d = Dev("btn-2", "btn-2-fw")
    emit("after_zero", i=i, **d.connect(False))
    d.disconnect()
emit("done")
"#;

/// MQTT 5 §3.1.2.11.2: with no Session Expiry Interval (0) "the Session
/// ends when the Network Connection is closed"; a CONNECT with clean
/// start 0 right after finds none, so Session Present is 0
/// [MQTT-3.2.2-3].
#[tokio::test]
async fn a_session_with_expiry_0_ends_with_its_connection() {
    let s = start();
    let mut py = Paho::run(&s, EXPIRY_ZERO_SCRIPT, &[]);
    let mut present = Vec::new();
    for _ in 0..30 {
        let a = py.event("after_zero").await;
        if a["session_present"] != 0 {
            present.push(a["i"].clone());
        }
    }
    py.event("done").await;
    py.finish().await;
    assert!(
        present.is_empty(),
        "session present after a session of expiry 0 ended, in rounds {present:?} of 30"
    );
}

const DISCONNECT_EXPIRY_SCRIPT: &str = r#"
d = Dev("btn-1", "btn-1-fw")
d.connect(False, SessionExpiryInterval=300)
d.subscribe("eldercare/v1/btn-1/cmd", 1)
d.disconnect(0x00, SessionExpiryInterval=0)
d = Dev("btn-1", "btn-1-fw")
emit("after", **d.connect(False, SessionExpiryInterval=300))
d.disconnect()
"#;

/// MQTT 5 §3.14.2.2.2: a DISCONNECT may carry a new Session Expiry
/// Interval; 0 ends the session with the connection, so the next CONNECT
/// with clean start 0 finds none.
#[tokio::test]
async fn a_disconnect_can_end_the_session_by_setting_its_expiry_to_0() {
    let s = start();
    let mut py = Paho::run(&s, DISCONNECT_EXPIRY_SCRIPT, &[]);
    let a = py.event("after").await;
    py.finish().await;
    assert_eq!(
        a["session_present"], 0,
        "DISCONNECT said Session Expiry Interval 0, yet the session was kept: {a}"
    );
}

/// MQTT 5 §3.1.0 [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error;
/// §4.12 [MQTT-4.12.0-?]: so is an AUTH from a client that named no
/// Authentication Method. §4.13.1: the DISCONNECT says so, 0x82 (not
/// 0x81, "malformed packet": both packets are well formed).
#[tokio::test]
async fn a_second_connect_and_an_unasked_auth_are_protocol_errors() {
    let s = start();
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    c.send(&raw5::connect(
        "btn-1",
        Some(("btn-1", "s-btn-1")),
        60,
        true,
        &[],
        None,
    ))
    .await;
    let second_connect = disconnected(&mut c).await;
    let (mut c, _) = raw_login(&s, "btn-1", &[]).await;
    c.send(&raw5::packet(0xf0, &[0x18, 0x00])).await;
    let auth = disconnected(&mut c).await;
    assert_eq!(
        (second_connect, auth),
        (0x82, 0x82),
        "DISCONNECT reason codes (second CONNECT, AUTH)"
    );
}
