//! Signing in: an operator gives the console their token once; it is
//! kept in a cookie the page's scripts cannot read (HttpOnly), that no
//! other site's page can make the browser send (SameSite=Strict), and
//! every call then carries it to the services as its bearer token. The
//! operator is who the token says; the services check what they may do.
use crate::rpc::{Refused, error, json};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eldercare_api::Services;
use serde::Deserialize;
use serde_json::json;

pub(crate) const COOKIE: &str = "eldercare_session";
/// A shift and a half; signing in again after it is the operator's cue
/// that their session is theirs alone.
const MAX_AGE_S: u32 = 12 * 3600;

/// The caller's token: `Authorization: Bearer` (a script) or the
/// session cookie (the console).
pub(crate) fn token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(t) = bearer {
        return Some(t.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A call that changes something must come from the console's own page:
/// a JSON body (a cross-site form cannot send one without a CORS
/// preflight, which this server never grants) and, where the browser
/// names it, the same origin as the server.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Refused::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            "send the request message as JSON (content-type: application/json)",
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (Some(origin), Some(host)) = (origin, host) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                "cross-origin calls are not accepted",
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    token: String,
}

fn cookie(value: &str, max_age: u32) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("eldercare_session=; Path=/; Max-Age=0"))
}

fn principal_json(p: &eldercare_api::Principal) -> serde_json::Value {
    json!({"operatorId": p.operator_id, "role": p.role.as_str()})
}

/// `POST /api/session {"token": "..."}`.
pub(crate) async fn sign_in(
    State(s): State<Services>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = check_origin(&headers) {
        return r.into_response();
    }
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected {\"token\": \"...\"}",
        );
    };
    let token = token.trim();
    // A token fit for a cookie only: what `eldercare token add` issues.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "unknown token");
    }
    match s.auth.principal(token) {
        Ok(p) => {
            let mut r = json(&principal_json(&p));
            r.headers_mut()
                .insert(header::SET_COOKIE, cookie(token, MAX_AGE_S));
            r
        }
        Err(status) => crate::rpc::status_response(&status),
    }
}

/// `GET /api/session`: who is signed in.
pub(crate) async fn who(State(s): State<Services>, headers: HeaderMap) -> Response {
    match token(&headers).map(|t| s.auth.principal(&t)) {
        Some(Ok(p)) => json(&principal_json(&p)),
        Some(Err(status)) => crate::rpc::status_response(&status),
        None => error(StatusCode::UNAUTHORIZED, "unauthenticated", "not signed in"),
    }
}

/// `DELETE /api/session`: signs out (the cookie is cleared).
pub(crate) async fn sign_out() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie("", 0))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_bearer_header_wins_over_the_cookie_and_other_cookies_are_ignored() {
        let h = headers(&[("cookie", "theme=dark; eldercare_session=ect_abc ; x=1")]);
        assert_eq!(token(&h).as_deref(), Some("ect_abc"));
        let h = headers(&[
            ("authorization", "Bearer ect_hdr"),
            ("cookie", "eldercare_session=ect_abc"),
        ]);
        assert_eq!(token(&h).as_deref(), Some("ect_hdr"));
        assert_eq!(token(&headers(&[("cookie", "eldercare_session=")])), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn a_change_needs_a_json_body_from_the_same_origin() {
        let ok = headers(&[
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(check_origin(&ok).is_ok());
        let no_origin = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(check_origin(&no_origin).is_ok(), "scripts send no Origin");
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            check_origin(&form).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let other = headers(&[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert_eq!(
            check_origin(&other).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }
}
