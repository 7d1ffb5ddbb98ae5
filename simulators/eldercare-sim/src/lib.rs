//! Device simulator: N homes, each with a sleep sensor, a vital-sign band,
//! a PIR sensor, a GPS watch and an SOS button, publishing plausible
//! readings over MQTT as real devices do (each device logs in as itself),
//! with emergencies injected on demand.
//!
//! Homes are deterministic from `(count, seed)`: ids and secrets derive
//! from them, so `registry_csv` and `run` agree without sharing files.
//! What the registry says beyond that (night window, flags, heartbeat) is
//! set on each [`Home`] before writing it; [`stage`] sets what an episode
//! needs.
//!
//! A normal home raises nothing under the default rules: every reading
//! stays inside the single-parameter thresholds, its NEWS2 aggregate is 0
//! or 1, the person is in bed (so no out-of-bed or inactivity timer runs),
//! and the watch stays within ~75 m of home.
use prost::Message;
use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info};

/// Turns true when the simulation should stop.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

pub const KINDS: [(&str, &str); 5] = [
    ("bed", "sleep_sensor"),
    ("band", "vital_band"),
    ("pir", "pir"),
    ("gps", "gps_watch"),
    ("btn", "sos_button"),
];

/// Geofence radius of every simulated home, metres.
pub const SAFE_RADIUS_M: f64 = 500.0;
/// The registry's default heartbeat interval, seconds.
pub const DEFAULT_HEARTBEAT_S: u32 = 300;
/// How often an episode's abnormal readings are sent, whatever the run's
/// interval: the rules tolerate gaps of 15 s (no breathing) and 30 s
/// (vital signs) before a hold is broken.
const EPISODE_CADENCE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SimDevice {
    pub device_id: String,
    pub kind: &'static str,
    pub secret: String,
}

/// A night window in the elder's local time (`HH:MM`), as the registry's
/// `night_start` and `night_end` columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Night {
    pub start: String,
    pub end: String,
}

impl Default for Night {
    /// The registry's default: 21:00 to 07:00.
    fn default() -> Night {
        Night {
            start: "21:00".into(),
            end: "07:00".into(),
        }
    }
}

impl Night {
    /// A night that began an hour ago (Asia/Shanghai time) and lasts six
    /// more hours, so night-only rules (out of bed, geofence at night) can
    /// be rehearsed whatever the time of day.
    pub fn covering_now() -> Night {
        Night::from_now(-60, 6 * 60)
    }

    /// A night that starts in four hours, so it is daytime now and for the
    /// next hours: inactivity (a daytime rule) can be rehearsed at night.
    pub fn not_covering_now() -> Night {
        Night::from_now(4 * 60, 12 * 60)
    }

    /// Minutes from now (Asia/Shanghai) to the start and the end.
    fn from_now(start_min: i64, end_min: i64) -> Night {
        let now = shanghai_minute_of_day(chrono::Utc::now().timestamp());
        Night {
            start: hhmm(now + start_min),
            end: hhmm(now + end_min),
        }
    }
}

/// Minute of the day in Asia/Shanghai, the registry's default timezone
/// (which `registry_csv` writes). It has been UTC+8 all year since 1991,
/// so a fixed offset is exact and needs no timezone database.
fn shanghai_minute_of_day(unix_s: i64) -> i64 {
    (unix_s + 8 * 3600).rem_euclid(86_400) / 60
}

fn hhmm(minute_of_day: i64) -> String {
    let m = minute_of_day.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[derive(Debug, Clone)]
pub struct Home {
    pub index: usize,
    pub elder_id: String,
    pub devices: Vec<SimDevice>,
    /// Home location `(lat, lon)`, the centre of its geofence.
    pub location: (f64, f64),
    pub night: Night,
    /// Registry flags: `lives_alone`, `dementia`, ...
    pub flags: Vec<&'static str>,
    /// Heartbeat interval of every device of the home, seconds.
    pub heartbeat_s: u32,
}

impl Home {
    /// The home's device of a kind (`sleep_sensor`, `pir`, ...).
    pub fn device(&self, kind: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.kind == kind)
    }
}

