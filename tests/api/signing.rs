//! Signed requests (`SDK-HMAC-SHA256`, as the official SDKs send them), IAM-style policies and
//! tenancy, over real HTTP.

use axum::http::HeaderMap;
use serde_json::Value;
use ticket_ledger::core::events::Kind;
use ticket_ledger::http::sign::{self, RequestParts};

use crate::helpers::*;

/// Signs a GET the way the SDK does and sends it; returns status and body. Each argument is a
/// part of the request a test varies (key, secret, date, the query sent vs. the query signed).
#[allow(clippy::too_many_arguments)]
async fn signed_get(
    app: &TestApp,
    path: &str,
    query: &str,
    project: &str,
    ak: &str,
    sk: &str,
    date: time::OffsetDateTime,
    send_query: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let date = date.format(&fmt).unwrap();
    let mut h = HeaderMap::new();
    h.insert("host", format!("127.0.0.1:{}", app.port).parse().unwrap());
    h.insert("x-sdk-date", date.parse().unwrap());
    h.insert("x-project-id", project.parse().unwrap());
    let signed = vec![
        "host".to_string(),
        "x-project-id".to_string(),
        "x-sdk-date".to_string(),
    ];
    let parts = RequestParts {
        method: "GET",
        path,
        query: Some(query),
        headers: &h,
        body: b"",
    };
    let canonical = sign::canonical_request(&parts, &signed).unwrap();
    let signature = sign::sign(&canonical, &date, sk.as_bytes());
    let auth = format!(
        "SDK-HMAC-SHA256 Access={ak}, SignedHeaders={}, Signature={signature}",
        signed.join(";")
    );
    let url = format!("{path}?{}", send_query.unwrap_or(query));
    let mut headers: Vec<(&str, &str)> = vec![
        ("X-Sdk-Date", &date),
        ("X-Project-Id", project),
        ("Authorization", &auth),
    ];
    headers.extend_from_slice(extra);
    let (status, body) = app.get(&url, &headers).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn seed(app: &TestApp, js: &async_nats::jetstream::Context) {
    let mut job = created("proj-a", 3, 3_000, "shell job", "carol", "SCT-A3", "r");
    job.created.as_mut().unwrap().job_type = "SHELL".into();
    let last = publish(
        js,
        &[
            created("proj-a", 1, 1_000, "patch night", "alice", "SCT-A1", "r"),
            created("proj-a", 2, 2_000, "backup", "bob", "SCT-A2", "r"),
            job,
            created("proj-b", 1, 1_000, "patch night", "alice", "SCT-B1", "r"),
            ev("proj-a", 2, Kind::Started, 2_500),
        ],
    )
    .await;
    app.wait_applied(last).await;
}

fn ids(v: &Value) -> Vec<u64> {
    v["data"]["data"]
        .as_array()
        .map(|a| a.iter().map(|r| r["order_id"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn signed_requests_are_verified() {
    let (_nats, _store, app, js) = start_env().await;
    seed(&app, &js).await;
    let now = time::OffsetDateTime::now_utc();
    let p = "/v1/job/script/orders";
    let q = "limit=10&name_like=patch%20night";

    let (s, v) = signed_get(&app, p, q, "proj-a", AK, SK, now, None, &[]).await;
    assert_eq!((s, ids(&v)), (200, vec![1]), "{v}");
    // The SDK rebuilds the query; another order of the same pairs verifies too.
    let (s, _) = signed_get(
        &app,
        p,
        q,
        "proj-a",
        AK,
        SK,
        now,
        Some("name_like=patch+night&limit=10"),
        &[],
    )
    .await;
    assert_eq!(s, 200);

    let stale = now - time::Duration::minutes(16);
    let tampered = Some("limit=100&name_like=patch%20night");
    let cases = [
        (
            "wrong access key",
            "COC.00040103",
            signed_get(&app, p, q, "proj-a", "NOSUCHAK", SK, now, None, &[]).await,
        ),
        (
            "wrong secret key",
            "COC.00040107",
            signed_get(&app, p, q, "proj-a", AK, "not-the-secret", now, None, &[]).await,
        ),
        (
            "stale date",
            "COC.00040105",
            signed_get(&app, p, q, "proj-a", AK, SK, stale, None, &[]).await,
        ),
        (
            "tampered query",
            "COC.00040107",
            signed_get(&app, p, q, "proj-a", AK, SK, now, tampered, &[]).await,
        ),
    ];
    for (what, code, (status, body)) in &cases {
        assert_eq!(*status, 401, "{what}: {body}");
        assert_eq!(body["error_code"], *code, "{what}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn policies_and_tenancy_hold_for_every_credential() {
    let (_nats, _store, app, js) = start_env().await;
    seed(&app, &js).await;
    let now = time::OffsetDateTime::now_utc();
    let p = "/v1/job/script/orders";

    // A principal of proj-b only: never proj-a, whatever else the request carries.
    let (s, v) = signed_get(&app, p, "limit=100", "proj-a", AK_B, SK_B, now, None, &[]).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error_code"], "COC.00040300");
    let (s, v) = signed_get(
        &app,
        p,
        "limit=100",
        "proj-b",
        AK_B,
        SK_B,
        now,
        None,
        &[("X-Auth-Token", TOKEN_A)],
    )
    .await;
    assert_eq!(
        (s, ids(&v)),
        (200, vec![1]),
        "the signature decides, not a token beside it"
    );
    assert_eq!(v["data"]["data"][0]["execute_uuid"], "SCT-B1");

    // No action: 403 naming the action.
    let (s, body) = app.get(p, &[("X-Auth-Token", TOKEN_NO_ACTION)]).await;
    assert_eq!(s, 403);
    assert!(body.contains("coc:job:list"), "{body}");

    // coc:JobType = SCRIPT: the SHELL ticket is invisible, in the list, its total and the detail.
    let (s, body) = app.get(p, &[("X-Auth-Token", TOKEN_SCRIPTS_ONLY)]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s, ids(&v)), (200, vec![2, 1]));
    assert_eq!(v["data"]["total"], 2);
    let (s, _) = app
        .get(
            &format!("{p}/SCT-A3"),
            &[("X-Auth-Token", TOKEN_SCRIPTS_ONLY)],
        )
        .await;
    assert_eq!(s, 404);
    let (s, body) = app
        .get(&format!("{p}/SCT-A3"), &[("X-Auth-Token", TOKEN_A)])
        .await;
    assert_eq!(s, 200, "{body}");
    let v = app.list("").await;
    assert_eq!(
        ids(&v),
        vec![3, 2, 1],
        "without the condition every job type is listed"
    );
    app.stop().await;
}

/// A signed POST whose body is swapped after signing (the headers, signature included, replayed
/// as captured) is refused with 401 `COC.00040108`, and nothing is redriven; the request as
/// signed goes through.
#[tokio::test]
async fn a_signed_body_swapped_after_signing_is_refused() {
    let (_nats, _store, app, js) = start_env().await;
    // Two dead letters: `started`s that overtook their `created`s.
    let last = publish(
        &js,
        &[
            ev("proj-a", 7, Kind::Started, 2_000),
            ev("proj-a", 8, Kind::Started, 2_000),
        ],
    )
    .await;
    app.wait_applied(last).await;
    let signed_body = br#"{"seqs":[1]}"#;
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let date = time::OffsetDateTime::now_utc().format(&fmt).unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(signed_body));
    let mut h = HeaderMap::new();
    h.insert("host", format!("127.0.0.1:{}", app.port).parse().unwrap());
    h.insert("x-sdk-date", date.parse().unwrap());
    h.insert("x-project-id", "proj-a".parse().unwrap());
    h.insert("x-sdk-content-sha256", hash.parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    let signed: Vec<String> = [
        "content-type",
        "host",
        "x-project-id",
        "x-sdk-content-sha256",
        "x-sdk-date",
    ]
    .map(String::from)
    .to_vec();
    let parts = RequestParts {
        method: "POST",
        path: "/v1/ledger/redrive",
        query: None,
        headers: &h,
        body: signed_body,
    };
    let canonical = sign::canonical_request(&parts, &signed).unwrap();
    let signature = sign::sign(&canonical, &date, SK_ADMIN.as_bytes());
    let auth = format!(
        "SDK-HMAC-SHA256 Access={AK_ADMIN}, SignedHeaders={}, Signature={signature}",
        signed.join(";")
    );
    let send = |body: &'static [u8]| {
        let mut req = reqwest::Client::new()
            .post(app.url("/v1/ledger/redrive"))
            .header("Authorization", &auth)
            .body(body);
        for (k, v) in &h {
            if k != "host" {
                req = req.header(k, v);
            }
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Swapped: every pending dead letter instead of the one signed for.
    let (status, body) = send(b"{}").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_code"], "COC.00040108", "{body}");
    let admin = ticket_ledger::ops::audit::AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let pending = admin.get("/v1/ledger/dead-letters").await.unwrap();
    assert_eq!(
        pending["pending_by_reason"]["unknown_ticket"], 2,
        "nothing redriven"
    );
    assert_eq!(
        app.projection().applied_seq(),
        last,
        "nothing was published"
    );
    // As signed: the one dead letter is redriven.
    let (status, body) = send(signed_body).await;
    assert_eq!(status, 200, "{body}");
    app.wait_applied(last + 1).await;
    let all = admin.get("/v1/ledger/dead-letters?all=true").await.unwrap();
    let redriven: Vec<&Value> = all["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| !d["redriven_by"].is_null())
        .collect();
    assert_eq!(redriven.len(), 1, "{all}");
    assert_eq!(redriven[0]["seq"], 1);
}
