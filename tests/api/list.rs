//! The list endpoint over HTTP: filters, keyset paging, totals, errors and tenancy, checked
//! against a reference computed in the test from the events it published.

use serde_json::Value;
use ticket_ledger::core::events::{Event, Kind};

use crate::helpers::*;

/// What the test expects a ticket to look like, computed from the events it chose.
#[derive(Clone, Debug)]
struct Expected {
    order_id: u64,
    name: String,
    creator: String,
    created: i64,
    status: &'static str,
    finished: Option<i64>,
}

/// A deterministic mix of tickets in proj-a (and noise in proj-b).
fn history() -> (Vec<Event>, Vec<Expected>) {
    let names = [
        "Deploy Nginx",
        "patch_730",
        "Rotate KEYS",
        "backup-db",
        "deploy cache",
    ];
    let creators = ["alice", "bob", "carol"];
    let mut events = Vec::new();
    let mut expected = Vec::new();
    let mut seed: u64 = 42;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for order_id in 1..=60u64 {
        let created = 1_700_000_000_000 + order_id as i64 * 60_000;
        let name = format!("{} #{order_id}", names[rnd(5) as usize]);
        let creator = creators[rnd(3) as usize].to_owned();
        events.push(created_ev("proj-a", order_id, created, &name, &creator));
        let (status, finished) = match rnd(6) {
            0 => ("READY", None),
            1 => {
                events.push(ev("proj-a", order_id, Kind::Started, created + 10));
                ("PROCESSING", None)
            }
            2 => {
                events.push(ev("proj-a", order_id, Kind::Started, created + 10));
                events.push(ev("proj-a", order_id, Kind::Abnormal, created + 20));
                ("ABNORMAL", None)
            }
            3 => {
                events.push(ev("proj-a", order_id, Kind::Paused, created + 10));
                ("PAUSED", None)
            }
            4 => {
                events.push(ev("proj-a", order_id, Kind::Cancelled, created + 30));
                ("CANCELED", Some(created + 30))
            }
            _ => {
                events.push(ev("proj-a", order_id, Kind::Started, created + 10));
                events.push(ev("proj-a", order_id, Kind::Finished, created + 5_000));
                ("FINISHED", Some(created + 5_000))
            }
        };
        expected.push(Expected {
            order_id,
            name,
            creator,
            created,
            status,
            finished,
        });
        // Another tenant's ticket with the same order ids, creators and names.
        events.push(created_ev(
            "proj-b",
            order_id,
            created,
            &expected.last().unwrap().name,
            "alice",
        ));
    }
    (events, expected)
}

fn created_ev(p: &str, order_id: u64, t: i64, name: &str, creator: &str) -> Event {
    created(
        p,
        order_id,
        t,
        name,
        creator,
        &format!("SCT{p}{order_id}"),
        "cn-north-4",
    )
}

