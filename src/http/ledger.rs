//! Audit endpoints: a ticket with its history, dead letters, redrive, rebuild, and the records
//! export that `ticket-ledger verify` compares with the stream.

use std::sync::Arc;

use async_nats::HeaderMap as NatsHeaders;
use async_nats::jetstream;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, Localized};
use super::{AppState, Caller};
use crate::config::{IngestSettings, NatsSettings};
use crate::core::batch::DeadLetter;
use crate::core::batch::REDRIVE_HEADER;
use crate::core::domain::DomainError;
use crate::core::events::format_time_ms;
use crate::core::fold::{HistoryEntry, Outcome};
use crate::http::auth::ACTION_ADMIN;
use crate::http::openapi::{
    CallerHeaders, DeadLettersBody, ErrorBody, RedriveRequest, RedrivenBody, ReplayBody,
};
use crate::ops::replay::{self, Tracker};

/// What the admin endpoints need beyond the projection.
pub struct Admin {
    client: async_nats::Client,
    nats: NatsSettings,
    ingest: IngestSettings,
    replay: Arc<Tracker>,
}

impl Admin {
    /// The daemon's NATS connection.
    pub(crate) fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Whether the NATS connection is up right now.
    pub fn broker_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A JetStream context on the daemon's connection.
    pub(crate) fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// The subject prefix events are published under.
    pub(crate) fn subject_prefix(&self) -> &str {
        &self.nats.subject_prefix
    }

    /// The event stream's name.
    pub(crate) fn stream(&self) -> &str {
        &self.nats.stream
    }

    /// The current or last rebuild's progress.
    pub(crate) fn rebuild_progress(&self) -> replay::Progress {
        self.replay.get()
    }

    /// Wraps the broker connection and settings.
    pub fn new(client: async_nats::Client, nats: NatsSettings, ingest: IngestSettings) -> Self {
        Admin {
            client,
            nats,
            ingest,
            replay: Arc::new(Tracker::default()),
        }
    }
}

/// One event in a ticket's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    seq: u64,
    id: String,
    #[serde(rename = "type")]
    ty: String,
    time: String,
    source: String,
    /// `applied`, `duplicate` or `rejected`.
    #[schema(value_type = String)]
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What an `operation_requested` asked for, and who asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<HistoryEntry> for EventView {
    fn from(h: HistoryEntry) -> Self {
        let (outcome, reason_code, reason) = match h.outcome {
            Outcome::Applied => ("applied", None, None),
            Outcome::Duplicate => ("duplicate", None, None),
            Outcome::Rejected { code, reason } => ("rejected", Some(code), Some(reason)),
        };
        EventView {
            seq: h.seq,
            id: h.id.into(),
            ty: format!("{}{}", crate::core::events::TYPE_PREFIX, h.kind),
            time: format_time_ms(h.time_ms),
            source: h.source.into(),
            outcome,
            reason_code,
            reason,
            note: h.note,
        }
    }
}

/// A dead letter as the API shows it; the payload as text when it is UTF-8, else as hex.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// Stream sequence.
    pub seq: u64,
    /// Subject.
    pub subject: String,
    /// Reason code.
    pub code: String,
    /// Reason.
    pub reason: String,
    /// Sequence of the redriven copy, once folded.
    pub redriven_by: Option<u64>,
    /// The payload, if UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in hex, if not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        let (payload, payload_hex) = match String::from_utf8(d.payload) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(hex::encode(e.into_bytes()))),
        };
        DeadLetterView {
            seq: d.seq,
            subject: d.subject,
            code: d.code,
            reason: d.reason,
            redriven_by: d.redriven_by,
            payload,
            payload_hex,
        }
    }
}

fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn number(raw: Option<&str>, name: &'static str) -> Result<Option<u64>, ApiError> {
    query_param(raw, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| DomainError::Number(name).into())
        })
        .transpose()
}

fn flag(raw: Option<&str>, name: &str) -> bool {
    query_param(raw, name).is_some_and(|v| v == "true" || v == "1")
}

