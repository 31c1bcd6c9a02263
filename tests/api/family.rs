//! Contract v1.1 end to end: a plan and its instance events through a real broker, every
//! instance transition and rejection as ingest meets them, the family's routes, and instances
//! kept exact across a restart and a blue/green rebuild.

use std::time::Duration;

use serde_json::{Value, json};
use ticket_ledger::core::batch::{DecodeRules, MemoryProjection, RawMessage};
use ticket_ledger::core::fold::Ticket;
use ticket_ledger::ops::audit::AdminClient;

use crate::helpers::*;

fn cloud(
    kind: &str,
    id: &str,
    t: i64,
    order_id: u64,
    extra: Value,
) -> (String, Vec<u8>, Option<String>) {
    let mut data = json!({"project_id": "proj-a", "order_id": order_id});
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let v = json!({
        "specversion": "1.0", "id": id, "source": "executor", "type": format!("coc.job.script.{kind}"),
        "time": ticket_ledger::core::events::format_time_ms(t), "data": data,
    });
    (
        format!("{PREFIX}.proj-a.{kind}"),
        serde_json::to_vec(&v).unwrap(),
        Some(id.to_owned()),
    )
}

fn created_with_plan(
    order_id: u64,
    batches: &[(u32, std::ops::RangeInclusive<u64>)],
) -> (String, Vec<u8>, Option<String>) {
    let batches: Vec<Value> = batches
        .iter()
        .map(|(b, ids)| {
            json!({"batch_index": b, "rotation_strategy": "CONTINUE",
                   "target_instances": ids.clone().map(|i| json!({"instance_id": i, "resource_id": format!("r{i}")})).collect::<Vec<_>>()})
        })
        .collect();
    cloud(
        "created",
        &format!("c{order_id}"),
        1_000,
        order_id,
        json!({"execute_uuid": format!("U{order_id}"), "order_name": "plan", "creator": "alice",
               "region_ids": "r", "script_uuid": "S1", "script_version_uuid": 3,
               "execute_param": {"timeout": 60, "script_params": [
                   {"param_name": "pw", "param_value": "do-not-store", "param_order": 1, "sensitive": true}]},
               "execute_batches": batches}),
    )
}

fn inst(
    kind: &str,
    id: &str,
    t: i64,
    order_id: u64,
    batch: u32,
    instance: u64,
) -> (String, Vec<u8>, Option<String>) {
    cloud(
        kind,
        id,
        t,
        order_id,
        json!({"batch_index": batch, "instance_id": instance, "message": id}),
    )
}

/// The history: every instance transition, each instance rejection, and a ticket that ends with
/// instances still running.
fn history() -> Vec<(String, Vec<u8>, Option<String>)> {
    let mut m = vec![
        created_with_plan(1, &[(1, 1..=6), (2, 101..=103)]),
        cloud("started", "s1", 1_100, 1, json!({})),
        cloud("batch_started", "b1", 1_200, 1, json!({"batch_index": 1})),
        inst("instance_started", "i1s", 2_000, 1, 1, 1),
        inst("instance_finished", "i1f", 2_500, 1, 1, 1), // PROCESSING -> FINISHED
        inst("instance_abnormal", "i2a", 2_000, 1, 1, 2), // READY -> ABNORMAL
        inst("instance_cancelled", "i2c", 2_100, 1, 1, 2), // ABNORMAL -> CANCELED
        inst("instance_started", "i3s", 2_000, 1, 1, 3),
        inst("instance_abnormal", "i3a", 2_400, 1, 1, 3), // PROCESSING -> ABNORMAL
        inst("instance_cancelled", "i4c", 2_000, 1, 1, 4), // READY -> CANCELED
        inst("instance_started", "i5s", 2_000, 1, 1, 5),
        inst("instance_cancelled", "i5c", 2_300, 1, 1, 5), // PROCESSING -> CANCELED
        inst("instance_started", "i6s", 3_000, 1, 1, 6),
        // Rejections.
        inst("instance_started", "bad-batch", 3_000, 1, 9, 1),
        inst("instance_started", "bad-instance", 3_000, 1, 1, 101),
        inst("instance_finished", "illegal", 3_000, 1, 1, 4),
        inst("instance_finished", "early", 2_999, 1, 1, 6),
        // A duplicate (published again after JetStream's de-duplication window, so without its
        // Nats-Msg-Id here): skipped, not refused.
        {
            let (subject, payload, _) = inst("instance_finished", "i1f", 9_000, 1, 1, 1);
            (subject, payload, None)
        },
        cloud("batch_started", "b9", 3_100, 1, json!({"batch_index": 9})),
        cloud("batch_started", "b2", 3_200, 1, json!({"batch_index": 2})),
        inst("instance_started", "i101s", 3_300, 1, 2, 101),
        // Ticket 2 is cancelled with its instances waiting or running.
        created_with_plan(2, &[(1, 1..=2)]),
        inst("instance_started", "t2s", 2_000, 2, 1, 1),
        cloud("cancelled", "t2c", 5_000, 2, json!({})),
        inst("instance_finished", "t2late", 6_000, 2, 1, 1),
    ];
    // A ticket without a plan has no batch for an instance event.
    m.push(cloud(
        "created",
        "c3",
        1_000,
        3,
        json!({"execute_uuid": "U3", "order_name": "v1", "creator": "bob", "region_ids": "r"}),
    ));
    m.push(inst("instance_started", "t3s", 2_000, 3, 1, 1));
    m
}

