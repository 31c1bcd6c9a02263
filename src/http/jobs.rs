//! The rest of COC's script-ticket family, read from the projection and answered in the official
//! SDK's shapes ([`models`]): one ticket (`get_script_job_info`), its batches, one batch's
//! instances page by page, its statistics, and the operations an operator asks of the executor.
//!
//! The ledger is not the executor: `PUT …/operation` checks the operation against what the
//! projection knows ([`crate::core::job::check`]), publishes `operation_requested` for the
//! executor, and answers. The ticket changes when the executor's events say it did; the request
//! itself reaches the ticket's history through the stream, like any event.

pub(crate) mod models;

use async_nats::HeaderMap as NatsHeaders;
use async_nats::jetstream;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Localized};
use super::{AppState, Caller};
use crate::core::domain::{Marker, PageLimit, ProjectId};
use crate::core::events::{Detail, Event, Kind, OperationRequest};
use crate::core::fold::Ticket;
use crate::core::job::{self, InstanceStatus, Operation, OperationType};
use crate::http::auth::{ACTION_GET, ACTION_OPERATE, Principal};
use crate::http::openapi::{
    BatchBody, BatchesBody, CallerHeaders, ErrorBody, InfoBody, OperateBody, StatisticsBody,
};
use models::{BatchDetail, BatchSummary, InstanceView, OrderInfo, Statistics};

/// The ticket with this `execute_uuid` in the caller's project, if the caller may see it (a
/// ticket the `coc:JobType` condition hides does not exist for this caller).
async fn find(
    state: &AppState,
    caller: &Caller,
    (principal, project): (&Principal, ProjectId),
    execute_uuid: String,
) -> Result<Ticket, Localized> {
    let fail = |e: ApiError| caller.fail(e);
    let projection = state.ledger.current();
    let uuid = execute_uuid.clone();
    let found = tokio::task::spawn_blocking(move || projection.ticket_by_uuid(&project, &uuid))
        .await
        .map_err(|e| fail(ApiError::internal(e)))?
        .map_err(|e| fail(ApiError::internal(e)))?;
    found
        .filter(|t| principal.sees_job_type(&t.job_type))
        .ok_or_else(|| fail(ApiError::TicketNotFound(execute_uuid)))
}

/// A path that does not decode to UTF-8 cannot name a ticket.
fn path<T>(caller: &Caller, p: Result<Path<T>, PathRejection>) -> Result<T, Localized> {
    p.map(|Path(v)| v)
        .map_err(|_| caller.fail(ApiError::QueryEncoding))
}

