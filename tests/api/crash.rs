//! SIGKILL the real daemon binary at random moments while it ingests, restart it, and compare
//! the store with a single uninterrupted fold of the same events.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ticket_ledger::core::batch::{DecodeRules, MemoryProjection, RawMessage};
use ticket_ledger::core::events::{Event, Kind};
use ticket_ledger::store::encode_ticket;
use ticket_ledger::store::{FlushPolicy, Ledger};

use crate::helpers::*;

/// A realistic history: tickets with 2–5 events each, interleaved, with a few bad events.
pub fn history(tickets: u64) -> Vec<(String, Vec<u8>, Option<String>)> {
    let mut seed: u64 = 7;
    let mut rnd = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut lanes: Vec<Vec<Event>> = Vec::new();
    for order_id in 1..=tickets {
        let p = ["proj-a", "proj-b"][rnd(2) as usize];
        let t = 1_700_000_000_000 + order_id as i64 * 1_000;
        let mut lane = vec![created(
            p,
            order_id,
            t,
            "job",
            "alice",
            &format!("u{order_id}"),
            "r",
        )];
        lane.push(ev(p, order_id, Kind::Started, t + 1));
        match rnd(4) {
            0 => {}
            1 => lane.push(ev(p, order_id, Kind::Finished, t + 500)),
            2 => {
                lane.push(ev(p, order_id, Kind::Abnormal, t + 2));
                lane.push(ev(p, order_id, Kind::Resumed, t + 3));
                lane.push(ev(p, order_id, Kind::Cancelled, t + 900));
            }
            _ => {
                lane.push(ev(p, order_id, Kind::Paused, t + 2));
                lane.push(ev(p, order_id, Kind::Started, t + 3)); // illegal: dead letter
            }
        }
        lanes.push(lane);
    }
    // Interleave: repeatedly take the next event of a random live ticket among a window.
    let mut out = Vec::new();
    let mut cursor: Vec<usize> = vec![0; lanes.len()];
    let mut live: Vec<usize> = Vec::new();
    let mut next_lane = 0;
    while next_lane < lanes.len() || !live.is_empty() {
        while live.len() < 64 && next_lane < lanes.len() {
            live.push(next_lane);
            next_lane += 1;
        }
        let pick = rnd(live.len() as u64) as usize;
        let lane = live[pick];
        let e = &lanes[lane][cursor[lane]];
        out.push((e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string())));
        if rnd(200) == 0 {
            out.push((
                format!("{PREFIX}.proj-a.started"),
                b"{garbage".to_vec(),
                None,
            ));
        }
        cursor[lane] += 1;
        if cursor[lane] == lanes[lane].len() {
            live.swap_remove(pick);
        }
    }
    out
}

/// Starts the daemon binary on a port it binds itself (port 0), and reads that port from its
/// log; returns the child and the port.
fn spawn_daemon(nats_url: &str, store: &std::path::Path) -> (KillOnDrop, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticket-ledger"));
    cmd.arg("serve")
        .env("TICKET_LEDGER_NATS__URL", nats_url)
        .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
        .env("TICKET_LEDGER_STORE__PATH", store)
        .env("TICKET_LEDGER_HTTP__LISTEN", "127.0.0.1:0")
        .env("TICKET_LEDGER_INGEST__BATCH_SIZE", "200")
        // Write-behind flushes every 1,000 events, so that kills land between flushes: what was
        // folded but not yet written is lost with the process and must be folded again.
        .env("TICKET_LEDGER_STORE__FLUSH_EVENTS", "1000")
        .stdout(Stdio::null());
    let (child, port) = spawn_reporting_port(cmd);
    (KillOnDrop(child), port)
}

fn stored_seq(store: &std::path::Path) -> u64 {
    if !store.exists() {
        return 0;
    }
    Ledger::open(store, FlushPolicy::default())
        .unwrap()
        .current()
        .applied_seq()
}

