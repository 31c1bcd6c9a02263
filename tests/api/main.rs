//! Integration tests: real nats-server, real sled, real HTTP.

mod audit;
mod binary;
mod cluster;
mod crash;
mod disk;
mod family;
mod helpers;
mod list;
mod metrics;
mod repair;
mod scale;
mod secure;
mod signing;
mod verify;

use async_nats::jetstream;
use helpers::*;
use std::sync::Arc;
use std::time::Duration;
use ticket_ledger::core::events::Kind;

/// The events behind the spec's example page: five tickets, 74 to 70, with the example's times,
/// statuses, names and uuids. The page must come back exactly as the spec prints it, with a
/// total equal to the number of tickets published.
#[tokio::test]
async fn the_spec_example_page_comes_back_exactly() {
    let (_nats, _store, app, js) = start_env().await;
    let who = "xxxxxxxxxxxcontainer1";
    let p = "proj-a";
    let events = vec![
        created(
            p,
            70,
            1689751168547,
            "111",
            who,
            "SCT2023071915xxxxxxxxxxxxx",
            "***",
        ),
        ev(p, 70, Kind::Started, 1689751169000),
        ev(p, 70, Kind::Abnormal, 1689751170000),
        created(
            p,
            71,
            1689753553241,
            "patch_730",
            who,
            "SCT2023071915xxxxxxxxxxxxx",
            "***",
        ),
        ev(p, 71, Kind::Started, 1689753554000),
        ev(p, 71, Kind::Finished, 1689753579363),
        created(
            p,
            72,
            1690017490247,
            "xxx",
            who,
            "SCT2023072217181xxxxxxxxxx",
            "***",
        ),
        ev(p, 72, Kind::Abnormal, 1690017499000),
        created(
            p,
            73,
            1690168434460,
            "071201",
            who,
            "SCT2023072411xxxxxxxxxxxxx",
            "***",
        ),
        ev(p, 73, Kind::Started, 1690168435000),
        ev(p, 73, Kind::Finished, 1690168443277),
        created(
            p,
            74,
            1690200829451,
            "071201",
            who,
            "SCT20230724201xxxxxxxxxxxx",
            "***",
        ),
        ev(p, 74, Kind::Started, 1690200830000),
        ev(p, 74, Kind::Paused, 1690200840000),
        ev(p, 74, Kind::Cancelled, 1690200850293),
    ];
    let last = publish(&js, &events).await;
    app.wait_applied(last).await;
    let (status, body) = app
        .get("/v1/job/script/orders", &[("X-Auth-Token", TOKEN_A)])
        .await;
    assert_eq!(status, 200);
    let expected = concat!(
        r#"{"data":{"total":5,"data":["#,
        r#"{"order_id":74,"order_name":"071201","execute_uuid":"SCT20230724201xxxxxxxxxxxx","gmt_created":1690200829451,"gmt_finished":1690200850293,"execute_costs":20842,"creator":"xxxxxxxxxxxcontainer1","status":"CANCELED","properties":{"region_ids":"***"}},"#,
        r#"{"order_id":73,"order_name":"071201","execute_uuid":"SCT2023072411xxxxxxxxxxxxx","gmt_created":1690168434460,"gmt_finished":1690168443277,"execute_costs":8817,"creator":"xxxxxxxxxxxcontainer1","status":"FINISHED","properties":{"region_ids":"***"}},"#,
        r#"{"order_id":72,"order_name":"xxx","execute_uuid":"SCT2023072217181xxxxxxxxxx","gmt_created":1690017490247,"gmt_finished":null,"execute_costs":null,"creator":"xxxxxxxxxxxcontainer1","status":"ABNORMAL","properties":{"region_ids":"***"}},"#,
        r#"{"order_id":71,"order_name":"patch_730","execute_uuid":"SCT2023071915xxxxxxxxxxxxx","gmt_created":1689753553241,"gmt_finished":1689753579363,"execute_costs":26122,"creator":"xxxxxxxxxxxcontainer1","status":"FINISHED","properties":{"region_ids":"***"}},"#,
        r#"{"order_id":70,"order_name":"111","execute_uuid":"SCT2023071915xxxxxxxxxxxxx","gmt_created":1689751168547,"gmt_finished":null,"execute_costs":null,"creator":"xxxxxxxxxxxcontainer1","status":"ABNORMAL","properties":{"region_ids":"***"}}"#,
        r#"]}}"#
    );
    assert_eq!(body, expected);
    app.stop().await;
}

