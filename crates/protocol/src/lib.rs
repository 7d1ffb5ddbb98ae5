//! Device protocol v1: topic parsing, JSON and protobuf decoding, and the
//! validation every reading passes before the rules see it.
//!
//! [`parse_topic`] splits `eldercare/v1/{device_id}/{stream}[/pb]`;
//! [`decode`] turns a payload into a [`Reading`] or a [`Refusal`] that
//! names its reason (a stable label for metrics) and what was wrong.
//! Everything here is pure: the caller passes the server clock in.
#![forbid(unsafe_code)]

mod json;
mod pb;
mod validate;

use eldercare_model::{EpochMs, Reading, Stream};

pub use validate::{RANGES, Range};

/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024;
/// `ts` further in the future than this is refused.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// `ts` further in the past than this is refused.
pub const MAX_PAST_MS: i64 = 24 * 60 * 60 * 1000;
/// Topic prefix of every device topic.
pub const TOPIC_PREFIX: &str = "eldercare/v1/";
/// MQTT 5 content type that marks a protobuf payload on a plain topic.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Why a message was refused. [`Refusal::reason`] is the label it is
/// counted under; `Display` says what was wrong with which input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("topic `{0}` is not eldercare/v1/{{device_id}}/{{stream}}[/pb]")]
    BadTopic(String),
    #[error("unknown stream `{0}` (expected vitals, sleep, motion, location, event or status)")]
    UnknownStream(String),
    #[error("payload of {0} bytes is larger than the 4096-byte limit")]
    PayloadTooLarge(usize),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("malformed protobuf: {0}")]
    MalformedProtobuf(String),
    #[error("missing field: {0}")]
    MissingField(String),
    #[error("invalid field `{field}`: {detail}")]
    InvalidField { field: String, detail: String },
    #[error("field `{field}` = {value} is outside {range}")]
    OutOfRange {
        field: String,
        value: String,
        range: String,
    },
    #[error("ts {ts_ms} is more than 24 hours in the past")]
    StaleTs { ts_ms: EpochMs },
    #[error("ts {ts_ms} is more than 5 minutes in the future")]
    FutureTs { ts_ms: EpochMs },
    #[error("device `{0}` is not registered")]
    UnknownDevice(String),
    #[error("device `{sender}` may not publish under `{topic}`")]
    TopicNotOwned { sender: String, topic: String },
    /// A text field holds a control character (U+0000 to U+001F, U+007F
    /// to U+009F). NUL in particular cannot be stored in a PostgreSQL
    /// text column: refused here, it never reaches the database.
    #[error("field `{field}` contains a control character (U+0000–U+001F or U+007F–U+009F)")]
    ControlCharacter { field: String },
}

impl Refusal {
    /// Stable label for metrics and the dead-letter store.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadTopic(_) => "bad_topic",
            Refusal::UnknownStream(_) => "unknown_stream",
            Refusal::PayloadTooLarge(_) => "payload_too_large",
            Refusal::MalformedJson(_) => "malformed_json",
            Refusal::MalformedProtobuf(_) => "malformed_protobuf",
            Refusal::MissingField(_) => "missing_field",
            Refusal::InvalidField { .. } => "invalid_field",
            Refusal::OutOfRange { .. } => "out_of_range",
            Refusal::StaleTs { .. } => "stale_ts",
            Refusal::FutureTs { .. } => "future_ts",
            Refusal::UnknownDevice(_) => "unknown_device",
            Refusal::TopicNotOwned { .. } => "topic_not_owned",
            Refusal::ControlCharacter { .. } => "control_character",
        }
    }

    /// Every reason label, for pre-registering metrics.
    pub const REASONS: [&'static str; 13] = [
        "bad_topic",
        "unknown_stream",
        "payload_too_large",
        "malformed_json",
        "malformed_protobuf",
        "missing_field",
        "invalid_field",
        "out_of_range",
        "stale_ts",
        "future_ts",
        "unknown_device",
        "topic_not_owned",
        "control_character",
    ];
}

/// Payload encoding, from the topic suffix or the MQTT 5 content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// A device topic, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<'a> {
    pub device_id: &'a str,
    pub stream: Stream,
    pub encoding: Encoding,
}

/// The device id a topic is published under, if the topic has the device
/// topic shape at all. Used to check ownership before anything else.
pub fn topic_device_id(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(TOPIC_PREFIX)?;
    let id = rest.split('/').next()?;
    valid_id(id).then_some(id)
}

/// `true` for 1 to 64 characters of `A-Z a-z 0-9 _ -`: device and elder ids.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits a telemetry topic. `cmd` is backend -> device and never telemetry.
pub fn parse_topic(topic: &str) -> Result<Topic<'_>, Refusal> {
    let bad = || Refusal::BadTopic(truncate(topic, 200));
    let rest = topic.strip_prefix(TOPIC_PREFIX).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let device_id = parts.next().filter(|d| valid_id(d)).ok_or_else(bad)?;
    let stream = parts.next().ok_or_else(bad)?;
    let encoding = match parts.next() {
        None => Encoding::Json,
        Some("pb") => Encoding::Protobuf,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    let stream =
        Stream::parse(stream).ok_or_else(|| Refusal::UnknownStream(truncate(stream, 64)))?;
    Ok(Topic {
        device_id,
        stream,
        encoding,
    })
}

/// Decodes and validates one message. `content_type` is the MQTT 5
/// content type, when the client sent one; `now_ms` is the server clock.
pub fn decode(
    topic: &str,
    payload: &[u8],
    content_type: Option<&str>,
    now_ms: EpochMs,
) -> Result<Reading, Refusal> {
    let t = parse_topic(topic)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Refusal::PayloadTooLarge(payload.len()));
    }
    let encoding = match (t.encoding, content_type) {
        (Encoding::Json, Some(PROTOBUF_CONTENT_TYPE)) => Encoding::Protobuf,
        (e, _) => e,
    };
    let reading = match encoding {
        Encoding::Json => json::decode(t.device_id, t.stream, payload, now_ms)?,
        Encoding::Protobuf => pb::decode(t.device_id, t.stream, payload, now_ms)?,
    };
    validate::reading(&reading)?;
    check_ts(reading.ts_ms, now_ms)?;
    Ok(reading)
}

/// Refuses event times outside the accepted window around the server clock.
pub fn check_ts(ts_ms: EpochMs, now_ms: EpochMs) -> Result<(), Refusal> {
    if ts_ms > now_ms + MAX_FUTURE_MS {
        Err(Refusal::FutureTs { ts_ms })
    } else if ts_ms < now_ms - MAX_PAST_MS {
        Err(Refusal::StaleTs { ts_ms })
    } else {
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests;
