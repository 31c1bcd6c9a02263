//! The ingest loop: JetStream in, batches folded, sled out.
//!
//! The daemon owns its position: the last applied stream sequence is stored in sled atomically
//! with the records it produced, and every (re)connection starts an ordered consumer at the next
//! sequence. No acks, no durable consumer state on the broker, so after a crash, a broker restart
//! or a network cut the daemon resumes exactly after the last durable batch: nothing lost,
//! nothing applied twice.
//!
//! Shutdown is injected as a [`CancellationToken`] and only observed between batches: a batch
//! that has been read is always folded and committed whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestSettings, NatsSettings};
use crate::core::batch::DeadLetter;
use crate::core::batch::Decoded;
use crate::metrics::Metrics;
use crate::nats::BrokerStatus;
use crate::nats::{ensure_stream, read_batches};
use crate::store::Ledger;

/// Runs until `cancel` fires, reconnecting with backoff whenever the broker goes away.
pub async fn run(
    client: async_nats::Client,
    ledger: Arc<Ledger>,
    status: Arc<BrokerStatus>,
    metrics: Arc<Metrics>,
    nats: NatsSettings,
    ingest: IngestSettings,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        match consume(&client, &ledger, &status, &metrics, &nats, &ingest, &cancel).await {
            Ok(()) => break,
            Err(e) => {
                status.set(false, None);
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "ingest interrupted");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::info!(
        applied_seq = ledger.current().applied_seq(),
        "ingest stopped"
    );
}

/// How long the once-a-second look at the stream's last sequence may take.
const STREAM_INFO_TIMEOUT: Duration = Duration::from_secs(2);

async fn consume(
    client: &async_nats::Client,
    ledger: &Arc<Ledger>,
    status: &Arc<BrokerStatus>,
    metrics: &Arc<Metrics>,
    nats: &NatsSettings,
    ingest: &IngestSettings,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, nats).await?;
    let state = stream.get_info().await.context("stream info")?.state;
    let applied = ledger.current().applied_seq();
    if state.messages > 0 && state.first_sequence > applied + 1 {
        tracing::error!(
            first_sequence = state.first_sequence,
            applied_seq = applied,
            "the stream no longer holds sequences {}..{}: retention dropped events this \
             projection never saw; continuing from the first available one",
            applied + 1,
            state.first_sequence - 1
        );
    }
    if applied > state.last_sequence {
        tracing::error!(
            stream_last_seq = state.last_sequence,
            applied_seq = applied,
            "the store is ahead of the stream (was the stream recreated?); events up to the \
             stored position are skipped"
        );
    }
    status.set(true, Some(state.last_sequence));
    let behind = state.last_sequence.saturating_sub(applied);
    if ingest.catch_up_events > 0 && behind >= ingest.catch_up_events {
        ledger.current().suspend_view();
        tracing::info!(
            behind,
            "catching up: the list view is rebuilt from the records once caught up"
        );
    }
    let rules = crate::config::decode_rules(nats, ingest);
    let mut batches = read_batches(
        client,
        &stream,
        nats,
        status.clone(),
        (applied + 1, ingest.batch_size),
        rules,
    )
    .await?;
    tracing::info!(
        stream = %nats.stream,
        from_seq = applied + 1,
        stream_last_seq = state.last_sequence,
        "ingesting"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            batch = batches.recv() => {
                let Some(batch) = batch else { bail!("the consumer ended") };
                if !store_writable(ledger, cancel).await {
                    return Ok(());
                }
                let last = status.stream_last_seq();
                apply(ledger.clone(), metrics.clone(), last, batch?, ingest.batch_size).await?;
            }
            _ = tick.tick() => {
                // A broker that does not answer in time (a cluster electing a leader, a paused
                // node) leaves the figure stale, which `/readyz` reports, rather than stop
                // ingesting from a consumer that may still deliver.
                match tokio::time::timeout(STREAM_INFO_TIMEOUT, stream.get_info()).await {
                    Ok(Ok(info)) => status.set(true, Some(info.state.last_sequence)),
                    Ok(Err(e)) => tracing::warn!(error = %e, "stream info failed"),
                    Err(_) => tracing::warn!(
                        timeout = ?STREAM_INFO_TIMEOUT,
                        "stream info did not answer in time"
                    ),
                }
                // Quiet stream: write what is buffered once it is old enough.
                let l = ledger.clone();
                tokio::task::spawn_blocking(move || {
                    let _commit = l.commit_lock();
                    l.current().flush_if_due()
                })
                .await
                .context("flush task")??;
            }
        }
    }
}

/// Waits while writes to the store wait for space (see `Projection::write_stalled`), so that
/// what is folded meanwhile stays one batch; false if cancelled first.
async fn store_writable(ledger: &Ledger, cancel: &CancellationToken) -> bool {
    while ledger.current().write_stalled().is_some() {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    true
}

/// Folds one batch and commits it, off the async threads (sled blocks). When catching up, and
/// within a batch of the stream's end, rebuilds the list view.
async fn apply(
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    stream_last_seq: u64,
    batch: Vec<Decoded>,
    batch_size: usize,
) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // The lock makes a blue/green switch-over wait for this commit, or this commit wait for
        // the switch-over; either way the batch lands in the projection that is live after it.
        let _commit = ledger.commit_lock();
        let through = batch.last().map_or(0, |m| m.raw.seq);
        let live = ledger.current();
        let started = std::time::Instant::now();
        let report = live.fold(batch)?;
        metrics.folded(&report, started.elapsed().as_secs_f64());
        log_dead_letters(&report.dead_letters, through);
        if !live.view_kept() && through.saturating_add(batch_size as u64) >= stream_last_seq {
            let started = std::time::Instant::now();
            live.resume_view()?;
            metrics.view_rebuilt(started.elapsed().as_secs_f64());
            tracing::info!(
                applied_seq = through,
                tickets = live.ticket_count(),
                took = ?started.elapsed(),
                "caught up: the list view is rebuilt and kept in step again"
            );
        }
        Ok(())
    })
    .await
    .context("fold task")?
}

fn log_dead_letters(dead: &[DeadLetter], through_seq: u64) {
    if dead.is_empty() {
        return;
    }
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for d in dead {
        *by_reason.entry(d.code.as_str()).or_default() += 1;
        tracing::debug!(seq = d.seq, code = %d.code, reason = %d.reason, "dead letter");
    }
    tracing::warn!(
        count = dead.len(),
        by_reason = ?by_reason,
        through_seq,
        "events dead-lettered"
    );
}
