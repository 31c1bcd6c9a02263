//! Handler tests without a broker: the real router on a real sled store in a temp dir, called
//! with `oneshot` (no socket). The NATS client is a real one that has no server to reach, so
//! the admin routes that need the broker answer 503, as they would with the broker down.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::config::{AuthSettings, PrincipalSettings, TokenSettings};
use crate::core::batch::Commit;
use crate::core::domain::Status;
use crate::core::fold::Ticket;
use crate::store::FlushPolicy;

const TOKEN: &str = "handler-test-token";

async fn state(dir: &std::path::Path) -> AppState {
    let auth = Authenticator::from_settings(&AuthSettings {
        principals: vec![PrincipalSettings {
            name: "p".into(),
            projects: vec!["proj-a".into()],
            actions: vec!["coc:job:list".into(), "coc:job:get".into()],
            job_types: None,
        }],
        tokens: vec![TokenSettings {
            principal: "p".into(),
            sha256: auth::hash_token(TOKEN),
        }],
        access_keys: vec![],
        allow_dev_credentials: false,
    })
    .unwrap();
    let ledger = Ledger::open(dir, FlushPolicy::default()).unwrap();
    let ticket = |order_id: u64, status| Ticket {
        project: ProjectId::parse("proj-a").unwrap(),
        order_id,
        order_name: format!("job-{order_id}").into(),
        execute_uuid: format!("SCT{order_id}").into(),
        creator: "alice".into(),
        region_ids: "cn-north-4".into(),
        job_type: "SCRIPT".into(),
        gmt_created: 1_690_000_000_000 + order_id as i64,
        gmt_finished: None,
        execute_costs: None,
        status,
        history: vec![],
        current_execute_batch_index: None,
        duplicates_unrecorded: 0,
        plan: None,
    };
    ledger
        .current()
        .commit(Commit {
            tickets: vec![ticket(1, Status::Processing), ticket(2, Status::Ready)],
            applied_seq: 2,
            ..Default::default()
        })
        .unwrap();
    // A real client with nothing to connect to (port 9 is discard; nothing listens there).
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("127.0.0.1:9")
        .await
        .unwrap();
    let defaults = crate::config::Settings::defaults();
    AppState {
        ledger: Arc::new(ledger),
        auth: Arc::new(auth),
        ready_max_lag: 1000,
        ready_max_stale: std::time::Duration::from_secs(5),
        held: None,
        admin: Arc::new(Admin::new(client, defaults.nats, defaults.ingest)),
        broker: Arc::new(BrokerStatus::default()),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        metrics_open: false,
    }
}

async fn call(state: &AppState, uri: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header("X-Auth-Token", t);
    }
    let response = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        id,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_list_answers_from_the_projection_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, id, body) = call(&s, "/v1/job/script/orders?limit=1", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["total"], 2);
    assert_eq!(body["data"]["data"][0]["order_id"], 2);
    assert_eq!(body["data"]["data"][0]["status"], "READY");
    assert_eq!(id.len(), 32, "every response carries a request id");
    let (status, _, body) = call(&s, "/v1/job/script/orders?marker=2", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["data"][0]["order_id"], 1);
}

#[tokio::test]
async fn every_failure_is_a_huawei_shaped_4xx_or_503() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let cases = [
        (
            "/v1/job/script/orders?limit=0",
            Some(TOKEN),
            400,
            "COC.00040001",
        ),
        (
            "/v1/job/script/orders?status=DONE",
            Some(TOKEN),
            400,
            "COC.00040003",
        ),
        ("/v1/job/script/orders", None, 401, "COC.00040100"),
        ("/v1/job/script/orders", Some("wrong"), 401, "COC.00040101"),
        ("/v1/ledger/dead-letters", Some(TOKEN), 403, "COC.00040301"),
        ("/nowhere", Some(TOKEN), 404, "COC.00040400"),
    ];
    for (uri, token, want, code) in cases {
        let (status, _, body) = call(&s, uri, token).await;
        assert_eq!(status.as_u16(), want, "{uri}: {body}");
        assert_eq!(body["error_code"], code, "{uri}: {body}");
        assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _, body) = call(&s, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no broker: {body}");
    assert_eq!(body["nats_connected"], false);
    assert_eq!(body["applied_seq"], 2);
}

