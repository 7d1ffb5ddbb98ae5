//! The console's own files, compiled into the binary: HTML, CSS and
//! JavaScript written by hand (no bundler, no outside fonts, maps or
//! sounds), and the API's OpenAPI document.
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Scripts and styles from this server only, nothing inline, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; media-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// (name under /assets/, content type, body)
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/i18n.js"),
    ),
    (
        "util.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/util.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/charts.js"),
    ),
    (
        "record.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/record.js"),
    ),
    (
        "stats.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/stats.js"),
    ),
    (
        "visits.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/visits.js"),
    ),
];

const INDEX: &str = include_str!("../assets/index.html");
const OPENAPI: &str = include_str!("../assets/openapi.json");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small, and a new server version must be picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => page(ct, body),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

pub(crate) async fn openapi() -> Response {
    page("application/json", OPENAPI)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_the_page_loads_is_served_and_nothing_is_inline() {
        let index = super::INDEX;
        let mut named = Vec::new();
        for attr in ["src=\"/assets/", "href=\"/assets/"] {
            for (i, _) in index.match_indices(attr) {
                let rest = &index[i + attr.len()..];
                named.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        for (name, _, _) in super::FILES {
            assert!(
                named.contains(name),
                "{name} is served but index.html never loads it"
            );
        }
        for name in &named {
            assert!(
                super::FILES.iter().any(|(n, _, _)| n == name),
                "index.html loads /assets/{name}, which is not served"
            );
        }
        // The CSP forbids inline code and styles: none may creep in.
        assert!(!index.contains("<style"), "inline <style>");
        assert!(!index.contains("style=\""), "inline style attribute");
        assert!(!index.contains(" on"), "inline event handler");
        for (i, _) in index.match_indices("<script") {
            assert!(index[i..].starts_with("<script src="), "inline <script>");
        }
    }

    #[test]
    fn the_openapi_document_is_json_and_names_every_json_method() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/session",
            "/api/eldercare.v1.AlertService/Subscribe",
            "/api/eldercare.v1.AlertService/Acknowledge",
            "/api/eldercare.v1.AlertService/ListAlerts",
            "/api/eldercare.v1.VisitService/ProviderReport",
            "/api/eldercare.v1.VisitService/ElderVisits",
        ] {
            assert!(paths.contains_key(p), "{p} documented");
        }
    }
}