/// Malformed JSON, wrong types, unknown kinds, illegal transitions, oversized payloads and
/// duplicates, mixed into good events: ingestion never stops, each bad one is dead-lettered with
/// its reason, each good one is applied.
#[tokio::test]
async fn bad_events_are_dead_lettered_and_never_stop_ingestion() {
    let (_nats, _store, app, js) = start_env().await;
    let p = "proj-a";
    let good = |e: &ticket_ledger::core::events::Event| {
        (e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string()))
    };
    let c1 = created(p, 1, 1_000, "one", "alice", "u1", "r");
    let s1 = ev(p, 1, Kind::Started, 2_000);
    let mut wrong_type = ev(p, 1, Kind::Paused, 2_500).to_json();
    wrong_type["data"]["order_id"] = serde_json::json!("1");
    let mut unknown_kind = ev(p, 1, Kind::Paused, 2_500).to_json();
    unknown_kind["type"] = serde_json::json!("coc.job.script.exploded");
    let mut oversized = created(p, 2, 1_000, "big", "bob", "u2", "r").to_json();
    oversized["data"]["padding"] = serde_json::json!("x".repeat(70_000));
    let f1 = ev(p, 1, Kind::Finished, 3_000);
    let late = ev(p, 1, Kind::Started, 4_000); // illegal: ticket 1 is FINISHED
    let orphan = ev(p, 9, Kind::Started, 4_000); // unknown ticket
    let c3 = created(p, 3, 5_000, "three", "carol", "u3", "r");
    let messages = vec![
        good(&c1),
        (format!("{PREFIX}.{p}.started"), b"{not json".to_vec(), None),
        good(&s1),
        (
            format!("{PREFIX}.{p}.paused"),
            serde_json::to_vec(&wrong_type).unwrap(),
            None,
        ),
        (
            format!("{PREFIX}.{p}.paused"),
            serde_json::to_vec(&unknown_kind).unwrap(),
            None,
        ),
        (
            format!("{PREFIX}.{p}.created"),
            serde_json::to_vec(&oversized).unwrap(),
            None,
        ),
        good(&f1),
        // the same event again, without Nats-Msg-Id so JetStream keeps it: a duplicate
        (s1.subject(PREFIX), s1.to_bytes(), None),
        good(&late),
        good(&orphan),
        (format!("{PREFIX}.proj-b.created"), c3.to_bytes(), None), // subject names another project
        good(&c3),
    ];
    let last = publish_raw(&js, messages).await;
    assert_eq!(last, 12);
    app.wait_applied(last).await;
    // Dead letters are read from sled itself here: write what is buffered first.
    app.ledger.persist().unwrap();

    let dead: Vec<(u64, String)> = app
        .projection()
        .store()
        .dead_letters()
        .map(|d| d.map(|d| (d.seq, d.code)).unwrap())
        .collect();
    let want: Vec<(u64, String)> = [
        (2, "malformed_json"),
        (4, "invalid_data"),
        (5, "unknown_kind"),
        (6, "oversized"),
        (9, "ticket_closed"),
        (10, "unknown_ticket"),
        (11, "subject_mismatch"),
    ]
    .iter()
    .map(|(s, c)| (*s, c.to_string()))
    .collect();
    assert_eq!(dead, want);
    let first = app
        .projection()
        .store()
        .dead_letters()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, b"{not json", "the raw bytes are kept");

    let page = app.list("").await;
    assert_eq!(page["data"]["total"], 2);
    let rows = page["data"]["data"].as_array().unwrap();
    assert_eq!(rows[0]["order_id"], 3);
    assert_eq!(rows[0]["status"], "READY");
    assert_eq!(rows[1]["order_id"], 1);
    assert_eq!(rows[1]["status"], "FINISHED");
    assert_eq!(rows[1]["execute_costs"], 2_000);

    let t1 = app
        .projection()
        .ticket(&"proj-a".parse_project(), 1)
        .unwrap()
        .unwrap();
    let outcomes: Vec<String> = t1
        .history
        .iter()
        .map(|h| {
            serde_json::to_value(&h.outcome).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        outcomes,
        ["applied", "applied", "applied", "duplicate", "rejected"]
    );
    app.stop().await;
}

