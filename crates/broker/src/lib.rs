//! MQTT intake: the public listener (the guard) in front of an embedded
//! rumqttd broker, and the ingest loop that feeds the rule engine.
//!
//! ```text
//! device --TCP--> guard (auth, topic ownership, keep-alive, limits)
//!                   |  device messages, last wills   \  SUBSCRIBE cmd, QoS 2
//!                   v                                 v
//!   rules <- decode/validate <- ingest loop      rumqttd (loopback)
//! ```
//!
//! rumqttd authenticates at CONNECT but never tells a subscriber who
//! published, and has no ACL hook. So the public listener is ours: the
//! [`guard`] reads each MQTT packet and asks the device's
//! [`session::Session`] (a pure type: no socket, time passed in) what to
//! do with it: authentication at CONNECT, topic ownership per PUBLISH and
//! SUBSCRIBE, keep-alive, rate limits, the last will. [`frame`] reads
//! whole packets within the listener's memory limits ([`settings`]);
//! [`live`] knows each device's live sessions, so the registry API can
//! end them. Device messages go straight to the [`ingest`] pipeline;
//! rumqttd keeps what it is good at: subscriptions, QoS 2, fan-out of
//! commands to devices. Refused messages go to the dead-letter store
//! through [`refusals`].
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod dedup;
pub mod frame;
pub mod guard;
pub mod ingest;
pub mod live;
pub mod pipeline;
pub mod refusals;
pub mod session;
pub mod settings;
pub mod writer;

pub use guard::{Guard, GuardConfig};
pub use ingest::{Ingest, IngestConfig};
pub use refusals::Refusals;
pub use settings::MqttSettings;
pub use writer::TelemetryWriter;
