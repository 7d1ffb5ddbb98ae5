//! What the payload decoder targets share: the topic for each stream and
//! the checks every decoded message must pass.
use eldercare_model::{Body, Reading, Stream};
use eldercare_protocol::{PROTOBUF_CONTENT_TYPE, Refusal};
use serde_json::{Value, to_value};

/// The server clock the decoders are given: 2025-11-23T08:00:00Z, the
/// time of the seed payloads, so valid seeds are accepted.
pub const NOW_MS: i64 = 1_763_884_800_000;

const DEVICE: &str = "fuzz-0001";

/// `eldercare/v1/fuzz-0001/{stream}` for each stream, in `Stream::ALL` order.
const JSON_TOPICS: [&str; 6] = [
    "eldercare/v1/fuzz-0001/vitals",
    "eldercare/v1/fuzz-0001/sleep",
    "eldercare/v1/fuzz-0001/motion",
    "eldercare/v1/fuzz-0001/location",
    "eldercare/v1/fuzz-0001/event",
    "eldercare/v1/fuzz-0001/status",
];

/// The same with the `/pb` suffix.
const PB_TOPICS: [&str; 6] = [
    "eldercare/v1/fuzz-0001/vitals/pb",
    "eldercare/v1/fuzz-0001/sleep/pb",
    "eldercare/v1/fuzz-0001/motion/pb",
    "eldercare/v1/fuzz-0001/location/pb",
    "eldercare/v1/fuzz-0001/event/pb",
    "eldercare/v1/fuzz-0001/status/pb",
];

/// Splits an input into its selector byte and the payload: the selector's
/// value modulo 6 picks the stream (the seed files start with 0 to 5).
fn split(data: &[u8]) -> Option<(usize, u8, &[u8])> {
    let (&sel, payload) = data.split_first()?;
    Some((usize::from(sel) % Stream::ALL.len(), sel, payload))
}

/// Decodes the payload as JSON on the plain topic of the selected stream.
pub fn json(data: &[u8]) {
    let Some((i, _, payload)) = split(data) else {
        return;
    };
    let r = eldercare_protocol::decode(JSON_TOPICS[i], payload, None, NOW_MS);
    check(Stream::ALL[i], r);
}

/// Decodes the payload as protobuf. The selector's top bit picks how the
/// device said so: clear, the `/pb` topic; set, the plain topic with the
/// MQTT 5 content type `application/x-protobuf`.
pub fn protobuf(data: &[u8]) {
    let Some((i, sel, payload)) = split(data) else {
        return;
    };
    let r = if sel & 0x80 == 0 {
        eldercare_protocol::decode(PB_TOPICS[i], payload, None, NOW_MS)
    } else {
        eldercare_protocol::decode(JSON_TOPICS[i], payload, Some(PROTOBUF_CONTENT_TYPE), NOW_MS)
    };
    check(Stream::ALL[i], r);
}

/// What the decoder promises whatever the payload: an accepted reading is
/// of the topic's device and stream, inside the time window, and reads
/// back from the JSON it is stored as; a refusal has one of the listed
/// reasons and says something.
fn check(stream: Stream, r: Result<Reading, Refusal>) {
    match r {
        Ok(reading) => {
            assert_eq!(reading.device_id, DEVICE);
            assert_eq!(reading.stream(), stream);
            assert!(eldercare_protocol::check_ts(reading.ts_ms, NOW_MS).is_ok());
            // Stored and spooled as JSON: it must read back as it was.
            let json = reading.body.to_json();
            let back = Body::from_json(stream, &json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let (was, is) = (to_value(&reading.body).unwrap(), to_value(&back).unwrap());
            assert!(same(&was, &is), "{json} read back as {back:?}");
        }
        Err(e) => {
            assert!(Refusal::REASONS.contains(&e.reason()));
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Equal, numbers to within a relative 1e-12: serde_json reads a float
/// back exactly only with its `float_roundtrip` feature, and without it
/// may be a few units in the last place off.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300),
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