fn reference(messages: &[(String, Vec<u8>, Option<String>)]) -> MemoryProjection {
    let raw: Vec<RawMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, (subject, payload, _))| RawMessage {
            seq: i as u64 + 1,
            subject: subject.clone().into(),
            payload: payload.clone().into(),
            redrive_of: None,
            ce_headers: Vec::new(),
        })
        .collect();
    let mut p = MemoryProjection::default();
    p.fold(
        &raw,
        &DecodeRules {
            subject_prefix: PREFIX.into(),
            max_event_bytes: 64 * 1024,
            projects: None,
        },
    );
    p
}

/// Every ticket as sled holds it (after a stop, which writes everything), plans included.
fn stored(app: &TestApp) -> Vec<Ticket> {
    app.projection()
        .store()
        .tickets()
        .map(Result::unwrap)
        .collect()
}

/// Every ticket of `keys` as the daemon serves it now (from its buffer or from sled).
fn served(app: &TestApp, keys: &[u64]) -> Vec<Ticket> {
    let p = ticket_ledger::core::domain::ProjectId::parse("proj-a").unwrap();
    keys.iter()
        .map(|k| app.projection().ticket(&p, *k).unwrap().unwrap())
        .collect()
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let (status, body) = app.get(path, &[("X-Auth-Token", TOKEN_A)]).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn instances_fold_are_served_and_survive_a_restart_and_a_rebuild() {
    let (nats, store, app, js) = start_env().await;
    let messages = history();
    let last = publish_raw(&js, messages.clone()).await;
    app.wait_applied(last).await;
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);

    // Each rejection has its own reason; the duplicate is none.
    let dl = admin.get("/v1/ledger/dead-letters").await.unwrap();
    let codes: Vec<&str> = dl["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "unknown_batch",
            "unknown_instance",
            "illegal_instance_transition",
            "instance_end_before_start",
            "unknown_batch",
            "instance_ticket_closed",
            "unknown_batch"
        ]
    );

    // The batch page shows every transition's result.
    let (status, page) = get(&app, "/v1/job/script/orders/U1/batches/1?limit=100").await;
    assert_eq!(status, 200, "{page}");
    let got: Vec<(u64, &str, Value)> = page["data"]["execute_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().unwrap(),
                i["status"].as_str().unwrap(),
                i["execute_costs"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "FINISHED", json!(500)),
            (2, "CANCELED", Value::Null),
            (3, "ABNORMAL", json!(400)),
            (4, "CANCELED", Value::Null),
            (5, "CANCELED", json!(300)),
            (6, "PROCESSING", Value::Null),
        ]
    );
    let one = &page["data"]["execute_instances"][0];
    assert_eq!(one["message"], "i1f");
    let outcomes: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["applied", "applied", "duplicate"]);
    assert_eq!(one["target_instance"]["resource_id"], "r1");

    // The ticket's end cancelled what still ran or waited.
    let (_, t2) = get(&app, "/v1/job/script/orders/U2/statistics").await;
    let counts: Vec<(String, u64)> = t2["data"]["execute_statistics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instance_status"].as_str().unwrap().to_owned(),
                s["instance_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("READY".into(), 0),
            ("PROCESSING".into(), 0),
            ("ABNORMAL".into(), 0),
            ("CANCELED".into(), 2),
            ("FINISHED".into(), 0)
        ]
    );

    // The info answer: the plan's script, the current batch, the sensitive value masked.
    let (_, info) = get(&app, "/v1/job/script/orders/U1").await;
    let p = &info["data"]["properties"];
    assert_eq!(
        (
            p["script_uuid"].clone(),
            p["script_version_uuid"].clone(),
            p["current_execute_batch_index"].clone()
        ),
        (json!("S1"), json!(3), json!(2))
    );
    assert_eq!(
        p["execute_param"]["script_params"][0]["param_value"],
        "******"
    );
    let (_, v1) = get(&app, "/v1/job/script/orders/U3").await;
    assert_eq!(v1["data"]["properties"]["script_uuid"], Value::Null);
    assert_eq!(v1["data"]["properties"]["region_ids"], "r");
    let (_, none) = get(&app, "/v1/job/script/orders/U3/batches").await;
    assert_eq!(none["data"], json!([]));

    // Errors of the family's routes.
    for (path, status, code) in [
        ("/v1/job/script/orders/U1/batches/7", 404, "COC.00040710"),
        ("/v1/job/script/orders/U1/batches/0", 400, "COC.00040013"),
        ("/v1/job/script/orders/U1/batches/x", 400, "COC.00040013"),
        (
            "/v1/job/script/orders/U1/batches/1?limit=101",
            400,
            "COC.00040001",
        ),
        (
            "/v1/job/script/orders/U1/batches/1?marker=-1",
            400,
            "COC.00040002",
        ),
        (
            "/v1/job/script/orders/U1/batches/1?status=PAUSED",
            400,
            "COC.00040012",
        ),
        ("/v1/job/script/orders/nope/statistics", 404, "COC.00040709"),
    ] {
        let (s, body) = get(&app, path).await;
        assert_eq!(
            (s, body["error_code"].as_str().unwrap_or("")),
            (status, code),
            "{path}: {body}"
        );
    }
    // An operation needs coc:job:operate; a refusal says why.
    let put = |token: &'static str, body: Value| {
        let req = reqwest::Client::new()
            .put(app.url("/v1/job/script/orders/U1/operation"))
            .header("X-Auth-Token", token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, body) = put(TOKEN_A, json!({"operation_type": "CANCEL_ORDER"})).await;
    assert_eq!(
        (s, body["error_code"].clone()),
        (403, json!("COC.00040301"))
    );
    let (s, body) = put(
        TOKEN_ADMIN,
        json!({"operation_type": "CANCEL_INSTANCE", "instance_id": 1}),
    )
    .await;
    assert_eq!(
        (s, body["error_code"].clone()),
        (400, json!("COC.00040025")),
        "{body}"
    );
    let (s, body) = put(TOKEN_ADMIN, json!({"operation_type": "PAUSE_ORDER"})).await;
    assert_eq!((s, body), (200, json!({"data": "U1"})));

    // What the fold of the stream gives is what is stored, plans included.
    let requested = last + 1;
    app.wait_applied(requested).await;
    let t1 = app
        .projection()
        .ticket(
            &ticket_ledger::core::domain::ProjectId::parse("proj-a").unwrap(),
            1,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        t1.history.last().unwrap().note.as_deref(),
        Some("PAUSE_ORDER, requested by admin"),
        "the request reached the ticket's history through the stream"
    );
    let want: Vec<Ticket> = reference(&messages).tickets.into_values().collect();
    let got = served(&app, &[1, 2, 3]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        if g.order_id == 1 {
            let mut g = g.clone();
            g.history.pop();
            assert_eq!(&g, w, "ticket 1 (but for the request)");
        } else {
            assert_eq!(g, w);
        }
    }
    let before = got;
    app.stop().await;

    let app = TestApp::spawn(&nats.url(), store.path()).await;
    assert_eq!(stored(&app), before, "a restart keeps instances exact");
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    admin.post("/v1/ledger/replay", json!({})).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = admin.get("/v1/ledger/replay").await.unwrap();
        if p["phase"] == "done" {
            break;
        }
        assert_ne!(p["phase"], "failed", "{p}");
        assert!(std::time::Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(&app), before, "a rebuild keeps instances exact");
    let report = ticket_ledger::ops::verify::verify(&app.settings, &admin, None)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    app.stop().await;
}

