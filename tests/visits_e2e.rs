//! Carers' visits and wellbeing check-ins seen from outside: the real
//! server on SQLite with its own rule file; providers, carers, visit plans
//! and check-in windows imported from CSV with `eldercare import`; tags
//! read by the homes' buttons published by rumqttc and by the stock
//! `mosquitto_pub`; alerts read over gRPC.
//!
//! - A visit the home bears out (motion at the entrance as the carer
//!   comes in) is recorded on the supervision queue, born resolved, and
//!   raises a follow-up call, which the operator resolves as `satisfied`.
//! - A visit much shorter than planned is flagged `short`; one with no
//!   sign of anyone in a home whose sensors are heard is flagged
//!   `uncorroborated`: both open on the supervision queue.
//! - At the close of a plan's window with no check-in, `visit_missed` is
//!   raised: to the provider for an elder seen moving, to the hotline for
//!   one who lives alone and shows no sign of life.
//! - A provider's system checks a carer in through the API (tonic) and
//!   out with Debian's Python grpcio; its token is refused for another
//!   provider's carer, an elder it does not serve and ids that do not
//!   exist, and reads its own month's report but not another's.
//! - A daily check-in window with no sign of life raises
//!   `check_in_missed` on the hotline; one with motion in it raises
//!   nothing.
//!
//! Visit times are event times the buttons send (a check-in 50 s ago, the
//! check-out now), so nothing waits for a visit to last; the windows close
//! at the next whole minute, which the test waits for as an event.
mod support;

use eldercare_proto::v1 as pb;
use support::*;

const S: i64 = 1000;
const MIN: i64 = 60 * S;

/// Local `HH:MM` (UTC) of `ms`.
fn hhmm(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%H:%M")
        .to_string()
}

