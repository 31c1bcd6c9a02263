//! Tenants spread over instances: two daemons read the same stream, each holding the projects
//! its `ingest.projects` names. Each serves its own, answers 421 naming the project for the
//! other's, and is ready at the stream's end although the last events are not its own.

use ticket_ledger::core::domain::ProjectId;
use ticket_ledger::core::events::Kind;

use crate::helpers::*;

async fn list(app: &TestApp, project: &str) -> (u16, String) {
    let url = "/v1/job/script/orders?limit=100";
    app.get(
        url,
        &[("X-Auth-Token", TOKEN_AB), ("x-project-id", project)],
    )
    .await
}

#[tokio::test]
async fn instances_holding_disjoint_projects_serve_only_their_own() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let mut events = Vec::new();
    for i in 1..=30u64 {
        let p = if i % 3 == 0 { "proj-b" } else { "proj-a" };
        events.push(created(
            p,
            i,
            1_700_000_000_000 + i as i64,
            "job",
            "alice",
            &format!("u{i}"),
            "r",
        ));
        events.push(ev(p, i, Kind::Started, 1_700_000_000_500 + i as i64));
    }
    // The stream ends with proj-b's events, which the proj-a instance passes over.
    events.push(ev("proj-b", 30, Kind::Finished, 1_700_000_009_000));
    let last = publish(&js, &events).await;

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut sa = settings(&nats.url(), dir_a.path());
    sa.ingest.projects = vec![ProjectId::parse("proj-a").unwrap()];
    let mut sb = settings(&nats.url(), dir_b.path());
    sb.ingest.projects = vec![ProjectId::parse("proj-b").unwrap()];
    let (a, b) = (TestApp::spawn_with(sa).await, TestApp::spawn_with(sb).await);
    a.wait_applied(last).await;
    b.wait_applied(last).await;
    for app in [&a, &b] {
        let (status, body) = app.get("/readyz", &[]).await;
        assert_eq!(status, 200, "ready at the stream's end: {body}");
    }

    let (status, body) = list(&a, "proj-a").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["data"]["total"], 20,
        "proj-a's tickets, all of them: {body}"
    );
    let (status, body) = list(&b, "proj-b").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["data"]["total"], 10, "{body}");
    assert_eq!(page["data"]["data"][0]["status"], "FINISHED", "{body}");

    for (app, other) in [(&a, "proj-b"), (&b, "proj-a")] {
        let (status, body) = list(app, other).await;
        assert_eq!(status, 421, "{body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error_code"], "COC.00042100", "{body}");
        let msg = e["error_msg"].as_str().unwrap();
        assert!(
            msg.contains(other) && msg.contains("ingest.projects"),
            "{msg}"
        );
    }
    // Nothing of the other project was folded: no ticket, no dead letter.
    assert_eq!(a.projection().ticket_count(), 20);
    assert_eq!(b.projection().ticket_count(), 10);
    for app in [&a, &b] {
        let (status, body) = app
            .get("/v1/ledger/dead-letters", &[("X-Auth-Token", TOKEN_ADMIN)])
            .await;
        assert_eq!(status, 200, "{body}");
        let d: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(d["data"]["dead_letters"], serde_json::json!([]), "{body}");
    }
}