/// An emergency (or maintenance) episode to inject into one home, one per
/// rule of the engine. Each is sent by the device that would see it; the
/// devices it takes over play it for the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    /// SOS button pressed.
    Sos,
    /// SOS pressed, then cancelled on the button 8 s later (a false alarm).
    SosCancel,
    /// Fall detected (protobuf, confidence 0.93); no movement for a minute.
    Fall,
    /// Fall detected, then movement 20 s later: the person is up.
    FallUp,
    /// Heart rate 150 for 75 s.
    Tachycardia,
    /// Heart rate 35 for 75 s.
    Bradycardia,
    /// SpO2 88 % for 75 s.
    Hypoxia,
    /// Temperature 39.6 °C for 75 s.
    Fever,
    /// In bed, no breathing detected, for 30 s.
    NoBreathing,
    /// Gets out of bed and does not come back, nothing moves [needs the
    /// home in `registry --night-now-homes`].
    OutOfBed,
    /// Out of bed, movement in the bathroom, then nothing [needs
    /// `registry --night-now-homes`].
    BathroomFall,
    /// Out of bed, no movement at home in the daytime [needs `registry
    /// --day-now-homes`].
    Inactivity,
    /// The watch walks out of the safe zone [the elder flagged with
    /// `registry --dementia-homes`; at night with `--night-now-homes`].
    Wandering,
    /// The GPS watch says `online: false`, as its last will would, and
    /// falls silent.
    DeviceOffline,
    /// Every device of the home does so (power or network cut).
    HomeOffline,
    /// The SOS button's battery at 12 %, and staying low.
    LowBattery,
}

impl Inject {
    /// Every episode, in the order of the rules.
    pub const ALL: [Inject; 16] = [
        Inject::Sos,
        Inject::SosCancel,
        Inject::Fall,
        Inject::FallUp,
        Inject::Tachycardia,
        Inject::Bradycardia,
        Inject::Hypoxia,
        Inject::Fever,
        Inject::NoBreathing,
        Inject::OutOfBed,
        Inject::BathroomFall,
        Inject::Inactivity,
        Inject::Wandering,
        Inject::DeviceOffline,
        Inject::HomeOffline,
        Inject::LowBattery,
    ];

