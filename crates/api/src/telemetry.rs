//! `eldercare.v1.TelemetryService`: stored readings of an elder or a
//! device, so an operator sees the context of an alert.
use crate::auth::{Action, Auth};
use crate::registry::page_size;
use eldercare_model::{EpochMs, Stream};
use eldercare_proto::v1 as pb;
use eldercare_store::{
    HOUR_MS, ReadingQuery, ReadingRecord, ReadingSubject, Store, VitalStat, VitalsHour,
};
use pb::list_readings_request::Subject;
use pb::telemetry_service_server::TelemetryService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Telemetry {
    store: Arc<dyn Store>,
    auth: Auth,
}

impl Telemetry {
    pub fn new(store: Arc<dyn Store>, auth: Auth) -> Telemetry {
        Telemetry { store, auth }
    }

    /// NOT_FOUND unless the elder is registered.
    async fn elder_exists(&self, elder_id: &str) -> Result<(), Status> {
        if elder_id.is_empty() {
            return Err(Status::invalid_argument("missing required `elder_id`"));
        }
        match self.store.get_elder(elder_id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Status::not_found(format!("no elder with id `{elder_id}`"))),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

fn to_pb_ts(ms: EpochMs) -> Option<eldercare_proto::wkt::Timestamp> {
    Some(eldercare_proto::wkt::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// A request's timestamp as epoch milliseconds; INVALID_ARGUMENT, naming
/// the field, when it is not a valid time.
fn from_pb_ts(field: &str, t: &eldercare_proto::wkt::Timestamp) -> Result<EpochMs, Status> {
    // The protobuf Timestamp range: 0001-01-01 to 9999-12-31.
    const MIN_S: i64 = -62_135_596_800;
    const MAX_S: i64 = 253_402_300_799;
    if !(0..1_000_000_000).contains(&t.nanos) || !(MIN_S..=MAX_S).contains(&t.seconds) {
        return Err(Status::invalid_argument(format!(
            "`{field}` is not a valid timestamp (seconds {}, nanos {})",
            t.seconds, t.nanos
        )));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn reading_to_pb(r: &ReadingRecord) -> pb::Reading {
    pb::Reading {
        device_id: r.device_id.clone(),
        stream: r.stream.as_str().to_string(),
        ts: to_pb_ts(r.ts_ms),
        json: r.json.clone(),
    }
}

/// Longest range VitalsHourly answers in one response: 9,600 hours of
/// ~100 bytes each stay well inside gRPC's default 4 MiB message.
const MAX_HOURLY_DAYS: i64 = 400;

fn stat_to_pb(s: Option<VitalStat>) -> Option<pb::VitalStat> {
    s.map(|s| pb::VitalStat {
        count: u32::try_from(s.count).unwrap_or(u32::MAX),
        avg: s.avg,
        min: s.min,
        max: s.max,
    })
}

fn hour_to_pb(h: &VitalsHour) -> pb::VitalsHour {
    pb::VitalsHour {
        hour: to_pb_ts(h.hour),
        readings: u32::try_from(h.readings).unwrap_or(u32::MAX),
        hr: stat_to_pb(h.hr),
        spo2: stat_to_pb(h.spo2),
        rr: stat_to_pb(h.rr),
        temp_c: stat_to_pb(h.temp_c),
        sys: stat_to_pb(h.sys),
        dia: stat_to_pb(h.dia),
    }
}

/// `[from, to)` widened to whole hours; INVALID_ARGUMENT when missing,
/// empty or longer than [`MAX_HOURLY_DAYS`].
fn hourly_range(
    from: Option<&eldercare_proto::wkt::Timestamp>,
    to: Option<&eldercare_proto::wkt::Timestamp>,
) -> Result<(EpochMs, EpochMs), Status> {
    let from = from_pb_ts(
        "from",
        from.ok_or_else(|| Status::invalid_argument("missing required `from`"))?,
    )?;
    let to = from_pb_ts(
        "to",
        to.ok_or_else(|| Status::invalid_argument("missing required `to`"))?,
    )?;
    if from >= to {
        return Err(Status::invalid_argument(format!(
            "empty range: `from` ({from} ms) must be before `to` ({to} ms)"
        )));
    }
    let (from, to) = (
        from.div_euclid(HOUR_MS) * HOUR_MS,
        (to + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS,
    );
    if to - from > MAX_HOURLY_DAYS * 24 * HOUR_MS {
        return Err(Status::invalid_argument(format!(
            "range of {} hours is longer than {MAX_HOURLY_DAYS} days; ask for it in parts",
            (to - from) / HOUR_MS
        )));
    }
    Ok((from, to))
}

/// Page tokens carry the order they were made for, so a token is never
/// read against the other order (which would skip or repeat readings).
fn encode_token(newest_first: bool, r: &ReadingRecord) -> String {
    let dir = if newest_first { 'n' } else { 'o' };
    format!("{dir}:{}:{}", r.ts_ms, r.id)
}

fn decode_token(token: &str, newest_first: bool) -> Result<Option<(EpochMs, i64)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || Status::invalid_argument("malformed page_token");
    let mut parts = token.splitn(3, ':');
    let dir = parts.next().ok_or_else(malformed)?;
    let ts = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(malformed)?;
    let id = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(malformed)?;
    match (dir, newest_first) {
        ("n", true) | ("o", false) => Ok(Some((ts, id))),
        ("n", false) | ("o", true) => Err(Status::invalid_argument(
            "page_token was made for the other order; keep `order` the same across pages",
        )),
        _ => Err(malformed()),
    }
}

#[tonic::async_trait]
impl TelemetryService for Telemetry {
    async fn list_readings(
        &self,
        req: Request<pb::ListReadingsRequest>,
    ) -> Result<Response<pb::ListReadingsResponse>, Status> {
        self.auth.check(&req, Action::ReadTelemetry)?;
        let r = req.into_inner();
        let limit = page_size(r.page_size)?;
        let from = r.from.as_ref().map(|t| from_pb_ts("from", t)).transpose()?;
        let to = r.to.as_ref().map(|t| from_pb_ts("to", t)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(Status::invalid_argument(format!(
                "empty range: `from` ({f} ms) must be before `to` ({t} ms)"
            )));
        }
        let streams = r
            .streams
            .iter()
            .map(|s| {
                Stream::parse(s).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown stream `{s}` (expected {})",
                        Stream::ALL.map(Stream::as_str).join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let newest_first = match pb::ReadingOrder::try_from(r.order) {
            Ok(pb::ReadingOrder::NewestFirst) => true,
            Ok(pb::ReadingOrder::OldestFirst) => false,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown order {}",
                    r.order
                )));
            }
        };
        let after = decode_token(&r.page_token, newest_first)?;
        let subject = match r.subject {
            Some(Subject::ElderId(id)) => {
                self.elder_exists(&id).await?;
                ReadingSubject::Elder(id)
            }
            Some(Subject::DeviceId(id)) => {
                if id.is_empty() {
                    return Err(Status::invalid_argument("missing required `device_id`"));
                }
                match self.store.get_device(&id).await {
                    Ok(Some(_)) => ReadingSubject::Device(id),
                    Ok(None) => {
                        return Err(Status::not_found(format!("no device with id `{id}`")));
                    }
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                }
            }
            None => {
                return Err(Status::invalid_argument(
                    "missing subject: set `elder_id` or `device_id`",
                ));
            }
        };
        // One more than the page, to know whether another page follows.
        let mut rows = self
            .store
            .query_readings(&ReadingQuery {
                subject,
                from,
                to,
                streams,
                newest_first,
                after,
                limit: limit + 1,
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(newest_first, last),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListReadingsResponse {
            readings: rows.iter().map(reading_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn latest_readings(
        &self,
        req: Request<pb::LatestReadingsRequest>,
    ) -> Result<Response<pb::LatestReadingsResponse>, Status> {
        self.auth.check(&req, Action::ReadTelemetry)?;
        let elder_id = req.into_inner().elder_id;
        self.elder_exists(&elder_id).await?;
        let rows = self
            .store
            .latest_readings(&elder_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::LatestReadingsResponse {
            readings: rows.iter().map(reading_to_pb).collect(),
        }))
    }

    async fn vitals_hourly(
        &self,
        req: Request<pb::VitalsHourlyRequest>,
    ) -> Result<Response<pb::VitalsHourlyResponse>, Status> {
        self.auth.check(&req, Action::ReadTelemetry)?;
        let r = req.into_inner();
        let (from, to) = hourly_range(r.from.as_ref(), r.to.as_ref())?;
        self.elder_exists(&r.elder_id).await?;
        let hours = self
            .store
            .vitals_hourly(&r.elder_id, from, to)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::VitalsHourlyResponse {
            hours: hours.iter().map(hour_to_pb).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_page_tokens_round_trip_and_bad_ones_are_named() {
        for ms in [0, 1, 999, 1_763_884_800_123, -1, -1001] {
            assert_eq!(from_pb_ts("from", &to_pb_ts(ms).unwrap()).unwrap(), ms);
        }
        let bad = eldercare_proto::wkt::Timestamp {
            seconds: 0,
            nanos: -5,
        };
        let e = from_pb_ts("to", &bad).unwrap_err();
        assert!(e.message().contains("`to`"), "{}", e.message());

        let r = ReadingRecord {
            id: 7,
            elder_id: "E1".into(),
            device_id: "d".into(),
            stream: Stream::Vitals,
            ts_ms: 1234,
            seq: None,
            json: "{}".into(),
        };
        let t = encode_token(true, &r);
        assert_eq!(decode_token(&t, true).unwrap(), Some((1234, 7)));
        assert!(decode_token(&t, false).is_err(), "other order");
        assert!(decode_token("n:x:1", true).is_err());
        assert_eq!(decode_token("", false).unwrap(), None);
    }

    #[test]
    fn hourly_ranges_widen_to_whole_hours_and_are_bounded() {
        let ts = |ms: EpochMs| to_pb_ts(ms).unwrap();
        let h = HOUR_MS;
        assert_eq!(
            hourly_range(Some(&ts(h + 1)), Some(&ts(3 * h - 1))).unwrap(),
            (h, 3 * h)
        );
        assert_eq!(
            hourly_range(Some(&ts(h)), Some(&ts(2 * h))).unwrap(),
            (h, 2 * h)
        );
        let day = 24 * h;
        assert!(hourly_range(Some(&ts(0)), Some(&ts(400 * day))).is_ok());
        let e = hourly_range(Some(&ts(0)), Some(&ts(400 * day + 1))).unwrap_err();
        assert!(e.message().contains("400 days"), "{}", e.message());
        let e = hourly_range(Some(&ts(h)), Some(&ts(h))).unwrap_err();
        assert!(e.message().contains("empty range"), "{}", e.message());
        let e = hourly_range(None, Some(&ts(h))).unwrap_err();
        assert!(e.message().contains("`from`"), "{}", e.message());
    }
}
