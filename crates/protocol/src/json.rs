//! JSON payloads. Decoded through `serde_json::Value` rather than derived
//! structs so each refusal can name the field and say what was wrong;
//! unknown fields are ignored, as the protocol only ever adds fields.
use crate::{Refusal, validate};
use eldercare_model::{
    Body, DeviceEvent, EventType, Location, Motion, Reading, Sleep, Status, Stream, VisitAction,
    Vitals,
};

pub(crate) const EVENT_TYPES: &str = "must be sos, fall, sos_cancel, visit or check_in";
use serde_json::{Map, Value};

/// `now_ms` stamps a `status` message that carries no `ts`: a last will
/// is published by the broker when the device is already gone, so the
/// device could not date it.
pub(crate) fn decode(
    device_id: &str,
    stream: Stream,
    payload: &[u8],
    now_ms: i64,
) -> Result<Reading, Refusal> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| Refusal::MalformedJson(e.to_string()))?;
    let Value::Object(m) = value else {
        return Err(Refusal::MalformedJson(
            "payload is not a JSON object".into(),
        ));
    };
    let ts_ms = match ts(&m) {
        Err(Refusal::MissingField(_)) if stream == Stream::Status => now_ms,
        r => r?,
    };
    let seq = match m.get("seq") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| invalid("seq", "must be an unsigned integer"))?,
        ),
    };
    let body = match stream {
        Stream::Vitals => Body::Vitals(Vitals {
            hr: int(&m, "hr")?,
            spo2: int(&m, "spo2")?,
            rr: int(&m, "rr")?,
            temp_c: num(&m, "temp_c")?,
            sys: int(&m, "sys")?,
            dia: int(&m, "dia")?,
        }),
        Stream::Sleep => Body::Sleep(Sleep {
            in_bed: boolean(&m, "in_bed")?.ok_or_else(|| missing("in_bed"))?,
            hr: int(&m, "hr")?,
            rr: int(&m, "rr")?,
            movement: num(&m, "movement")?,
        }),
        Stream::Motion => Body::Motion(Motion {
            room: string(&m, "room")?.ok_or_else(|| missing("room"))?,
            motion: boolean(&m, "motion")?.ok_or_else(|| missing("motion"))?,
        }),
        Stream::Location => Body::Location(Location {
            lat: num(&m, "lat")?.ok_or_else(|| missing("lat"))?,
            lon: num(&m, "lon")?.ok_or_else(|| missing("lon"))?,
            accuracy_m: num(&m, "accuracy_m")?,
        }),
        Stream::Event => {
            let t = string(&m, "type")?.ok_or_else(|| missing("type"))?;
            let kind = EventType::parse(&t).ok_or_else(|| invalid("type", EVENT_TYPES))?;
            let action = match string(&m, "action")? {
                None => None,
                Some(a) => Some(
                    VisitAction::parse(&a).ok_or_else(|| invalid("action", "must be in or out"))?,
                ),
            };
            Body::Event(DeviceEvent {
                kind,
                confidence: num(&m, "confidence")?,
                carer: string(&m, "carer")?,
                action,
            })
        }
        Stream::Status => Body::Status(Status {
            online: boolean(&m, "online")?,
            battery_pct: int(&m, "battery_pct")?,
            rssi: match m.get("rssi") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| invalid("rssi", "must be an integer (dBm)"))?,
                ),
            },
            fw: string(&m, "fw")?,
        }),
    };
    Ok(Reading {
        device_id: device_id.to_string(),
        seq,
        ts_ms,
        body,
    })
}

fn missing(field: &str) -> Refusal {
    Refusal::MissingField(field.to_string())
}

fn invalid(field: &str, detail: &str) -> Refusal {
    Refusal::InvalidField {
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

fn ts(m: &Map<String, Value>) -> Result<i64, Refusal> {
    match m.get("ts") {
        None | Some(Value::Null) => Err(missing("ts")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid("ts", "must be integer epoch milliseconds")),
        Some(Value::String(s)) => {
            validate::text("ts", s)?;
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| invalid("ts", &format!("not an RFC 3339 time: {e}")))
        }
        Some(_) => Err(invalid(
            "ts",
            "must be integer epoch milliseconds or an RFC 3339 string",
        )),
    }
}

fn num(m: &Map<String, Value>, field: &str) -> Result<Option<f64>, Refusal> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(invalid(field, "must be a number")),
    }
}

/// A whole-number field. The range is checked here, before narrowing to
/// `u32`, so a negative or huge value is reported as out of range.
fn int(m: &Map<String, Value>, field: &str) -> Result<Option<u32>, Refusal> {
    let Some(v) = num(m, field)? else {
        return Ok(None);
    };
    if v.fract() != 0.0 {
        return Err(invalid(field, "must be a whole number"));
    }
    validate::check(field, v)?;
    Ok(Some(v as u32))
}

fn boolean(m: &Map<String, Value>, field: &str) -> Result<Option<bool>, Refusal> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

fn string(m: &Map<String, Value>, field: &str) -> Result<Option<String>, Refusal> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            validate::text(field, s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(invalid(field, "must be a string")),
    }
}
