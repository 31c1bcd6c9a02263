//! `/metrics` over real HTTP: Prometheus' own checker accepts it, and the lag in seconds rises
//! while the daemon cannot fold and falls to 0 once it has caught up.

use std::time::{Duration, Instant};

use ticket_ledger::core::events::Kind;

use crate::helpers::*;

async fn scrape(app: &TestApp) -> String {
    let (status, body) = app.get("/metrics", &[]).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let (_nats, _store, app, js) = start_env().await;
    let last = publish(
        &js,
        &[
            created("proj-a", 1, 1_000, "n", "c", "u1", "r"),
            ev("proj-a", 1, Kind::Started, 2_000),
            ev("proj-a", 1, Kind::Started, 2_000), // a second `started`: refused
            ev("proj-a", 9, Kind::Finished, 3_000), // no such ticket
        ],
    )
    .await;
    app.wait_applied(last).await;
    app.ledger.persist().unwrap();
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "ticket_ledger_applied_sequence"), last as f64);
    assert!(
        sample(&text, "ticket_ledger_store_writes_total") >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "ticket_ledger_store_written_bytes_total") > 0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "ticket_ledger_nats_disconnects_total"), 0.0);
    assert_eq!(sample(&text, "ticket_ledger_events_read_total"), 4.0);
    assert!(
        text.contains("ticket_ledger_dead_letters_total{reason=\"unknown_ticket\"} 1"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_lag_in_seconds_rises_while_ingest_cannot_fold_and_falls_to_zero() {
    let (_nats, _store, app, js) = start_env().await;
    let first = publish(&js, &[created("proj-a", 1, 1_000, "n", "c", "u1", "r")]).await;
    app.wait_applied(first).await;
    assert_eq!(
        sample(&scrape(&app).await, "ticket_ledger_lag_seconds"),
        0.0
    );
    // Hold the commit lock, as a long switch-over would: ingest reads but cannot fold.
    let ledger = app.ledger.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _lock = ledger.commit_lock();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    let last = publish(&js, &[ev("proj-a", 1, Kind::Started, 2_000)]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_lag = None;
    loop {
        let text = scrape(&app).await;
        let lag = sample(&text, "ticket_ledger_lag_seconds");
        assert_eq!(
            sample(&text, "ticket_ledger_lag_events"),
            (last - first) as f64
        );
        match first_lag {
            None if lag > 0.0 => first_lag = Some(lag),
            Some(l) if lag >= l + 1.0 => break, // it keeps rising with the event's age
            _ => {}
        }
        assert!(Instant::now() < deadline, "lag in seconds stuck at {lag}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    app.wait_applied(last).await;
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "ticket_ledger_lag_events"), 0.0);
    assert_eq!(sample(&text, "ticket_ledger_lag_seconds"), 0.0);
    app.stop().await;
}
