//! The live feed: `GET /api/eldercare.v1.AlertService/Subscribe` as
//! server-sent events. The same subscription as gRPC's (catch-up from
//! storage, then live, by `seq`); each event carries its `seq` as the SSE
//! id, so a browser that loses the connection (or a server that
//! restarts) comes back with `Last-Event-ID` and is sent exactly what
//! it has not seen.
//!
//! Events: `ready` first (`{"afterSeq": N}`, SSE id N: the feed is open
//! and resumes after N; `?from=head` starts it at the newest event now),
//! then `alert` per alert event (the `AlertEvent` message in the
//! protobuf JSON mapping), or `error` (`{"code", "message"}`) before the
//! feed ends.
use crate::rpc::{authorized, status_response};
use crate::session::token;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eldercare_api::Services;
use eldercare_proto::v1 as pb;
use eldercare_proto::v1::alert_service_server::AlertService;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// The subscription's filters, as query parameters (`?afterSeq=12&queue=hotline`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Feed {
    after_seq: Option<u64>,
    /// `head`: from the newest event now on (a client that reads the
    /// current state next). `Last-Event-ID` still wins.
    from: Option<String>,
    language: Option<String>,
    queue: Option<String>,
    district: Option<String>,
    community: Option<String>,
}

/// Where the feed resumes: after the last event the browser saw (its
/// `Last-Event-ID`), else after the `afterSeq` asked for; `None`: neither.
fn resume_after(headers: &HeaderMap, asked: Option<u64>) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(asked)
}

fn alert_event(ev: &pb::AlertEvent) -> Event {
    let e = Event::default().id(ev.seq.to_string()).event("alert");
    match serde_json::to_string(ev) {
        Ok(data) => e.data(data),
        Err(err) => Event::default()
            .event("error")
            .data(serde_json::json!({"code": "internal", "message": err.to_string()}).to_string()),
    }
}

pub(crate) async fn subscribe(
    State(s): State<Services>,
    headers: HeaderMap,
    Query(feed): Query<Feed>,
) -> Response {
    let token = token(&headers);
    let after = match resume_after(&headers, feed.after_seq) {
        Some(seq) => seq,
        None if feed.from.as_deref() == Some("head") => {
            match s.alerts.head_seq(&authorized((), token.as_deref())).await {
                Ok(head) => head,
                Err(status) => return status_response(&status),
            }
        }
        None => 0,
    };
    let msg = pb::SubscribeRequest {
        after_seq: after,
        language: feed.language.unwrap_or_default(),
        queue: feed.queue.unwrap_or_default(),
        district: feed.district.unwrap_or_default(),
        community: feed.community.unwrap_or_default(),
        ..Default::default()
    };
    let req = authorized(msg, token.as_deref());
    let stream = match s.alerts.subscribe(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return status_response(&status),
    };
    // Its id is where the feed starts, so a browser that reconnects before
    // any alert event resumes there, not at a newer head.
    let ready = Event::default()
        .id(after.to_string())
        .event("ready")
        .retry(Duration::from_secs(1))
        .data(serde_json::json!({"afterSeq": after}).to_string());
    let events = futures::stream::once(async move { ready }).chain(stream.map(|item| match item {
        Ok(ev) => alert_event(&ev),
        Err(status) => {
            let (code, _) = crate::rpc::code_of(&status);
            Event::default()
                .event("error")
                .data(serde_json::json!({"code": code, "message": status.message()}).to_string())
        }
    }));
    let mut r = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_s_last_event_id_wins_over_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_after(&h, None), None);
        assert_eq!(resume_after(&h, Some(7)), Some(7));
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert_eq!(resume_after(&h, Some(7)), Some(42));
        assert_eq!(resume_after(&h, None), Some(42), "wins over from=head too");
        h.insert("last-event-id", HeaderValue::from_static("junk"));
        assert_eq!(resume_after(&h, Some(7)), Some(7));
    }
}
