//! API errors in the Huawei shape `{"error_code": "...", "error_msg": "..."}`, in English or
//! Chinese (`X-Language: zh-cn`). Every code is listed in README.md ("Error codes").

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::domain::{DomainError, ProjectId};
use crate::core::job::Refusal;
use crate::http::auth::AuthError;
use crate::http::sign::SignError;

/// The language of error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English: the default.
    En,
    /// Chinese: `X-Language: zh-cn`.
    Zh,
}

impl Lang {
    /// Reads `X-Language`: `zh-cn` (any case) is Chinese, anything else English.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        match headers.get("x-language").and_then(|v| v.to_str().ok()) {
            Some(v) if v.trim().eq_ignore_ascii_case("zh-cn") => Lang::Zh,
            _ => Lang::En,
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is invalid.
    #[error(transparent)]
    Param(#[from] DomainError),
    /// A query parameter is given more than once.
    #[error("query parameter {0} is given more than once")]
    RepeatedParam(String),
    /// The query string is not valid UTF-8 after percent-decoding.
    #[error("query string is not valid UTF-8")]
    QueryEncoding,
    /// Authentication or authorisation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// No ticket with this `execute_uuid` in the caller's project.
    #[error("no ticket with execute_uuid {0:?} in this project")]
    TicketNotFound(String),
    /// `status` of a batch page is not an instance status.
    #[error("status must be one of READY, PROCESSING, ABNORMAL, CANCELED, FINISHED")]
    InstanceStatus,
    /// The path's `batch_index` is not an integer of 1 or more.
    #[error("batch_index must be an integer of 1 or more")]
    BatchIndex,
    /// The ticket has no such batch.
    #[error("the ticket has no batch {0}")]
    BatchNotFound(u32),
    /// The ticket, as the ledger knows it, does not allow the operation.
    #[error("the operation is refused: {0}")]
    Refused(crate::core::job::Refusal),
    /// A rebuild is already running.
    #[error("a rebuild is already running")]
    ReplayRunning,
    /// The stream no longer starts at sequence 1.
    #[error(
        "the stream starts at sequence {0}: events 1..{0} were dropped by retention, so a rebuild would miss them; pass accept_partial=true to rebuild from what is left"
    )]
    PartialHistory(u64),
    /// The request body is not what the endpoint takes.
    #[error("invalid request body: {0}")]
    Body(String),
    /// The project is held by another instance (`ingest.projects`).
    #[error(
        "project {0} is not held by this instance (ingest.projects); send its requests to the instance that holds it"
    )]
    ProjectNotHeld(ProjectId),
    /// NATS is not reachable now.
    #[error("the NATS server is not reachable now; try again")]
    BrokerUnavailable,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Something broke inside the daemon (never caused by input). The cause goes with the
    /// response to the request-id middleware, which logs it once; the client sees only the code.
    #[error("internal error")]
    Internal(Cause),
}

/// The cause of an internal error, kept to be logged (compared by identity: no two failures are
/// the same failure).
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps a failure.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Cause(Arc::from(e.into()))
    }
}

