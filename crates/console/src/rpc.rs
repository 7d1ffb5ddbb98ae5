//! Unary calls as JSON: `POST /api/<package.Service>/<Method>` with the
//! request message in the protobuf JSON mapping; the answer is the
//! response message, or `{"code", "message"}` with the HTTP status the
//! Connect protocol gives the gRPC code. The call goes to the very
//! service object gRPC uses, with the caller's token as its bearer
//! metadata.
use crate::session::{check_origin, token};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eldercare_api::Services;
use eldercare_proto::v1::admin_service_server::AdminService;
use eldercare_proto::v1::alert_service_server::AlertService;
use eldercare_proto::v1::registry_service_server::RegistryService;
use eldercare_proto::v1::telemetry_service_server::TelemetryService;
use eldercare_proto::v1::visit_service_server::VisitService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use tonic::{Code, Status};

/// Connect's name and HTTP status for a gRPC code.
fn code_name(code: Code) -> (&'static str, StatusCode) {
    match code {
        Code::Ok => ("ok", StatusCode::OK),
        Code::Cancelled => (
            "canceled",
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ),
        Code::Unknown => ("unknown", StatusCode::INTERNAL_SERVER_ERROR),
        Code::InvalidArgument => ("invalid_argument", StatusCode::BAD_REQUEST),
        Code::DeadlineExceeded => ("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT),
        Code::NotFound => ("not_found", StatusCode::NOT_FOUND),
        Code::AlreadyExists => ("already_exists", StatusCode::CONFLICT),
        Code::PermissionDenied => ("permission_denied", StatusCode::FORBIDDEN),
        Code::ResourceExhausted => ("resource_exhausted", StatusCode::TOO_MANY_REQUESTS),
        Code::FailedPrecondition => ("failed_precondition", StatusCode::BAD_REQUEST),
        Code::Aborted => ("aborted", StatusCode::CONFLICT),
        Code::OutOfRange => ("out_of_range", StatusCode::BAD_REQUEST),
        Code::Unimplemented => ("unimplemented", StatusCode::NOT_IMPLEMENTED),
        Code::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        Code::DataLoss => ("data_loss", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED),
    }
}

/// Personal data: never kept by a cache.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A request refused before it reaches a service.
#[derive(Debug)]
pub(crate) struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    no_store(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": code, "message": message}).to_string(),
        )
            .into_response(),
    )
}

/// Connect's name of the status's code, and its HTTP status.
pub(crate) fn code_of(s: &Status) -> (&'static str, StatusCode) {
    code_name(s.code())
}

pub(crate) fn status_response(s: &Status) -> Response {
    let (name, http) = code_of(s);
    error(http, name, s.message())
}

pub(crate) fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => no_store(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("encoding the answer: {e}"),
        ),
    }
}

/// A request as the service takes it: the message from JSON (an empty
/// body is the empty message), the caller's token as bearer metadata.
pub(crate) fn request<Req: DeserializeOwned>(
    body: &[u8],
    token: Option<&str>,
) -> Result<tonic::Request<Req>, Refused> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let msg: Req = serde_json::from_slice(body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("the request message: {e}"),
        )
    })?;
    Ok(authorized(msg, token))
}

/// `msg` as a call of the caller with `token`.
pub(crate) fn authorized<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

async fn unary<Req, Resp, F, Fut>(body: &[u8], token: Option<&str>, call: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match request(body, token) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match call(req).await {
        Ok(r) => json(r.get_ref()),
        Err(s) => status_response(&s),
    }
}