/// A daemon stopped and started again resumes right after its stored position: events published
/// while it was down are applied, nothing is applied twice.
#[tokio::test]
async fn a_restarted_daemon_resumes_after_its_stored_position() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let p = "proj-a";
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let last = publish(&js, &[created(p, 1, 1_000, "one", "alice", "u1", "r")]).await;
    app.wait_applied(last).await;
    app.stop().await;

    let last = publish(
        &js,
        &[
            ev(p, 1, Kind::Started, 2_000),
            created(p, 2, 3_000, "two", "bob", "u2", "r"),
        ],
    )
    .await;
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    assert_eq!(
        app.projection().ticket_count(),
        1,
        "view rebuilt from the store"
    );
    app.wait_applied(last).await;
    let page = app.list("").await;
    assert_eq!(page["data"]["total"], 2);
    assert_eq!(page["data"]["data"][1]["status"], "PROCESSING");
    let t1 = app
        .projection()
        .ticket(&"proj-a".parse_project(), 1)
        .unwrap()
        .unwrap();
    assert_eq!(t1.history.len(), 2, "each event recorded once");
    app.stop().await;
}

/// Stopping the broker does not stop the API; when it comes back the daemon reconnects by itself
/// and catches up.
#[tokio::test]
async fn the_api_answers_while_nats_is_away_and_ingest_catches_up() {
    let mut nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let p = "proj-a";
    let js = nats.jetstream().await;
    let last = publish(&js, &[created(p, 1, 1_000, "one", "alice", "u1", "r")]).await;
    app.wait_applied(last).await;

    nats.stop();
    let page = app.list("").await;
    assert_eq!(page["data"]["total"], 1, "served from the projection");
    nats.start_again();

    let js = nats.jetstream().await;
    let last = publish(&js, &[created(p, 2, 2_000, "two", "bob", "u2", "r")]).await;
    app.wait_applied(last).await;
    assert_eq!(app.list("").await["data"]["total"], 2);
    app.stop().await;
}

trait ParseProject {
    fn parse_project(&self) -> ticket_ledger::core::domain::ProjectId;
}

impl ParseProject for str {
    fn parse_project(&self) -> ticket_ledger::core::domain::ProjectId {
        ticket_ledger::core::domain::ProjectId::parse(self).unwrap()
    }
}