#[tokio::test]
async fn sigkill_during_ingest_loses_nothing_and_applies_nothing_twice() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let messages = history(15_000);
    let n = messages.len() as u64;
    assert!(n >= 50_000, "{n} events");
    let last = publish_raw(&js, messages.clone()).await;
    assert_eq!(last, n, "a fresh stream numbers the events 1..=n");

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ledger");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut positions = Vec::new();
    // Kill at random moments of the ingest: each run is SIGKILLed as soon as the daemon reports
    // (via /readyz) that it has applied a random number of events beyond where it started, so
    // every kill lands while it ingests, wherever the machine's speed puts that moment.
    let http = reqwest::Client::new();
    let mut mid_ingest = 0;
    while mid_ingest < 10 {
        assert!(
            positions.len() < 60,
            "kills kept missing the ingest: {positions:?} of {n}"
        );
        let before = stored_seq(&store);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let target = before + n / 40 + (seed >> 33) % (n / 25);
        let (mut child, port) = spawn_daemon(&nats.url(), &store);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["applied_seq"].as_u64().unwrap_or(0) >= target
            {
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after = stored_seq(&store);
        positions.push(after);
        assert!(after >= before, "the stored position went back");
        if after >= n {
            break;
        }
        if after > before {
            mid_ingest += 1;
        }
    }
    eprintln!("stored positions after each SIGKILL: {positions:?} of {n}");
    assert!(
        mid_ingest >= 10,
        "too few kills landed mid-ingest to prove anything: positions {positions:?} of {n}"
    );

    // One last run to the end, then a graceful stop.
    let (mut child, port) = spawn_daemon(&nats.url(), &store);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "did not catch up");
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["applied_seq"].as_u64() == Some(n)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The auditor's check against the running daemon.
    let verify = Command::new(env!("CARGO_BIN_EXE_ticket-ledger"))
        .args([
            "verify",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "dev-token",
        ])
        .env("TICKET_LEDGER_NATS__URL", nats.url())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify failed: {out}");
    assert_eq!(
        out.trim(),
        format!("identical, 15000 tickets, through sequence {n}")
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "graceful stop");

    let reference = reference_fold(messages);

    let ledger = Ledger::open(&store, FlushPolicy::default()).unwrap();
    let live = ledger.current();
    let stored = live.store();
    assert_eq!(stored.applied_seq().unwrap(), n);
    let got = stored_records(stored);
    let want = encoded_records(&reference);
    assert_eq!(got.len(), 15_000);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "record {i} differs:\n stored   {}\n expected {}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    let dead: Vec<_> = stored.dead_letters().map(Result::unwrap).collect();
    assert_eq!(dead.len(), reference.dead_letters.len());
    for (d, r) in dead.iter().zip(&reference.dead_letters) {
        assert_eq!((d.seq, &d.code, &d.payload), (r.seq, &r.code, &r.payload));
    }
}

/// The pure fold of messages published in order on a fresh stream (sequences 1..=n).
pub fn reference_fold(messages: Vec<(String, Vec<u8>, Option<String>)>) -> MemoryProjection {
    let rules = DecodeRules {
        subject_prefix: PREFIX.into(),
        max_event_bytes: 65536,
        projects: None,
    };
    let raw: Vec<RawMessage> = messages
        .into_iter()
        .enumerate()
        .map(|(i, (subject, payload, _))| RawMessage {
            seq: i as u64 + 1,
            subject: subject.into(),
            payload: payload.into(),
            redrive_of: None,
            ce_headers: Vec::new(),
        })
        .collect();
    let mut reference = MemoryProjection::default();
    reference.fold(&raw, &rules);
    reference
}

/// Every stored record, in key order, as bytes.
pub fn stored_records(store: &ticket_ledger::store::Store) -> Vec<Vec<u8>> {
    store.raw_tickets().map(|r| r.unwrap().1).collect()
}

/// The records the reference fold holds, encoded as the store encodes them, in key order.
pub fn encoded_records(reference: &MemoryProjection) -> Vec<Vec<u8>> {
    reference.tickets.values().map(encode_ticket).collect()
}

/// Stops the broker in the middle of an ingest: the API keeps answering from the projection,
/// and when the broker is back the daemon reconnects by itself and catches up, with the same
/// records as an uninterrupted fold.
#[tokio::test]
async fn a_broker_restart_during_ingest_is_survived() {
    let mut nats = NatsServer::start();
    let js = nats.jetstream().await;
    let messages = history(10_000);
    let n = publish_raw(&js, messages.clone()).await;
    drop(js);
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.projection().applied_seq() == 0 {
        assert!(Instant::now() < deadline, "ingest did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    nats.stop();
    let at_stop = app.projection().applied_seq();
    assert!(at_stop < n, "stopped mid-ingest ({at_stop} of {n})");
    // The daemon notices the broker is gone: /readyz says so (polled to a deadline).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get("/readyz", &[]).await;
        if status == 503 && body.contains("\"nats_connected\":false") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without a broker: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both projects together hold every ticket of the projection, served while NATS is away.
    // (Batches read before the stop may still be folding: tickets only ever get added, so the
    // totals lie between the counts taken before and after them.)
    let before = app.projection().ticket_count() as u64;
    let mut total = 0;
    for project in ["proj-a", "proj-b"] {
        let (status, body) = app
            .get(
                "/v1/job/script/orders",
                &[("X-Auth-Token", TOKEN_AB), ("x-project-id", project)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        total += v["data"]["total"].as_u64().unwrap();
    }
    let after = app.projection().ticket_count() as u64;
    assert!(total > 0, "answers from the projection");
    assert!(
        before <= total && total <= after,
        "{total} listed, the projection held {before}..{after}"
    );

    nats.start_again();
    app.wait_applied(n).await;
    app.ledger.persist().unwrap();
    let got = stored_records(app.projection().store());
    let want = encoded_records(&reference_fold(messages));
    assert!(got == want, "records differ from the uninterrupted fold");
    app.stop().await;
}
