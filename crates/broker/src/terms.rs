//! What a session agrees at CONNECT, as a pure function of the CONNECT
//! and the listener's settings: the keep-alive the listener times, how
//! long the broker keeps the session after the connection, how many
//! commands the device takes unacknowledged, the largest packet it takes,
//! how long its will waits; and, for MQTT 5, the CONNACK properties that
//! announce the listener's side (MQTT 5 §3.2.2.3).
//!
//! MQTT 3.1.1 has none of these to negotiate: its terms are the keep-alive
//! asked for, a session kept for ever without clean session, and no limit
//! on what the device takes.
use crate::settings::MqttSettings;
use crate::wire::{ConnCode, Level};
use rumqttd::protocol::{ConnAckProperties, ConnectProperties, LastWillProperties};
use std::time::Duration;

/// How long the broker keeps a session once its connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// MQTT 3.1.1 without clean session: until a clean session takes it.
    Never,
    /// This long (zero: it ends with the connection).
    After(Duration),
}

impl Expiry {
    pub fn kept(self) -> bool {
        self != Expiry::After(Duration::ZERO)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub level: Level,
    /// Seconds of silence after which (times 1.5) the session ends; 0: off.
    pub keep_alive: u16,
    /// Resume the session the broker kept (no clean session / clean start).
    pub resume: bool,
    pub expiry: Expiry,
    /// QoS 1 and 2 messages the device takes before it has acknowledged
    /// them (its Receive Maximum).
    pub device_receive_max: u16,
    /// Largest packet, in bytes, the device takes; `None`: no limit.
    pub device_max_packet: Option<u32>,
    /// How long the last will waits after the connection is lost.
    pub will_delay: Duration,
    /// The client id the listener gave a device that sent none (MQTT 5
    /// says it in the CONNACK).
    pub assigned_client_id: Option<String>,
    /// Whether a refusal may say why in a Reason String beyond CONNACK
    /// and DISCONNECT (MQTT 5 Request Problem Information, §3.1.2.11.7).
    pub problem_info: bool,
}

/// What a CONNECT asks for.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub level: Level,
    pub keep_alive: u16,
    /// Clean session (3.1.1) or clean start (5).
    pub clean: bool,
    pub client_id: &'a str,
    pub props: Option<&'a ConnectProperties>,
    pub will_props: Option<&'a LastWillProperties>,
}

/// The terms of a CONNECT, or why it cannot be accepted. `generated_id`
/// is the client id to give a device that sent an empty one.
pub fn agree(
    asked: Asked<'_>,
    s: &MqttSettings,
    generated_id: impl FnOnce() -> String,
) -> Result<(Terms, Option<ConnAckProperties>), ConnCode> {
    let Asked {
        level,
        keep_alive,
        clean,
        client_id,
        props,
        will_props,
    } = asked;
    let assigned = client_id.is_empty().then(generated_id);
    if level == Level::V4 {
        let terms = Terms {
            level,
            keep_alive,
            resume: !clean,
            expiry: if clean {
                Expiry::After(Duration::ZERO)
            } else {
                Expiry::Never
            },
            device_receive_max: u16::MAX,
            device_max_packet: None,
            will_delay: Duration::ZERO,
            assigned_client_id: assigned,
            problem_info: false,
        };
        return Ok((terms, None));
    }
    let p = props.cloned().unwrap_or_default_props();
    if p.authentication_method.is_some() {
        // No extended authentication: the device's secret is its password
        // (or its client certificate).
        return Err(ConnCode::BadAuthMethod);
    }
    // Zero is a protocol error for both (MQTT 5 §3.1.2.11.3, .4).
    if p.receive_maximum == Some(0) || p.max_packet_size == Some(0) {
        return Err(ConnCode::ProtocolError);
    }
    let asked = p.session_expiry_interval.unwrap_or(0);
    let granted = asked.min(s.max_session_expiry_s);
    let server_keep_alive = (s.max_keep_alive_s > 0
        && (keep_alive == 0 || keep_alive > s.max_keep_alive_s))
        .then_some(s.max_keep_alive_s);
    let will_delay = will_props
        .and_then(|w| w.delay_interval)
        .unwrap_or(0)
        .min(granted);
    let terms = Terms {
        level,
        keep_alive: server_keep_alive.unwrap_or(keep_alive),
        resume: !clean,
        expiry: Expiry::After(Duration::from_secs(u64::from(granted))),
        device_receive_max: p.receive_maximum.unwrap_or(u16::MAX),
        device_max_packet: p.max_packet_size,
        will_delay: Duration::from_secs(u64::from(will_delay)),
        assigned_client_id: assigned.clone(),
        problem_info: p.request_problem_info != Some(0),
    };
    let ack = ConnAckProperties {
        session_expiry_interval: (granted != asked).then_some(granted),
        receive_max: Some(u16::try_from(s.max_inflight).unwrap_or(u16::MAX)),
        max_packet_size: Some(u32::try_from(s.max_packet_bytes).unwrap_or(u32::MAX)),
        assigned_client_identifier: assigned,
        // A device subscribes to its own `cmd` topics by name, alone.
        wildcard_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive,
        ..Default::default()
    };
    Ok((terms, Some(ack)))
}