    /// The name on the command line, e.g. `bathroom-fall`.
    pub fn name(self) -> &'static str {
        match self {
            Inject::Sos => "sos",
            Inject::SosCancel => "sos-cancel",
            Inject::Fall => "fall",
            Inject::FallUp => "fall-up",
            Inject::Tachycardia => "tachycardia",
            Inject::Bradycardia => "bradycardia",
            Inject::Hypoxia => "hypoxia",
            Inject::Fever => "fever",
            Inject::NoBreathing => "no-breathing",
            Inject::OutOfBed => "out-of-bed",
            Inject::BathroomFall => "bathroom-fall",
            Inject::Inactivity => "inactivity",
            Inject::Wandering => "wandering",
            Inject::DeviceOffline => "device-offline",
            Inject::HomeOffline => "home-offline",
            Inject::LowBattery => "low-battery",
        }
    }

    /// Device kinds the episode takes over for the rest of the run: the
    /// regular `run` loop must leave them alone, or its normal readings
    /// would mask the episode (a PIR reporting motion after a fall, a band
    /// back at a normal pulse before the hold is met).
    pub fn owns(self) -> &'static [&'static str] {
        match self {
            // The button's regular status messages do not interfere.
            Inject::Sos | Inject::SosCancel => &[],
            Inject::Fall | Inject::FallUp => &["pir"],
            Inject::Tachycardia | Inject::Bradycardia | Inject::Hypoxia | Inject::Fever => {
                &["vital_band"]
            }
            Inject::NoBreathing => &["sleep_sensor"],
            Inject::OutOfBed | Inject::BathroomFall | Inject::Inactivity => {
                &["sleep_sensor", "pir"]
            }
            Inject::Wandering => &["gps_watch", "sleep_sensor", "pir"],
            Inject::DeviceOffline => &["gps_watch"],
            Inject::HomeOffline => &[
                "sleep_sensor",
                "vital_band",
                "pir",
                "gps_watch",
                "sos_button",
            ],
            Inject::LowBattery => &["sos_button"],
        }
    }

    /// The device that sends a one-off event without taking the device
    /// over (the button of an SOS or fall).
    fn sender(self) -> Option<&'static str> {
        match self {
            Inject::Sos | Inject::SosCancel | Inject::Fall | Inject::FallUp => Some("sos_button"),
            _ => None,
        }
    }

    /// The alert the episode should raise under the default rules (timed
    /// rules after their configured time).
    pub fn expected(self) -> &'static str {
        match self {
            Inject::Sos => "sos CRITICAL, at once",
            Inject::SosCancel => "sos CRITICAL, then resolved as a false alarm ~8 s later",
            Inject::Fall => "fall CRITICAL, at once, and no 'up' update",
            Inject::FallUp => "fall CRITICAL, updated ~20 s later: appears to be up",
            Inject::Tachycardia => "vital_out_of_range HIGH (pulse >= 131) after 60 s",
            Inject::Bradycardia => "vital_out_of_range HIGH (pulse <= 40) after 60 s",
            Inject::Hypoxia => "vital_out_of_range HIGH (SpO2 <= 91) after 60 s",
            Inject::Fever => "vital_out_of_range HIGH (temperature >= 39.1) after 60 s",
            Inject::NoBreathing => "no_breathing CRITICAL after 20 s",
            Inject::OutOfBed => "out_of_bed_too_long HIGH after out_of_bed.after_s",
            Inject::BathroomFall => {
                "out_of_bed_too_long CRITICAL (bathroom) after out_of_bed.after_s"
            }
            Inject::Inactivity => "inactivity HIGH after inactivity.after_s",
            Inject::Wandering => {
                "geofence_exit (CRITICAL at night, HIGH for dementia) at the 2nd fix outside"
            }
            Inject::DeviceOffline => "device_offline LOW after offline.grace_s",
            Inject::HomeOffline => "home_offline LOW after offline.grace_s",
            Inject::LowBattery => "low_battery LOW, at once",
        }
    }
}

impl std::fmt::Display for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sets what the registry must say about a home for an episode to raise
/// its alert now: night-only rules need the night window to cover the
/// current time, inactivity needs daytime, wandering a `dementia` flag.
/// Call before [`registry_csv`].
pub fn stage(home: &mut Home, what: Inject) {
    match what {
        Inject::OutOfBed | Inject::BathroomFall => home.night = Night::covering_now(),
        Inject::Inactivity => home.night = Night::not_covering_now(),
        Inject::Wandering => {
            home.night = Night::covering_now();
            if !home.flags.contains(&"dementia") {
                home.flags.push("dementia");
            }
        }
        _ => {}
    }
}

pub fn homes(count: usize, seed: u64) -> Vec<Home> {
    (1..=count)
        .map(|i| Home {
            index: i,
            elder_id: format!("E{i:05}"),
            devices: KINDS
                .iter()
                .map(|(prefix, kind)| {
                    let device_id = format!("{prefix}-{i:05}");
                    let mut h = Sha256::new();
                    h.update(format!("{seed}:{device_id}"));
                    SimDevice {
                        secret: hex::encode(&h.finalize()[..16]),
                        device_id,
                        kind,
                    }
                })
                .collect(),
            location: (31.2 + i as f64 * 0.001, 121.4 + i as f64 * 0.001),
            night: Night::default(),
            flags: vec!["lives_alone"],
            heartbeat_s: DEFAULT_HEARTBEAT_S,
        })
        .collect()
}