/// `GET /v1/ledger/dead-letters?after=SEQ&limit=N&all=true`: refused events in stream order;
/// those already redriven only with `all=true`. `limit` 1–1000, default 100.
#[utoipa::path(get, path = "/v1/ledger/dead-letters",
    params(
        ("after" = Option<u64>, Query, description = "Only dead letters after this stream sequence"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many, default 100"),
        ("all" = Option<bool>, Query, description = "Also those already redriven"),
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "Dead letters in stream order, and pending counts by reason", body = DeadLettersBody),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "coc:ledger:admin is not granted", body = ErrorBody)
    )
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, Localized> {
    caller.require(&state, ACTION_ADMIN, b"")?;
    let fail = |e: ApiError| caller.fail(e);
    let after = number(raw.as_deref(), "after").map_err(fail)?.unwrap_or(0);
    let limit = match number(raw.as_deref(), "limit").map_err(fail)? {
        None => 100,
        Some(n @ 1..=1000) => n as usize,
        Some(_) => return Err(fail(DomainError::Limit { min: 1, max: 1000 }.into())),
    };
    let all = flag(raw.as_deref(), "all");
    let ledger = state.ledger.clone();
    let (items, by_reason) = tokio::task::spawn_blocking(move || {
        ledger.persist()?;
        let projection = ledger.current();
        let mut items = Vec::new();
        let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
        for d in projection.store().dead_letters() {
            let d = d?;
            if d.redriven_by.is_none() {
                *by_reason.entry(d.code.clone()).or_default() += 1;
            }
            if d.seq > after && (all || d.redriven_by.is_none()) && items.len() < limit {
                items.push(DeadLetterView::from(d));
            }
        }
        Ok::<_, crate::store::StoreError>((items, by_reason))
    })
    .await
    .map_err(|e| fail(ApiError::internal(e)))?
    .map_err(|e| fail(ApiError::internal(e)))?;
    Ok(Json(
        json!({ "data": { "pending_by_reason": by_reason, "dead_letters": items } }),
    ))
}

#[derive(Deserialize, Default)]
struct RedriveBody {
    #[serde(default)]
    seqs: Option<Vec<u64>>,
}

/// `POST /v1/ledger/redrive` (body `{"seqs": [..]}` optional): republishes pending dead letters,
/// in stream order, to their subjects with the `Ledger-Redrive-Of` header. The copies are new
/// events of the stream, so the projection stays a pure function of it; when a copy is folded,
/// the original is marked `redriven_by` that copy.
#[utoipa::path(post, path = "/v1/ledger/redrive",
    params(
        CallerHeaders,
    ),
    request_body(content = Option<RedriveRequest>, description = "Which dead letters; all pending when absent"),
    responses(
        (status = 200, description = "The copies published", body = RedrivenBody),
        (status = 400, description = "The body is not {\"seqs\": [..]}", body = ErrorBody),
        (status = 401, description = "No or unknown credentials, or a bad signature", body = ErrorBody),
        (status = 403, description = "coc:ledger:admin is not granted", body = ErrorBody),
        (status = 503, description = "NATS is not reachable now", body = ErrorBody)
    )
)]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Localized> {
    caller.require(&state, ACTION_ADMIN, &body)?;
    let fail = |e: ApiError| caller.fail(e);
    let body: RedriveBody = if body.is_empty() {
        RedriveBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| fail(ApiError::Body(e.to_string())))?
    };
    let ledger = state.ledger.clone();
    let pending: Vec<DeadLetter> = tokio::task::spawn_blocking(move || {
        ledger.persist()?;
        ledger
            .current()
            .store()
            .dead_letters()
            .filter(|d| {
                d.as_ref().map_or(true, |d| {
                    d.redriven_by.is_none() && body.seqs.as_ref().is_none_or(|s| s.contains(&d.seq))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| fail(ApiError::internal(e)))?
    .map_err(|e| fail(ApiError::internal(e)))?;
    let js = jetstream::new(state.admin.client.clone());
    let mut copies = Vec::new();
    for d in &pending {
        let mut h = NatsHeaders::new();
        h.insert(REDRIVE_HEADER, d.seq.to_string().as_str());
        h.insert("Nats-Msg-Id", format!("ledger-redrive-{}", d.seq).as_str());
        // A binary-mode event's attributes are its headers: the copy carries them again.
        for (name, value) in &d.ce_headers {
            h.insert(name.as_str(), value.as_str());
        }
        let ack = js
            .publish_with_headers(d.subject.clone(), h, d.payload.clone().into())
            .await
            .map_err(|_| fail(ApiError::BrokerUnavailable))?
            .await
            .map_err(|_| fail(ApiError::BrokerUnavailable))?;
        copies.push(
            json!({"original_seq": d.seq, "copy_seq": ack.sequence, "duplicate": ack.duplicate}),
        );
    }
    tracing::info!(count = copies.len(), "dead letters redriven");
    Ok(Json(json!({ "data": { "redriven": copies } })))
}

/// `POST /v1/ledger/replay?accept_partial=true`: starts a blue/green rebuild; 202 with progress.
#[utoipa::path(post, path = "/v1/ledger/replay",
    params(
        ("accept_partial" = Option<bool>, Query, description = "Rebuild even though retention dropped the stream's start"),
        CallerHeaders,
    ),
    responses(
        (status = 202, description = "The rebuild started", body = ReplayBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "coc:ledger:admin is not granted", body = ErrorBody),
        (status = 409, description = "A rebuild runs already, or the stream no longer starts at 1", body = ErrorBody),
        (status = 503, description = "NATS is not reachable now", body = ErrorBody)
    )
)]
pub async fn start_replay(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, Localized> {
    caller.require(&state, ACTION_ADMIN, &body)?;
    let fail = |e: ApiError| caller.fail(e);
    let raw = caller.query().map(str::to_owned);
    let a = &state.admin;
    let js = jetstream::new(a.client.clone());
    let (first, last) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        replay::stream_bounds(&js, &a.nats),
    )
    .await
    .map_err(|_| fail(ApiError::BrokerUnavailable))?
    .map_err(|_| fail(ApiError::BrokerUnavailable))?;
    if first > 1 && last >= first && !flag(raw.as_deref(), "accept_partial") {
        return Err(fail(ApiError::PartialHistory(first)));
    }
    if !a.replay.try_start() {
        return Err(fail(ApiError::ReplayRunning));
    }
    tokio::spawn(replay::rebuild(
        state.ledger.clone(),
        state.broker.clone(),
        a.client.clone(),
        a.nats.clone(),
        a.ingest.clone(),
        a.replay.clone(),
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "data": a.replay.get() })),
    )
        .into_response())
}

