//! The hotline console, served by eldercare itself on its HTTP address:
//! the page operators answer alarms from, and the JSON API it uses.
//!
//! Nothing is done twice: every call goes to the same service code as
//! gRPC ([`eldercare_api::Services`]), so the roles, the audit trail and
//! the answer-time accounting are the same.
//!
//! - `POST /api/session` signs in with an operator's token (kept in an
//!   HttpOnly, SameSite=Strict cookie); `GET` says who is signed in,
//!   `DELETE` signs out ([`session`]).
//! - `POST /api/eldercare.v1.<Service>/<Method>`: any unary call, its
//!   request and response messages in the protobuf JSON mapping, errors as
//!   `{"code", "message"}` with the HTTP status of the gRPC code, as the
//!   Connect protocol has it ([`rpc`]).
//! - `GET /api/eldercare.v1.AlertService/Subscribe`: the live feed as
//!   server-sent events, each with its `seq` as the event id, so a browser
//!   that reconnects resumes where it was ([`events`]).
//! - `GET /api/openapi.json`: the API's OpenAPI document; `/` and
//!   `/assets/*`: the console itself ([`assets`]), static files written
//!   by hand, no bundler.
#![forbid(unsafe_code)]

mod assets;
mod events;
mod rpc;
mod session;

use axum::Router;
use axum::routing::{get, post};
use eldercare_api::Services;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Largest request body: alert actions and queries are small; a registry
/// import goes through gRPC.
const MAX_BODY: usize = 1024 * 1024;

/// The console's routes over `services`.
pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/api/session",
            post(session::sign_in)
                .get(session::who)
                .delete(session::sign_out),
        )
        .route(
            "/api/eldercare.v1.AlertService/Subscribe",
            get(events::subscribe),
        )
        .route("/api/{service}/{method}", post(rpc::call))
        .route("/api/openapi.json", get(assets::openapi))
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(services)
}

/// Binds `addr`; returns the bound address and the serving future, which
/// ends after `shutdown` (open live feeds end with it).
pub async fn serve(
    addr: SocketAddr,
    services: Services,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(services);
    Ok((local, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }))
}
