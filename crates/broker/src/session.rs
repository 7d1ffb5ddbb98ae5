//! The decisions of one device's MQTT session, with no socket, no task and
//! no clock: time comes in as an argument. The guard's socket loop reads
//! packets, asks a [`Session`] what to do with each, and does it.
//!
//! - At CONNECT: [`credential_of`] and [`admit`] turn the login (a user
//!   name and secret, or a client certificate) and the registry's answer
//!   into the device or the refusal, and [`ConnRefusal::code`] into the
//!   CONNACK sent.
//! - Per packet: [`Session::heard`] restarts the keep-alive timer and takes
//!   a token from the rate bucket ([`Pace`]); [`Session::publish`] and
//!   [`Session::subscribe`] judge topic ownership, a gateway's included
//!   ([`Session::wants_registry`] says when its devices must be read again).
//! - At the end: [`Ending::will_due`] says whether the last will is
//!   published.
use eldercare_model::{Device, DeviceKind};
use eldercare_protocol::topic_device_id;
use eldercare_store::verify_secret;
use rumqttd::protocol::{DisconnectReasonCode, Filter, Login, QoS};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

use crate::settings::MqttSettings;
use crate::wire::ConnCode;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    NoCredentials,
    UnknownDevice,
    BadCredentials,
    WillNotOwned,
    /// The device's secret was rotated, or the device deleted, while its
    /// credentials were being checked: it may retry.
    RegistryChanged,
    /// The registry could not be read (database error): the device is
    /// not to blame, and should retry.
    RegistryUnavailable,
    /// A client certificate names one device and the user name another.
    CertificateMismatch,
}

impl ConnRefusal {
    /// The `reason` label of `eldercare_mqtt_connections_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            ConnRefusal::NoCredentials => "no_credentials",
            ConnRefusal::UnknownDevice => "unknown_device",
            ConnRefusal::BadCredentials => "bad_credentials",
            ConnRefusal::WillNotOwned => "will_not_owned",
            ConnRefusal::RegistryChanged => "registry_changed",
            ConnRefusal::RegistryUnavailable => "registry_unavailable",
            ConnRefusal::CertificateMismatch => "certificate_mismatch",
        }
    }

    /// The CONNACK return code. An unknown device and a wrong secret get
    /// the same answer, so the wire never tells which device ids exist.
    pub fn code(self) -> ConnCode {
        match self {
            ConnRefusal::UnknownDevice | ConnRefusal::BadCredentials => ConnCode::BadCredentials,
            ConnRefusal::NoCredentials
            | ConnRefusal::WillNotOwned
            | ConnRefusal::CertificateMismatch => ConnCode::NotAuthorized,
            ConnRefusal::RegistryChanged | ConnRefusal::RegistryUnavailable => {
                ConnCode::Unavailable
            }
        }
    }
}

/// What the registry said about the device a CONNECT names.
#[derive(Debug)]
pub enum Lookup {
    Found(Device),
    Unknown,
    /// The registry could not be read.
    Unavailable,
}

/// How a device proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// MQTT user name (the device id) and password (its secret).
    Secret { device_id: &'a str, secret: &'a str },
    /// A client certificate the TLS handshake verified; its Common Name
    /// is the device id.
    Certificate { device_id: &'a str },
}

impl Credential<'_> {
    pub fn device_id(&self) -> &str {
        match self {
            Credential::Secret { device_id, .. } | Credential::Certificate { device_id } => {
                device_id
            }
        }
    }
}

/// The credential of a CONNECT: the client certificate's device when
/// there is one (a user name, if any, must name the same device), else
/// the login. One without either is refused before the registry is asked.
pub fn credential_of<'a>(
    login: Option<&'a Login>,
    certificate: Option<&'a str>,
) -> Result<Credential<'a>, ConnRefusal> {
    let user = login.map(|l| l.username.as_str()).filter(|u| !u.is_empty());
    match (certificate, user) {
        (Some(c), Some(u)) if c != u => Err(ConnRefusal::CertificateMismatch),
        (Some(c), _) => Ok(Credential::Certificate { device_id: c }),
        (None, Some(u)) => Ok(Credential::Secret {
            device_id: u,
            secret: login.map_or("", |l| l.password.as_str()),
        }),
        (None, None) => Err(ConnRefusal::NoCredentials),
    }
}

