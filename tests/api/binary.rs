//! CloudEvents binary mode over a real broker: events published with `ce-*` headers fold to
//! records byte-identical to those of the same events in structured mode, and a binary event
//! that names an attribute twice is dead-lettered with its reason.

use async_nats::HeaderMap;
use ticket_ledger::core::events::{Event, Kind};

use crate::crash::{encoded_records, reference_fold, stored_records};
use crate::helpers::*;

fn history() -> Vec<Event> {
    let mut out = Vec::new();
    for id in 1..=3u64 {
        let t = 1_690_200_000_000 + id as i64 * 1_000;
        let mut c = created(
            "proj-a",
            id,
            t,
            "nightly patch",
            "alice",
            &format!("u{id}"),
            "r",
        );
        c.id = format!("évent {id}%").into();
        out.push(c);
        out.push(ev("proj-a", id, Kind::Started, t + 10));
        out.push(ev("proj-a", id, Kind::Finished, t + 500));
    }
    out
}

#[tokio::test]
async fn binary_mode_events_fold_exactly_like_structured_ones() {
    let (_nats, _store, app, js) = start_env().await;
    ensure_stream(&js).await;
    let events = history();
    let mut last = 0;
    for e in &events {
        let (ce, body) = e.to_binary();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", e.id.as_str());
        for (name, value) in ce {
            h.insert(name, value.as_str());
        }
        last = js
            .publish_with_headers(e.subject(PREFIX), h, body.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence;
    }
    // One more, naming its id twice.
    let extra = ev("proj-a", 1, Kind::Paused, 1_690_200_002_000);
    let (ce, body) = extra.to_binary();
    let mut h = HeaderMap::new();
    for (name, value) in ce {
        h.insert(name, value.as_str());
    }
    h.append("ce-id", "a-second-id");
    let bad = js
        .publish_with_headers(extra.subject(PREFIX), h, body.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    assert_eq!((last, bad), (9, 10));
    app.wait_applied(bad).await;
    app.ledger.persist().unwrap();
    let structured = events
        .iter()
        .map(|e| (e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string())))
        .collect();
    let want = encoded_records(&reference_fold(structured));
    let got = stored_records(app.projection().store());
    assert_eq!(got.len(), 3);
    assert!(
        got == want,
        "binary-mode records differ from structured-mode ones"
    );
    let admin = ticket_ledger::ops::audit::AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let dl = admin.get("/v1/ledger/dead-letters").await.unwrap();
    assert_eq!(dl["pending_by_reason"]["duplicate_attribute"], 1, "{dl}");
    assert_eq!(dl["dead_letters"][0]["seq"], bad);
    // `verify` reads the stream through the client library, headers and all.
    let report = ticket_ledger::ops::verify::verify(&app.settings, &admin, None)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.tickets, 3);
    app.stop().await;
}

/// `ticket-ledger emit --binary` publishes an event the daemon folds like any other.
#[tokio::test]
async fn emit_binary_publishes_an_event_the_daemon_folds() {
    let (nats, _store, app, js) = start_env().await;
    ensure_stream(&js).await;
    let url = nats.url();
    let out = tokio::task::spawn_blocking(move || {
        emit_command(&url)
            .args(["--binary", "--kind", "created", "--project", "proj-a"])
            .args([
                "--order-id",
                "50",
                "--name",
                "from emit",
                "--creator",
                "carol",
            ])
            .args([
                "--execute-uuid",
                "u50",
                "--time",
                "2023-07-24T12:13:49.451Z",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq = js
        .get_stream("COC_JOB_EVENTS")
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert!(
        seq.headers.get("ce-type").is_some(),
        "published in binary mode"
    );
    app.wait_applied(1).await;
    let page = app.list("?limit=10").await;
    assert_eq!(page["data"]["data"][0]["order_name"], "from emit");
    assert_eq!(page["data"]["data"][0]["creator"], "carol");
    app.stop().await;
}