fn visit(carer: &str, action: &str, ts: i64) -> String {
    format!(r#"{{"ts": {ts}, "type": "visit", "carer": "{carer}", "action": "{action}"}}"#)
}

fn motion(room: &str, ts: i64) -> String {
    format!(r#"{{"ts": {ts}, "room": "{room}", "motion": true}}"#)
}

/// Reads `sub` until an alert of `kind` for `elder` is raised, waiting
/// at most `wait` for each event.
async fn raised_within(
    sub: &mut tonic::Streaming<pb::AlertEvent>,
    elder: &str,
    kind: &str,
    seen: &mut Vec<pb::Alert>,
    wait: std::time::Duration,
) -> pb::Alert {
    if let Some(a) = seen.iter().find(|a| a.elder_id == elder && a.kind == kind) {
        return a.clone();
    }
    loop {
        let ev = tokio::time::timeout(wait, sub.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind} for {elder} in time; seen {seen:?}"))
            .unwrap()
            .unwrap();
        let a = ev.alert.unwrap();
        if ev.kind == pb::AlertEventKind::Raised as i32 {
            seen.push(a.clone());
            if a.elder_id == elder && a.kind == kind {
                return a;
            }
        }
    }
}

async fn raised(
    sub: &mut tonic::Streaming<pb::AlertEvent>,
    elder: &str,
    kind: &str,
    seen: &mut Vec<pb::Alert>,
) -> pb::Alert {
    raised_within(sub, elder, kind, seen, DEADLINE).await
}

/// The homes of these tests, their plans and check-in windows, and a
/// server over them; returns it with the windows' close and `HH:MM`s.
struct Homes {
    s: Server,
    close: i64,
    from: String,
    to: String,
    day: String,
}

fn homes() -> Homes {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[visits]\nmargin_s = 10\nlate_max_s = 600\n",
    )
    .unwrap();
    // Every window closes at the next whole minute at least 70 s away.
    let now = now_ms();
    let close = (now + 70 * S + MIN - 1) / MIN * MIN;
    let open = (close - 10 * MIN).max(close - close.rem_euclid(86_400_000));
    assert!(open < close, "the window must not cross midnight (UTC)");
    let (from, to) = (hhmm(open), hhmm(close));
    let window = format!("{from}-{to}");
    let mut elders = String::from("elder_id,name,timezone,flags,check_in\n");
    for (id, flags, check_in) in [
        ("E1", "", ""),
        ("E2", "", ""),
        ("E3", "", ""),
        ("E4", "", ""),
        ("E5", "lives_alone", ""),
        ("E6", "lives_alone", window.as_str()),
        ("E7", "lives_alone", window.as_str()),
        ("E8", "", ""),
        ("E9", "frail", ""),
    ] {
        elders.push_str(&format!("{id},Elder {id},UTC,{flags},{check_in}\n"));
    }
    let mut devices = String::from("device_id,kind,elder_id,room,secret\n");
    for n in 1..=9 {
        for (d, kind, room) in [
            ("btn", "sos_button", ""),
            ("pirent", "pir", "entrance"),
            ("pirkit", "pir", "kitchen"),
        ] {
            devices.push_str(&format!("{d}-{n},{kind},E{n},{room},s-{d}-{n}\n"));
        }
    }
    let providers = "provider_id,name,phone\nPR1,Provider One,\nPR2,Provider Two,\n";
    let carers = "carer_id,provider_id,name\nC1,PR1,Carer One\nC2,PR1,Carer Two\n\
                  C3,PR1,Carer Three\nC9,PR2,Carer Nine\n";
    let mut plans = String::from(
        "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n",
    );
    for n in [1, 2, 3, 4, 5, 9] {
        plans.push_str(&format!("bath-{n},E{n},PR1,daily,{from},{to},1,bathing\n"));
    }
    let data = dir.path().to_str().unwrap().to_string();
    import_files(
        dir.path(),
        &["--data-dir", &data],
        &[
            ("elders.csv", &elders),
            ("devices.csv", &devices),
            ("providers.csv", providers),
            ("carers.csv", carers),
            ("visit_plans.csv", &plans),
        ],
    );
    let mut tokens = Server::issue_tokens(dir.path());
    // A provider's token is named by its provider id: its scope.
    tokens.insert("provider", add_token(dir.path(), "PR1", "provider"));
    let day = chrono::DateTime::from_timestamp_millis(open)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    Homes {
        s: Server::spawn(dir, tokens),
        close,
        from,
        to,
        day,
    }
}

/// `python3 - TARGET TOKEN ELDER CARER SECONDS`: checks the carer out
/// at SECONDS, then tries a carer of another provider (C9).
const PYTHON_CHECK_OUT: &str = r#"
import sys, grpc

target, token, elder, carer, secs = sys.argv[1:6]

def varint(n):
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])

def text(field, value):
    b = value.encode()
    return bytes([field << 3 | 2]) + varint(len(b)) + b

def check_in(carer, action, secs=None):
    # CheckInRequest { elder_id = 1, carer_id = 2, action = 3, at = 4 }
    req = text(1, elder) + text(2, carer) + text(3, action)
    if secs is not None:
        at = b"\x08" + varint(secs)  # Timestamp { seconds = 1 }
        req += bytes([4 << 3 | 2]) + varint(len(at)) + at
    return req

with grpc.insecure_channel(target, [("grpc.enable_http_proxy", 0)]) as ch:
    rpc = ch.unary_unary("/eldercare.v1.VisitService/CheckIn")
    md = [("authorization", "Bearer " + token)]
    resp = rpc(check_in(carer, "out", int(secs)), timeout=10, metadata=md)
    assert text(3, "out") in resp, resp
    print("out OK")
    try:
        rpc(check_in("C9", "in"), timeout=10, metadata=md)
        print("other provider's carer OK")
    except grpc.RpcError as e:
        print("other provider's carer", e.code().name)
"#;

