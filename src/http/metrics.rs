//! `GET /metrics`: the Prometheus text format of [`crate::metrics::Metrics`], with the
//! positions, the lag (in events and in seconds) and the ticket count read at the scrape. Open
//! on a loopback listener; elsewhere (or with `http.metrics_open = false`) it wants a caller
//! granted `coc:ledger:admin` (`http.metrics_open = true` opens it anywhere).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::Localized;
use super::{AppState, Caller};
use crate::http::auth::ACTION_ADMIN;
use crate::http::openapi::{CallerHeaders, ErrorBody};

/// How long a scrape waits for the broker's answer about the lag.
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/metrics",
    params(
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "Prometheus' text format", content_type = "text/plain", body = String),
        (status = 401, description = "Closed, and no or unknown credentials", body = ErrorBody),
        (status = 403, description = "Closed, and coc:ledger:admin is not granted", body = ErrorBody)
    )
)]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, Localized> {
    if !state.metrics_open {
        caller.require(&state, ACTION_ADMIN, b"")?;
    }
    let m = &state.metrics;
    let p = state.ledger.current();
    let applied = p.applied_seq();
    let connected = state.nats_connected();
    // The stream's end and the age of its first unapplied event, asked now (not as ingest last
    // saw it): the lag must rise while ingest cannot fold.
    let asked = match connected {
        true => tokio::time::timeout(
            BROKER_TIMEOUT,
            crate::nats::oldest_unapplied(&state.admin.jetstream(), state.admin.stream(), applied),
        )
        .await
        .ok(),
        false => None,
    };
    let last = match asked {
        Some(Ok((last, oldest))) => {
            let age = oldest.map_or(0.0, |t| {
                (time::OffsetDateTime::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            });
            m.lag_seconds.set(age);
            last
        }
        Some(Err(e)) => {
            tracing::debug!(error = format!("{e:#}"), "lag in seconds not read");
            state.broker.stream_last_seq()
        }
        // No broker (or no answer in time): the lag in seconds keeps its last value.
        None => state.broker.stream_last_seq(),
    };
    m.sync(&state.broker, &p);
    m.applied_seq.set(applied as i64);
    m.durable_seq.set(p.durable_seq() as i64);
    m.stream_last_seq.set(last as i64);
    m.lag_events.set(last.saturating_sub(applied) as i64);
    m.tickets.set(p.ticket_count() as i64);
    m.nats_connected.set(i64::from(connected));
    m.view_in_step.set(i64::from(p.view_kept()));
    let rebuild = state.admin.rebuild_progress();
    m.rebuild_done.set(rebuild.done as i64);
    m.rebuild_total.set(rebuild.total as i64);
    Ok((
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        m.render(),
    )
        .into_response())
}
