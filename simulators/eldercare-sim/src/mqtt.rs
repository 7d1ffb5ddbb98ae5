//! One device's MQTT session, over MQTT 3.1.1 or MQTT 5 (rumqttc's two
//! clients behind one [`Client`] and one [`EventLoop`]), straight to the
//! broker, over TLS, or through the source-address [`crate::net::Relay`].
//! The simulator drives both protocols with the same code: same topics,
//! payloads, QoS 1 and last will.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{TlsConfiguration, Transport};

/// The MQTT version the devices speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 3.1.1.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// How a session reaches the broker.
#[derive(Clone)]
pub enum Route {
    /// TCP to the broker.
    Tcp,
    /// TLS to the broker, its host as the server name.
    Tls(Arc<rustls::ClientConfig>),
    /// Through the relay's socket at this path, which connects from a
    /// source address of its own (and speaks TLS if asked).
    Relay(PathBuf),
}

/// Everything a session needs to log in as its device.
#[derive(Clone)]
pub struct Login {
    pub client_id: String,
    pub user: String,
    pub secret: String,
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub route: Route,
    /// QoS 1 messages it may have waiting for their PUBACK.
    pub inflight: u16,
    /// Published by the broker if the session is lost (`{"online":
    /// false}`, QoS 1).
    pub will_topic: String,
    /// The `cmd` topics it listens on: those of the devices it speaks
    /// for.
    pub cmd_topics: Vec<String>,
}

const KEEP_ALIVE: Duration = Duration::from_secs(60);
const WILL: &[u8] = br#"{"online": false}"#;

/// Builds a session's client and event loop; nothing is sent until the
/// loop is polled.
pub fn session(login: &Login, cap: usize) -> (Client, EventLoop) {
    let (host, transport) = match &login.route {
        Route::Tcp => (login.host.clone(), Transport::Tcp),
        Route::Tls(cfg) => (
            login.host.clone(),
            Transport::Tls(TlsConfiguration::Rustls(cfg.clone())),
        ),
        Route::Relay(path) => (path.to_string_lossy().into_owned(), Transport::Unix),
    };
    match login.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&login.client_id, host, login.port);
            o.set_credentials(&login.user, &login.secret);
            o.set_keep_alive(KEEP_ALIVE);
            o.set_clean_session(true);
            o.set_inflight(login.inflight.max(1));
            o.set_transport(transport);
            o.set_last_will(rumqttc::LastWill::new(
                &login.will_topic,
                WILL.to_vec(),
                rumqttc::QoS::AtLeastOnce,
                false,
            ));
            let (c, el) = rumqttc::AsyncClient::new(o, cap);
            (Client::V311(c), EventLoop::V311(Box::new(el)))
        }
        Protocol::V5 => {
            let mut o = v5::MqttOptions::new(&login.client_id, host, login.port);
            o.set_credentials(&login.user, &login.secret);
            o.set_keep_alive(KEEP_ALIVE);
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(login.inflight.max(1));
            o.set_transport(transport);
            o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                &login.will_topic,
                WILL.to_vec(),
                v5::mqttbytes::QoS::AtLeastOnce,
                false,
                None,
            ));
            let (c, el) = v5::AsyncClient::new(o, cap);
            (Client::V5(c), EventLoop::V5(Box::new(el)))
        }
    }
}

/// A session's handle for publishing; cheap to clone.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The client's request queue is gone: its event loop has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Client {
    /// Queues a QoS 1 publish (waits while the queue is full).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| Closed),
            Client::V5(c) => c
                .publish(topic, v5::mqttbytes::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| Closed),
        }
    }

    /// Queues a QoS 1 subscription to `topics`, without waiting.
    pub fn try_subscribe(&self, topics: &[String]) -> Result<(), Closed> {
        if topics.is_empty() {
            return Ok(());
        }
        match self {
            Client::V311(c) => c
                .try_subscribe_many(
                    topics.iter().map(|t| {
                        rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .map_err(|_| Closed),
            Client::V5(c) => c
                .try_subscribe_many(topics.iter().map(|t| {
                    v5::mqttbytes::v5::Filter::new(t.clone(), v5::mqttbytes::QoS::AtLeastOnce)
                }))
                .map_err(|_| Closed),
        }
    }

    /// Queues a DISCONNECT (a clean goodbye: no last will).
    pub fn try_disconnect(&self) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.try_disconnect().map_err(|_| Closed),
            Client::V5(c) => c.try_disconnect().map_err(|_| Closed),
        }
    }
}

