//! A damaged store is refused at start-up, named, and left as it is; `rebuild-store` folds the
//! stream into a new generation, keeps the damaged one beside it, and the daemon starts on the
//! new one with the records an undamaged store held.

use std::path::Path;

use ticket_ledger::store::{FlushPolicy, Ledger};

use crate::crash::{history, stored_records};
use crate::helpers::*;

/// A broker with a history in its stream, a store that has folded all of it (the daemon
/// stopped), and the records it holds.
async fn folded_store() -> (NatsServer, tempfile::TempDir, Vec<Vec<u8>>) {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let last = publish_raw(&js, history(300)).await;
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    app.wait_applied(last).await;
    app.stop().await;
    let records = records_of(store.path());
    assert!(records.len() >= 300, "{} records", records.len());
    (nats, store, records)
}

fn records_of(store: &Path) -> Vec<Vec<u8>> {
    let ledger = Ledger::open(store, FlushPolicy::default()).unwrap();
    stored_records(ledger.current().store())
}

/// What the daemon says when it will not start on `store`.
async fn refusal(nats: &NatsServer, store: &Path) -> String {
    match ticket_ledger::app::App::build(settings(&nats.url(), store)).await {
        Ok(_) => panic!("the daemon started on a damaged store"),
        Err(e) => format!("{e:#}"),
    }
}

/// `ticket-ledger rebuild-store` on `store`; its output, after asserting it succeeded.
fn rebuild_store(nats: &NatsServer, store: &Path) -> String {
    let out = ledger_command(&nats.url(), "rebuild-store")
        .env("TICKET_LEDGER_STORE__PATH", store)
        .env("TICKET_LEDGER_INGEST__MAX_EVENT_BYTES", "65536")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// After a refusal: the damaged bytes are still there, `rebuild-store` makes generation 2 live
/// with the records the store held before the damage, and keeps generation 1 beside it.
async fn rebuilt_as_before(nats: &NatsServer, store: &Path, before: &[Vec<u8>], damaged: &Path) {
    let damaged_len = std::fs::metadata(damaged).map(|m| m.len()).ok();
    let out = rebuild_store(nats, store);
    assert!(out.contains("generation 2 is live"), "{out}");
    let kept = store.join("kept-gen-000001");
    assert!(out.contains(&kept.display().to_string()), "{out}");
    let moved = kept.join(
        damaged
            .strip_prefix(store.join("gen-000001"))
            .unwrap_or(damaged),
    );
    if damaged.starts_with(store.join("gen-000001")) {
        let kept_len = std::fs::metadata(&moved).map(|m| m.len()).ok();
        assert_eq!(kept_len, damaged_len, "the damaged file is kept");
    }
    assert!(
        records_of(store) == before,
        "the rebuilt records differ from the ones before"
    );
    let app = TestApp::spawn(&nats.url(), store).await;
    let total = app.list("?limit=1").await["data"]["total"].clone();
    assert_eq!(total, serde_json::json!(count_of(before, "proj-a")));
    app.stop().await;
}

/// How many of `records` belong to `project` (the key order puts each project's together;
/// decoding says which).
fn count_of(records: &[Vec<u8>], project: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            ticket_ledger::core::record::decode(r)
                .unwrap()
                .project
                .as_str()
                == project
        })
        .count()
}

#[tokio::test]
async fn a_truncated_sled_file_is_refused_and_rebuilt_from_the_stream() {
    let (nats, store, before) = folded_store().await;
    let db = store.path().join("gen-000001").join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    // To an eighth: sled keeps stale segments too, and a cut through those alone loses nothing.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 8)
        .unwrap();
    let err = refusal(&nats, store.path()).await;
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("rebuild-store"), "{err}");
    assert!(
        std::fs::metadata(&db).unwrap().len() >= len / 8,
        "not emptied"
    );
    rebuilt_as_before(&nats, store.path(), &before, &db).await;
}

#[tokio::test]
async fn flipped_bytes_in_the_sled_file_are_refused_and_rebuilt_from_the_stream() {
    let (nats, store, before) = folded_store().await;
    let db = store.path().join("gen-000001").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    // One byte in every 4 KiB, so that live pages are hit wherever sled put them.
    for i in (100..bytes.len()).step_by(4096) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = refusal(&nats, store.path()).await;
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("rebuild-store"), "{err}");
    assert!(
        std::fs::metadata(&db).unwrap().len() >= bytes.len() as u64,
        "not emptied"
    );
    rebuilt_as_before(&nats, store.path(), &before, &db).await;
}

#[tokio::test]
async fn a_damaged_or_missing_current_is_refused_and_rebuilt_from_the_stream() {
    for damage in ["garbage", "missing"] {
        let (nats, store, before) = folded_store().await;
        let current = store.path().join("CURRENT");
        match damage {
            "garbage" => std::fs::write(&current, b"\x00\xffnot a generation").unwrap(),
            _ => std::fs::remove_file(&current).unwrap(),
        }
        let err = refusal(&nats, store.path()).await;
        assert!(
            err.contains(&current.display().to_string()),
            "{damage}: {err}"
        );
        assert!(err.contains("rebuild-store"), "{damage}: {err}");
        assert!(
            store.path().join("gen-000001").join("db").exists(),
            "{damage}"
        );
        rebuilt_as_before(&nats, store.path(), &before, &current).await;
    }
}

/// `rebuild-store` beside a running daemon is refused, and creates nothing.
#[tokio::test]
async fn rebuild_store_refuses_to_run_beside_a_daemon() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let out = ledger_command(&nats.url(), "rebuild-store")
        .env("TICKET_LEDGER_STORE__PATH", store.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another process"), "{err}");
    assert!(!store.path().join("gen-000002").exists());
    app.stop().await;
}