/// `POST /api/{service}/{method}`.
pub(crate) async fn call(
    State(s): State<Services>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = check_origin(&headers) {
        return r.into_response();
    }
    let token = token(&headers);
    let t = token.as_deref();
    // One line per method: the JSON API has exactly the unary calls of
    // the gRPC services (Subscribe, a stream, is in `events`).
    macro_rules! to {
        ($svc:ident, $method:ident) => {{
            let svc = s.$svc.clone();
            unary(&body, t, move |r| async move { svc.$method(r).await }).await
        }};
    }
    match (service.as_str(), method.as_str()) {
        ("eldercare.v1.AlertService", m) => match m {
            "ListAlerts" => to!(alerts, list_alerts),
            "GetAlert" => to!(alerts, get_alert),
            "Acknowledge" => to!(alerts, acknowledge),
            "Dispatch" => to!(alerts, dispatch),
            "Escalate" => to!(alerts, escalate),
            "Resolve" => to!(alerts, resolve),
            "AddNote" => to!(alerts, add_note),
            "Stats" => to!(alerts, stats),
            "CreateSilence" => to!(alerts, create_silence),
            "ListSilences" => to!(alerts, list_silences),
            "EndSilence" => to!(alerts, end_silence),
            _ => unknown(&service, &method),
        },
        ("eldercare.v1.RegistryService", m) => match m {
            "CreateElder" => to!(registry, create_elder),
            "UpdateElder" => to!(registry, update_elder),
            "GetElder" => to!(registry, get_elder),
            "ListElders" => to!(registry, list_elders),
            "DeleteElder" => to!(registry, delete_elder),
            "CreateDevice" => to!(registry, create_device),
            "UpdateDevice" => to!(registry, update_device),
            "GetDevice" => to!(registry, get_device),
            "ListDevices" => to!(registry, list_devices),
            "DeleteDevice" => to!(registry, delete_device),
            "RotateDeviceSecret" => to!(registry, rotate_device_secret),
            "Import" => to!(registry, import),
            "UpsertProvider" => to!(registry, upsert_provider),
            "ListProviders" => to!(registry, list_providers),
            "DeleteProvider" => to!(registry, delete_provider),
            "UpsertCarer" => to!(registry, upsert_carer),
            "ListCarers" => to!(registry, list_carers),
            "DeleteCarer" => to!(registry, delete_carer),
            "UpsertVisitPlan" => to!(registry, upsert_visit_plan),
            "ListVisitPlans" => to!(registry, list_visit_plans),
            "DeleteVisitPlan" => to!(registry, delete_visit_plan),
            _ => unknown(&service, &method),
        },
        ("eldercare.v1.TelemetryService", m) => match m {
            "ListReadings" => to!(telemetry, list_readings),
            "LatestReadings" => to!(telemetry, latest_readings),
            "VitalsHourly" => to!(telemetry, vitals_hourly),
            _ => unknown(&service, &method),
        },
        ("eldercare.v1.VisitService", m) => match m {
            "ProviderReport" => to!(visits, provider_report),
            "ElderVisits" => to!(visits, elder_visits),
            "CheckIn" => to!(visits, check_in),
            _ => unknown(&service, &method),
        },
        ("eldercare.v1.AdminService", "ReloadRules") => to!(admin, reload_rules),
        _ => unknown(&service, &method),
    }
}

fn unknown(service: &str, method: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unimplemented",
        &format!("no method {service}/{method}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_proto::v1 as pb;

    #[test]
    fn requests_are_read_in_the_protobuf_json_mapping_and_carry_the_token() {
        let req: tonic::Request<pb::DispatchRequest> = request(
            br#"{"alertId": "a-1", "note": "on my way", "responder": {"type": "FAMILY_DOCTOR", "name": "Dr Li", "phone": "138"}}"#,
            Some("ect_x"),
        )
        .map_err(|r| r.status)
        .unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer ect_x");
        let m = req.into_inner();
        assert_eq!(m.alert_id, "a-1");
        assert_eq!(m.responder.unwrap().name, "Dr Li");
        let empty: tonic::Request<pb::ListSilencesRequest> =
            request(b"", None).map_err(|r| r.status).unwrap();
        assert!(empty.metadata().get("authorization").is_none());
        let bad = request::<pb::GetAlertRequest>(b"{\"id\": 5}", None).unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn grpc_codes_map_to_connect_names_and_http_statuses() {
        let r = status_response(&Status::permission_denied("viewer"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = status_response(&Status::failed_precondition("already acknowledged"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code_name(Code::Unauthenticated).0, "unauthenticated");
    }
}
