//! Silence is not evidence, and late evidence is still evidence, seen
//! from outside: the real server on SQLite with its own rule file and
//! registry; devices that are raw MQTT sockets written from the
//! specification (the home that goes silent), rumqttc, or the stock
//! `mosquitto_pub` (the uploads); alerts read over gRPC.
//!
//! - A home whose devices go quiet in the daytime (their connections
//!   dropped with last wills, or just quiet as in a power cut, so that
//!   only keep-alive expiry and the heartbeats tell) raises one
//!   `home_offline` on the operations queue, naming the rules it blinds,
//!   and nothing on the hotline, although its inactivity deadline falls
//!   inside the silence. A home that keeps reporting, under the same
//!   rules, does raise `inactivity`: the rules are live, only the silence
//!   holds them.
//! - A night uploaded the next morning (readings dated an hour back)
//!   raises what it shows on its own time: out of bed too long (HIGH),
//!   or CRITICAL after a last movement in the bathroom, marked late and
//!   raised only once the upload is done; an episode the same upload
//!   shows over (back in bed) is recorded for the care queue, born
//!   resolved, and never rings the hotline.
//!
//! Every wait is on an event (an alert event, a process exit), bounded by
//! a deadline that only turns a hang into a failure. "Nothing raised" is
//! checked up to a later positive event: the alert that must come after
//! the one that must not, or an SOS sent as a marker once everything
//! before it has been decided.
#[path = "support/raw_mqtt.rs"]
mod raw_mqtt;
mod support;

use eldercare_proto::v1 as pb;
use std::io::{Read, Write};
use std::net::TcpStream;
use support::*;

const S: i64 = 1000;
const MIN: i64 = 60 * S;

/// The silent-home rules: minutes shrunk to seconds. The inactivity
/// deadline (6 s after the last movement) falls inside the silence, and
/// before the home is reported offline (a will and 10 s of grace, or a
/// 20 s heartbeat and the grace).
const INACTIVITY_S: i64 = 6;
const HEARTBEAT_S: i64 = 20;
const GRACE_S: i64 = 10;

