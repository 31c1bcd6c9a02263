//! The OpenAPI 3.1 document, served at `GET /openapi.json`: the handlers' `#[utoipa::path]`
//! attributes (beside each handler), and here the schemas of what they answer. CI points
//! schemathesis at the live daemon with it (`scripts/api-fuzz.sh`): a 5xx, an answer the
//! document does not describe, or an undocumented status fails the build.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The headers every route but the health checks reads, besides the credentials.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct CallerHeaders {
    /// The project; needed when the caller is granted several.
    #[param(rename = "x-project-id")]
    x_project_id: Option<String>,
    /// `zh-cn` for Chinese error messages.
    #[param(rename = "X-Language")]
    x_language: Option<String>,
}

/// A ticket status.
#[derive(ToSchema)]
#[schema(as = Status)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub(crate) enum StatusDoc {
    READY,
    PROCESSING,
    ABNORMAL,
    PAUSED,
    CANCELED,
    FINISHED,
}

/// `properties` of a ticket.
#[derive(ToSchema)]
#[schema(as = Properties)]
#[allow(dead_code)]
pub(crate) struct PropertiesDoc {
    region_ids: String,
}

/// One ticket of the list (COC's `JobScriptOrderListModel`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Ticket {
    order_id: u64,
    order_name: String,
    execute_uuid: String,
    /// Creation time, ms since the epoch.
    gmt_created: i64,
    /// End time, ms; null while the ticket is not over.
    gmt_finished: Option<i64>,
    /// `gmt_finished - gmt_created`, ms; null while the ticket is not over.
    execute_costs: Option<i64>,
    creator: String,
    status: StatusDoc,
    properties: PropertiesDoc,
}

/// A page and the total of every ticket matching the filters.
#[derive(ToSchema)]
#[allow(dead_code)]
struct TicketPage {
    total: u64,
    data: Vec<Ticket>,
}

/// The list's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ListBody {
    data: TicketPage,
}

/// Every error: `{"error_code": "COC.000…", "error_msg": "…"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    error_code: String,
    error_msg: String,
}

/// The detail's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct InfoBody<'a> {
    data: super::jobs::models::OrderInfo<'a>,
}

/// The batches' answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BatchesBody<'a> {
    data: Vec<super::jobs::models::BatchSummary<'a>>,
}

/// A batch page's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BatchBody<'a> {
    data: super::jobs::models::BatchDetail<'a>,
}

/// The statistics' answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct StatisticsBody {
    data: super::jobs::models::Statistics,
}

/// An operation's answer: the ticket's `execute_uuid`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct OperateBody {
    data: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct DeadLetterPage {
    /// Pending dead letters, by reason code.
    pending_by_reason: std::collections::BTreeMap<String, u64>,
    dead_letters: Vec<super::ledger::DeadLetterView>,
}

/// The dead letters' answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct DeadLettersBody {
    data: DeadLetterPage,
}

/// `POST /v1/ledger/redrive`'s body: the sequences to redrive (all pending when absent).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RedriveRequest {
    seqs: Option<Vec<u64>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct RedrivenDoc {
    original_seq: u64,
    copy_seq: u64,
    duplicate: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Redriven {
    redriven: Vec<RedrivenDoc>,
}

/// The redrive's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RedrivenBody {
    data: Redriven,
}

/// A rebuild's progress.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ProgressDoc {
    /// `idle`, `running`, `done` or `failed`.
    phase: String,
    done: u64,
    total: u64,
    events_per_sec: f64,
    eta_secs: Option<f64>,
    tickets: Option<u64>,
    error: Option<String>,
    generation: Option<u32>,
}

/// The rebuild's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ReplayBody {
    data: ProgressDoc,
}

/// `/readyz`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ReadyBody {
    ready: bool,
    /// `open`, or `writes paused` while the store's disk is nearly full.
    store: String,
    /// Why the daemon is not ready (writes paused, not connected, a stale stream position,
    /// catching up to the stream's end at start-up, too far behind, the view being rebuilt).
    reason: Option<String>,
    nats_connected: bool,
    applied_seq: u64,
    durable_seq: u64,
    view_seq: u64,
    stream_last_seq: u64,
    /// How old `stream_last_seq` is, ms (`null`: not yet known).
    stream_last_seq_age_ms: Option<u64>,
    /// The stream's last sequence as first known after the start: not ready before it is applied.
    stream_last_seq_at_start: Option<u64>,
    lag: u64,
    tickets: u64,
}

/// `/healthz`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct HealthBody {
    status: String,
}

/// `X-Auth-Token` as the security scheme (signed requests are the SDKs' business).
struct Token;

impl Modify for Token {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ticket-ledger",
        description = "COC's script-ticket list, served from an event-sourced ledger, and the ledger's own audit routes."
    ),
    paths(
        super::orders::list,
        super::jobs::info,
        super::jobs::batches,
        super::jobs::batch,
        super::jobs::statistics,
        super::jobs::operate,
        super::ledger::dead_letters,
        super::ledger::redrive,
        super::ledger::start_replay,
        super::ledger::replay_progress,
        super::ledger::records,
        super::metrics::metrics,
        super::healthz,
        super::readyz,
        openapi_json,
    ),
    modifiers(&Token),
    security(("token" = []))
)]
struct Doc;

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", security(()), responses(
    (status = 200, description = "This document", content_type = "application/json")
))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router is in the document, and the document says OpenAPI 3.1.
    #[test]
    fn every_route_is_documented() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for (path, method) in [
            ("/v1/job/script/orders", "get"),
            ("/v1/job/script/orders/{execute_uuid}", "get"),
            ("/v1/job/script/orders/{execute_uuid}/batches", "get"),
            (
                "/v1/job/script/orders/{execute_uuid}/batches/{batch_index}",
                "get",
            ),
            ("/v1/job/script/orders/{execute_uuid}/statistics", "get"),
            ("/v1/job/script/orders/{execute_uuid}/operation", "put"),
            ("/v1/ledger/dead-letters", "get"),
            ("/v1/ledger/redrive", "post"),
            ("/v1/ledger/replay", "post"),
            ("/v1/ledger/replay", "get"),
            ("/v1/ledger/records", "get"),
            ("/metrics", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/openapi.json", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        let list = &doc["paths"]["/v1/job/script/orders"]["get"]["parameters"];
        let headers: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(headers, ["x-project-id", "X-Language"]);
    }
}