fn ids(page: &Value) -> Vec<u64> {
    page["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order_id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn filters_totals_and_marker_paging_match_the_reference() {
    let (_nats, _store, app, js) = start_env().await;
    let (events, expected) = history();
    let last = publish(&js, &events).await;
    app.wait_applied(last).await;

    let t0 = 1_700_000_000_000i64;
    type Filter = Box<dyn Fn(&Expected) -> bool>;
    let cases: Vec<(String, Filter)> = vec![
        (String::new(), Box::new(|_| true)),
        ("creator=bob".into(), Box::new(|e| e.creator == "bob")),
        (
            "status=FINISHED".into(),
            Box::new(|e| e.status == "FINISHED"),
        ),
        ("status=READY".into(), Box::new(|e| e.status == "READY")),
        (
            "creator=alice&status=CANCELED".into(),
            Box::new(|e| e.creator == "alice" && e.status == "CANCELED"),
        ),
        (
            format!("start_time={}&end_time={}", t0 + 600_000, t0 + 1_800_000),
            Box::new(move |e| e.created >= t0 + 600_000 && e.created <= t0 + 1_800_000),
        ),
        (
            format!("start_time={}", t0 + 3_000_000),
            Box::new(move |e| e.created >= t0 + 3_000_000),
        ),
        (
            format!("end_time={}", t0 + 600_000),
            Box::new(move |e| e.created <= t0 + 600_000),
        ),
        (
            "name_like=DEPLOY".into(),
            Box::new(|e| e.name.to_lowercase().contains("deploy")),
        ),
        ("name_like=%23".into(), Box::new(|e| e.name.contains('#'))),
        (
            format!(
                "creator=carol&status=PAUSED&name_like=e&start_time={}&end_time={}",
                t0,
                t0 + 2_400_000
            ),
            Box::new(move |e| {
                e.creator == "carol"
                    && e.status == "PAUSED"
                    && e.name.to_lowercase().contains('e')
                    && e.created <= t0 + 2_400_000
            }),
        ),
        ("creator=nobody".into(), Box::new(|e| e.creator == "nobody")),
    ];
    for (query, filter) in &cases {
        let want: Vec<&Expected> = expected.iter().rev().filter(|e| filter(e)).collect();
        // Walk every page with limit 7 and the marker from each page's last row.
        let mut got = Vec::new();
        let mut marker: Option<u64> = None;
        loop {
            let mut q = format!("?limit=7&{query}");
            if let Some(m) = marker {
                q.push_str(&format!("&marker={m}"));
            }
            let page = app.list(&q).await;
            assert_eq!(page["data"]["total"], want.len(), "total of {query:?}");
            let rows = page["data"]["data"].as_array().unwrap().clone();
            assert!(rows.len() <= 7);
            if rows.is_empty() {
                break;
            }
            marker = rows.last().unwrap()["order_id"].as_u64();
            got.extend(rows);
        }
        let got_ids: Vec<u64> = got
            .iter()
            .map(|r| r["order_id"].as_u64().unwrap())
            .collect();
        let want_ids: Vec<u64> = want.iter().map(|e| e.order_id).collect();
        assert_eq!(got_ids, want_ids, "rows of {query:?}");
        for (row, e) in got.iter().zip(&want) {
            assert_eq!(row["order_name"], e.name.as_str());
            assert_eq!(row["creator"], e.creator.as_str());
            assert_eq!(row["status"], e.status);
            assert_eq!(row["gmt_created"], e.created);
            assert_eq!(row["gmt_finished"].as_i64(), e.finished);
            assert_eq!(
                row["execute_costs"].as_i64(),
                e.finished.map(|f| f - e.created)
            );
            assert_eq!(row["execute_uuid"], format!("SCTproj-a{}", e.order_id));
            assert_eq!(row["properties"]["region_ids"], "cn-north-4");
        }
    }

    // Default limit is 10; the first page is the newest.
    let page = app.list("").await;
    assert_eq!(ids(&page), (51..=60).rev().collect::<Vec<_>>());
    assert_eq!(ids(&app.list("?limit=100").await).len(), 60);
    assert!(ids(&app.list("?marker=1").await).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_huawei_shaped_4xx_in_the_requested_language() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let a = [("X-Auth-Token", TOKEN_A)];
    let long = "x".repeat(129);
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("limit=0".into(), a.to_vec(), 400, "COC.00040001"),
        ("limit=101".into(), a.to_vec(), 400, "COC.00040001"),
        ("limit=ten".into(), a.to_vec(), 400, "COC.00040001"),
        ("limit=1.5".into(), a.to_vec(), 400, "COC.00040001"),
        ("limit=".into(), a.to_vec(), 400, "COC.00040001"),
        ("marker=-1".into(), a.to_vec(), 400, "COC.00040002"),
        (
            "marker=99999999999999999999999".into(),
            a.to_vec(),
            400,
            "COC.00040002",
        ),
        ("status=DONE".into(), a.to_vec(), 400, "COC.00040003"),
        ("status=finished".into(), a.to_vec(), 400, "COC.00040003"),
        (
            "start_time=5&end_time=4".into(),
            a.to_vec(),
            400,
            "COC.00040004",
        ),
        ("start_time=1e3".into(), a.to_vec(), 400, "COC.00040004"),
        ("end_time=-1".into(), a.to_vec(), 400, "COC.00040004"),
        ("creator=".into(), a.to_vec(), 400, "COC.00040005"),
        (format!("name_like={long}"), a.to_vec(), 400, "COC.00040006"),
        ("limit=1&limit=2".into(), a.to_vec(), 400, "COC.00040007"),
        ("name_like=%FF%FE".into(), a.to_vec(), 400, "COC.00040007"),
        (
            String::new(),
            vec![("X-Auth-Token", TOKEN_A), ("x-project-id", "a.b")],
            400,
            "COC.00040008",
        ),
        (
            String::new(),
            vec![("X-Auth-Token", TOKEN_AB)],
            400,
            "COC.00040009",
        ),
        (String::new(), vec![], 401, "COC.00040100"),
        (
            String::new(),
            vec![("X-Auth-Token", "")],
            401,
            "COC.00040100",
        ),
        (
            String::new(),
            vec![("X-Auth-Token", "forged")],
            401,
            "COC.00040101",
        ),
        (
            String::new(),
            vec![("X-Auth-Token", TOKEN_A), ("x-project-id", "proj-b")],
            403,
            "COC.00040300",
        ),
        (
            String::new(),
            vec![("X-Auth-Token", TOKEN_NO_ACTION)],
            403,
            "COC.00040301",
        ),
    ];
    for (query, headers, status, code) in &cases {
        let path = format!("/v1/job/script/orders?{query}");
        for lang in [None, Some("zh-cn")] {
            let mut h = headers.clone();
            if let Some(l) = lang {
                h.push(("X-Language", l));
            }
            let (got, body) = app.get(&path, &h).await;
            assert_eq!(got, *status, "{query:?} {headers:?}: {body}");
            let v: Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(v["error_code"], *code, "{query:?}: {body}");
            let msg = v["error_msg"].as_str().unwrap();
            let chinese = msg.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
            assert_eq!(chinese, lang.is_some(), "language of {msg:?}");
        }
    }
    let (status, body) = app.get("/v1/nope", &a).await;
    assert_eq!((status, body.contains("COC.00040400")), (404, true));
    let resp = app
        .http
        .delete(app.url("/v1/job/script/orders"))
        .header("X-Auth-Token", TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.text().await.unwrap().contains("COC.00040500"));
    app.stop().await;
}

#[tokio::test]
async fn a_request_sees_only_its_projects_tickets() {
    let (_nats, _store, app, js) = start_env().await;
    let last = publish(
        &js,
        &[
            created_ev("proj-a", 1, 1_000, "mine", "alice"),
            created_ev("proj-b", 2, 2_000, "theirs", "alice"),
            created_ev("proj-c", 3, 3_000, "nobody's", "alice"),
        ],
    )
    .await;
    app.wait_applied(last).await;
    let get = |token: &'static str, project: Option<&'static str>| {
        let app = &app;
        async move {
            let mut h = vec![
                ("X-Auth-Token", token),
                ("x-user-profile", "{\"user\":\"x\"}"),
            ];
            if let Some(p) = project {
                h.push(("x-project-id", p));
            }
            let (status, body) = app.get("/v1/job/script/orders?creator=alice", &h).await;
            (status, serde_json::from_str::<Value>(&body).unwrap())
        }
    };
    let (s, v) = get(TOKEN_A, None).await;
    assert_eq!((s, ids(&v)), (200, vec![1]));
    let (s, v) = get(TOKEN_AB, Some("proj-b")).await;
    assert_eq!((s, ids(&v)), (200, vec![2]));
    assert_eq!(v["data"]["total"], 1);
    let (s, _) = get(TOKEN_A, Some("proj-b")).await;
    assert_eq!(s, 403);
    let (s, _) = get(TOKEN_AB, Some("proj-c")).await;
    assert_eq!(s, 403);
    app.stop().await;
}