/// A reader held back so long that the client drops deliveries (a subscription that buffers 200
/// messages, a pause after the first batch) still passes every event on exactly once and in stream
/// order: it sees each gap in the consumer sequence and starts a new consumer after the last
/// sequence it passed on.
#[tokio::test]
async fn the_reader_passes_every_event_on_once_even_when_the_client_drops_deliveries() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let events: Vec<_> = (1..=3_000u64)
        .map(|i| created("proj-a", i, 1_700_000_000_000, "n", "c", "u", "r"))
        .collect();
    let last = publish(&js, &events).await;
    assert_eq!(last, 3_000);
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(200)
        .event_callback(move |e| {
            let seen = seen.clone();
            async move {
                if matches!(e, async_nats::Event::SlowConsumer(_)) {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    let mut settings = ticket_ledger::config::Settings::defaults();
    // The client library's subscription is the one that can drop deliveries.
    settings.nats.own_reader = false;
    let status = Arc::new(ticket_ledger::nats::BrokerStatus::default());
    let mut batches = read_from_start(&client, &settings.nats, status.clone(), 100).await;
    let mut seqs = Vec::new();
    while seqs.len() < 3_000 {
        let batch = next_batch(&mut batches).await;
        assert!(batch.iter().all(|d| d.event.is_ok()));
        if seqs.is_empty() {
            // Hold the reader back until the client has dropped deliveries (polled to a
            // deadline), so that the gap is there to be seen whatever the machine's speed.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while dropped.load(Ordering::Relaxed) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the client never dropped a delivery: the test cannot exercise a gap"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        seqs.extend(batch.iter().map(|d| d.raw.seq));
    }
    assert_eq!(seqs, (1..=3_000).collect::<Vec<u64>>());
    assert!(
        dropped.load(Ordering::Relaxed) > 0,
        "the client never dropped a delivery: the test did not exercise a gap"
    );
    let restarts: u64 = status.consumer_restarts().iter().map(|(_, n)| n).sum();
    assert!(
        restarts > 0,
        "each gap restarts the consumer, and is counted"
    );
}

/// A consumer that delivers nothing while the stream's end is ahead of it (what a consumer on a
/// stream replica left short does: its heartbeats agree with what it sent) is re-created within
/// seconds and counted, and the reader goes on exactly where it was. The stream's end the
/// reader compares with is the one ingest learns from `stream info`; here it is set ahead of
/// what the broker holds, as that replica's leader would report it.
#[tokio::test]
async fn a_reader_that_stops_receiving_behind_the_streams_end_starts_its_consumer_again() {
    use ticket_ledger::nats::Restart;
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let events: Vec<_> = (1..=150u64)
        .map(|i| created("proj-a", i, 1_700_000_000_000, "n", "c", "u", "r"))
        .collect();
    assert_eq!(publish(&js, &events[..100]).await, 100);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut settings = ticket_ledger::config::Settings::defaults();
    settings.nats.url = nats.url();
    let status = Arc::new(ticket_ledger::nats::BrokerStatus::default());
    let mut batches = read_from_start(&client, &settings.nats, status.clone(), 1_000).await;
    let mut seqs = Vec::new();
    while seqs.len() < 100 {
        seqs.extend(next_batch(&mut batches).await.iter().map(|d| d.raw.seq));
    }
    let stalled = || {
        status
            .consumer_restarts()
            .iter()
            .find(|(r, _)| *r == Restart::Stalled)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(stalled(), 0, "a reader in step is left alone");
    status.set(true, Some(150));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stalled() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no restart of a consumer that delivers nothing behind the stream's end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(&js, &events[100..]).await;
    while seqs.len() < 150 {
        seqs.extend(next_batch(&mut batches).await.iter().map(|d| d.raw.seq));
    }
    assert_eq!(seqs, (1..=150).collect::<Vec<u64>>());
}

/// The reader's own connection (`nats.own_reader`, the default) passes a stream of tens of MiB
/// on exactly once and in order, to a receiver that holds it back: more than the consumer's
/// flow-control window, so the server waits for the reader's flow-control answers on the way.
/// Events come with headers (`HMSG`), the filler without (`MSG`); both are passed on.
#[tokio::test]
async fn the_own_reader_passes_a_large_stream_on_once_and_in_order() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let filler = vec![b'x'; 2_000];
    let raw: Vec<(String, Vec<u8>, Option<String>)> = (1..=20_000u64)
        .map(|i| {
            if i % 10 == 0 {
                let e = created("proj-a", i, 1_700_000_000_000, "n", "c", "u", "r");
                (e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string()))
            } else {
                (format!("{PREFIX}.proj-a.filler"), filler.clone(), None)
            }
        })
        .collect();
    assert_eq!(publish_raw(&js, raw).await, 20_000);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut settings = ticket_ledger::config::Settings::defaults();
    settings.nats.url = nats.url();
    assert!(settings.nats.own_reader);
    let status = Arc::new(ticket_ledger::nats::BrokerStatus::default());
    let mut batches = read_from_start(&client, &settings.nats, status, 1_000).await;
    let (mut seqs, mut events) = (Vec::new(), Vec::new());
    while seqs.len() < 20_000 {
        let batch = next_batch(&mut batches).await;
        if seqs.len() < 5_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for d in batch {
            seqs.push(d.raw.seq);
            if let Ok(e) = d.event {
                events.push(e.order_id);
            } else {
                assert_eq!(d.raw.payload.len(), 2_000);
            }
        }
    }
    assert_eq!(seqs, (1..=20_000).collect::<Vec<u64>>());
    assert_eq!(events, (1..=2_000).map(|i| i * 10).collect::<Vec<u64>>());
}

/// What `nats::read_batches` hands out.
type Batches =
    tokio::sync::mpsc::Receiver<anyhow::Result<Vec<ticket_ledger::core::batch::Decoded>>>;

/// The daemon's stream reader (`nats::read_batches`) from the start of the test stream, in
/// batches of at most `batch_size`, decoding with the tests' subject prefix.
async fn read_from_start(
    client: &async_nats::Client,
    nats: &ticket_ledger::config::NatsSettings,
    status: Arc<ticket_ledger::nats::BrokerStatus>,
    batch_size: usize,
) -> Batches {
    let stream = jetstream::new(client.clone())
        .get_stream(&nats.stream)
        .await
        .unwrap();
    let rules = ticket_ledger::core::batch::DecodeRules {
        subject_prefix: PREFIX.into(),
        max_event_bytes: 64 * 1024,
        projects: None,
    };
    ticket_ledger::nats::read_batches(client, &stream, nats, status, (1, batch_size), rules)
        .await
        .unwrap()
}

/// The reader's next batch; the test fails if the reader stalls for a minute, ends or fails.
async fn next_batch(batches: &mut Batches) -> Vec<ticket_ledger::core::batch::Decoded> {
    tokio::time::timeout(Duration::from_secs(60), batches.recv())
        .await
        .expect("the reader stalled")
        .expect("the reader ended")
        .expect("the reader failed")
}

/// Started further behind the stream than `ingest.catch_up_events`, the daemon folds the backlog
/// without keeping the list view in step and rebuilds the view from the records once caught up.
/// Then the list answers every ticket with its status and totals, /readyz reports the view at the
/// stream's end, and events after the catch-up keep the view in step as usual.
#[tokio::test]
async fn a_daemon_started_far_behind_catches_up_and_then_lists_everything() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let t0 = 1_700_000_000_000i64;
    let mut events = Vec::new();
    for i in 1..=200u64 {
        let t = t0 + i as i64 * 1_000;
        events.push(created(
            "proj-a",
            i,
            t,
            &format!("job {i}"),
            "c",
            &format!("u{i}"),
            "r",
        ));
        events.push(ev("proj-a", i, Kind::Started, t + 10));
        if i % 2 == 0 {
            events.push(ev("proj-a", i, Kind::Finished, t + 20));
        }
    }
    let last = publish(&js, &events).await;
    let store = tempfile::tempdir().unwrap();
    let mut settings = settings(&nats.url(), store.path());
    settings.ingest.catch_up_events = 100;
    settings.ingest.batch_size = 50;
    let app = TestApp::spawn_with(settings).await;
    app.wait_applied(last).await;
    assert!(app.projection().view_kept());
    let all = app.list("?limit=3").await;
    assert_eq!(all["data"]["total"], 200);
    assert_eq!(all["data"]["data"][0]["order_id"], 200);
    let finished = app.list("?limit=3&status=FINISHED").await;
    assert_eq!(finished["data"]["total"], 100);
    assert_eq!(finished["data"]["data"][0]["execute_costs"], 20);
    let (status, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["view_seq"], last);
    // Kept in step again: one more event shows at once.
    let more = publish(&js, &[ev("proj-a", 1, Kind::Finished, t0 + 5_000)]).await;
    app.wait_applied(more).await;
    let finished = app.list("?limit=3&status=FINISHED").await;
    assert_eq!(finished["data"]["total"], 101);
}

/// `ticket-ledger health` (the container's health check) exits 0 while the daemon answers, and
/// fails for an address where nothing does; `--ready` follows `/readyz`.
#[tokio::test]
async fn the_health_command_follows_the_daemon() {
    let (_nats, _store, app, _js) = start_env().await;
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ticket-ledger"))
            .args(args)
            .env("TICKET_LEDGER_LOG__LEVEL", "error")
            .output()
            .unwrap()
    };
    let url = app.url("");
    let ok = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run(vec!["health".into(), "--url".into(), url])
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ready = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run(vec!["health".into(), "--ready".into(), "--url".into(), url])
    })
    .await
    .unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // A port of this test's own that nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down =
        tokio::task::spawn_blocking(move || run(vec!["health".into(), "--url".into(), dead]))
            .await
            .unwrap();
    assert!(!down.status.success());
    app.stop().await;
}

