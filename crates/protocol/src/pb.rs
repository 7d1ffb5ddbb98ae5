//! Protobuf payloads (`eldercare.v1.DeviceMessage`).
use crate::{Refusal, validate};
use eldercare_model::{
    Body, DeviceEvent, EventType, Location, Motion, Reading, Sleep, Status, Stream, Vitals,
};
use eldercare_proto::v1::{DeviceMessage, device_message};
use prost::Message;

/// `now_ms` stamps an undated `status` message, as for JSON.
pub(crate) fn decode(
    device_id: &str,
    stream: Stream,
    payload: &[u8],
    now_ms: i64,
) -> Result<Reading, Refusal> {
    let msg =
        DeviceMessage::decode(payload).map_err(|e| Refusal::MalformedProtobuf(e.to_string()))?;
    let ts_ms = match msg.ts_ms {
        0 if stream == Stream::Status => now_ms,
        0 => return Err(Refusal::MissingField("ts_ms".into())),
        t => t,
    };
    let body = msg
        .body
        .ok_or_else(|| Refusal::MissingField(format!("body ({stream})")))?;
    let body = match body {
        device_message::Body::Vitals(v) => Body::Vitals(Vitals {
            hr: v.hr,
            spo2: v.spo2,
            rr: v.rr,
            temp_c: v.temp_c,
            sys: v.sys,
            dia: v.dia,
        }),
        device_message::Body::Sleep(s) => Body::Sleep(Sleep {
            in_bed: s.in_bed,
            hr: s.hr,
            rr: s.rr,
            movement: s.movement,
        }),
        device_message::Body::Motion(m) => Body::Motion(Motion {
            room: m.room,
            motion: m.motion,
        }),
        device_message::Body::Location(l) => Body::Location(Location {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
        }),
        device_message::Body::Event(e) => {
            validate::text("type", &e.r#type)?;
            Body::Event(DeviceEvent {
                kind: EventType::parse(&e.r#type).ok_or_else(|| Refusal::InvalidField {
                    field: "type".into(),
                    detail: crate::json::EVENT_TYPES.into(),
                })?,
                confidence: e.confidence,
                carer: e.carer,
                action: match e.action.as_deref() {
                    None => None,
                    Some(a) => Some(eldercare_model::VisitAction::parse(a).ok_or_else(|| {
                        Refusal::InvalidField {
                            field: "action".into(),
                            detail: "must be in or out".into(),
                        }
                    })?),
                },
            })
        }
        device_message::Body::Status(s) => Body::Status(Status {
            online: s.online,
            battery_pct: s.battery_pct,
            rssi: s.rssi,
            fw: s.fw,
        }),
    };
    if body.stream() != stream {
        return Err(Refusal::InvalidField {
            field: "body".into(),
            detail: format!("carries {} but the topic is {stream}", body.stream()),
        });
    }
    Ok(Reading {
        device_id: device_id.to_string(),
        seq: msg.seq,
        ts_ms,
        body,
    })
}
