//! Range checks shared by the JSON and protobuf decoders, so both
//! encodings accept exactly the same readings.
use crate::Refusal;
use eldercare_model::{Body, Reading};

/// An accepted range for a numeric field, inclusive at both ends.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub field: &'static str,
    pub min: f64,
    pub max: f64,
}

/// Every numeric range of the device protocol.
pub const RANGES: &[Range] = &[
    Range {
        field: "hr",
        min: 20.0,
        max: 250.0,
    },
    Range {
        field: "spo2",
        min: 50.0,
        max: 100.0,
    },
    Range {
        field: "rr",
        min: 0.0,
        max: 60.0,
    },
    Range {
        field: "temp_c",
        min: 30.0,
        max: 45.0,
    },
    Range {
        field: "sys",
        min: 50.0,
        max: 260.0,
    },
    Range {
        field: "dia",
        min: 30.0,
        max: 160.0,
    },
    Range {
        field: "movement",
        min: 0.0,
        max: 1.0,
    },
    Range {
        field: "lat",
        min: -90.0,
        max: 90.0,
    },
    Range {
        field: "lon",
        min: -180.0,
        max: 180.0,
    },
    Range {
        field: "accuracy_m",
        min: 0.0,
        max: 10000.0,
    },
    Range {
        field: "confidence",
        min: 0.0,
        max: 1.0,
    },
    Range {
        field: "battery_pct",
        min: 0.0,
        max: 100.0,
    },
];

pub(crate) fn range_of(field: &str) -> &'static Range {
    RANGES
        .iter()
        .find(|r| r.field == field)
        .expect("every checked field has a range")
}

/// Checks `value` against the protocol range of `field`.
pub(crate) fn check(field: &str, value: f64) -> Result<(), Refusal> {
    let r = range_of(field);
    if value.is_finite() && value >= r.min && value <= r.max {
        Ok(())
    } else {
        Err(Refusal::OutOfRange {
            field: field.to_string(),
            value: value.to_string(),
            range: format!("{}–{}", r.min, r.max),
        })
    }
}

fn opt<T: Into<f64> + Copy>(field: &str, v: Option<T>) -> Result<(), Refusal> {
    match v {
        Some(v) => check(field, v.into()),
        None => Ok(()),
    }
}

/// Refuses text holding a control character (`char::is_control`: the C0
/// set U+0000 to U+001F, DEL and the C1 set U+007F to U+009F). None has
/// a place in a room name, a firmware version or an event type, and NUL
/// cannot be stored at all.
pub(crate) fn text(field: &str, value: &str) -> Result<(), Refusal> {
    if value.chars().any(char::is_control) {
        Err(Refusal::ControlCharacter {
            field: field.to_string(),
        })
    } else {
        Ok(())
    }
}

/// A `visit` event names its carer (1 to 64 characters of the device id
/// alphabet) and whether they came in or went out; no other event does.
fn visit(e: &eldercare_model::DeviceEvent) -> Result<(), Refusal> {
    use eldercare_model::EventType;
    if e.kind != EventType::Visit {
        return Ok(());
    }
    let carer = e
        .carer
        .as_deref()
        .ok_or_else(|| Refusal::MissingField("carer".into()))?;
    text("carer", carer)?;
    let n = carer.chars().count();
    if n == 0
        || n > 64
        || !carer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Refusal::InvalidField {
            field: "carer".into(),
            detail: "must be 1 to 64 characters of A-Z a-z 0-9 _ -".into(),
        });
    }
    if e.action.is_none() {
        return Err(Refusal::MissingField("action".into()));
    }
    Ok(())
}

/// Checks every field of a decoded reading, whichever encoding it came in.
pub(crate) fn reading(r: &Reading) -> Result<(), Refusal> {
    match &r.body {
        Body::Vitals(v) => {
            if v.hr.is_none()
                && v.spo2.is_none()
                && v.rr.is_none()
                && v.temp_c.is_none()
                && v.sys.is_none()
                && v.dia.is_none()
            {
                return Err(Refusal::MissingField(
                    "vitals needs at least one of hr, spo2, rr, temp_c, sys, dia".into(),
                ));
            }
            opt("hr", v.hr)?;
            opt("spo2", v.spo2)?;
            opt("rr", v.rr)?;
            opt("temp_c", v.temp_c)?;
            opt("sys", v.sys)?;
            opt("dia", v.dia)?;
            if let (Some(s), Some(d)) = (v.sys, v.dia)
                && s <= d
            {
                return Err(Refusal::OutOfRange {
                    field: "sys".into(),
                    value: s.to_string(),
                    range: format!("above dia ({d})"),
                });
            }
        }
        Body::Sleep(s) => {
            opt("hr", s.hr)?;
            opt("rr", s.rr)?;
            opt("movement", s.movement)?;
        }
        Body::Motion(m) => {
            text("room", &m.room)?;
            let n = m.room.chars().count();
            if n == 0 || n > 32 {
                return Err(Refusal::InvalidField {
                    field: "room".into(),
                    detail: format!("must be 1 to 32 characters, got {n}"),
                });
            }
        }
        Body::Location(l) => {
            check("lat", l.lat)?;
            check("lon", l.lon)?;
            opt("accuracy_m", l.accuracy_m)?;
        }
        Body::Event(e) => {
            opt("confidence", e.confidence)?;
            visit(e)?;
        }
        Body::Status(s) => {
            opt("battery_pct", s.battery_pct)?;
            if let Some(fw) = &s.fw {
                text("fw", fw)?;
            }
            if let Some(fw) = &s.fw
                && fw.chars().count() > 64
            {
                return Err(Refusal::InvalidField {
                    field: "fw".into(),
                    detail: "must be at most 64 characters".into(),
                });
            }
        }
    }
    Ok(())
}