/// `GET /v1/job/script/orders/{execute_uuid}`: `JobScriptOrderInfoModel`, with the history.
#[utoipa::path(get, path = "/v1/job/script/orders/{execute_uuid}",
    params(("execute_uuid" = String, Path), CallerHeaders),
    responses(
        (status = 200, description = "The ticket, its script and parameters, and its history", body = InfoBody),
        (status = 400, description = "The path or a header is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The project or coc:job:get is not granted", body = ErrorBody),
        (status = 404, description = "No such ticket in the project", body = ErrorBody)
    )
)]
pub async fn info(
    State(state): State<AppState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, Localized> {
    let who = caller.authorize(&state, ACTION_GET)?;
    let t = find(&state, &caller, who, path(&caller, p)?).await?;
    Ok(Json(json!({ "data": OrderInfo::of(&t) })))
}

/// `GET …/{execute_uuid}/batches`: every batch, ascending (an empty list for a ticket without
/// a plan).
#[utoipa::path(get, path = "/v1/job/script/orders/{execute_uuid}/batches",
    params(("execute_uuid" = String, Path), CallerHeaders),
    responses(
        (status = 200, description = "The ticket's batches (`JobScriptBatchListModel`)", body = BatchesBody),
        (status = 400, description = "The path or a header is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The project or coc:job:get is not granted", body = ErrorBody),
        (status = 404, description = "No such ticket in the project", body = ErrorBody)
    )
)]
pub async fn batches(
    State(state): State<AppState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, Localized> {
    let who = caller.authorize(&state, ACTION_GET)?;
    let t = find(&state, &caller, who, path(&caller, p)?).await?;
    let all: Vec<BatchSummary> = t
        .plan
        .iter()
        .flat_map(|p| &p.batches)
        .map(|b| BatchSummary::of(b))
        .collect();
    Ok(Json(json!({ "data": all })))
}

/// The query of a batch page.
#[derive(Debug, PartialEq)]
struct InstanceQuery {
    status: Option<InstanceStatus>,
    limit: PageLimit,
    /// Instances with an id above it.
    marker: Option<Marker>,
}

fn parse_instance_query(raw: Option<&str>) -> Result<InstanceQuery, ApiError> {
    let params = super::orders::known_params(raw, &["status", "limit", "marker"])?;
    let get = |k: &str| params.get(k).map(String::as_str);
    Ok(InstanceQuery {
        status: get("status")
            .map(|s| InstanceStatus::parse(s).ok_or(ApiError::InstanceStatus))
            .transpose()?,
        limit: get("limit")
            .map(PageLimit::parse)
            .transpose()?
            .unwrap_or(PageLimit::DEFAULT),
        marker: get("marker").map(Marker::parse).transpose()?,
    })
}

/// `GET …/{execute_uuid}/batches/{batch_index}?status=&limit=&marker=`: one page of a batch's
/// instances, ascending by `id`; `marker` is the last id of the previous page (strict).
#[utoipa::path(get, path = "/v1/job/script/orders/{execute_uuid}/batches/{batch_index}",
    params(
        ("execute_uuid" = String, Path),
        ("batch_index" = u32, Path, minimum = 1),
        ("status" = Option<models::InstanceStatusDoc>, Query, description = "Only instances in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, default 10"),
        ("marker" = Option<u64>, Query, description = "The last id of the previous page"),
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "A page of the batch's instances (`JobScriptBatchDetailModel`)", body = BatchBody),
        (status = 400, description = "The path, a parameter or a header is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The project or coc:job:get is not granted", body = ErrorBody),
        (status = 404, description = "No such ticket in the project, or no such batch in the ticket", body = ErrorBody)
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, Localized> {
    let who = caller.authorize(&state, ACTION_GET)?;
    let (execute_uuid, index) = path(&caller, p)?;
    let index: u32 = index
        .parse()
        .ok()
        .filter(|i| *i >= 1)
        .ok_or_else(|| caller.fail(ApiError::BatchIndex))?;
    let q = parse_instance_query(raw.as_deref()).map_err(|e| caller.fail(e))?;
    let t = find(&state, &caller, who, execute_uuid).await?;
    let b = t
        .plan
        .as_ref()
        .and_then(|p| p.batch(index))
        .ok_or_else(|| caller.fail(ApiError::BatchNotFound(index)))?;
    let after = q.marker.map_or(0, |m| m.get());
    let start = b.instances.partition_point(|i| i.id() <= after);
    let page = b.instances[start..]
        .iter()
        .filter(|i| q.status.is_none_or(|s| i.status == s))
        .take(q.limit.get())
        .map(InstanceView::of)
        .collect();
    let detail = BatchDetail {
        batch_index: b.batch_index,
        total_instances: b.instances.len(),
        execute_instances: page,
    };
    Ok(Json(json!({ "data": detail })))
}

/// `GET …/{execute_uuid}/statistics`: every instance status with its count, zeros included.
#[utoipa::path(get, path = "/v1/job/script/orders/{execute_uuid}/statistics",
    params(("execute_uuid" = String, Path), CallerHeaders),
    responses(
        (status = 200, description = "Instances by status (`JobScriptOrderStatisticsModel`)", body = StatisticsBody),
        (status = 400, description = "The path or a header is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The project or coc:job:get is not granted", body = ErrorBody),
        (status = 404, description = "No such ticket in the project", body = ErrorBody)
    )
)]
pub async fn statistics(
    State(state): State<AppState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, Localized> {
    let who = caller.authorize(&state, ACTION_GET)?;
    let t = find(&state, &caller, who, path(&caller, p)?).await?;
    Ok(Json(json!({ "data": Statistics::of(&t) })))
}

/// `JobScriptOrderOperationBody`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct OperationBody {
    /// CANCEL_INSTANCE, SKIP_BATCH, CANCEL_ORDER, PAUSE_ORDER or CONTINUE_ORDER.
    operation_type: String,
    /// The batch (SKIP_BATCH; optional for CANCEL_INSTANCE).
    #[schema(minimum = 1)]
    batch_index: Option<u32>,
    /// The instance (CANCEL_INSTANCE).
    instance_id: Option<u64>,
}

