//! The HTTP shell: routes, shared state, health endpoints and the Huawei-shaped fallbacks.
//!
//! [`router`] builds the whole API from an [`AppState`], so handlers can be tested with
//! `tower::ServiceExt::oneshot` without a socket, and [`crate::app::App`] serves the same router.

pub mod error;
pub mod orders;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::projection::Projection;
use error::{ApiError, Lang};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The projection to read.
    pub projection: Arc<Projection>,
    /// The configured tokens.
    pub auth: Arc<Authenticator>,
    /// Largest lag (stream last sequence - applied sequence) at which `/readyz` says ready.
    pub ready_max_lag: u64,
}

/// The API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/job/script/orders",
            get(orders::list).fallback(method_not_allowed),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response_in(Lang::En)
        }))
}

async fn not_found(headers: HeaderMap) -> Response {
    ApiError::NotFound.into_response_in(Lang::from_headers(&headers))
}

async fn method_not_allowed(headers: HeaderMap) -> Response {
    ApiError::MethodNotAllowed.into_response_in(Lang::from_headers(&headers))
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store is open, the broker connected and the projection caught up.
async fn readyz(State(state): State<AppState>) -> Response {
    let p = &state.projection;
    let applied = p.applied_seq();
    let last = p.stream_last_seq();
    let lag = last.saturating_sub(applied);
    let connected = p.broker_connected();
    let ready = connected && lag <= state.ready_max_lag;
    let body = json!({
        "ready": ready,
        "store": "open",
        "nats_connected": connected,
        "applied_seq": applied,
        "stream_last_seq": last,
        "lag": lag,
        "tickets": p.ticket_count(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