/// `ticket-ledger emit` publishes the v1.1 kinds from flags (and a plan from a file) as the
/// daemon folds them; a flag a kind needs is asked for, and nothing is published without it.
#[tokio::test]
async fn emit_publishes_plans_and_instance_events_from_flags() {
    let (nats, store, app, js) = start_env().await;
    ensure_stream(&js).await;
    let plan = store.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"script_name": "install", "script_version_uuid": 3,
            "execute_batches": [{"batch_index": 1, "rotation_strategy": "PAUSE",
                                 "target_instances": [{"instance_id": 1, "resource_id": "ecs-1"}]}]}"#,
    )
    .unwrap();
    let url = nats.url();
    let emit = move |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                emit_command(&url)
                    .args(["--project", "proj-a", "--order-id", "60"])
                    .args(args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let mut created = args("--kind created --name n --creator c --execute-uuid U60 --plan");
    created.push(plan.display().to_string());
    for a in [
        created,
        args("--kind batch_started --batch-index 1"),
        args("--kind instance_started --batch-index 1 --instance-id 1"),
        args("--kind instance_finished --batch-index 1 --instance-id 1 --message done"),
    ] {
        let out = emit(a.clone()).await;
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = emit(args("--kind instance_started --batch-index 1")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instance-id"));
    app.wait_applied(4).await;
    let (status, page) = get(&app, "/v1/job/script/orders/U60/batches/1").await;
    assert_eq!(status, 200, "{page}");
    let i = &page["data"]["execute_instances"][0];
    assert_eq!(
        (i["id"].clone(), i["status"].clone(), i["message"].clone()),
        (json!(1), json!("FINISHED"), json!("done"))
    );
    let (_, info) = get(&app, "/v1/job/script/orders/U60").await;
    assert_eq!(info["data"]["properties"]["script_name"], "install");
    assert_eq!(info["data"]["properties"]["current_execute_batch_index"], 1);
    assert_eq!(
        app.projection().applied_seq(),
        4,
        "the refused emit published nothing"
    );
}
