//! `ticket-ledger rebuild-store`: the way out of a store the daemon refuses to open (sled's file
//! damaged, a record that does not decode, another store format, `CURRENT` lost or damaged).
//!
//! The daemon is stopped. The command folds the whole stream into a new generation, numbered
//! after every one present, then sets the others aside as `kept-gen-…` (nothing is deleted:
//! the damaged one is evidence, and may hold what the stream no longer does) and makes the new
//! one live. A running daemon rebuilds itself without stopping, blue/green (`replay`); this
//! command refuses to run beside one.

use std::sync::Arc;

use anyhow::{Context, bail};
use async_nats::jetstream;

use crate::config::Settings;
use crate::store::{Projection, fresh_generation, keep_aside_and_make_live};

/// What a rebuild of the store did.
#[derive(Debug)]
pub struct Rebuilt {
    /// The new live generation.
    pub generation: u32,
    /// The stream sequence it reached.
    pub applied_seq: u64,
    /// Tickets in it.
    pub tickets: usize,
    /// The generations set aside.
    pub kept: Vec<std::path::PathBuf>,
}

/// Folds the stream, from its first sequence to its last one as of now, into a new generation
/// under `store.path` and makes it live. A stream whose first sequence is past 1 (retention
/// removed its start) gives a partial store, refused unless `accept_partial`.
pub async fn rebuild_store(settings: &Settings, accept_partial: bool) -> anyhow::Result<Rebuilt> {
    let root = settings.store.path.clone();
    let broker = crate::nats::connect(&settings.nats).await?;
    let js = jetstream::new(broker.client.clone());
    let stream = crate::nats::ensure_stream(&js, &settings.nats).await?;
    let state = stream.get_info().await.context("stream info")?.state;
    let (first, last) = (state.first_sequence, state.last_sequence);
    if first > 1 && last > 0 && !accept_partial {
        bail!(
            "the stream starts at sequence {first}: the events before it are gone, so a store \
             folded from it would lack them. Pass --accept-partial to build it anyway"
        );
    }
    let (generation, dir) = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || fresh_generation(&root)).await??
    };
    tracing::info!(generation, dir = %dir.display(), last_seq = last, "rebuilding the store from the stream");
    let policy = crate::app::flush_policy(&settings.store);
    let next = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Projection::open(&dir, policy)).await??
    };
    // No one queries this generation: the daemon builds its view from the records at start-up.
    let next = Arc::new(next);
    super::refold::fold_stream(
        &broker.client,
        &stream,
        settings,
        &next,
        last,
        "rebuild-store",
    )
    .await?;
    let (applied_seq, tickets) = {
        let n = next.clone();
        tokio::task::spawn_blocking(move || {
            let seq = n.persist()?;
            let tickets = n.store().raw_tickets().count();
            anyhow::Ok((seq, tickets))
        })
        .await??
    };
    drop(next);
    let kept =
        tokio::task::spawn_blocking(move || keep_aside_and_make_live(&root, generation)).await??;
    broker.shutdown().await;
    Ok(Rebuilt {
        generation,
        applied_seq,
        tickets,
        kept,
    })
}