/// Runs [`PYTHON_CHECK_OUT`] as the provider; its stdout.
fn python_check_out(s: &Server, elder: &str, carer: &str, secs: i64) -> String {
    require_python_grpcio();
    let out = std::process::Command::new(PYTHON)
        .arg("-c")
        .arg(PYTHON_CHECK_OUT)
        .args([
            &s.grpc,
            &s.tokens["provider"],
            elder,
            carer,
            &secs.to_string(),
        ])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "the Python client failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn subscribe_all(s: &Server) -> tonic::Streaming<pb::AlertEvent> {
    s.grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            language: "en".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_and_check_ins_from_outside() {
    let Homes {
        s,
        close,
        from,
        to,
        day,
    } = homes();
    let mut sub = subscribe_all(&s).await;
    let mut seen = Vec::new();
    let t = now_ms();

    // E1: the carer comes in through the entrance, taps in, works in the
    // kitchen and taps out: borne out, recorded, and a follow-up call.
    let (btn1, ent1, kit1) = (
        device(&s, "btn-1").await,
        device(&s, "pirent-1").await,
        device(&s, "pirkit-1").await,
    );
    publish(
        &ent1,
        "eldercare/v1/pirent-1/motion",
        motion("entrance", t - 55 * S),
    )
    .await;
    publish(
        &btn1,
        "eldercare/v1/btn-1/event",
        visit("C1", "in", t - 50 * S),
    )
    .await;
    publish(
        &kit1,
        "eldercare/v1/pirkit-1/motion",
        motion("kitchen", t - 30 * S),
    )
    .await;
    publish(&btn1, "eldercare/v1/btn-1/event", visit("C1", "out", t)).await;
    let v1 = raised(&mut sub, "E1", "visit", &mut seen).await;
    assert_eq!(v1.queue, "supervision", "{v1:?}");
    assert!(v1.recorded, "a visit borne out is recorded: {v1:?}");
    assert_eq!(v1.state, pb::AlertState::Resolved as i32);
    assert_eq!(v1.subject, format!("E1/bath-1/{day}"));
    assert!(
        v1.factors.iter().any(|f| f.starts_with("entrance")),
        "{v1:?}"
    );
    let f1 = raised(&mut sub, "E1", "follow_up", &mut seen).await;
    assert_eq!(f1.queue, "follow_up");
    assert_eq!(f1.subject, v1.subject);

    // E2: 20 s of a planned minute, through the stock mosquitto_pub.
    let ent2 = device(&s, "pirent-2").await;
    publish(
        &ent2,
        "eldercare/v1/pirent-2/motion",
        motion("entrance", t - 21 * S),
    )
    .await;
    mosquitto_pub_lines(
        &s,
        "btn-2",
        "event",
        &[visit("C2", "in", t - 20 * S), visit("C2", "out", t)],
    );
    let v2 = raised(&mut sub, "E2", "visit", &mut seen).await;
    assert_eq!(v2.queue, "supervision");
    assert_eq!(
        v2.state,
        pb::AlertState::Open as i32,
        "flagged: open {v2:?}"
    );
    assert!(v2.summary.contains("flagged: short ("), "{}", v2.summary);
    assert_eq!(v2.visit.as_ref().unwrap().flags, ["short"]);

    // E3: tapped in and out, the home heard (heartbeats) and still: no
    // one was there.
    let (btn3, ent3, kit3) = (
        device(&s, "btn-3").await,
        device(&s, "pirent-3").await,
        device(&s, "pirkit-3").await,
    );
    for (d, id) in [(&ent3, "pirent-3"), (&kit3, "pirkit-3")] {
        publish(
            d,
            &format!("eldercare/v1/{id}/status"),
            format!(r#"{{"ts": {}, "battery_pct": 80}}"#, t - 60 * S),
        )
        .await;
    }
    publish(
        &btn3,
        "eldercare/v1/btn-3/event",
        visit("C3", "in", t - 50 * S),
    )
    .await;
    publish(&btn3, "eldercare/v1/btn-3/event", visit("C3", "out", t)).await;
    let v3 = raised(&mut sub, "E3", "visit", &mut seen).await;
    assert_eq!(v3.state, pb::AlertState::Open as i32);
    assert!(
        v3.summary.contains("flagged: uncorroborated ("),
        "{}",
        v3.summary
    );
    assert_eq!(v3.visit.as_ref().unwrap().flags, ["uncorroborated"]);
    assert!(v3.visit.as_ref().unwrap().signs.is_empty());

    // E4 is seen moving; E5 (alone) shows nothing; E7 moves in its
    // check-in window; E6 (alone, check-in window) shows nothing.
    let kit4 = device(&s, "pirkit-4").await;
    publish(
        &kit4,
        "eldercare/v1/pirkit-4/motion",
        motion("kitchen", now_ms()),
    )
    .await;
    let kit7 = device(&s, "pirkit-7").await;
    publish(
        &kit7,
        "eldercare/v1/pirkit-7/motion",
        motion("kitchen", now_ms()),
    )
    .await;

    // E9: the provider's own system checks the carer in and out through
    // the API (as the provider), the carer walking in through the entrance.
    let ent9 = device(&s, "pirent-9").await;
    publish(
        &ent9,
        "eldercare/v1/pirent-9/motion",
        motion("entrance", t - 52 * S),
    )
    .await;
    let mut visits = pb::visit_service_client::VisitServiceClient::with_interceptor(
        s.channel().await,
        s.bearer("provider"),
    );
    let ts = |ms: i64| eldercare_proto::wkt::Timestamp {
        seconds: ms / 1000,
        nanos: 0,
    };
    let r = visits
        .check_in(pb::CheckInRequest {
            elder_id: "E9".into(),
            carer_id: "C1".into(),
            action: "in".into(),
            at: Some(ts(t - 50 * S)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.action, "in");
    // The check-out from a provider's system of another make: Debian's
    // Python grpcio, raw protobuf bytes, no generated stubs.
    assert_eq!(
        python_check_out(&s, "E9", "C1", t / 1000),
        "out OK\nother provider's carer PERMISSION_DENIED\n"
    );
    // What the API refuses, with the reason. A provider checks in only
    // its own carers, at elders it has a plan for, and is not told which
    // other ids exist; a viewer records no check-ins.
    use tonic::Code;
    for (role, elder, carer, action, code) in [
        ("provider", "E9", "C9", "in", Code::PermissionDenied),
        ("provider", "E8", "C1", "in", Code::PermissionDenied),
        ("provider", "E9", "C404", "in", Code::PermissionDenied),
        ("operator", "E9", "C404", "in", Code::NotFound),
        ("provider", "E9", "C1", "sideways", Code::InvalidArgument),
        ("viewer", "E9", "C1", "in", Code::PermissionDenied),
    ] {
        let refused = pb::visit_service_client::VisitServiceClient::with_interceptor(
            s.channel().await,
            s.bearer(role),
        )
        .check_in(pb::CheckInRequest {
            elder_id: elder.into(),
            carer_id: carer.into(),
            action: action.into(),
            at: None,
        })
        .await
        .unwrap_err();
        assert_eq!(
            refused.code(),
            code,
            "{role}: {carer} {action} at {elder}: {refused:?}"
        );
    }
    let v9 = raised(&mut sub, "E9", "visit", &mut seen).await;
    assert!(v9.recorded, "{v9:?}");
    assert_eq!(v9.device_id, "api");
    assert_eq!(
        v9.visit.as_ref().map(|v| v.via.as_str()),
        Some("api"),
        "{v9:?}"
    );

    // The windows close.
    let until_close = std::time::Duration::from_millis((close - now_ms()).max(0) as u64) + DEADLINE;
    let m4 = raised_within(&mut sub, "E4", "visit_missed", &mut seen, until_close).await;
    assert!(now_ms() >= close, "raised at the close, not before");
    assert_eq!(m4.queue, "provider", "{m4:?}");
    assert_eq!(m4.severity, pb::Severity::Medium as i32);
    let m5 = raised(&mut sub, "E5", "visit_missed", &mut seen).await;
    assert_eq!(m5.queue, "hotline", "{m5:?}");
    assert_eq!(m5.severity, pb::Severity::High as i32);
    assert!(m5.summary.contains("no sign of life"), "{}", m5.summary);
    let c6 = raised(&mut sub, "E6", "check_in_missed", &mut seen).await;
    assert_eq!(c6.queue, "hotline");
    assert!(
        c6.summary
            .contains(&format!("daily check-in window {from}–{to}")),
        "{}",
        c6.summary
    );

    // Nothing for E1-E3 (visited) or E7 (moved in its window): an SOS of
    // E8 marks everything before it decided.
    let btn8 = device(&s, "btn-8").await;
    sos(&btn8, "btn-8").await;
    raised(&mut sub, "E8", "sos", &mut seen).await;
    for a in &seen {
        assert!(
            !(a.kind == "visit_missed" && ["E1", "E2", "E3", "E9"].contains(&a.elder_id.as_str())),
            "a visited plan raised visit_missed: {a:?}"
        );
        assert!(a.elder_id != "E7", "E7 moved in its window: {a:?}");
    }

    // The follow-up call: resolved with what the elder said.
    let mut c = s.grpc().await;
    let done = c
        .resolve(pb::ResolveRequest {
            alert_id: f1.id.clone(),
            outcome: "satisfied".into(),
            note: "called at 10:12, bathing done, happy".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.outcome, "satisfied");
    assert_eq!(done.state, pb::AlertState::Resolved as i32);
    // A follow-up outcome on anything but a follow-up is refused.
    let refused = c
        .resolve(pb::ResolveRequest {
            alert_id: v2.id.clone(),
            outcome: "satisfied".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // The provider's month, as the city officer reads it.
    let report = pb::visit_service_client::VisitServiceClient::with_interceptor(
        s.channel().await,
        s.bearer("viewer"),
    )
    .provider_report(pb::ProviderReportRequest {
        provider_id: "PR1".into(),
        month: day[..7].to_string(),
    })
    .await
    .unwrap()
    .into_inner();
    let n = report.counts.unwrap();
    assert_eq!(
        (
            n.planned,
            n.done,
            n.on_time,
            n.missed,
            n.short,
            n.uncorroborated
        ),
        (6, 4, 4, 2, 1, 1),
        "{n:?}"
    );
    assert_eq!(
        (n.follow_ups, n.satisfied, n.follow_up_open),
        (4, 1, 3),
        "{n:?}"
    );
    assert!(report.csv.lines().count() >= 7, "{}", report.csv);
    // The provider reads its own month, the same; not another's.
    let own = visits
        .provider_report(pb::ProviderReportRequest {
            provider_id: "PR1".into(),
            month: day[..7].to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.counts.unwrap(), n);
    let refused = visits
        .provider_report(pb::ProviderReportRequest {
            provider_id: "PR2".into(),
            month: day[..7].to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

/// A check-in acknowledged just before `kill -9` is kept: after the
/// restart, the check-out closes the same visit (borne out by the
/// entrance motion sent before the crash), not one without a check-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_acknowledged_before_kill_9_is_kept() {
    let Homes { mut s, day, .. } = homes();
    let t = now_ms();
    // The stock client exits once each message is acknowledged.
    mosquitto_pub_lines(&s, "pirent-1", "motion", &[motion("entrance", t - 55 * S)]);
    mosquitto_pub_lines(&s, "btn-1", "event", &[visit("C1", "in", t - 50 * S)]);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let tokens = std::mem::take(&mut s.tokens);
    drop(s);
    let s = Server::spawn(dir, tokens);
    let mut sub = subscribe_all(&s).await;
    mosquitto_pub_lines(&s, "btn-1", "event", &[visit("C1", "out", now_ms())]);
    let mut seen = Vec::new();
    let v = raised(&mut sub, "E1", "visit", &mut seen).await;
    let info = v.visit.clone().unwrap();
    assert_eq!(v.subject, format!("E1/bath-1/{day}"), "{v:?}");
    assert!(info.flags.is_empty(), "{info:?}");
    assert!(v.recorded);
    assert_eq!(info.check_in.map(|c| c.seconds), Some((t - 50 * S) / 1000));
    assert_eq!(
        info.signs.first().map(|g| g.kind.as_str()),
        Some("entrance")
    );
}