/// A session's event loop: polling it connects, sends what the client
/// queued and reads what comes in; after an error, polling again
/// reconnects.
pub enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the simulator does something with, of what the event loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The broker accepted the login.
    ConnAck,
    /// A QoS 1 PUBLISH was written with this packet id.
    Published(u16),
    /// The PUBACK of this packet id came.
    PubAck(u16),
    /// A message on a topic the session subscribed to.
    Message {
        topic: String,
        payload: Bytes,
    },
    /// A SUBACK, and how many of its filters were refused.
    SubAck {
        refused: usize,
    },
    Other,
}

/// Why polling failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The broker refused the login (CONNACK with a failure code): trying
    /// again will not help.
    Refused(String),
    /// The connection failed or was lost.
    Connection(String),
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Refused(code) => write!(f, "refused: {code}"),
            PollError::Connection(e) => f.write_str(e),
        }
    }
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Event, PollError> {
        match self {
            EventLoop::V311(el) => {
                use rumqttc::{Event as E, Outgoing, Packet};
                match el.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(_))) => Ok(Event::ConnAck),
                    Ok(E::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        Ok(Event::Published(pkid))
                    }
                    Ok(E::Incoming(Packet::PubAck(a))) => Ok(Event::PubAck(a.pkid)),
                    Ok(E::Incoming(Packet::Publish(p))) => Ok(Event::Message {
                        topic: p.topic,
                        payload: p.payload,
                    }),
                    Ok(E::Incoming(Packet::SubAck(s))) => Ok(Event::SubAck {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .count(),
                    }),
                    Ok(_) => Ok(Event::Other),
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        Err(PollError::Refused(format!("{code:?}")))
                    }
                    Err(e) => Err(PollError::Connection(e.to_string())),
                }
            }
            EventLoop::V5(el) => {
                use rumqttc::Outgoing;
                use v5::Event as E;
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                match el.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(_))) => Ok(Event::ConnAck),
                    Ok(E::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        Ok(Event::Published(pkid))
                    }
                    Ok(E::Incoming(Packet::PubAck(a))) => Ok(Event::PubAck(a.pkid)),
                    Ok(E::Incoming(Packet::Publish(p))) => Ok(Event::Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                    }),
                    Ok(E::Incoming(Packet::SubAck(s))) => Ok(Event::SubAck {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .count(),
                    }),
                    Ok(_) => Ok(Event::Other),
                    Err(v5::ConnectionError::ConnectionRefused(code)) => {
                        Err(PollError::Refused(format!("{code:?}")))
                    }
                    Err(e) => Err(PollError::Connection(e.to_string())),
                }
            }
        }
    }
}

/// What a device makes of a message on its `cmd` topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `{"type": "alert_ack", "alert_id": ..., "ts": ...}`: the hotline
    /// has acknowledged the device's alert (a real button lights up).
    AlertAck { alert_id: String },
    /// Anything else: a type the devices do not know, or not JSON.
    Unknown,
}

impl Command {
    pub fn parse(payload: &[u8]) -> Command {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return Command::Unknown;
        };
        if v["type"] != "alert_ack" {
            return Command::Unknown;
        }
        let alert_id = match &v["alert_id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Command::Unknown,
        };
        Command::AlertAck { alert_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_ack_is_understood_and_anything_else_is_not() {
        assert_eq!(
            Command::parse(br#"{"type":"alert_ack","alert_id":"A-17","ts":1}"#),
            Command::AlertAck {
                alert_id: "A-17".into()
            }
        );
        assert_eq!(
            Command::parse(br#"{"type":"alert_ack","alert_id":17}"#),
            Command::AlertAck {
                alert_id: "17".into()
            }
        );
        assert_eq!(Command::parse(br#"{"type":"alert_ack"}"#), Command::Unknown);
        assert_eq!(Command::parse(br#"{"type":"reboot"}"#), Command::Unknown);
        assert_eq!(Command::parse(b"not json"), Command::Unknown);
    }
}