impl std::fmt::Display for Cause {
    /// The error and its sources, outermost first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cause({self})")
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cause {}

impl ApiError {
    /// An internal failure with its cause.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        ApiError::Internal(Cause::new(e))
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Param(
                DomainError::Limit { .. }
                | DomainError::Marker
                | DomainError::Status
                | DomainError::Time(_)
                | DomainError::TimeOrder
                | DomainError::Text { .. }
                | DomainError::ProjectId,
            )
            | ApiError::RepeatedParam(_)
            | ApiError::QueryEncoding
            | ApiError::Auth(AuthError::ProjectRequired | AuthError::InvalidProject) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Auth(
                AuthError::MissingToken | AuthError::UnknownToken | AuthError::Signature(_),
            ) => StatusCode::UNAUTHORIZED,
            ApiError::Auth(AuthError::ProjectNotGranted | AuthError::ActionDenied(_)) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Param(DomainError::Number(_))
            | ApiError::Body(_)
            | ApiError::InstanceStatus
            | ApiError::BatchIndex
            | ApiError::Refused(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::TicketNotFound(_) | ApiError::BatchNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::ReplayRunning | ApiError::PartialHistory(_) => StatusCode::CONFLICT,
            ApiError::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ProjectNotHeld(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Huawei-style error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Param(DomainError::Limit { .. }) => "COC.00040001",
            ApiError::Param(DomainError::Marker) => "COC.00040002",
            ApiError::Param(DomainError::Status) => "COC.00040003",
            ApiError::Param(DomainError::Time(_) | DomainError::TimeOrder) => "COC.00040004",
            ApiError::Param(DomainError::Text { field, .. }) if *field == "creator" => {
                "COC.00040005"
            }
            ApiError::Param(DomainError::Text { .. }) => "COC.00040006",
            ApiError::RepeatedParam(_) | ApiError::QueryEncoding => "COC.00040007",
            ApiError::Param(DomainError::ProjectId) | ApiError::Auth(AuthError::InvalidProject) => {
                "COC.00040008"
            }
            ApiError::Auth(AuthError::ProjectRequired) => "COC.00040009",
            ApiError::Auth(AuthError::MissingToken) => "COC.00040100",
            ApiError::Auth(AuthError::UnknownToken) => "COC.00040101",
            ApiError::Auth(AuthError::Signature(e)) => match e {
                SignError::Malformed(_) => "COC.00040102",
                SignError::UnknownAccessKey => "COC.00040103",
                SignError::Date => "COC.00040104",
                SignError::StaleDate => "COC.00040105",
                SignError::MissingHeader(_) => "COC.00040106",
                SignError::Mismatch => "COC.00040107",
                SignError::BodyHash => "COC.00040108",
            },
            ApiError::Auth(AuthError::ProjectNotGranted) => "COC.00040300",
            ApiError::Auth(AuthError::ActionDenied(_)) => "COC.00040301",
            ApiError::Param(DomainError::Number(_)) => "COC.00040010",
            ApiError::Body(_) => "COC.00040011",
            ApiError::InstanceStatus => "COC.00040012",
            ApiError::BatchIndex => "COC.00040013",
            ApiError::Refused(r) => match r {
                Refusal::TicketOver(_) => "COC.00040020",
                Refusal::WrongStatus { .. } => "COC.00040021",
                Refusal::Missing { .. } => "COC.00040022",
                Refusal::UnknownBatch(_) => "COC.00040023",
                Refusal::UnknownInstance(..) => "COC.00040024",
                Refusal::InstanceEnded(..) => "COC.00040025",
            },
            ApiError::NotFound => "COC.00040400",
            ApiError::TicketNotFound(_) => "COC.00040709",
            ApiError::BatchNotFound(_) => "COC.00040710",
            ApiError::ReplayRunning => "COC.00040901",
            ApiError::PartialHistory(_) => "COC.00040902",
            ApiError::BrokerUnavailable => "COC.00050300",
            ApiError::ProjectNotHeld(_) => "COC.00042100",
            ApiError::MethodNotAllowed => "COC.00040500",
            ApiError::Internal(_) => "COC.00050000",
        }
    }