/// The registry files for these homes: `(elders.csv, devices.csv)`.
/// Names and addresses are synthetic.
pub fn registry_csv(homes: &[Home]) -> (String, String) {
    let mut elders = String::from(
        "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,flags,timezone,night_start,night_end\n",
    );
    let mut devices = String::from("device_id,kind,elder_id,room,heartbeat_s,secret\n");
    for h in homes {
        // Night windows are computed in Shanghai time: say so rather than
        // rely on the importer's default.
        elders.push_str(&format!(
            "{},Resident {},Demo District,Community {},{:.5},{:.5},{SAFE_RADIUS_M:.0},{},Asia/Shanghai,{},{}\n",
            h.elder_id,
            h.index,
            (h.index - 1) / 10 + 1,
            h.location.0,
            h.location.1,
            h.flags.join(";"),
            h.night.start,
            h.night.end,
        ));
        for d in &h.devices {
            let room = if d.kind == "pir" { "living" } else { "" };
            devices.push_str(&format!(
                "{},{},{},{},{},{}\n",
                d.device_id, d.kind, h.elder_id, room, h.heartbeat_s, d.secret
            ));
        }
    }
    (elders, devices)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A connected simulated device.
pub struct Connected {
    pub client: AsyncClient,
    pub device: SimDevice,
}

/// Connects one device and drives its event loop in the background.
pub async fn connect(addr: &str, d: &SimDevice) -> anyhow::Result<Connected> {
    connect_as(addr, d, &format!("sim-{}", d.device_id)).await
}

/// Like [`connect`], with a chosen MQTT client id (an injector runs beside
/// the device's regular connection and must not take its session over).
pub async fn connect_as(addr: &str, d: &SimDevice, client_id: &str) -> anyhow::Result<Connected> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt-addr must be host:port"))?;
    let mut opts = MqttOptions::new(client_id, host, port.parse()?);
    opts.set_credentials(d.device_id.clone(), d.secret.clone());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_last_will(rumqttc::LastWill::new(
        format!("eldercare/v1/{}/status", d.device_id),
        r#"{"online": false}"#.as_bytes().to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut el) = AsyncClient::new(opts, 64);
    // Wait for the CONNACK so a refused login is reported, not hidden.
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => anyhow::bail!("{} could not connect: {e}", d.device_id),
        }
    }
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    Ok(Connected {
        client,
        device: d.clone(),
    })
}

