//! MQTT intake: the public listener (the guard) in front of an embedded
//! rumqttd broker, and the ingest loop that feeds the rule engine.
//!
//! ```text
//! device --TCP/TLS--> guard (auth, topic ownership, keep-alive, limits)
//!  MQTT 3.1.1 or 5      |  device messages, wills       ^ commands (cmd)
//!                       v                               |
//!  rules <- decode/validate <- ingest loop     command hub, or a kept
//!                                              session's own link
//!                                                       ^
//!                                              rumqttd router (in memory)
//! ```
//!
//! rumqttd authenticates at CONNECT but never tells a subscriber who
//! published, and has no ACL hook. So the public listener is ours: the
//! [`guard`] accepts devices (plain or TLS) and reads each CONNECT,
//! [`terms`] settles what the session agrees (MQTT 5 properties
//! included), and [`conn`] reads each packet and asks the device's
//! [`session::Session`] (a pure type: no socket, time passed in) what to
//! do with it: authentication, topic ownership per PUBLISH and SUBSCRIBE,
//! keep-alive, rate limits, the last will. [`wire`] speaks the device's
//! protocol version; [`frame`] reads whole packets within the listener's
//! memory limits ([`settings`]); [`live`] knows each device's live
//! sessions, so the registry API can end them. Device messages go
//! straight to the [`ingest`] pipeline (QoS 2 completed by the listener
//! too). rumqttd's router, reached only through in-process [`links`] (no
//! socket), keeps what it is good at: the sessions kept after their
//! connection, with their subscriptions and undelivered commands; the
//! [`commands`] hub hands commands to all other sessions through one
//! link. Refused messages go to the dead-letter store through
//! [`refusals`].
#![forbid(unsafe_code)]

pub mod api_visits;
pub mod checkpoint;
pub mod commands;
pub mod conn;
pub mod decider;
pub mod dedup;
pub mod frame;
pub mod guard;
pub mod ingest;
pub mod kept;
pub mod links;
pub mod live;
pub mod pipeline;
pub mod refusals;
pub mod session;
pub mod settings;
pub mod terms;
pub mod wire;
pub mod writer;

pub use guard::{Guard, GuardConfig, Listener};
pub use ingest::{Ingest, IngestConfig};
pub use refusals::Refusals;
pub use settings::MqttSettings;
pub use writer::TelemetryWriter;