/// Judges a CONNECT once its device was looked up. `revoked`: the
/// registry closed the connection while the lookup ran.
pub fn admit(
    credential: Credential<'_>,
    will_topic: Option<&str>,
    lookup: Lookup,
    revoked: bool,
) -> Result<Device, ConnRefusal> {
    let device = match lookup {
        Lookup::Found(d) => d,
        Lookup::Unknown => {
            // As long as checking a real secret, so timing does not tell
            // an unknown id from a known one either.
            if let Credential::Secret { secret, .. } = credential {
                let _ = verify_secret(secret, DECOY_SALT, DECOY_HASH);
            }
            return Err(ConnRefusal::UnknownDevice);
        }
        Lookup::Unavailable => return Err(ConnRefusal::RegistryUnavailable),
    };
    if let Credential::Secret { secret, .. } = credential
        && !verify_secret(secret, &device.secret_salt, &device.secret_hash)
    {
        return Err(ConnRefusal::BadCredentials);
    }
    if let Some(t) = will_topic
        && topic_device_id(t) != Some(device.device_id.as_str())
    {
        return Err(ConnRefusal::WillNotOwned);
    }
    if revoked {
        return Err(ConnRefusal::RegistryChanged);
    }
    Ok(device)
}

const DECOY_SALT: &str = "00000000000000000000000000000000";
const DECOY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How to go on after a packet, for the rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Read the next packet.
    Go,
    /// Leave the socket unread this long first. `starts`: the session
    /// was not being slowed before this packet.
    Slow { wait: Duration, starts: bool },
    /// Slowed for too long: end the session.
    CutOff,
}

/// What to do with a PUBLISH from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishVerdict {
    /// One of the session's own topics: to the intake (at QoS 2 the
    /// listener completes the handshake once the message is durable).
    Intake,
    /// Not its topic: refused (and counted). `ack`: a QoS 1 PUBACK is
    /// still sent, so the device does not resend it for ever.
    Refuse { ack: bool },
    /// Not its topic at QoS 2: the flow cannot be completed without the
    /// broker, so the connection ends.
    RefuseAndClose,
}

/// What to do with a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeVerdict {
    /// Every filter is a `cmd` topic of the session's: to the broker.
    Forward,
    /// Answered by the guard, every filter refused: a device may only
    /// listen to its own commands.
    Refuse,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The device sent DISCONNECT.
    Disconnected,
    /// The device sent an MQTT 5 DISCONNECT asking for its will (0x04).
    DisconnectedWithWill,
    /// The registry closed the session (secret rotated, device deleted),
    /// or a newer connection with the same client id took it over.
    Revoked,
    /// The socket closed or broke without a DISCONNECT.
    Lost,
    /// Nothing from the device for 1.5 times its keep-alive.
    KeepAliveExpired,
    /// Slowed down for too long by its rate limit.
    RateLimited,
    /// A packet above the size limit.
    TooLarge,
    /// A packet that is not MQTT (or a second CONNECT).
    Malformed,
    /// An MQTT 5 packet the session's terms do not allow (a topic alias,
    /// which the listener never offers).
    TopicAlias,
    /// A well-formed packet out of place: a second CONNECT, or an AUTH
    /// (extended authentication is not offered).
    ProtocolError,
    /// No room in the listener's buffer budget.
    NoMemory,
    /// A QoS 2 PUBLISH to a topic not its own.
    RefusedQos2,
    /// The embedded broker ended its side (a takeover, or it stopped).
    BrokerGone,
    /// The intake no longer takes messages (the server is stopping).
    IntakeClosed,
}

