//! MQTT intake: the embedded rumqttd broker behind a guard, and the
//! ingest loop that feeds the rule engine.
//!
//! ```text
//! device --TCP--> Guard (auth, topic ownership) --loopback--> rumqttd
//!                                                                |
//!      rules <- decode/validate <- ingest link (in-process) <----+
//! ```
//!
//! rumqttd authenticates at CONNECT but never tells a subscriber who
//! published, and has no ACL hook. So the public listener is ours: the
//! [`guard`] reads each MQTT packet, authenticates the device against the
//! registry, and drops any PUBLISH (or SUBSCRIBE, or last will) outside
//! the device's own topics before it reaches the broker. rumqttd keeps
//! doing what it is good at: sessions, QoS, keep-alive, wills, fan-out.
#![forbid(unsafe_code)]

pub mod guard;
pub mod ingest;
pub mod writer;

pub use guard::{Guard, GuardConfig};
pub use ingest::{Ingest, IngestConfig};
pub use writer::TelemetryWriter;