/// Disconnects cleanly: a connection that is merely dropped makes the
/// broker publish the device's last will, i.e. says it went offline.
async fn disconnect(c: &AsyncClient) {
    if c.disconnect().await.is_ok() {
        // Let the event loop send the DISCONNECT before the task ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// JSON telemetry on `stream`.
pub async fn publish_json(
    c: &AsyncClient,
    device_id: &str,
    stream: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    c.publish(
        format!("eldercare/v1/{device_id}/{stream}"),
        QoS::AtLeastOnce,
        false,
        body.to_string(),
    )
    .await?;
    Ok(())
}

/// What a device played by an injector sends on its own.
#[derive(Debug, Clone)]
enum Mode {
    /// Readings of a healthy resident, every interval, as `run` sends.
    Normal,
    /// This body on this stream every [`EPISODE_CADENCE`] (ts and seq added).
    Steady(&'static str, serde_json::Value),
    /// Status heartbeats only, every interval: heard, reporting nothing
    /// that would change what an episode left behind.
    Heartbeat,
    /// Nothing.
    Quiet,
}

/// One device played by an injector, in a background task that keeps
/// sending what its [`Mode`] says until the mode channel closes.
struct Player {
    client: AsyncClient,
    device: SimDevice,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Player {
    fn start(c: Connected, home: &Home, mode: Mode, interval: Duration) -> Player {
        let (tx, mut rx) = watch::channel(mode);
        let (client, device) = (c.client.clone(), c.device.clone());
        let location = home.location;
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let (body, period) = {
                    let mode = rx.borrow_and_update();
                    seq += 1;
                    let ts = now_ms();
                    match &*mode {
                        Mode::Normal => (
                            Some((
                                stream_of(c.device.kind),
                                normal_reading(c.device.kind, location, seq, ts),
                            )),
                            interval,
                        ),
                        Mode::Steady(stream, body) => {
                            let mut body = body.clone();
                            body["ts"] = json!(ts);
                            body["seq"] = json!(seq);
                            (Some((*stream, body)), EPISODE_CADENCE)
                        }
                        Mode::Heartbeat => (
                            Some(("status", normal_reading("sos_button", location, seq, ts))),
                            interval,
                        ),
                        Mode::Quiet => (None, Duration::from_secs(86_400)),
                    }
                };
                if let Some((stream, body)) = body
                    && publish_json(&c.client, &c.device.device_id, stream, body)
                        .await
                        .is_err()
                {
                    break;
                }
                // A new mode takes effect at once, not at the next period.
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
        Player {
            client,
            device,
            mode: tx,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }

    /// One message now, besides what the mode sends. No `seq`: the device
    /// may also be connected through `run`, whose counter this would clash
    /// with (a repeated seq is dropped as a duplicate).
    async fn send(&self, stream: &str, mut body: serde_json::Value) -> anyhow::Result<()> {
        body["ts"] = json!(now_ms());
        publish_json(&self.client, &self.device.device_id, stream, body).await
    }

    /// Publishes the device's last-will payload itself, undated as the
    /// broker would (the backend dates it on receipt), and falls silent.
    /// Sent explicitly, then a clean disconnect (which cancels the
    /// broker's copy), so exactly one goes out, when the episode says.
    async fn go_offline(&self) -> anyhow::Result<()> {
        self.set(Mode::Quiet);
        publish_json(
            &self.client,
            &self.device.device_id,
            "status",
            json!({"online": false}),
        )
        .await?;
        disconnect(&self.client).await;
        Ok(())
    }

    async fn stop(self) {
        drop(self.mode);
        let _ = self.task.await;
        disconnect(&self.client).await;
    }
}

/// A point `dist_m` from `home`, to the north-east.
fn offset_m(home: (f64, f64), dist_m: f64) -> (f64, f64) {
    const M_PER_DEG: f64 = 111_195.0;
    let d = dist_m / std::f64::consts::SQRT_2;
    (
        home.0 + d / M_PER_DEG,
        home.1 + d / (M_PER_DEG * home.0.to_radians().cos()),
    )
}

/// Injects one episode into a home. The devices the episode takes over
/// ([`Inject::owns`]) send their usual readings for `lead`, then play the
/// episode, then keep being heard (status heartbeats every `interval`,
/// unless the episode is about going offline) until `shutdown`: a device
/// that just stopped would be reported offline. Event timestamps are the
/// current time.
pub async fn inject(
    addr: &str,
    home: &Home,
    what: Inject,
    lead: Duration,
    interval: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut players = Vec::new();
    for d in &home.devices {
        let mode = if what.owns().contains(&d.kind) {
            // Up and about, not yet gone to bed: the bed never sees them in
            // it, so leaving the home starts no out-of-bed timer.
            if what == Inject::Wandering && d.kind == "sleep_sensor" {
                Mode::Steady("sleep", json!({"in_bed": false}))
            } else {
                Mode::Normal
            }
        } else if what.sender() == Some(d.kind) {
            Mode::Quiet
        } else {
            continue;
        };
        let c = connect_as(addr, d, "sim-inject").await?;
        players.push(Player::start(c, home, mode, interval));
    }
    let played = async {
        tokio::time::sleep(lead).await;
        info!(home = home.index, episode = what.name(), "Episode starts.");
        episode(home, what, &players).await?;
        info!(home = home.index, episode = what.name(), "Episode played.");
        Ok::<_, anyhow::Error>(())
    };
    let result = tokio::select! {
        r = played => r,
        _ = shutdown.changed() => Ok(()),
    };
    if result.is_ok() && !*shutdown.borrow() {
        let _ = shutdown.changed().await;
    }
    for p in players {
        p.stop().await;
    }
    result
}

async fn episode(home: &Home, what: Inject, players: &[Player]) -> anyhow::Result<()> {
    let dev = |kind: &str| {
        players
            .iter()
            .find(|p| p.device.kind == kind)
            .ok_or_else(|| anyhow::anyhow!("home {} has no {kind}", home.index))
    };
    let sleep = |s: u64| tokio::time::sleep(Duration::from_secs(s));
    let pir_quiet = |room: &str| Mode::Steady("motion", json!({"room": room, "motion": false}));
    let asleep = json!({"in_bed": true, "hr": 62, "rr": 14, "movement": 0.05});
    let out_of_bed = Mode::Steady("sleep", json!({"in_bed": false}));
    // The vital-sign episodes: 75 s of one abnormal value (the rules hold
    // it for 60 s), other values unremarkable, so the NEWS2 aggregate
    // stays below 5 and only the single-parameter alert is raised.
    let vitals = |body: serde_json::Value| async move {
        let band = dev("vital_band")?;
        band.set(Mode::Steady("vitals", body));
        sleep(75).await;
        band.set(Mode::Heartbeat);
        Ok::<_, anyhow::Error>(())
    };
    match what {
        Inject::Sos => {
            dev("sos_button")?
                .send("event", json!({"type": "sos"}))
                .await?;
        }
        Inject::SosCancel => {
            let btn = dev("sos_button")?;
            btn.send("event", json!({"type": "sos"})).await?;
            sleep(8).await;
            btn.send("event", json!({"type": "sos_cancel"})).await?;
        }
        Inject::Fall | Inject::FallUp => {
            let pir = dev("pir")?;
            // Any motion in the minute after the fall would say the person
            // is up: the PIR goes quiet first.
            pir.set(pir_quiet("living"));
            fall_event(dev("sos_button")?).await?;
            if what == Inject::FallUp {
                sleep(20).await;
                pir.send("motion", json!({"room": "living", "motion": true}))
                    .await?;
            } else {
                // Past the rule's 60 s window, movement no longer counts.
                sleep(65).await;
            }
            pir.set(Mode::Normal);
        }
        Inject::Tachycardia => vitals(json!({"hr": 150, "spo2": 97})).await?,
        Inject::Bradycardia => vitals(json!({"hr": 35, "spo2": 97})).await?,
        Inject::Hypoxia => vitals(json!({"hr": 88, "spo2": 88})).await?,
        Inject::Fever => vitals(json!({"hr": 98, "temp_c": 39.6})).await?,
        Inject::NoBreathing => {
            let bed = dev("sleep_sensor")?;
            bed.set(Mode::Steady(
                "sleep",
                json!({"in_bed": true, "rr": 0, "movement": 0.0}),
            ));
            sleep(30).await;
            bed.set(Mode::Heartbeat);
        }
        Inject::OutOfBed | Inject::BathroomFall | Inject::Inactivity => {
            let (bed, pir) = (dev("sleep_sensor")?, dev("pir")?);
            // Motion after leaving bed would mean up and about: quiet
            // first. Then asleep, so the engine sees the person leave bed.
            pir.set(pir_quiet("living"));
            bed.send("sleep", asleep).await?;
            sleep(5).await;
            bed.set(out_of_bed);
            if what == Inject::BathroomFall {
                sleep(5).await;
                pir.send("motion", json!({"room": "bathroom", "motion": true}))
                    .await?;
                pir.set(pir_quiet("bathroom"));
            }
        }
        Inject::Wandering => {
            let (gps, pir) = (dev("gps_watch")?, dev("pir")?);
            pir.set(pir_quiet("living"));
            // Walking away, one fix every 5 s (a brisk 15 m/s, so the demo
            // need not wait): out of the 500 m zone at the 6th fix, raised
            // at the 7th. Then the watch stays where the walk ended.
            gps.set(Mode::Quiet);
            let fix = |dist: f64| {
                let (lat, lon) = offset_m(home.location, dist);
                json!({"lat": lat, "lon": lon, "accuracy_m": 12})
            };
            for step in 0..10 {
                if step > 0 {
                    sleep(EPISODE_CADENCE.as_secs()).await;
                }
                gps.send("location", fix(150.0 + 75.0 * f64::from(step)))
                    .await?;
            }
            sleep(EPISODE_CADENCE.as_secs()).await;
            gps.set(Mode::Steady("location", fix(825.0)));
        }
        Inject::DeviceOffline => dev("gps_watch")?.go_offline().await?,
        Inject::HomeOffline => {
            for p in players {
                p.go_offline().await?;
            }
        }
        Inject::LowBattery => {
            dev("sos_button")?.set(Mode::Steady(
                "status",
                json!({"battery_pct": 12, "online": true}),
            ));
        }
    }
    Ok(())
}

/// A fall event in protobuf, as many fall detectors send.
async fn fall_event(btn: &Player) -> anyhow::Result<()> {
    let msg = eldercare_proto::v1::DeviceMessage {
        ts_ms: now_ms(),
        seq: None,
        body: Some(eldercare_proto::v1::device_message::Body::Event(
            eldercare_proto::v1::Event {
                r#type: "fall".into(),
                confidence: Some(0.93),
            },
        )),
    };
    btn.client
        .publish(
            format!("eldercare/v1/{}/event/pb", btn.device.device_id),
            QoS::AtLeastOnce,
            false,
            msg.encode_to_vec(),
        )
        .await?;
    Ok(())
}

/// The homes without the devices injections take over ([`Inject::owns`]),
/// so regular readings do not mask the episodes.
pub fn without_injected(homes: &[Home], injected: &[(usize, Inject)]) -> Vec<Home> {
    homes
        .iter()
        .cloned()
        .map(|mut h| {
            for (_, w) in injected.iter().filter(|(i, _)| *i == h.index) {
                h.devices.retain(|d| !w.owns().contains(&d.kind));
            }
            h
        })
        .collect()
}

/// Runs every home's devices, publishing a reading per device every
/// `interval`, until `shutdown` turns true.
pub async fn run(
    addr: &str,
    homes: &[Home],
    interval: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Connect all at once: the server counts a device silent from when it
    // starts watching it, and one by one a large fleet takes long enough
    // for the first devices to be reported offline under a short heartbeat.
    let mut connecting = tokio::task::JoinSet::new();
    for h in homes {
        for d in &h.devices {
            let (addr, d, location) = (addr.to_string(), d.clone(), h.location);
            connecting.spawn(async move {
                Ok::<_, anyhow::Error>((connect(&addr, &d).await?, location))
            });
        }
    }
    let mut connected = Vec::new();
    while let Some(r) = connecting.join_next().await {
        connected.push(r??);
    }
    debug!(devices = connected.len(), "Simulated devices connected.");
    let mut tasks = Vec::new();
    for (c, location) in connected {
        let mut sd = shutdown.clone();
        let phase =
            Duration::from_millis(rand::rng().random_range(0..interval.as_millis().max(1) as u64));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(interval);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = sd.changed() => break,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let body = normal_reading(c.device.kind, location, seq, now_ms());
                let stream = stream_of(c.device.kind);
                if publish_json(&c.client, &c.device.device_id, stream, body)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            disconnect(&c.client).await;
        }));
    }
    let _ = shutdown.changed().await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn stream_of(kind: &str) -> &'static str {
    match kind {
        "sleep_sensor" => "sleep",
        "vital_band" => "vitals",
        "pir" => "motion",
        "gps_watch" => "location",
        _ => "status",
    }
}

/// A plausible reading for a healthy resident at `home`, taken at `ts_ms`.
///
/// Every value scores 0 in NEWS2 but SpO2 95 (1), so the aggregate is at
/// most 1, far from the rule's 5; the person is in bed (no out-of-bed or
/// inactivity timer runs); the watch stays within ~75 m of home, well
/// inside its 500 m zone.
pub fn normal_reading(kind: &str, home: (f64, f64), seq: u64, ts_ms: i64) -> serde_json::Value {
    let mut r = rand::rng();
    match kind {
        "sleep_sensor" => json!({"ts": ts_ms, "seq": seq, "in_bed": true,
            "hr": r.random_range(55..=75), "rr": r.random_range(12..=18),
            "movement": r.random_range(0.0..0.3)}),
        "vital_band" => json!({"ts": ts_ms, "seq": seq, "hr": r.random_range(60..=90),
            "spo2": r.random_range(95..=99), "temp_c": 36.2 + r.random_range(0.0..=0.8),
            "sys": r.random_range(111..=140), "dia": r.random_range(65..=85)}),
        "pir" => json!({"ts": ts_ms, "seq": seq, "room": "living", "motion": r.random_bool(0.3)}),
        "gps_watch" => json!({"ts": ts_ms, "seq": seq,
            "lat": home.0 + r.random_range(-0.0005..=0.0005),
            "lon": home.1 + r.random_range(-0.0005..=0.0005), "accuracy_m": 15}),
        _ => {
            json!({"ts": ts_ms, "seq": seq, "battery_pct": r.random_range(60..=100), "online": true})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn night_windows_around_now() {
        // 2026-11-23 16:00 UTC is 00:00 in Shanghai.
        assert_eq!(shanghai_minute_of_day(1_795_363_200), 0);
        assert_eq!(hhmm(-60), "23:00");
        assert_eq!(hhmm(25 * 60 + 5), "01:05");
        let parse = |s: &str| {
            let (h, m) = s.split_once(':').unwrap();
            h.parse::<i64>().unwrap() * 60 + m.parse::<i64>().unwrap()
        };
        let now = shanghai_minute_of_day(chrono::Utc::now().timestamp());
        let within = |n: &Night, m: i64| {
            let (s, e) = (parse(&n.start), parse(&n.end));
            if s < e {
                s <= m && m < e
            } else {
                m >= s || m < e
            }
        };
        let (night, day) = (Night::covering_now(), Night::not_covering_now());
        // A few minutes either way, for a test run across a minute boundary.
        for m in [now - 2, now, now + 2] {
            assert!(within(&night, m.rem_euclid(1440)), "{night:?} at {m}");
            assert!(!within(&day, m.rem_euclid(1440)), "{day:?} at {m}");
        }
    }

    #[test]
    fn registry_carries_staging() {
        let mut hs = homes(3, 1);
        stage(&mut hs[1], Inject::Wandering);
        hs[2].heartbeat_s = 20;
        let (e, d) = registry_csv(&hs);
        let rows: Vec<&str> = e.lines().collect();
        assert!(rows[0].ends_with("flags,timezone,night_start,night_end"));
        assert!(
            rows[1].ends_with(",lives_alone,Asia/Shanghai,21:00,07:00"),
            "{}",
            rows[1]
        );
        assert!(
            rows[2].contains(",lives_alone;dementia,Asia/Shanghai,"),
            "{}",
            rows[2]
        );
        assert!(d.contains("band-00003,vital_band,E00003,,20,"));
    }

    #[test]
    fn normal_fixes_stay_near_home() {
        for h in homes(50, 1) {
            for _ in 0..100 {
                let r = normal_reading("gps_watch", h.location, 1, 0);
                let (lat, lon) = (r["lat"].as_f64().unwrap(), r["lon"].as_f64().unwrap());
                let dy = (lat - h.location.0) * 111_195.0;
                let dx = (lon - h.location.1) * 111_195.0 * h.location.0.to_radians().cos();
                assert!(dx.hypot(dy) < 100.0, "home {}: {dx} {dy}", h.index);
            }
        }
    }

    #[test]
    fn wandering_walk_leaves_the_zone() {
        let home = (31.21, 121.41);
        let (lat, lon) = offset_m(home, 600.0);
        let dy = (lat - home.0) * 111_195.0;
        let dx = (lon - home.1) * 111_195.0 * home.0.to_radians().cos();
        assert!((dx.hypot(dy) - 600.0).abs() < 1.0);
    }

    #[test]
    fn injected_devices_leave_the_run_loop() {
        let hs = homes(3, 1);
        let left = without_injected(&hs, &[(2, Inject::OutOfBed), (3, Inject::HomeOffline)]);
        assert_eq!(left[0].devices.len(), 5);
        let kinds: Vec<_> = left[1].devices.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["vital_band", "gps_watch", "sos_button"]);
        assert!(left[2].devices.is_empty());
        for w in Inject::ALL {
            use clap::ValueEnum;
            assert_eq!(w.to_possible_value().unwrap().get_name(), w.name());
        }
    }
}
