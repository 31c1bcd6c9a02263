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
    /// Oldest the stream's last sequence may be for `/readyz` to say ready.
    pub ready_max_stale: std::time::Duration,
    /// The projects this instance holds (`ingest.projects`); `None`: all.
    pub held: Option<Arc<[ProjectId]>>,
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
        if let Some(held) = &state.held
            && !held.contains(&project)
        {
            return Err(self.fail(ApiError::ProjectNotHeld(project)));
        }
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

/// What `/readyz` decides on.
struct ReadyFacts<'a> {
    stalled: Option<&'a str>,
    connected: bool,
    last_seq_age: Option<std::time::Duration>,
    max_stale: std::time::Duration,
    at_start: Option<u64>,
    applied: u64,
    lag: u64,
    max_lag: u64,
    view_kept: bool,
}

/// Why the daemon is not ready, if it is not: the first reason, in the order an operator would
/// look. Ready means a load balancer may send it queries: caught up with a fresh view of the
/// stream's end, and past the stream's end at start-up, below which lies everything it may have
/// served before a crash (a restarted replica never answers an older state than it did).
fn not_ready(f: &ReadyFacts<'_>) -> Option<String> {
    if let Some(why) = f.stalled {
        Some(why.to_owned())
    } else if !f.connected {
        Some("not connected to the broker".to_owned())
    } else if f.last_seq_age.is_none_or(|a| a > f.max_stale) {
        Some(format!(
            "the stream's last sequence is not known from the last {} ms (the broker does not \
             answer stream info)",
            f.max_stale.as_millis()
        ))
    } else if f.at_start.is_none_or(|s| f.applied < s) {
        Some(format!(
            "catching up to sequence {} (the stream's end at start-up)",
            f.at_start.unwrap_or(0)
        ))
    } else if f.lag > f.max_lag {
        Some(format!("{} events behind the stream", f.lag))
    } else if !f.view_kept {
        Some("the list view is being rebuilt".to_owned())
    } else {
        None
    }
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
    let age = state.broker.last_seq_age();
    let at_start = state.broker.last_seq_at_start();
    let reason = not_ready(&ReadyFacts {
        stalled: stalled.as_deref(),
        connected,
        last_seq_age: age,
        max_stale: state.ready_max_stale,
        at_start,
        applied,
        lag,
        max_lag: state.ready_max_lag,
        view_kept: p.view_kept(),
    });
    let ready = reason.is_none();
    let body = json!({
        "ready": ready,
        "store": if stalled.is_some() { "writes paused" } else { "open" },
        "reason": reason,
        "nats_connected": connected,
        "applied_seq": applied,
        "durable_seq": p.durable_seq(),
        "view_seq": p.view_seq(),
        "stream_last_seq": last,
        "stream_last_seq_age_ms": age.map(|a| a.as_millis() as u64),
        "stream_last_seq_at_start": at_start,
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

#[cfg(test)]
mod ready_tests {
    use super::*;
    use std::time::Duration;

    /// Ready only caught up with fresh knowledge: past the stream's end at start-up even when
    /// the lag is small, and never on a stale stream position.
    #[test]
    fn ready_needs_the_start_up_end_applied_and_a_fresh_stream_position() {
        let ready = ReadyFacts {
            stalled: None,
            connected: true,
            last_seq_age: Some(Duration::from_millis(300)),
            max_stale: Duration::from_secs(5),
            at_start: Some(900),
            applied: 900,
            lag: 0,
            max_lag: 1000,
            view_kept: true,
        };
        assert_eq!(not_ready(&ready), None);
        let behind_start = ReadyFacts {
            applied: 899,
            lag: 1,
            ..ready
        };
        assert!(
            not_ready(&behind_start)
                .unwrap()
                .contains("catching up to sequence 900")
        );
        let stale = ReadyFacts {
            last_seq_age: Some(Duration::from_secs(6)),
            ..ready
        };
        assert!(not_ready(&stale).unwrap().contains("not known"));
        let unknown = ReadyFacts {
            last_seq_age: None,
            at_start: None,
            ..ready
        };
        assert!(not_ready(&unknown).is_some());
        let far = ReadyFacts {
            at_start: Some(10),
            lag: 1001,
            ..ready
        };
        assert!(not_ready(&far).unwrap().contains("1001 events behind"));
        let paused = ReadyFacts {
            stalled: Some("writes paused: 10 MiB free"),
            ..ready
        };
        assert_eq!(not_ready(&paused).unwrap(), "writes paused: 10 MiB free");
    }
}