impl Ending {
    /// Whether the device's last will is published: whenever it is lost
    /// without saying goodbye (MQTT 3.1.1 §3.1.2.5, including a close by
    /// the server for a protocol error), except when the backend ended
    /// the session on purpose or the device already connected again (its
    /// new session took this one over: it is not lost, and that session's
    /// messages may already be ahead of this will).
    pub fn will_due(self, taken_over: bool) -> bool {
        !taken_over && !matches!(self, Ending::Disconnected | Ending::Revoked)
    }

    /// The `reason` label of `eldercare_mqtt_connections_closed_total`
    /// when the listener closed the connection itself.
    pub fn closed_reason(self) -> Option<&'static str> {
        Some(match self {
            Ending::KeepAliveExpired => "keep_alive",
            Ending::RateLimited => "rate_limit",
            Ending::TooLarge => "packet_too_large",
            Ending::Malformed => "malformed",
            Ending::NoMemory => "memory",
            Ending::RefusedQos2 => "topic_not_owned_qos2",
            Ending::TopicAlias => "topic_alias",
            Ending::ProtocolError => "protocol_error",
            _ => return None,
        })
    }

    /// What an MQTT 5 device is told in the DISCONNECT the listener sends
    /// before closing; `None` when the device itself left or is gone.
    pub fn disconnect_reason(
        self,
        taken_over: bool,
    ) -> Option<(DisconnectReasonCode, &'static str)> {
        use DisconnectReasonCode as R;
        Some(match self {
            Ending::Disconnected | Ending::DisconnectedWithWill | Ending::Lost => return None,
            Ending::Revoked if taken_over => (R::SessionTakenOver, "session taken over"),
            Ending::Revoked => (R::AdministrativeAction, "the registry ended this session"),
            Ending::KeepAliveExpired => (R::KeepAliveTimeout, "keep-alive expired"),
            Ending::RateLimited => (R::MessageRateTooHigh, "slowed for too long"),
            Ending::TooLarge => (R::PacketTooLarge, "packet above the limit"),
            Ending::Malformed => (R::MalformedPacket, "malformed packet"),
            Ending::TopicAlias => (R::TopicAliasInvalid, "topic aliases are not offered"),
            Ending::ProtocolError => (R::ProtocolError, "packet out of place"),
            Ending::NoMemory => (R::ServerBusy, "no room for the packet"),
            Ending::RefusedQos2 => (R::NotAuthorized, "topic not owned"),
            Ending::BrokerGone if taken_over => (R::SessionTakenOver, "session taken over"),
            Ending::BrokerGone => (R::UnspecifiedError, "session ended"),
            Ending::IntakeClosed => (R::ServerShuttingDown, "server stopping"),
        })
    }
}

/// One authenticated device session.
#[derive(Debug)]
pub struct Session {
    device_id: String,
    /// The elder the device belongs to: the key its messages are logged
    /// under (a gateway speaks only for devices of the same elder).
    elder_id: std::sync::Arc<str>,
    own_cmd: String,
    /// A gateway's devices; `None` for any other device.
    delegation: Option<Delegation>,
    /// 1.5 times the keep-alive; `None`: keep-alive off (0).
    grace: Option<Duration>,
    last_heard: Instant,
    bucket: Bucket,
    rates: Rates,
    window: SlowWindow,
    slowed: bool,
}

/// The rate settings a session needs.
#[derive(Debug, Clone, Copy)]
struct Rates {
    per_s: f64,
    burst: f64,
    gateway_per_s: f64,
    gateway_burst: f64,
}

