//! The HTTP shell: routes, shared state, health endpoints and the Huawei-shaped fallbacks.
//!
//! [`router`] builds the whole API from an [`AppState`], so handlers can be tested with
//! `tower::ServiceExt::oneshot` without a socket, and [`crate::app::App`] serves the same router.

mod access;
pub mod auth;
mod console;
pub(crate) mod error;
pub(crate) mod jobs;
pub(crate) mod ledger;
mod metrics;
mod openapi;
pub(crate) mod orders;
pub mod sign;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use crate::core::domain::ProjectId;
use crate::http::auth::{Authenticator, Principal};
use crate::http::sign::RequestParts;
use crate::metrics::Metrics;
use crate::nats::BrokerStatus;
use crate::store::Ledger;
use error::{ApiError, Lang, Localized};
pub use ledger::Admin;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The live projection, and its blue/green switch.
    pub ledger: Arc<Ledger>,
    /// The configured tokens.
    pub auth: Arc<Authenticator>,
    /// Largest lag (stream last sequence - applied sequence) at which `/readyz` says ready.
    pub ready_max_lag: u64,
    /// Broker access and rebuild state for the admin endpoints.
    pub admin: Arc<Admin>,
    /// What ingest last saw of the broker.
    pub broker: Arc<BrokerStatus>,
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    /// Whether `/metrics` answers without credentials.
    pub metrics_open: bool,
}

impl AppState {
    /// Whether the broker is reachable now: the client's connection is up and the ingest loop
    /// has its consumer.
    pub fn nats_connected(&self) -> bool {
        self.broker.connected() && self.admin.broker_connected()
    }
}

/// What a handler needs of the request line and headers: to authenticate (a signature covers
/// the method, path, query and headers) and to answer in the caller's language.
pub struct Caller {
    method: Method,
    uri: Uri,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The language of error messages.
    pub lang: Lang,
    /// Where the access log learns who the caller turned out to be.
    who: Option<access::Who>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            lang: Lang::from_headers(&parts.headers),
            headers: parts.headers.clone(),
            who: parts.extensions.get::<access::Who>().cloned(),
        })
    }
}

impl Caller {
    /// Authenticates the request (signature or token); `body` is what a signature covers.
    pub fn principal<'a>(
        &self,
        state: &'a AppState,
        body: &[u8],
    ) -> Result<&'a Principal, Localized> {
        let parts = RequestParts {
            method: self.method.as_str(),
            path: self.uri.path(),
            query: self.uri.query(),
            headers: &self.headers,
            body,
        };
        let principal = state
            .auth
            .authenticate(&parts, time::OffsetDateTime::now_utc())
            .map_err(|e| self.fail(e.into()))?;
        if let Some(who) = &self.who {
            who.set(&principal.name);
        }
        Ok(principal)
    }

    /// Authenticates, then authorises `action` on the project the request picks.
    pub fn authorize<'a>(
        &self,
        state: &'a AppState,
        action: &'static str,
    ) -> Result<(&'a Principal, ProjectId), Localized> {
        self.authorize_body(state, action, b"")
    }

    /// [`Caller::authorize`] for a request with a body, which a signature covers.
    pub fn authorize_body<'a>(
        &self,
        state: &'a AppState,
        action: &'static str,
        body: &[u8],
    ) -> Result<(&'a Principal, ProjectId), Localized> {
        let principal = self.principal(state, body)?;
        let project = principal
            .authorize(
                self.headers.get("x-project-id").map(|v| v.as_bytes()),
                action,
            )
            .map_err(|e| self.fail(e.into()))?;
        Ok((principal, project))
    }

    /// Authenticates, then requires an action that is not about one project.
    pub fn require(
        &self,
        state: &AppState,
        action: &'static str,
        body: &[u8],
    ) -> Result<(), Localized> {
        self.principal(state, body)?
            .require(action)
            .map_err(|e| self.fail(e.into()))
    }

    /// The raw query string.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// An error in the caller's language.
    pub fn fail(&self, e: ApiError) -> Localized {
        Localized(e, self.lang)
    }
}

/// The API.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route(
            "/v1/job/script/orders",
            get(orders::list).fallback(method_not_allowed),
        )
        .route(
            "/v1/job/script/orders/{execute_uuid}",
            get(jobs::info).fallback(method_not_allowed),
        )
        .route(
            "/v1/job/script/orders/{execute_uuid}/batches",
            get(jobs::batches).fallback(method_not_allowed),
        )
        .route(
            "/v1/job/script/orders/{execute_uuid}/batches/{batch_index}",
            get(jobs::batch).fallback(method_not_allowed),
        )
        .route(
            "/v1/job/script/orders/{execute_uuid}/statistics",
            get(jobs::statistics).fallback(method_not_allowed),
        )
        .route(
            "/v1/job/script/orders/{execute_uuid}/operation",
            put(jobs::operate).fallback(method_not_allowed),
        )
        .route(
            "/v1/ledger/dead-letters",
            get(ledger::dead_letters).fallback(method_not_allowed),
        )
        .route(
            "/v1/ledger/redrive",
            post(ledger::redrive).fallback(method_not_allowed),
        )
        .route(
            "/v1/ledger/replay",
            post(ledger::start_replay)
                .get(ledger::replay_progress)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/ledger/records",
            get(ledger::records).fallback(method_not_allowed),
        )
        .route(
            "/metrics",
            get(metrics::metrics).fallback(method_not_allowed),
        )
        .route(
            "/openapi.json",
            get(openapi::openapi_json).fallback(method_not_allowed),
        )
        .route("/", get(console::to_console))
        .route("/console", get(console::to_console))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                ApiError::internal(format!("handler panicked: {what}")).into_response_in(Lang::En)
            },
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, access::log))
}

async fn not_found(headers: HeaderMap) -> Response {
    ApiError::NotFound.into_response_in(Lang::from_headers(&headers))
}

async fn method_not_allowed(headers: HeaderMap) -> Response {
    ApiError::MethodNotAllowed.into_response_in(Lang::from_headers(&headers))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", security(()), responses(
    (status = 200, description = "The process answers", body = openapi::HealthBody)
))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store is open and writing (not paused by a nearly full disk: `reason` says
/// so), the broker connected (the client's connection is up and the ingest loop has its
/// consumer), the projection caught up and its list view in step (`view_seq`: the position the
/// list answers from, behind `applied_seq` while a backlog is folded).
#[utoipa::path(get, path = "/readyz", security(()), responses(
    (status = 200, description = "Ready", body = openapi::ReadyBody),
    (status = 503, description = "Not ready: the body says why", body = openapi::ReadyBody)
))]
async fn readyz(State(state): State<AppState>) -> Response {
    let l = &state.ledger;
    let p = l.current();
    let applied = p.applied_seq();
    let last = state.broker.stream_last_seq();
    let lag = last.saturating_sub(applied);
    let connected = state.nats_connected();
    let stalled = p.write_stalled();
    let ready = connected && lag <= state.ready_max_lag && p.view_kept() && stalled.is_none();
    let body = json!({
        "ready": ready,
        "store": if stalled.is_some() { "writes paused" } else { "open" },
        "reason": stalled,
        "nats_connected": connected,
        "applied_seq": applied,
        "durable_seq": p.durable_seq(),
        "view_seq": p.view_seq(),
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
