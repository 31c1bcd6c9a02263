//! `GET /v1/job/script/orders`: the paginated ticket list.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;

use super::error::{ApiError, Localized};
use super::{AppState, Caller};
use crate::core::domain::{FilterText, Marker, PageLimit, Status, TimeRange};
use crate::http::auth::ACTION_LIST;
use crate::http::openapi::{CallerHeaders, ErrorBody, ListBody, StatusDoc};
use crate::view::{Page, Query};

/// The 200 body: `{"data": JobScriptOrderListPage}`, fields in the spec's order.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    /// The page and its total.
    pub data: Page,
}

/// The query parameters the endpoint reads; any other parameter is ignored, as COC does.
const KNOWN: [&str; 7] = [
    "limit",
    "marker",
    "start_time",
    "end_time",
    "creator",
    "status",
    "name_like",
];

/// The parameters of a raw query string that are in `known`, percent-decoded; any other
/// parameter is ignored, as COC does. A query that is not UTF-8 once decoded, or a known
/// parameter given twice, is an error.
pub(crate) fn known_params(
    raw: Option<&str>,
    known: &[&'static str],
) -> Result<HashMap<&'static str, String>, ApiError> {
    let mut params: HashMap<&'static str, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if v.contains('\u{FFFD}') || k.contains('\u{FFFD}') {
            return Err(ApiError::QueryEncoding);
        }
        if let Some(name) = known.iter().find(|n| **n == k)
            && params.insert(name, v.into_owned()).is_some()
        {
            return Err(ApiError::RepeatedParam((*name).to_owned()));
        }
    }
    Ok(params)
}

/// Parses the raw query string into a [`Query`]. Every failure is a 400 with the parameter named.
pub fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let params = known_params(raw, &KNOWN)?;
    let get = |k: &str| params.get(k).map(String::as_str);
    Ok(Query {
        limit: get("limit")
            .map(PageLimit::parse)
            .transpose()?
            .unwrap_or(PageLimit::DEFAULT),
        marker: get("marker").map(Marker::parse).transpose()?,
        time: TimeRange::parse(get("start_time"), get("end_time"))?,
        creator: get("creator")
            .map(|c| FilterText::parse(c, "creator"))
            .transpose()?,
        status: get("status").map(Status::parse).transpose()?,
        name_like: get("name_like")
            .map(|n| FilterText::parse(n, "name_like"))
            .transpose()?,
        job_types: None,
    })
}

/// Lists the tickets of the caller's project (and, under the `coc:JobType` condition, of the
/// job types the caller may see).
#[utoipa::path(get, path = "/v1/job/script/orders",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, default 10"),
        ("marker" = Option<u64>, Query, description = "The last order_id of the previous page"),
        ("start_time" = Option<u64>, Query, description = "Created at or after, ms since the epoch"),
        ("end_time" = Option<u64>, Query, description = "Created at or before, ms since the epoch"),
        ("creator" = Option<String>, Query, min_length = 1, max_length = 128),
        ("status" = Option<StatusDoc>, Query),
        ("name_like" = Option<String>, Query, min_length = 1, max_length = 128, description = "Case-insensitive substring of the name"),
        CallerHeaders,
    ),
    responses(
        (status = 200, description = "A page and its total", body = ListBody),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The project or the action is not granted", body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListResponse>, Localized> {
    let (principal, project) = caller.authorize(&state, ACTION_LIST)?;
    let mut query = parse_query(raw.as_deref()).map_err(|e| caller.fail(e))?;
    query.job_types = principal.job_types.clone();
    let page = state.ledger.current().query(&project, &query);
    Ok(Json(ListResponse { data: page }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let q = parse_query(None).unwrap();
        assert_eq!(q.limit, PageLimit::DEFAULT);
        assert!(q.marker.is_none() && q.time.is_none() && q.status.is_none());
    }

    #[test]
    fn percent_encoding_is_decoded() {
        let q = parse_query(Some("name_like=patch%20night&creator=a%2Bb")).unwrap();
        assert_eq!(q.name_like.unwrap().as_str(), "patch night");
        assert_eq!(q.creator.unwrap().as_str(), "a+b");
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let code = |q: &str| parse_query(Some(q)).unwrap_err().code();
        assert_eq!(code("limit=0"), "COC.00040001");
        assert_eq!(code("limit=abc"), "COC.00040001");
        assert_eq!(code("marker=-5"), "COC.00040002");
        assert_eq!(code("status=DONE"), "COC.00040003");
        assert_eq!(code("start_time=9&end_time=1"), "COC.00040004");
        assert_eq!(code("creator="), "COC.00040005");
        assert_eq!(
            code(&format!("name_like={}", "x".repeat(129))),
            "COC.00040006"
        );
        assert_eq!(code("limit=1&limit=2"), "COC.00040007");
        assert_eq!(code("name_like=%FF"), "COC.00040007");
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        assert!(parse_query(Some("offset=3&foo")).is_ok());
    }
}