/// The daemon refuses to start with the default configuration's credentials on a listener other
/// hosts can reach, saying how to make a token; allowed explicitly, it starts.
#[tokio::test]
async fn the_dev_token_is_refused_on_a_public_listener() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let mut s = ticket_ledger::config::Settings::defaults();
    s.http.listen = "0.0.0.0:0".parse().unwrap();
    s.store.path = store.path().join("ledger");
    s.nats.url = nats.url();
    s.nats.embedded = ticket_ledger::config::Embedded::Never;
    let err = match ticket_ledger::app::App::build(s.clone()).await {
        Ok(_) => panic!("started with dev-token on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("dev-token") && err.contains("hash-token"),
        "{err}"
    );
    assert!(!s.store.path.exists(), "refused before opening the store");
    s.auth.allow_dev_credentials = true;
    let app = ticket_ledger::app::App::build(s)
        .await
        .expect("allowed explicitly");
    assert!(app.port() > 0);
}

/// `ticket-ledger list` shows what the list API answers, as a table or as its JSON, and
/// `ticket-ledger status` says the daemon is ready (exit 0).
#[tokio::test]
async fn the_list_and_status_commands_show_what_the_api_answers() {
    let (_nats, _store, app, js) = start_env().await;
    let last = publish(
        &js,
        &[
            created("proj-a", 1, 1_690_200_829_451, "alpha", "alice", "u1", "r"),
            created("proj-a", 2, 1_690_200_830_000, "beta", "bob", "u2", "r"),
            ev("proj-a", 2, Kind::Started, 1_690_200_831_000),
        ],
    )
    .await;
    app.wait_applied(last).await;
    let url = app.url("");
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticket-ledger"))
            .args(args)
            .args(["--url", &url])
            .env("TICKET_LEDGER_TOKEN", TOKEN_A)
            .env("TICKET_LEDGER_LOG__LEVEL", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, json) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["list", "--json", "--creator", "bob"])
    })
    .await
    .unwrap();
    assert!(ok, "{json}");
    let page: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(page, app.list("?limit=10&creator=bob").await["data"]);
    let (ok, table) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["list", "--limit", "1"])
    })
    .await
    .unwrap();
    assert!(ok, "{table}");
    assert!(
        table.contains("PROCESSING") && table.contains("beta"),
        "{table}"
    );
    assert!(!table.contains("alpha"), "one row: {table}");
    assert!(
        table.contains("1 of 2; the next page: --marker 2"),
        "{table}"
    );
    let (ok, status) = tokio::task::spawn_blocking(move || run(&["status"]))
        .await
        .unwrap();
    assert!(ok, "{status}");
    assert!(
        status.contains("connected") && status.contains("ready"),
        "{status}"
    );
    assert!(status.contains(&format!("sequence {last}")), "{status}");
    assert!(status.contains("(lag 0 events, 0.0 s)"), "{status}");
}

