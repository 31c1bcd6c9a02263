//! `verify` against a live daemon: identical while events keep arriving, and a record that
//! differs from the stream's fold is named.

use ticket_ledger::core::domain::Status;
use ticket_ledger::ops::audit::AdminClient;
use ticket_ledger::ops::verify::verify;
use ticket_ledger::store::{FlushPolicy, Ledger};

use crate::crash::history;
use crate::helpers::*;

#[tokio::test]
async fn verify_names_each_record_that_differs_from_the_stream() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let last = publish_raw(&js, history(200)).await;
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    app.wait_applied(last).await;
    app.stop().await;
    // Behind the daemon's back: one record changed, one that no event made.
    {
        let ledger = Ledger::open(store.path(), FlushPolicy::default()).unwrap();
        let live = ledger.current();
        let mut changed = live.store().tickets().next().unwrap().unwrap();
        changed.status = if changed.status == Status::Canceled {
            Status::Finished
        } else {
            Status::Canceled
        };
        let mut invented = changed.clone();
        invented.order_id = 999_999;
        live.store()
            .write([&changed, &invented], [], [], live.applied_seq())
            .unwrap();
        live.store().flush().unwrap();
    }
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let report = verify(&app.settings, &admin, None).await.unwrap();
    assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    assert!(
        report.differences[0].contains("live:"),
        "{}",
        report.differences[0]
    );
    assert!(
        report.differences[1].contains("/999999: in the live store but not in the stream's fold"),
        "{}",
        report.differences[1]
    );
    app.stop().await;
}

/// The export is read while ingestion goes on; records that move meanwhile are compared with
/// the fold of their own events, and nothing differs. (Written to sled every 20 events, so that
/// the export, which reads sled, sees records move.)
#[tokio::test]
async fn verify_is_identical_while_events_keep_arriving() {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let mut settings = settings(&nats.url(), store.path());
    settings.store.flush_events = 20;
    let app = TestApp::spawn_with(settings).await;
    let js = nats.jetstream().await;
    let mut all = history(20_000);
    let later = all.split_off(all.len() / 2);
    let first = publish_raw(&js, all).await;
    app.wait_applied(first).await;
    let publisher = tokio::spawn(async move {
        for chunk in later.chunks(200) {
            publish_raw(&js, chunk.to_vec()).await;
        }
    });
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let report = verify(&app.settings, &admin, None).await.unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert!(report.tickets >= 10_000);
    publisher.await.unwrap();
    drop(nats);
}