fn ms(t: &eldercare_proto::wkt::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// `HH:MM` of `utc_ms` shifted by `offset_h` hours (for a registry's
/// night window in the elder's own time).
fn hhmm(utc_ms: i64, offset_h: i64) -> String {
    chrono::DateTime::from_timestamp_millis(utc_ms + offset_h * 3600 * S)
        .unwrap()
        .format("%H:%M")
        .to_string()
}

/// A subscription to one queue ("" for all), summaries in English.
async fn subscribe(s: &Server, queue: &str) -> tonic::Streaming<pb::AlertEvent> {
    s.grpc()
        .await
        .subscribe(pb::SubscribeRequest {
            queue: queue.into(),
            language: "en".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every alert of `elder`, as the store has it.
async fn alerts_of(s: &Server, elder: &str) -> Vec<pb::Alert> {
    s.grpc()
        .await
        .list_alerts(pb::ListAlertsRequest {
            elder_id: elder.into(),
            language: "en".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts
}

/// Reads `sub` until an alert of `elder` is raised; returns it and the
/// events read before it.
async fn raised_for(
    sub: &mut tonic::Streaming<pb::AlertEvent>,
    elder: &str,
) -> (pb::Alert, Vec<pb::AlertEvent>) {
    let mut before = Vec::new();
    loop {
        let ev = next(sub).await;
        let a = ev.alert.clone().unwrap();
        if ev.kind == pb::AlertEventKind::Raised as i32 && a.elder_id == elder {
            return (a, before);
        }
        before.push(ev);
    }
}

/// Presses the marker button `btn` (its own elder) and reads the hotline
/// subscription up to the SOS: the events before it are everything the
/// hotline got until then (events come in order), which `elder` must
/// not be among.
async fn nothing_on_hotline_for(
    s: &Server,
    hotline: &mut tonic::Streaming<pb::AlertEvent>,
    btn: &str,
    elder: &str,
) {
    let b = device(s, btn).await;
    sos(&b, btn).await;
    loop {
        let ev = next(hotline).await;
        let a = ev.alert.unwrap();
        assert_ne!(
            a.elder_id, elder,
            "{elder} has an alert on the hotline queue: {} {}",
            a.kind, a.summary
        );
        if a.device_id == btn && a.kind == "sos" {
            return;
        }
    }
}

// ---------------------------------------------------------------------
// A home goes silent in the daytime.
// ---------------------------------------------------------------------

/// A device speaking MQTT 3.1.1 over a plain socket, so that the test
/// decides exactly how its connection ends.
struct RawDevice {
    s: TcpStream,
    id: String,
    pkid: u16,
}

impl RawDevice {
    /// Connects with keep-alive `keep_alive_s`, and the protocol's last
    /// will (`{"online": false}` on its status topic) when `will`.
    fn open(addr: &str, id: &str, keep_alive_s: u16, will: bool) -> RawDevice {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        let topic = format!("eldercare/v1/{id}/status");
        let will = will.then_some((topic.as_str(), r#"{"online": false}"#));
        let secret = format!("s-{id}");
        s.write_all(&raw_mqtt::connect(
            id,
            Some((id, &secret)),
            keep_alive_s,
            will,
        ))
        .unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted for {id}");
        RawDevice {
            s,
            id: id.into(),
            pkid: 0,
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK: the server has it.
    fn publish(&mut self, stream: &str, payload: &str) {
        self.pkid += 1;
        let topic = format!("eldercare/v1/{}/{stream}", self.id);
        self.s
            .write_all(&raw_mqtt::publish(&topic, 1, self.pkid, payload.as_bytes()))
            .unwrap();
        let mut a = [0u8; 4];
        self.s.read_exact(&mut a).unwrap();
        let [hi, lo] = self.pkid.to_be_bytes();
        assert_eq!(a, [0x40, 0x02, hi, lo], "PUBACK of {} {stream}", self.id);
    }

    /// Whether the server has ended the connection (end of stream, or a
    /// reset), reading at most until the deadline.
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 16];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// E1: the home that goes silent (a PIR and a band). E2: the same home,
/// under the same rules, that keeps reporting. E3: a button whose SOS
/// marks "everything before it decided" on the hotline.
fn silent_home_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        format!("[inactivity]\nafter_s = {INACTIVITY_S}\n\n[offline]\ngrace_s = {GRACE_S}\n"),
    )
    .unwrap();
    // Daytime: the night window is hours away from now (in UTC, their
    // timezone).
    let now = now_ms();
    let (ns, ne) = (hhmm(now + 6 * 3600 * S, 0), hhmm(now + 8 * 3600 * S, 0));
    let elders = format!(
        "elder_id,name,district,community,timezone,night_start,night_end\n\
         E1,Test One,D1,C1,UTC,{ns},{ne}\n\
         E2,Test Two,D1,C1,UTC,{ns},{ne}\n\
         E3,Test Three,D1,C1,UTC,{ns},{ne}\n"
    );
    let devices = format!(
        "device_id,kind,elder_id,room,secret,heartbeat_s\n\
         pir-1,pir,E1,living,s-pir-1,{HEARTBEAT_S}\n\
         band-1,vital_band,E1,,s-band-1,{HEARTBEAT_S}\n\
         pir-2,pir,E2,living,s-pir-2,{HEARTBEAT_S}\n\
         band-2,vital_band,E2,,s-band-2,{HEARTBEAT_S}\n\
         btn-3,sos_button,E3,,s-btn-3,86400\n"
    );
    let data = dir.path().to_str().unwrap().to_string();
    import_csv(dir.path(), &["--data-dir", &data], &elders, &devices);
    let tokens = Server::issue_tokens(dir.path());
    Server::spawn(dir, tokens)
}

/// E1 and E2 both move at the same moment; then E1's devices stop
/// sending, while E2's keep reporting. Once E2's inactivity is raised, E1's
/// deadline has passed too, inside its silence. `wills`: E1's devices set
/// last wills, and their connections are then dropped without DISCONNECT
/// (the server publishes the wills); otherwise they are left open and
/// quiet, as in a power cut, until keep-alive expiry.
async fn a_home_goes_silent_in_the_daytime(wills: bool) {
    let s = silent_home_server();
    let mut all = subscribe(&s, "").await;
    let mut hotline = subscribe(&s, "hotline").await;

    // E2 keeps reporting (a status every half second), as a home with
    // power does.
    let pir2 = device(&s, "pir-2").await;
    let band2 = device(&s, "band-2").await;
    let moved = now_ms();
    publish(
        &pir2,
        "eldercare/v1/pir-2/motion",
        format!(r#"{{"ts": {moved}, "room": "living", "motion": true}}"#),
    )
    .await;
    let alive = tokio::spawn(async move {
        loop {
            for (d, id) in [(&pir2, "pir-2"), (&band2, "band-2")] {
                publish(
                    d,
                    &format!("eldercare/v1/{id}/status"),
                    format!(r#"{{"ts": {}, "battery_pct": 90}}"#, now_ms()),
                )
                .await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });

    // E1 moves at the same moment, its band reports, and then nothing.
    // Keep-alive 5 s for the quiet connections (ended by the server at
    // 7.5 s); a minute for those the test drops itself.
    let keep_alive = if wills { 60 } else { 5 };
    let mqtt = s.mqtt.clone();
    let (mut e1, first_sent, stopped) = tokio::task::spawn_blocking(move || {
        let mut pir = RawDevice::open(&mqtt, "pir-1", keep_alive, wills);
        let mut band = RawDevice::open(&mqtt, "band-1", keep_alive, wills);
        let first_sent = now_ms();
        pir.publish(
            "motion",
            &format!(r#"{{"ts": {moved}, "room": "living", "motion": true}}"#),
        );
        band.publish(
            "vitals",
            &format!(r#"{{"ts": {}, "hr": 72, "spo2": 97}}"#, now_ms()),
        );
        (vec![pir, band], first_sent, now_ms())
    })
    .await
    .unwrap();
    assert!(
        stopped - moved < INACTIVITY_S * S,
        "the premise: E1 fell silent ({} ms after moving) before its \
         inactivity deadline ({INACTIVITY_S} s)",
        stopped - moved
    );

    // The control: the home that kept reporting is judged as usual, and
    // E1, under the same rules, has passed its deadline too by then.
    let mut e1_events = Vec::new();
    let (inactive, before) = raised_for(&mut all, "E2").await;
    e1_events.extend(
        before
            .into_iter()
            .filter(|e| e.alert.as_ref().is_some_and(|a| a.elder_id == "E1")),
    );
    assert_eq!(inactive.kind, "inactivity", "{inactive:?}");
    assert_eq!(inactive.queue, "hotline");
    assert_eq!(inactive.severity, pb::Severity::High as i32);
    let dropped_at = now_ms();
    if wills {
        // Closed by the device's side without DISCONNECT, as when a
        // router loses its uplink: the server publishes the wills.
        drop(std::mem::take(&mut e1));
    }

    // E1: its home_offline, and nothing before it.
    let offline = loop {
        let ev = next(&mut all).await;
        let a = ev.alert.clone().unwrap();
        if a.elder_id != "E1" {
            continue;
        }
        if a.kind == "home_offline" {
            break a;
        }
        e1_events.push(ev);
    };
    assert!(
        e1_events.is_empty(),
        "E1 raised something before its home_offline: {e1_events:?}"
    );
    assert_eq!(offline.severity, pb::Severity::Low as i32);
    assert_eq!(offline.queue, "operations");
    assert!(
        offline
            .summary_en
            .starts_with("All 2 devices of the home silent since"),
        "{}",
        offline.summary_en
    );
    assert!(
        offline
            .summary_en
            .ends_with("; not judged until heard: inactivity"),
        "the summary names the blind rules: {}",
        offline.summary_en
    );
    // What told the server: the wills, as soon as the connections
    // dropped (before any heartbeat was due), or else only the
    // heartbeats (a heartbeat after a device's last reading), the quiet
    // connections having been ended by keep-alive expiry without a will.
    let silent_from = ms(offline.window_start.as_ref().unwrap());
    if wills {
        assert!(
            silent_from >= dropped_at && silent_from < first_sent + HEARTBEAT_S * S,
            "silent from {silent_from}; dropped at {dropped_at}, first reading sent at {first_sent}"
        );
    } else {
        assert!(
            silent_from >= first_sent + HEARTBEAT_S * S,
            "silent from {silent_from}, first reading sent at {first_sent}"
        );
        let closed =
            tokio::task::spawn_blocking(move || e1.iter_mut().all(RawDevice::closed_by_server))
                .await
                .unwrap();
        assert!(
            closed,
            "the server ended the quiet connections (keep-alive)"
        );
    }

    // Nothing of E1 on the hotline, up to a marker raised after all of
    // the above; and the store holds the one alert.
    nothing_on_hotline_for(&s, &mut hotline, "btn-3", "E1").await;
    let stored: Vec<(String, String)> = alerts_of(&s, "E1")
        .await
        .into_iter()
        .map(|a| (a.kind, a.queue))
        .collect();
    assert_eq!(
        stored,
        [("home_offline".to_string(), "operations".to_string())]
    );
    alive.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_whose_devices_drop_with_last_wills_is_offline_not_inactive() {
    a_home_goes_silent_in_the_daytime(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_cut_off_without_wills_is_offline_not_inactive() {
    a_home_goes_silent_in_the_daytime(false).await;
}

// ---------------------------------------------------------------------
// A night uploaded in the morning.
// ---------------------------------------------------------------------

/// The elder's timezone (UTC+8 all year) and its offset.
const TZ: &str = "Asia/Shanghai";
const TZ_H: i64 = 8;

/// E1 (a sleep sensor, a band and a PIR) whose night, in their own time,
/// runs from two hours ago to an hour ahead; E9, a button for the
/// marker. Default rules, out of bed 30 min written out.
fn night_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[out_of_bed]\nafter_s = 1800\n\n[late]\nafter_s = 120\nsettle_s = 10\n",
    )
    .unwrap();
    let now = now_ms();
    let (ns, ne) = (hhmm(now - 2 * 3600 * S, TZ_H), hhmm(now + 3600 * S, TZ_H));
    let elders = format!(
        "elder_id,name,district,community,timezone,night_start,night_end\n\
         E1,Test One,D1,C1,{TZ},{ns},{ne}\n\
         E9,Test Nine,D1,C1,{TZ},{ns},{ne}\n"
    );
    let devices = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
                   bed-1,sleep_sensor,E1,bedroom,s-bed-1,86400\n\
                   band-1,vital_band,E1,,s-band-1,86400\n\
                   pir-1,pir,E1,bedroom,s-pir-1,86400\n\
                   btn-9,sos_button,E9,,s-btn-9,86400\n";
    let data = dir.path().to_str().unwrap().to_string();
    import_csv(dir.path(), &["--data-dir", &data], &elders, devices);
    let tokens = Server::issue_tokens(dir.path());
    Server::spawn(dir, tokens)
}

/// RFC 3339 in the elder's own offset, as a device with a local clock
/// writes it.
fn local_rfc3339(ms: i64) -> String {
    let tz = chrono::FixedOffset::east_opt((TZ_H * 3600) as i32).unwrap();
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn sleep_line(ts: i64, in_bed: bool) -> String {
    let ts = local_rfc3339(ts);
    if in_bed {
        format!(r#"{{"ts": "{ts}", "in_bed": true, "hr": 60, "rr": 14}}"#)
    } else {
        format!(r#"{{"ts": "{ts}", "in_bed": false}}"#)
    }
}

fn motion_line(ts: i64, room: &str) -> String {
    format!(r#"{{"ts": {ts}, "room": "{room}", "motion": true}}"#)
}

/// What the gateway uploads this morning, each device's part in the
/// order the night happened: E1 in the bedroom, in bed from T0 - 30 min,
/// up at T0 = an hour ago; `bathroom` (minutes after T0): the PIR's last
/// movement; the band's pulse every minute from T0 to T0 + 35 min;
/// `back` (minutes after T0): back in bed. Returns T0 and the server
/// time before the band's part was sent.
fn upload_night(s: &Server, bathroom: Option<i64>, back: Option<i64>) -> (i64, i64) {
    let t0 = (now_ms() - 60 * MIN) / S * S;
    mosquitto_pub_lines(
        s,
        "pir-1",
        "motion",
        &[motion_line(t0 - 35 * MIN, "bedroom")],
    );
    mosquitto_pub_lines(
        s,
        "bed-1",
        "sleep",
        &[sleep_line(t0 - 30 * MIN, true), sleep_line(t0, false)],
    );
    if let Some(m) = bathroom {
        mosquitto_pub_lines(
            s,
            "pir-1",
            "motion",
            &[motion_line(t0 + m * MIN, "bathroom")],
        );
    }
    let band: Vec<String> = (0..=35)
        .map(|i| format!(r#"{{"ts": {}, "hr": 70}}"#, t0 + i * MIN))
        .collect();
    let band_sent = now_ms();
    mosquitto_pub_lines(s, "band-1", "vitals", &band);
    if let Some(m) = back {
        mosquitto_pub_lines(s, "bed-1", "sleep", &[sleep_line(t0 + m * MIN, true)]);
    }
    (t0, band_sent)
}

/// What a late out-of-bed alert must say of its time: raised at the
/// band's reading that showed the 30 min pass, from T0; marked late by
/// about the half hour since; detected only once the upload was done
/// (no late reading for the 10 s of settling after the band's part).
fn assert_late_out_of_bed(a: &pb::Alert, t0: i64, band_sent: i64) {
    assert_eq!(a.kind, "out_of_bed_too_long", "{a:?}");
    let raised_at = ms(a.raised_at.as_ref().unwrap());
    assert_eq!(
        raised_at,
        t0 + 30 * MIN,
        "raised at the event time it was shown at"
    );
    assert_eq!(ms(a.window_start.as_ref().unwrap()), t0, "{a:?}");
    assert!(
        a.late_ms >= 30 * MIN - MIN && a.late_ms <= 30 * MIN + 2 * DEADLINE.as_millis() as i64,
        "late_ms {} for readings about 30 min old",
        a.late_ms
    );
    let detected = ms(a.detected_at.as_ref().unwrap());
    assert!(
        detected >= band_sent + 10 * S,
        "held until the upload was done: detected {} ms after the band's part was sent",
        detected - band_sent
    );
    assert!(detected >= raised_at + a.late_ms, "{a:?}");
    assert!(
        a.summary_en.contains("shown by readings that arrived") && a.summary_en.contains("late"),
        "{}",
        a.summary_en
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_uploaded_in_the_morning_raises_out_of_bed_late_on_the_hotline() {
    let s = night_server();
    let mut hotline = subscribe(&s, "hotline").await;
    let (t0, band_sent) = tokio::task::block_in_place(|| upload_night(&s, None, None));

    let (a, before) = raised_for(&mut hotline, "E1").await;
    assert!(before.is_empty(), "{before:?}");
    assert_late_out_of_bed(&a, t0, band_sent);
    assert_eq!(a.severity, pb::Severity::High as i32);
    assert_eq!(a.queue, "hotline");
    assert_eq!(a.state, pb::AlertState::Open as i32);
    assert!(!a.recorded);
    assert!(
        a.summary_en.contains("no movement seen since"),
        "{}",
        a.summary_en
    );
    let stored: Vec<String> = alerts_of(&s, "E1")
        .await
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(stored, ["out_of_bed_too_long"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_dated_last_movement_in_the_bathroom_raises_critical() {
    let s = night_server();
    let mut hotline = subscribe(&s, "hotline").await;
    let (t0, band_sent) = tokio::task::block_in_place(|| upload_night(&s, Some(4), None));

    let (a, before) = raised_for(&mut hotline, "E1").await;
    assert!(before.is_empty(), "{before:?}");
    assert_late_out_of_bed(&a, t0, band_sent);
    assert_eq!(
        a.severity,
        pb::Severity::Critical as i32,
        "{}",
        a.summary_en
    );
    assert_eq!(a.queue, "hotline");
    assert!(
        a.summary_en.contains("in the bathroom") && a.summary_en.contains("possible fall"),
        "{}",
        a.summary_en
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_the_same_upload_shows_over_is_recorded_for_the_care_queue() {
    let s = night_server();
    let mut all = subscribe(&s, "").await;
    let mut care = subscribe(&s, "care").await;
    let mut hotline = subscribe(&s, "hotline").await;
    let (t0, band_sent) = tokio::task::block_in_place(|| upload_night(&s, None, Some(38)));

    let (a, before) = raised_for(&mut care, "E1").await;
    assert!(before.is_empty(), "{before:?}");
    assert_late_out_of_bed(&a, t0, band_sent);
    assert!(a.recorded, "{a:?}");
    assert_eq!(a.state, pb::AlertState::Resolved as i32);
    assert_eq!(a.outcome, "recorded");
    assert_eq!(a.queue, "care");
    // The same, to a subscriber of every queue: born resolved, in one event.
    let (first, before) = raised_for(&mut all, "E1").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(first.id, a.id);

    nothing_on_hotline_for(&s, &mut hotline, "btn-9", "E1").await;
    let stored: Vec<(String, bool, String)> = alerts_of(&s, "E1")
        .await
        .into_iter()
        .map(|a| (a.kind, a.recorded, a.queue))
        .collect();
    assert_eq!(
        stored,
        [("out_of_bed_too_long".to_string(), true, "care".to_string())]
    );
    // Asked by queue, as a care manager's and an operator's screens do.
    let by_queue = |queue: &'static str| {
        let s = &s;
        async move {
            s.grpc()
                .await
                .list_alerts(pb::ListAlertsRequest {
                    elder_id: "E1".into(),
                    queue: queue.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .alerts
                .len()
        }
    };
    assert_eq!(by_queue("care").await, 1);
    assert_eq!(by_queue("hotline").await, 0);
}
