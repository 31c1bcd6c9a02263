//! Audit: ticket history, dead letters and redrive, blue/green rebuild, verify.

use std::time::Duration;

use serde_json::Value;
use ticket_ledger::core::events::Kind;
use ticket_ledger::ops::audit::{self, AdminClient};

use crate::helpers::*;

#[tokio::test]
async fn a_tickets_history_lists_every_event_with_its_outcome() {
    let (_nats, _store, app, js) = start_env().await;
    let c = created("proj-a", 5, 1_000, "five", "alice", "SCT-5", "r");
    let s = ev("proj-a", 5, Kind::Started, 2_000);
    let bad = ev("proj-a", 5, Kind::Resumed, 2_500);
    let mut msgs: Vec<_> = [&c, &s, &bad]
        .iter()
        .map(|e| (e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string())))
        .collect();
    msgs.push((s.subject(PREFIX), s.to_bytes(), None)); // redelivered copy
    msgs.push({
        let other = created("proj-b", 5, 1_000, "theirs", "bob", "SCT-B5", "r");
        (other.subject(PREFIX), other.to_bytes(), None)
    });
    let last = publish_raw(&js, msgs).await;
    app.wait_applied(last).await;

    let (status, body) = app
        .get("/v1/job/script/orders/SCT-5", &[("X-Auth-Token", TOKEN_A)])
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let t = &v["data"];
    assert_eq!(t["order_id"], 5);
    assert_eq!(t["status"], "PROCESSING");
    let events = t["events"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["type"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "coc.job.script.created", "applied"),
            (2, "coc.job.script.started", "applied"),
            (3, "coc.job.script.resumed", "rejected"),
            (4, "coc.job.script.started", "duplicate"),
        ]
    );
    assert_eq!(events[0]["id"], c.id.as_str());
    assert_eq!(events[0]["time"], "1970-01-01T00:00:01.000Z");
    assert_eq!(events[0]["source"], "test-executor");
    assert_eq!(events[2]["reason_code"], "illegal_transition");

    // Unknown uuid, and another tenant's uuid: the same 404.
    for uuid in ["nope", "SCT-B5"] {
        let (status, body) = app
            .get(
                &format!("/v1/job/script/orders/{uuid}"),
                &[("X-Auth-Token", TOKEN_A)],
            )
            .await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("COC.00040709"), "{body}");
    }
    let (status, body) = app
        .get("/v1/job/script/orders/%FF%FE", &[("X-Auth-Token", TOKEN_A)])
        .await;
    assert_eq!(
        (status, body.contains("COC.00040007")),
        (400, true),
        "{body}"
    );
    // A token without coc:job:get.
    let (status, _) = app
        .get(
            "/v1/job/script/orders/SCT-5",
            &[("X-Auth-Token", TOKEN_NO_ACTION)],
        )
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_once_the_cause_is_fixed() {
    let (_nats, _store, app, js) = start_env().await;
    // The executor's `started` overtook its `created`.
    let started = ev("proj-a", 7, Kind::Started, 2_000);
    let last = publish(&js, std::slice::from_ref(&started)).await;
    app.wait_applied(last).await;
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let dl = admin.get("/v1/ledger/dead-letters").await.unwrap();
    assert_eq!(dl["pending_by_reason"]["unknown_ticket"], 1);
    let items = dl["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["seq"], 1);
    assert_eq!(items[0]["code"], "unknown_ticket");
    assert_eq!(
        items[0]["payload"].as_str().unwrap().as_bytes(),
        started.to_bytes().as_slice()
    );
    // Non-admin tokens are refused.
    let (status, _) = app
        .get("/v1/ledger/dead-letters", &[("X-Auth-Token", TOKEN_A)])
        .await;
    assert_eq!(status, 403);

    let last = publish(
        &js,
        &[created("proj-a", 7, 1_000, "seven", "al", "SCT-7", "r")],
    )
    .await;
    app.wait_applied(last).await;
    audit::redrive(&admin, &[]).await.unwrap();
    app.wait_applied(last + 1).await;

    let page = app.list("").await;
    assert_eq!(page["data"]["data"][0]["status"], "PROCESSING");
    let dl = admin.get("/v1/ledger/dead-letters?all=true").await.unwrap();
    assert_eq!(dl["dead_letters"][0]["redriven_by"], last + 1);
    let pending = admin.get("/v1/ledger/dead-letters").await.unwrap();
    assert!(pending["dead_letters"].as_array().unwrap().is_empty());

    // The redrive is part of the stream, so the projection is still its pure function.
    let report = ticket_ledger::ops::verify::verify(&app.settings, &admin, None)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.tickets, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_switches_over_while_the_api_keeps_answering() {
    let (nats, store, app, js) = start_env().await;
    let mut events = Vec::new();
    for i in 1..=3_000u64 {
        let t = 1_000_000 + i as i64;
        events.push(created("proj-a", i, t, "n", "alice", &format!("u{i}"), "r"));
        events.push(ev("proj-a", i, Kind::Started, t + 1));
        if i % 2 == 0 {
            events.push(ev("proj-a", i, Kind::Finished, t + 50));
        }
    }
    let last = publish(&js, &events).await;
    app.wait_applied(last).await;
    let before = app.projection().ticket_count();
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);

    let started = admin
        .post("/v1/ledger/replay", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(started["phase"], "running");
    // A second rebuild while one runs is refused.
    let again = admin.post("/v1/ledger/replay", serde_json::json!({})).await;
    // (It may already have finished on a fast machine; then it starts a new one.)
    if let Err(e) = &again {
        assert!(e.to_string().contains("COC.00040901"), "{e}");
    }
    // Events keep arriving and the API keeps answering during the rebuild.
    let more = publish(
        &js,
        &[created(
            "proj-a", 9_999, 5_000_000, "late", "bob", "u-late", "r",
        )],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = app.list("?limit=1").await;
        assert!(page["data"]["total"].as_u64().unwrap() >= 3_000);
        let p = admin.get("/v1/ledger/replay").await.unwrap();
        if p["phase"] == "done" {
            break;
        }
        assert_ne!(p["phase"], "failed", "{p}");
        assert!(
            std::time::Instant::now() < deadline,
            "rebuild did not finish: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_applied(more).await;
    let page = app.list("").await;
    assert_eq!(page["data"]["total"], 3_001);
    assert_eq!(page["data"]["data"][0]["order_id"], 9_999);
    assert_eq!(app.projection().ticket_count(), before + 1);
    let current = std::fs::read_to_string(store.path().join("CURRENT")).unwrap();
    assert_ne!(current.trim(), "gen-000001", "a new generation is live");
    let report = ticket_ledger::ops::verify::verify(&app.settings, &admin, None)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.tickets, 3_001);
    app.stop().await;

    // The switch survives a restart.
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    assert_eq!(app.projection().ticket_count(), 3_001);
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_refuses_a_stream_whose_start_was_dropped() {
    let (_nats, _store, app, js) = start_env().await;
    let last = publish(
        &js,
        &[
            created("proj-a", 1, 1_000, "one", "al", "u1", "r"),
            created("proj-a", 2, 2_000, "two", "al", "u2", "r"),
        ],
    )
    .await;
    app.wait_applied(last).await;
    let stream = js.get_stream("COC_JOB_EVENTS").await.unwrap();
    stream.delete_message(1).await.unwrap();
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let err = admin
        .post("/v1/ledger/replay", serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("COC.00040902"), "{err}");
    assert!(err.to_string().contains("accept_partial"), "{err}");
    let ok = admin
        .post(
            "/v1/ledger/replay?accept_partial=true",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(ok["phase"], "running");
    app.stop().await;
}