/// `GET /v1/ledger/replay`: the current or last rebuild's progress.
#[utoipa::path(get, path = "/v1/ledger/replay",
    params(
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "The current or last rebuild's progress", body = ReplayBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "coc:ledger:admin is not granted", body = ErrorBody)
    )
)]
pub async fn replay_progress(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Localized> {
    caller.require(&state, ACTION_ADMIN, b"")?;
    Ok(Json(json!({ "data": state.admin.replay.get() })))
}

/// `GET /v1/ledger/records`: every record as JSON lines, after a first line
/// `{"applied_seq": S}` read before the scan. Used by `ticket-ledger verify`. It writes the
/// write-behind buffer first (pausing ingestion for one flush), then streams the records from
/// sled as it reads them, in pieces of about 64 KiB, so that the daemon never holds the whole
/// export (hundreds of MiB at a million tickets). A record that cannot be read ends the answer
/// early (the cause is logged): a reader sees a body that stops short, never a wrong record.
#[utoipa::path(get, path = "/v1/ledger/records",
    params(
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "`{\"applied_seq\": S}`, then every record, as JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "coc:ledger:admin is not granted", body = ErrorBody)
    )
)]
pub async fn records(State(state): State<AppState>, caller: Caller) -> Result<Response, Localized> {
    caller.require(&state, ACTION_ADMIN, b"")?;
    let lang = caller.lang;
    let ledger = state.ledger.clone();
    let seq = {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || ledger.persist())
            .await
            .map_err(|e| Localized(ApiError::internal(e), lang))?
            .map_err(|e| Localized(ApiError::internal(e), lang))?
    };
    const PIECE: usize = 64 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let projection = ledger.current();
        let mut out = serde_json::to_vec(&json!({"applied_seq": seq})).expect("serialises");
        out.push(b'\n');
        for t in projection.store().tickets() {
            match t {
                Ok(t) => {
                    out.extend_from_slice(&crate::store::ticket_json(&t));
                    out.push(b'\n');
                }
                Err(e) => {
                    tracing::error!(error = %e, "the records export stopped at a record it could not read");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
            if out.len() >= PIECE
                && tx
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut out))))
                    .is_err()
            {
                return; // the client went away
            }
        }
        let _ = tx.blocking_send(Ok(Bytes::from(out)));
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}