/// `emit --file` publishes a file line by line (every event of it arrives), and a bad line
/// anywhere in a file publishes nothing of it.
#[tokio::test]
async fn emit_streams_a_file_and_refuses_a_bad_one_whole() {
    let (nats, dir, app, js) = start_env().await;
    ensure_stream(&js).await;
    let file = dir.path().join("events.jsonl");
    let n = 20_000u64;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 1..=n {
            let e = created(
                "proj-a",
                i,
                1_700_000_000_000,
                "patch",
                "alice",
                &format!("u{i}"),
                "r",
            );
            w.write_all(&e.to_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
    }
    let url = nats.url();
    let emit = move |path: std::path::PathBuf| {
        emit_command(&url)
            .arg("--file")
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let ok = tokio::task::spawn_blocking({
        let (emit, file) = (emit.clone(), file.clone());
        move || emit(file)
    })
    .await
    .unwrap();
    assert!(ok, "emit failed");
    app.wait_applied(n).await;
    assert_eq!(app.list("?limit=1").await["data"]["total"], n);
    // A bad line after good ones: nothing of the file is published.
    let bad = dir.path().join("bad.jsonl");
    let good = created("proj-a", n + 1, 1_700_000_000_000, "n", "c", "u-new", "r");
    std::fs::write(
        &bad,
        format!(
            "{}\nnot json at all\n",
            String::from_utf8(good.to_bytes()).unwrap()
        ),
    )
    .unwrap();
    let ok = tokio::task::spawn_blocking(move || emit(bad))
        .await
        .unwrap();
    assert!(!ok, "a file with a bad line is refused");
    let last = js
        .get_stream("COC_JOB_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    assert_eq!(last, n, "nothing of the bad file was published");
    app.stop().await;
}