/// A caller's own `X-Request-Id` is kept when it is a plain token, replaced when it is not.
#[tokio::test]
async fn a_plain_request_id_is_kept_and_anything_else_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    for (given, kept) in [("abc-123_x", true), ("has space", false), ("", false)] {
        let response = router(s.clone())
            .oneshot(
                Request::get("/healthz")
                    .header("x-request-id", given)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id == given, kept, "{given:?} -> {id:?}");
    }
}

/// What the tests' subscriber wrote.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Log lines of this thread (at info and above) into a buffer, while the guard lives.
fn capture_log() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

/// One access-log line at info per request: method, the declared route (not the raw path),
/// status, latency, bytes, the principal's name and the request id, and never the token.
#[tokio::test(flavor = "current_thread")]
async fn every_request_is_logged_once_with_its_route_principal_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (log, _guard) = capture_log();
    let response = router(s.clone())
        .oneshot(
            Request::get("/v1/job/script/orders/SCT-made-up?limit=3")
                .header("X-Auth-Token", TOKEN)
                .header("x-request-id", "trace-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, _, _) = call(&s, "/v1/job/script/orders", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let logged = log.text();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(" request ") || l.ends_with("request"))
        .collect();
    assert_eq!(lines.len(), 2, "{logged}");
    let detail = lines[0];
    for want in [
        "INFO",
        "trace-7",
        "method=GET",
        "route=\"/v1/job/script/orders/{execute_uuid}\"",
        "status=404",
        "principal=\"p\"",
        "latency_us=",
        "bytes=",
    ] {
        assert!(detail.contains(want), "{want} in {detail}");
    }
    assert!(!logged.contains("SCT-made-up"), "no raw path: {logged}");
    assert!(!logged.contains(TOKEN), "no token: {logged}");
    assert!(
        lines[1].contains("status=401") && !lines[1].contains("principal=\""),
        "{}",
        lines[1]
    );
}

/// A 500 keeps its cause: the client sees only the code, and the cause is logged once, with
/// the request's id.
#[tokio::test(flavor = "current_thread")]
async fn an_internal_error_is_logged_once_with_its_cause_and_request_id() {
    let (log, _guard) = capture_log();
    let app = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                let io = std::io::Error::other("disk on fire");
                ApiError::internal(crate::store::StoreError::Io(io)).into_response_in(Lang::En)
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(crate::metrics::Metrics::new()),
            access::log,
        ));
    let response = app
        .oneshot(
            Request::get("/boom")
                .header("x-request-id", "req-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("COC.00050000") && !body.contains("fire"),
        "{body}"
    );
    let logged = log.text();
    assert_eq!(logged.matches("disk on fire").count(), 1, "{logged}");
    assert!(
        logged.contains("req-42") && logged.contains("store I/O"),
        "{logged}"
    );
}

/// `/metrics` wants credentials unless open, and reports the projection as it is.
#[tokio::test]
async fn metrics_report_the_projection_and_are_closed_unless_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path()).await;
    let (status, _, body) = call(&s, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = call(&s, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "list and get only: {body}");
    s.metrics_open = true;
    call(&s, "/v1/job/script/orders", Some(TOKEN)).await;
    let response = router(s.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for want in [
        "ticket_ledger_applied_sequence 2",
        "ticket_ledger_tickets 2",
        "ticket_ledger_nats_connected 0",
        "ticket_ledger_http_requests_total{route=\"/v1/job/script/orders\",status=\"200\"} 1",
        "ticket_ledger_http_requests_total{route=\"/metrics\",status=\"401\"} 1",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}