fn parse_operation(body: &[u8]) -> Result<Operation, ApiError> {
    let b: OperationBody =
        serde_json::from_slice(body).map_err(|e| ApiError::Body(e.to_string()))?;
    let operation_type = OperationType::parse(&b.operation_type).ok_or_else(|| {
        ApiError::Body(
            "operation_type must be one of CANCEL_INSTANCE, SKIP_BATCH, CANCEL_ORDER, PAUSE_ORDER, CONTINUE_ORDER"
                .into(),
        )
    })?;
    if b.batch_index == Some(0) {
        return Err(ApiError::Body("batch_index must be 1 or more".into()));
    }
    Ok(Operation {
        operation_type,
        batch_index: b.batch_index,
        instance_id: b.instance_id,
    })
}

/// `PUT …/{execute_uuid}/operation`: checks the operation against the ticket and publishes
/// `operation_requested` for the executor; answers the `execute_uuid`.
#[utoipa::path(put, path = "/v1/job/script/orders/{execute_uuid}/operation",
    params(("execute_uuid" = String, Path), CallerHeaders),
    request_body = OperationBody,
    responses(
        (status = 200, description = "The request was published for the executor", body = OperateBody),
        (status = 400, description = "The body is invalid, or the ticket as the ledger knows it does not allow the operation", body = ErrorBody),
        (status = 401, description = "No or unknown credentials, or a bad signature", body = ErrorBody),
        (status = 403, description = "The project or coc:job:operate is not granted", body = ErrorBody),
        (status = 404, description = "No such ticket in the project", body = ErrorBody),
        (status = 503, description = "NATS is not reachable now", body = ErrorBody)
    )
)]
pub async fn operate(
    State(state): State<AppState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Localized> {
    let (principal, project) = caller.authorize_body(&state, ACTION_OPERATE, &body)?;
    let fail = |e: ApiError| caller.fail(e);
    let execute_uuid = path(&caller, p)?;
    let op = parse_operation(&body).map_err(fail)?;
    let t = find(&state, &caller, (principal, project.clone()), execute_uuid).await?;
    job::check(&t, &op).map_err(|r| fail(ApiError::Refused(r)))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let event = Event {
        id: uuid::Uuid::new_v4().to_string().into(),
        source: "ticket-ledger".into(),
        kind: Kind::OperationRequested,
        time_ms: i64::try_from(now).unwrap_or(i64::MAX),
        project,
        order_id: t.order_id,
        created: None,
        detail: Detail::Operation(Box::new(OperationRequest {
            execute_uuid: t.execute_uuid.to_string(),
            operation: op,
            requested_by: principal.name.clone(),
        })),
    };
    let mut headers = NatsHeaders::new();
    headers.insert("Nats-Msg-Id", event.id.as_str());
    let js = jetstream::new(state.admin.client());
    js.publish_with_headers(
        event.subject(state.admin.subject_prefix()),
        headers,
        event.to_bytes().into(),
    )
    .await
    .map_err(|_| fail(ApiError::BrokerUnavailable))?
    .await
    .map_err(|_| fail(ApiError::BrokerUnavailable))?;
    tracing::info!(
        execute_uuid = %t.execute_uuid,
        operation = op.operation_type.as_str(),
        requested_by = %principal.name,
        "operation requested"
    );
    Ok(Json(json!({ "data": t.execute_uuid })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_query_parses_or_names_what_is_wrong() {
        let q = parse_instance_query(Some("status=FINISHED&limit=100&marker=7")).unwrap();
        assert_eq!(q.status, Some(InstanceStatus::Finished));
        assert_eq!(q.limit.get(), 100);
        assert_eq!(q.marker.map(|m| m.get()), Some(7));
        let code = |raw: &str| parse_instance_query(Some(raw)).unwrap_err().code();
        assert_eq!(code("status=PAUSED"), "COC.00040012");
        assert_eq!(code("limit=0"), "COC.00040001");
        assert_eq!(code("marker=-1"), "COC.00040002");
        assert_eq!(code("limit=1&limit=2"), "COC.00040007");
    }

    #[test]
    fn an_operation_body_parses_or_is_a_400() {
        let op = parse_operation(br#"{"operation_type":"SKIP_BATCH","batch_index":2}"#).unwrap();
        assert_eq!(op.operation_type, OperationType::SkipBatch);
        for bad in [
            &br#"{"operation_type":"REBOOT"}"#[..],
            br#"{"batch_index":2}"#,
            br#"{"operation_type":"SKIP_BATCH","batch_index":0}"#,
            br#"{"operation_type":"SKIP_BATCH","batch_index":"x"}"#,
            b"not json",
        ] {
            assert_eq!(parse_operation(bad).unwrap_err().code(), "COC.00040011");
        }
    }
}