    /// The message in a language.
    pub fn message(&self, lang: Lang) -> String {
        if lang == Lang::En {
            return match self {
                ApiError::Auth(AuthError::MissingToken) => "X-Auth-Token is required".to_owned(),
                ApiError::Auth(AuthError::UnknownToken) => {
                    "the X-Auth-Token is not valid".to_owned()
                }
                ApiError::Auth(AuthError::ProjectRequired) => {
                    "x-project-id is required: the token grants more than one project".to_owned()
                }
                ApiError::Auth(AuthError::InvalidProject) => {
                    "x-project-id must be 1 to 64 characters of letters, digits, '-' or '_'"
                        .to_owned()
                }
                ApiError::Auth(AuthError::ProjectNotGranted) => {
                    "the token is not granted this project".to_owned()
                }
                ApiError::Auth(AuthError::ActionDenied(a)) => {
                    format!("the token is not granted the action {a}")
                }
                other => other.to_string(),
            };
        }
        match self {
            ApiError::Param(DomainError::Limit { min, max }) => {
                format!("limit 必须是 {min} 到 {max} 之间的整数")
            }
            ApiError::Param(DomainError::Marker) => {
                "marker 必须是非负整数（上一页最后一条工单的 order_id）".to_owned()
            }
            ApiError::Param(DomainError::Status) => {
                "status 必须是 READY、PROCESSING、ABNORMAL、PAUSED、CANCELED、FINISHED 之一"
                    .to_owned()
            }
            ApiError::Param(DomainError::Time(name)) => {
                format!("{name} 必须是非负整数（自纪元起的毫秒数）")
            }
            ApiError::Param(DomainError::TimeOrder) => "start_time 不能晚于 end_time".to_owned(),
            ApiError::Param(DomainError::Text { field, max }) => {
                format!("{field} 的长度必须为 1 到 {max} 个字符")
            }
            ApiError::Param(DomainError::ProjectId) | ApiError::Auth(AuthError::InvalidProject) => {
                "x-project-id 必须由 1 到 64 个字母、数字、'-' 或 '_' 组成".to_owned()
            }
            ApiError::RepeatedParam(p) => format!("查询参数 {p} 重复出现"),
            ApiError::QueryEncoding => "查询字符串不是有效的 UTF-8".to_owned(),
            ApiError::Auth(AuthError::MissingToken) => {
                "缺少 X-Auth-Token（或 SDK-HMAC-SHA256 签名）".to_owned()
            }
            ApiError::Auth(AuthError::Signature(e)) => match e {
                SignError::Malformed(what) => format!("Authorization 头格式错误：{what}"),
                SignError::UnknownAccessKey => "访问密钥（AK）不存在".to_owned(),
                SignError::Date => {
                    "X-Sdk-Date 必须存在、参与签名，且格式为 YYYYMMDDTHHMMSSZ".to_owned()
                }
                SignError::StaleDate => "X-Sdk-Date 与服务器时间相差超过 15 分钟".to_owned(),
                SignError::MissingHeader(h) => format!("参与签名的请求头 {h} 不存在"),
                SignError::Mismatch => "请求签名不匹配".to_owned(),
                SignError::BodyHash => "X-Sdk-Content-Sha256 与请求体的 SHA-256 不一致".to_owned(),
            },
            ApiError::Auth(AuthError::UnknownToken) => "X-Auth-Token 无效".to_owned(),
            ApiError::Auth(AuthError::ProjectRequired) => {
                "该令牌授权了多个项目，必须提供 x-project-id".to_owned()
            }
            ApiError::Auth(AuthError::ProjectNotGranted) => "该令牌未被授权访问此项目".to_owned(),
            ApiError::Auth(AuthError::ActionDenied(a)) => format!("该令牌未被授权执行操作 {a}"),
            ApiError::Param(DomainError::Number(name)) => format!("{name} 必须是非负整数"),
            ApiError::Body(e) => format!("请求体无效：{e}"),
            ApiError::InstanceStatus => {
                "status 必须是 READY、PROCESSING、ABNORMAL、CANCELED、FINISHED 之一".to_owned()
            }
            ApiError::BatchIndex => "batch_index 必须是大于等于 1 的整数".to_owned(),
            ApiError::BatchNotFound(b) => format!("该工单不存在批次 {b}"),
            ApiError::Refused(r) => match r {
                Refusal::TicketOver(s) => format!("工单状态为 {s}，已结束"),
                Refusal::WrongStatus { op, needs, status } => {
                    format!("{op} 要求工单状态为 {needs}，当前为 {status}")
                }
                Refusal::Missing { op, field } => format!("{op} 需要 {field}"),
                Refusal::UnknownBatch(b) => format!("该工单不存在批次 {b}"),
                Refusal::UnknownInstance(i, _) => format!("该工单不存在实例 {i}"),
                Refusal::InstanceEnded(i, s) => format!("实例 {i} 的状态为 {s}，已结束"),
            },
            ApiError::NotFound => "资源不存在".to_owned(),
            ApiError::TicketNotFound(u) => format!("本项目中不存在 execute_uuid 为 {u:?} 的工单"),
            ApiError::ReplayRunning => "重建已在进行中".to_owned(),
            ApiError::PartialHistory(first) => format!(
                "事件流从序号 {first} 开始：保留策略已删除更早的事件，重建将缺失它们；如接受部分历史，请传 accept_partial=true"
            ),
            ApiError::BrokerUnavailable => "当前无法连接 NATS 服务器，请稍后重试".to_owned(),
            ApiError::ProjectNotHeld(p) => {
                format!("本实例不持有项目 {p}（ingest.projects），请将其请求发往持有它的实例")
            }
            ApiError::MethodNotAllowed => "不支持该请求方法".to_owned(),
            ApiError::Internal(_) => "内部错误".to_owned(),
        }
    }

    /// The response in a language.
    pub fn into_response_in(self, lang: Lang) -> Response {
        let body = json!({"error_code": self.code(), "error_msg": self.message(lang)});
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::Internal(cause) = self {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

/// An error with the language of the request that caused it.
#[derive(Debug)]
pub struct Localized(pub ApiError, pub Lang);

impl IntoResponse for Localized {
    fn into_response(self) -> Response {
        self.0.into_response_in(self.1)
    }
}
