//! The access log and request ids: every request gets an id (the caller's `X-Request-Id` when
//! it is a plain token, else a new one), answered as `X-Request-Id` and carried by a span, so
//! that every log line of the request names it; when the request ends, one line at info says
//! what it was (method, route, status, latency, bytes, principal), and the cause of an internal
//! error is logged once. Never a token, a signature or a secret: only the principal's name.
//! The same request is counted in the metrics, by declared route and status.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Body as _;
use tracing::Instrument;

use super::error::Cause;
use crate::metrics::Metrics;

/// Who the caller turned out to be, filled in by [`super::Caller`] once authenticated.
#[derive(Clone, Default)]
pub(super) struct Who(Arc<OnceLock<String>>);

impl Who {
    pub(super) fn set(&self, principal: &str) {
        let _ = self.0.set(principal.to_owned());
    }
}

/// The caller's request id if it is a plain token of 1 to 128 letters, digits, `-` and `_`.
fn given_id(req: &Request) -> Option<String> {
    let id = req.headers().get("x-request-id")?.to_str().ok()?;
    let plain = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| id.to_owned())
}

/// The middleware (see the module notes).
pub(super) async fn log(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = given_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let method = req.method().clone();
    // The route as declared (`/v1/job/script/orders/{execute_uuid}`), never the raw path, so
    // that a log line carries no ticket id a caller made up; unmatched paths are one value.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let who = Who::default();
    req.extensions_mut().insert(who.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span.clone()).await;
    let _enter = span.enter();
    if let Some(cause) = response.extensions_mut().remove::<Cause>() {
        tracing::error!(%method, route, error = %cause, "internal error");
    }
    let bytes = response.body().size_hint().exact();
    let elapsed = started.elapsed();
    metrics.request(&route, response.status().as_u16(), elapsed.as_secs_f64());
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        latency_us = elapsed.as_micros() as u64,
        bytes,
        principal = who.0.get().map(String::as_str),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