trait OrDefault {
    fn unwrap_or_default_props(self) -> ConnectProperties;
}

impl OrDefault for Option<ConnectProperties> {
    // rumqttd's ConnectProperties has no Default.
    fn unwrap_or_default_props(self) -> ConnectProperties {
        self.unwrap_or(ConnectProperties {
            session_expiry_interval: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            request_response_info: None,
            request_problem_info: None,
            user_properties: Vec::new(),
            authentication_method: None,
            authentication_data: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> ConnectProperties {
        None.unwrap_or_default_props()
    }

    fn v5(
        keep_alive: u16,
        clean: bool,
        p: ConnectProperties,
        will_delay: Option<u32>,
    ) -> Result<(Terms, Option<ConnAckProperties>), ConnCode> {
        let will = will_delay.map(|d| LastWillProperties {
            delay_interval: Some(d),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        });
        agree(
            Asked {
                level: Level::V5,
                keep_alive,
                clean,
                client_id: "fw",
                props: Some(&p),
                will_props: will.as_ref(),
            },
            &MqttSettings::default(),
            || "gen".into(),
        )
    }

    #[test]
    fn mqtt_3_1_1_keeps_its_own_terms() {
        let (t, ack) = agree(
            Asked {
                level: Level::V4,
                keep_alive: 0,
                clean: false,
                client_id: "",
                props: None,
                will_props: None,
            },
            &MqttSettings::default(),
            || "gen".into(),
        )
        .unwrap();
        assert!(ack.is_none());
        assert_eq!(t.keep_alive, 0, "keep-alive 0 stays off in 3.1.1");
        assert_eq!(t.expiry, Expiry::Never);
        assert!(t.resume);
        assert_eq!(t.assigned_client_id.as_deref(), Some("gen"));
    }

    #[test]
    fn the_listener_announces_its_limits_and_caps_what_it_must() {
        let s = MqttSettings::default();
        let mut p = props();
        p.session_expiry_interval = Some(u32::MAX);
        p.receive_maximum = Some(5);
        p.max_packet_size = Some(1000);
        let (t, ack) = v5(0, true, p, Some(30)).unwrap();
        let ack = ack.unwrap();
        assert_eq!(
            t.keep_alive, s.max_keep_alive_s,
            "no keep-alive: the server's"
        );
        assert_eq!(ack.server_keep_alive, Some(s.max_keep_alive_s));
        assert_eq!(
            t.expiry,
            Expiry::After(Duration::from_secs(s.max_session_expiry_s.into()))
        );
        assert_eq!(ack.session_expiry_interval, Some(s.max_session_expiry_s));
        assert_eq!(ack.receive_max, Some(64));
        assert_eq!(ack.max_packet_size, Some(256 * 1024));
        assert_eq!(ack.wildcard_subscription_available, Some(0));
        assert_eq!(t.device_receive_max, 5);
        assert_eq!(t.device_max_packet, Some(1000));
        assert_eq!(t.will_delay, Duration::from_secs(30));
        assert!(!t.resume);
        assert!(t.problem_info, "reasons said unless the device asks not to");
        let mut p = props();
        p.request_problem_info = Some(0);
        assert!(!v5(60, true, p, None).unwrap().0.problem_info);
    }

    #[test]
    fn a_keep_alive_within_the_limit_and_a_will_delay_beyond_the_session() {
        let mut p = props();
        p.session_expiry_interval = Some(10);
        let (t, ack) = v5(60, false, p, Some(600)).unwrap();
        let ack = ack.unwrap();
        assert_eq!(t.keep_alive, 60);
        assert_eq!(ack.server_keep_alive, None);
        assert_eq!(ack.session_expiry_interval, None, "granted as asked");
        assert_eq!(t.expiry, Expiry::After(Duration::from_secs(10)));
        assert_eq!(
            t.will_delay,
            Duration::from_secs(10),
            "a will is due when the session ends, at the latest"
        );
        let (t, _) = v5(60, true, props(), None).unwrap();
        assert!(
            !t.expiry.kept(),
            "no expiry: the session ends with the connection"
        );
    }

    #[test]
    fn what_the_listener_cannot_take_is_refused() {
        let mut p = props();
        p.authentication_method = Some("SCRAM-SHA-1".into());
        assert_eq!(v5(60, true, p, None).unwrap_err(), ConnCode::BadAuthMethod);
        let mut p = props();
        p.receive_maximum = Some(0);
        assert_eq!(v5(60, true, p, None).unwrap_err(), ConnCode::ProtocolError);
    }
}