impl Session {
    /// A session for `device`, logged in at `now` with the CONNECT's
    /// keep-alive (seconds; 0 = off).
    pub fn new(device: &Device, keep_alive_s: u16, s: &MqttSettings, now: Instant) -> Session {
        let rates = Rates {
            per_s: s.rate_msgs_per_s,
            burst: f64::from(s.rate_burst),
            gateway_per_s: s.gateway_rate_msgs_per_s,
            gateway_burst: f64::from(s.gateway_rate_burst),
        };
        let gateway = device.kind == DeviceKind::Gateway;
        let (per_s, burst) = if gateway {
            (rates.gateway_per_s, rates.gateway_burst)
        } else {
            (rates.per_s, rates.burst)
        };
        Session {
            device_id: device.device_id.clone(),
            elder_id: device.elder_id.as_str().into(),
            own_cmd: format!("eldercare/v1/{}/cmd", device.device_id),
            delegation: gateway.then(|| Delegation::new(device.elder_id.clone())),
            grace: (keep_alive_s > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive_s) * 1500)),
            last_heard: now,
            bucket: Bucket::new(per_s, burst, now),
            rates,
            window: SlowWindow::new(s.rate_cutoff_window(), now),
            slowed: false,
        }
    }

    pub fn elder_id(&self) -> &std::sync::Arc<str> {
        &self.elder_id
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// A whole packet arrived at `now`: any packet counts as a sign of
    /// life (MQTT 3.1.1 §3.1.2.10), and each costs a token.
    pub fn heard(&mut self, now: Instant) -> Pace {
        self.last_heard = self.last_heard.max(now);
        let wait = self.bucket.take(now);
        if wait.is_zero() {
            self.slowed = false;
            self.window.roll(now);
            return Pace::Go;
        }
        if self.window.slowed(wait, now) {
            return Pace::CutOff;
        }
        let starts = !std::mem::replace(&mut self.slowed, true);
        Pace::Slow { wait, starts }
    }

    /// The listener stopped reading the socket until `now` for reasons of
    /// its own (back-pressure): silence meanwhile says nothing about the
    /// device, so the keep-alive timer starts again.
    pub fn resumed(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When the session expires if nothing more is heard; `None`:
    /// keep-alive off.
    pub fn expires_at(&self) -> Option<Instant> {
        self.grace.map(|g| self.last_heard + g)
    }

    /// Whether the session may speak for the device of `topic`.
    pub fn owns(&self, topic: &str) -> bool {
        topic_device_id(topic) == Some(self.device_id.as_str())
            || self.delegation.as_ref().is_some_and(|d| d.covers(topic))
    }

    pub fn publish(&self, topic: &str, qos: QoS) -> PublishVerdict {
        match (self.owns(topic), qos) {
            (true, _) => PublishVerdict::Intake,
            (false, QoS::AtMostOnce) => PublishVerdict::Refuse { ack: false },
            (false, QoS::AtLeastOnce) => PublishVerdict::Refuse { ack: true },
            (false, QoS::ExactlyOnce) => PublishVerdict::RefuseAndClose,
        }
    }

    pub fn subscribe(&self, filters: &[Filter]) -> SubscribeVerdict {
        let ours = |f: &Filter| {
            f.path == self.own_cmd
                || (f.path.ends_with("/cmd")
                    && self.delegation.as_ref().is_some_and(|d| d.covers(&f.path)))
        };
        if filters.iter().all(ours) {
            SubscribeVerdict::Forward
        } else {
            SubscribeVerdict::Refuse
        }
    }

    /// Whether a gateway's devices should be read from the registry before
    /// judging a packet naming `topics`: never read yet, read too long
    /// ago, or naming a device of another id not covered (at most once a
    /// second per id, so a gateway naming one repeatedly does not make the
    /// registry be read for each message).
    pub fn wants_registry<'a>(
        &mut self,
        topics: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> bool {
        let Some(d) = self.delegation.as_mut() else {
            return false;
        };
        let own = self.device_id.as_str();
        let mut want = false;
        for t in topics {
            if topic_device_id(t).is_some_and(|id| id != own) && d.stale(t, now) {
                want = true;
            }
        }
        want
    }

    /// The elder whose devices a gateway speaks for.
    pub fn gateway_elder(&self) -> Option<&str> {
        self.delegation.as_ref().map(|d| d.elder_id.as_str())
    }

    /// A gateway's devices as just read from the registry (`None`: the
    /// read failed; what was known is kept until the next miss). Its rate
    /// grows with the devices it speaks for.
    pub fn delegate(&mut self, devices: Option<HashSet<String>>, now: Instant) {
        let Some(d) = self.delegation.as_mut() else {
            return;
        };
        d.read_at = Some(now);
        if let Some(devices) = devices {
            d.devices = devices;
            let n = d.devices.len().max(1) as f64;
            let r = self.rates;
            self.bucket.set(
                (r.per_s * n).max(r.gateway_per_s),
                (r.burst * n).max(r.gateway_burst),
                now,
            );
        }
    }
}

/// What a gateway's session may speak for: the devices registered to its
/// elder, as last read from the registry.
#[derive(Debug)]
struct Delegation {
    elder_id: String,
    devices: HashSet<String>,
    read_at: Option<Instant>,
    /// Ids lately looked for and not found.
    missed: HashMap<String, Instant>,
}

impl Delegation {
    /// A moved or deleted device stops being covered within this long.
    const MAX_AGE: Duration = Duration::from_secs(30);
    /// A gateway naming a device that is not its own makes the registry
    /// be read again for that id at most this often.
    const MIN_INTERVAL: Duration = Duration::from_secs(1);

    fn new(elder_id: String) -> Delegation {
        Delegation {
            elder_id,
            devices: HashSet::new(),
            read_at: None,
            missed: HashMap::new(),
        }
    }

    fn covers(&self, topic: &str) -> bool {
        topic_device_id(topic).is_some_and(|id| self.devices.contains(id))
    }

    fn stale(&mut self, topic: &str, now: Instant) -> bool {
        match self.read_at {
            None => true,
            Some(t) if now.duration_since(t) >= Self::MAX_AGE => true,
            Some(_) if self.covers(topic) => false,
            Some(_) => {
                let Some(id) = topic_device_id(topic) else {
                    return false;
                };
                let recent = self
                    .missed
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) < Self::MIN_INTERVAL);
                if !recent {
                    if self.missed.len() >= 1024 {
                        self.missed.clear();
                    }
                    self.missed.insert(id.to_string(), now);
                }
                !recent
            }
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_s`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    per_s: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_s: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            per_s,
            burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_s).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token; how long to wait before the next one may be taken
    /// (zero: at once).
    fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_s)
        }
    }

    fn set(&mut self, per_s: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.per_s = per_s;
        self.burst = burst;
    }
}

/// Time spent slowed within fixed windows: more than half of one, and
/// the session is cut off.
#[derive(Debug)]
struct SlowWindow {
    len: Duration,
    start: Instant,
    slowed: Duration,
}

impl SlowWindow {
    fn new(len: Duration, now: Instant) -> SlowWindow {
        SlowWindow {
            len,
            start: now,
            slowed: Duration::ZERO,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.start) >= self.len {
            self.start = now;
            self.slowed = Duration::ZERO;
        }
    }

    /// Adds a wait; whether the window is now over its half.
    fn slowed(&mut self, wait: Duration, now: Instant) -> bool {
        self.roll(now);
        self.slowed += wait;
        self.slowed > self.len / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_store::hash_secret;

    fn device(id: &str, kind: DeviceKind, secret: &str) -> Device {
        let (secret_salt, secret_hash) = hash_secret(secret);
        Device {
            device_id: id.into(),
            kind,
            elder_id: "E1".into(),
            room: None,
            heartbeat_s: 300,
            secret_salt,
            secret_hash,
        }
    }

    fn login<'a>(user: &'a str, pass: &'a str) -> Credential<'a> {
        Credential::Secret {
            device_id: user,
            secret: pass,
        }
    }

    fn filter(path: &str) -> Filter {
        Filter {
            path: path.into(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: rumqttd::protocol::RetainForwardRule::Never,
        }
    }

    fn settings() -> MqttSettings {
        MqttSettings {
            rate_msgs_per_s: 10.0,
            rate_burst: 5,
            gateway_rate_msgs_per_s: 100.0,
            gateway_rate_burst: 50,
            rate_cutoff_window_s: 10.0,
            ..MqttSettings::default()
        }
    }

    #[test]
    fn connect_outcomes_map_to_their_connack_codes() {
        let btn = device("btn-1", DeviceKind::SosButton, "s");
        let ok = admit(login("btn-1", "s"), None, Lookup::Found(btn.clone()), false);
        assert_eq!(ok.unwrap().device_id, "btn-1");

        let code = |r: Result<Device, ConnRefusal>| {
            let e = r.unwrap_err();
            (e.reason(), e.code())
        };
        assert_eq!(
            code(admit(
                login("btn-1", "x"),
                None,
                Lookup::Found(btn.clone()),
                false
            )),
            ("bad_credentials", ConnCode::BadCredentials)
        );
        assert_eq!(
            code(admit(login("ghost", "x"), None, Lookup::Unknown, false)),
            ("unknown_device", ConnCode::BadCredentials),
            "the same answer as a wrong secret: device ids cannot be listed"
        );
        assert_eq!(
            code(admit(login("btn-1", "s"), None, Lookup::Unavailable, false)),
            ("registry_unavailable", ConnCode::Unavailable),
            "a database error is not the device's fault"
        );
        assert_eq!(
            code(admit(
                login("btn-1", "s"),
                Some("eldercare/v1/btn-2/status"),
                Lookup::Found(btn.clone()),
                false
            )),
            ("will_not_owned", ConnCode::NotAuthorized)
        );
        assert_eq!(
            code(admit(
                login("btn-1", "s"),
                None,
                Lookup::Found(btn.clone()),
                true
            )),
            ("registry_changed", ConnCode::Unavailable)
        );
        // Revoked, but with a wrong secret: the secret is what is reported.
        assert_eq!(
            code(admit(login("btn-1", "x"), None, Lookup::Found(btn), true)).0,
            "bad_credentials"
        );

        let l = |u: &str, p: &str| Login {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            credential_of(None, None).unwrap_err(),
            ConnRefusal::NoCredentials
        );
        let empty = l("", "pw");
        assert_eq!(
            credential_of(Some(&empty), None).unwrap_err().code(),
            ConnCode::NotAuthorized
        );
        let btn = l("btn-1", "pw");
        assert_eq!(
            credential_of(Some(&btn), None).unwrap(),
            login("btn-1", "pw")
        );
        // A client certificate: the user name may be left out, or must
        // name the same device; no secret is needed.
        assert_eq!(
            credential_of(None, Some("gw-1")).unwrap(),
            Credential::Certificate { device_id: "gw-1" }
        );
        assert_eq!(
            credential_of(Some(&empty), Some("gw-1"))
                .unwrap()
                .device_id(),
            "gw-1"
        );
        assert_eq!(
            credential_of(Some(&btn), Some("gw-1")).unwrap_err(),
            ConnRefusal::CertificateMismatch
        );
        let gw = device("gw-1", DeviceKind::Gateway, "secret");
        assert!(
            admit(
                Credential::Certificate { device_id: "gw-1" },
                None,
                Lookup::Found(gw),
                false
            )
            .is_ok()
        );
        assert_eq!(
            admit(
                Credential::Certificate { device_id: "gw-9" },
                None,
                Lookup::Unknown,
                false
            )
            .unwrap_err(),
            ConnRefusal::UnknownDevice,
            "a certificate names a device the registry must hold"
        );
    }

    #[test]
    fn keep_alive_is_one_and_a_half_times_and_any_packet_resets_it() {
        let t0 = Instant::now();
        let d = device("btn-1", DeviceKind::SosButton, "s");
        let mut s = Session::new(&d, 4, &settings(), t0);
        assert_eq!(s.expires_at(), Some(t0 + Duration::from_secs(6)));
        s.heard(t0 + Duration::from_secs(5));
        assert_eq!(s.expires_at(), Some(t0 + Duration::from_secs(11)));
        // A clock read earlier by another task never moves it back.
        s.heard(t0 + Duration::from_secs(4));
        assert_eq!(s.expires_at(), Some(t0 + Duration::from_secs(11)));
        s.resumed(t0 + Duration::from_secs(20));
        assert_eq!(s.expires_at(), Some(t0 + Duration::from_secs(26)));

        let off = Session::new(&d, 0, &settings(), t0);
        assert_eq!(off.expires_at(), None, "keep-alive 0 switches it off");
        let max = Session::new(&d, u16::MAX, &settings(), t0);
        assert_eq!(
            max.expires_at(),
            Some(t0 + Duration::from_millis(65_535 * 1500))
        );
    }

    #[test]
    fn a_device_owns_its_topics_and_may_subscribe_only_to_its_cmd() {
        let t0 = Instant::now();
        let s = Session::new(
            &device("btn-1", DeviceKind::SosButton, "s"),
            60,
            &settings(),
            t0,
        );
        use PublishVerdict::*;
        assert_eq!(
            s.publish("eldercare/v1/btn-1/event", QoS::AtLeastOnce),
            Intake
        );
        assert_eq!(
            s.publish("eldercare/v1/btn-1/event", QoS::AtMostOnce),
            Intake
        );
        assert_eq!(
            s.publish("eldercare/v1/btn-1/event", QoS::ExactlyOnce),
            Intake
        );
        assert_eq!(
            s.publish("eldercare/v1/btn-2/event", QoS::AtLeastOnce),
            Refuse { ack: true }
        );
        assert_eq!(
            s.publish("eldercare/v1/btn-2/event", QoS::AtMostOnce),
            Refuse { ack: false }
        );
        assert_eq!(
            s.publish("eldercare/v1/btn-2/event", QoS::ExactlyOnce),
            RefuseAndClose
        );
        assert_eq!(
            s.publish("other/btn-1", QoS::AtMostOnce),
            Refuse { ack: false }
        );

        let f = filter;
        assert_eq!(
            s.subscribe(&[f("eldercare/v1/btn-1/cmd")]),
            SubscribeVerdict::Forward
        );
        assert_eq!(
            s.subscribe(&[f("eldercare/v1/btn-1/cmd"), f("eldercare/v1/#")]),
            SubscribeVerdict::Refuse,
            "one filter not its own refuses the whole request"
        );
        assert_eq!(
            s.subscribe(&[f("eldercare/v1/btn-1/vitals")]),
            SubscribeVerdict::Refuse
        );
    }

    #[test]
    fn a_gateway_speaks_for_its_elders_devices_once_read() {
        let t0 = Instant::now();
        let gw = device("gw-1", DeviceKind::Gateway, "s");
        let mut s = Session::new(&gw, 60, &settings(), t0);
        assert_eq!(s.gateway_elder(), Some("E1"));
        let band = "eldercare/v1/band-1/vitals";
        assert!(!s.owns(band));
        assert!(s.wants_registry([band], t0), "never read");
        s.delegate(Some(HashSet::from(["band-1".to_string()])), t0);
        assert!(s.owns(band));
        assert!(s.owns("eldercare/v1/gw-1/status"));
        assert!(!s.wants_registry([band], t0 + Duration::from_secs(1)));
        let f = filter("eldercare/v1/band-1/cmd");
        assert_eq!(s.subscribe(&[f]), SubscribeVerdict::Forward);

        // Another elder's device: read again, but at most once a second.
        let other = "eldercare/v1/band-9/vitals";
        assert!(s.wants_registry([other], t0 + Duration::from_secs(2)));
        assert!(!s.wants_registry([other], t0 + Duration::from_millis(2500)));
        assert!(s.wants_registry([other], t0 + Duration::from_secs(4)));
        assert_eq!(
            s.publish(other, QoS::AtLeastOnce),
            PublishVerdict::Refuse { ack: true }
        );
        // Its own topics never need the registry.
        assert!(!s.wants_registry(["eldercare/v1/gw-1/status"], t0 + Duration::from_secs(60)));
        // Old: read again even for a covered device.
        assert!(s.wants_registry([band], t0 + Duration::from_secs(31)));
        // A failed read keeps what was known.
        s.delegate(None, t0 + Duration::from_secs(31));
        assert!(s.owns(band));

        let plain = Session::new(
            &device("btn-1", DeviceKind::SosButton, "s"),
            60,
            &settings(),
            t0,
        );
        let mut plain = plain;
        assert!(!plain.wants_registry([band], t0), "only gateways delegate");
        assert_eq!(plain.gateway_elder(), None);
    }

    #[test]
    fn the_rate_limit_slows_a_burst_then_cuts_off_a_babbler() {
        let t0 = Instant::now();
        let d = device("btn-1", DeviceKind::SosButton, "s");
        let mut s = Session::new(&d, 60, &settings(), t0);
        // Burst of 5 at once, then one per 100 ms.
        for _ in 0..5 {
            assert_eq!(s.heard(t0), Pace::Go);
        }
        assert_eq!(
            s.heard(t0),
            Pace::Slow {
                wait: Duration::from_millis(100),
                starts: true
            }
        );
        // Waiting as told, at exactly the sustained rate: slowed, but a
        // new episode is not counted for each packet.
        let mut t = t0 + Duration::from_millis(100);
        match s.heard(t) {
            Pace::Slow { wait, starts } => {
                assert!(!starts);
                assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
            }
            p => panic!("{p:?}"),
        }
        // A device keeping to its rate is never slowed.
        let mut calm = Session::new(&d, 60, &settings(), t0);
        for i in 0..1000 {
            assert_eq!(calm.heard(t0 + Duration::from_millis(100 * i)), Pace::Go);
        }
        // Babbling: slowed for more than half of the 10 s window.
        let mut cut = None;
        for i in 0..200 {
            t += Duration::from_millis(100);
            if s.heard(t) == Pace::CutOff {
                cut = Some(i);
                break;
            }
        }
        let cut = cut.expect("cut off");
        assert!(
            (45..=55).contains(&cut),
            "after ~5 s of babbling, not {cut}"
        );
    }

    #[test]
    fn slowed_now_and_then_is_never_cut_off() {
        let t0 = Instant::now();
        let d = device("btn-1", DeviceKind::SosButton, "s");
        let mut s = Session::new(&d, 60, &settings(), t0);
        // Bursts of 8 every 2 s (4 msg/s on average, the bucket refills).
        let mut slowed = 0;
        for burst in 0..100u64 {
            let t = t0 + Duration::from_secs(2 * burst);
            for _ in 0..8 {
                match s.heard(t) {
                    Pace::CutOff => panic!("cut off at burst {burst}"),
                    Pace::Slow { starts: true, .. } => slowed += 1,
                    _ => {}
                }
            }
        }
        assert!(slowed > 0, "the bursts above the bucket were slowed");
    }

    #[test]
    fn a_gateways_budget_grows_with_its_devices() {
        let t0 = Instant::now();
        let gw = device("gw-1", DeviceKind::Gateway, "s");
        let mut s = Session::new(&gw, 60, &settings(), t0);
        // Its own floor: burst 50.
        for _ in 0..50 {
            assert_eq!(s.heard(t0), Pace::Go);
        }
        assert!(matches!(s.heard(t0), Pace::Slow { .. }));
        // Twenty devices: 20 x 10 msg/s = 200 msg/s, above the floor.
        let devices = (0..20).map(|i| format!("d-{i}")).collect();
        let t1 = t0 + Duration::from_secs(10);
        s.delegate(Some(devices), t1);
        let mut t = t1 + Duration::from_secs(10);
        for _ in 0..10_000 {
            t += Duration::from_millis(5);
            assert_eq!(s.heard(t), Pace::Go, "200 msg/s fits");
        }
    }

    #[test]
    fn the_will_follows_any_loss_but_not_a_goodbye_a_revocation_or_a_takeover() {
        for e in [
            Ending::Lost,
            Ending::KeepAliveExpired,
            Ending::RateLimited,
            Ending::TooLarge,
            Ending::Malformed,
            Ending::BrokerGone,
        ] {
            assert!(e.will_due(false), "{e:?}");
            assert!(!e.will_due(true), "{e:?} after a takeover");
        }
        assert!(!Ending::Disconnected.will_due(false));
        assert!(!Ending::Revoked.will_due(false));
        assert_eq!(Ending::KeepAliveExpired.closed_reason(), Some("keep_alive"));
        assert_eq!(Ending::Lost.closed_reason(), None);
    }
}
