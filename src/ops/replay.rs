//! Rebuilding the projection from the first sequence of the stream, blue/green.
//!
//! The new generation is filled beside the live one by its own ordered consumer while the live
//! one keeps ingesting and answering. When the new one has caught up, the rebuild takes the
//! commit lock (so the live ingest is between two batches), brings the new generation to exactly
//! the live applied sequence, and switches over atomically ([`Ledger::switch_to`]). The live
//! ingest's next batch then lands in the new generation, which is at the same position.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream;
use serde::Serialize;

use crate::config::{IngestSettings, NatsSettings};
use crate::core::batch::Decoded;
use crate::nats::BrokerStatus;
use crate::store::{Ledger, Projection};

/// Where a rebuild is.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No rebuild has run since the daemon started.
    #[default]
    Idle,
    /// Folding the stream into the new generation.
    Running,
    /// Switched over.
    Done,
    /// Stopped with an error; the live projection is untouched.
    Failed,
}

/// A rebuild's progress, as `GET /v1/ledger/replay` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Events folded into the new generation.
    pub done: u64,
    /// Events to fold (the stream's last sequence, growing while events arrive).
    pub total: u64,
    /// Events per second so far.
    pub events_per_sec: f64,
    /// Seconds left at that rate.
    pub eta_secs: Option<f64>,
    /// Tickets in the new generation when it went live.
    pub tickets: Option<usize>,
    /// The error, when failed.
    pub error: Option<String>,
    /// The generation being built or made live.
    pub generation: Option<u32>,
}

/// Shared progress of the current or last rebuild.
#[derive(Default)]
pub struct Tracker {
    progress: Mutex<Progress>,
    started: Mutex<Option<Instant>>,
}

impl Tracker {
    /// A copy of the progress.
    pub fn get(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks a rebuild as started, unless one is running. Returns false if one is.
    pub fn try_start(&self) -> bool {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if p.phase == Phase::Running {
            return false;
        }
        *p = Progress {
            phase: Phase::Running,
            ..Default::default()
        };
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        true
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        if elapsed > 0.0 {
            p.events_per_sec = p.done as f64 / elapsed;
            p.eta_secs = (p.events_per_sec > 0.0)
                .then(|| p.total.saturating_sub(p.done) as f64 / p.events_per_sec);
        }
    }
}

/// The stream's first and last sequence, to decide whether the history is whole.
pub async fn stream_bounds(
    js: &jetstream::Context,
    nats: &NatsSettings,
) -> anyhow::Result<(u64, u64)> {
    let stream = crate::nats::ensure_stream(js, nats).await?;
    let state = stream.get_info().await.context("stream info")?.state;
    Ok((state.first_sequence, state.last_sequence))
}

/// Runs a rebuild to the switch-over, reporting into `tracker`.
pub async fn rebuild(
    ledger: Arc<Ledger>,
    status: Arc<BrokerStatus>,
    client: async_nats::Client,
    nats: NatsSettings,
    ingest: IngestSettings,
    tracker: Arc<Tracker>,
) {
    let result = run(&ledger, &status, client, &nats, &ingest, &tracker).await;
    match result {
        Ok((generation, tickets)) => {
            let applied = ledger.current().applied_seq();
            tracing::info!(
                generation,
                tickets,
                applied_seq = applied,
                "rebuild switched over"
            );
            tracker.update(|p| {
                p.phase = Phase::Done;
                p.done = applied;
                p.total = applied;
                p.tickets = Some(tickets);
                p.eta_secs = Some(0.0);
            });
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "rebuild failed; the live projection is untouched"
            );
            tracker.update(|p| {
                p.phase = Phase::Failed;
                p.error = Some(format!("{e:#}"));
            });
        }
    }
}

async fn run(
    ledger: &Arc<Ledger>,
    status: &Arc<BrokerStatus>,
    client: async_nats::Client,
    nats: &NatsSettings,
    ingest: &IngestSettings,
    tracker: &Tracker,
) -> anyhow::Result<(u32, usize)> {
    let led = ledger.clone();
    let (generation, next) = tokio::task::spawn_blocking(move || led.begin_rebuild()).await??;
    let next = Arc::new(next);
    tracker.update(|p| p.generation = Some(generation));
    tracing::info!(generation, "rebuild started");
    let js = jetstream::new(client.clone());
    let stream = crate::nats::ensure_stream(&js, nats).await?;
    let rules = crate::config::decode_rules(nats, ingest);
    let mut last_log = Instant::now();
    if try_switch(ledger, &next, generation, Vec::new()).await? {
        return Ok((generation, next.ticket_count()));
    }
    let mut batches = crate::nats::read_batches(
        &client,
        &stream,
        nats,
        status.clone(),
        (1, ingest.batch_size),
        rules,
    )
    .await
    .context("the rebuild consumer")?;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        let live_applied = ledger.current().applied_seq();
        let reaches_live = batch.last().is_some_and(|m| m.raw.seq >= live_applied);
        if reaches_live {
            if try_switch(ledger, &next, generation, batch).await? {
                return Ok((generation, next.ticket_count()));
            }
        } else {
            let n = next.clone();
            tokio::task::spawn_blocking(move || commit_upto(&n, batch, u64::MAX)).await??;
        }
        let total = status.stream_last_seq().max(ledger.current().applied_seq());
        tracker.update(|p| {
            p.done = next.applied_seq();
            p.total = total;
        });
        if last_log.elapsed().as_secs() >= 2 {
            let p = tracker.get();
            tracing::info!(
                done = p.done,
                total = p.total,
                events_per_sec = p.events_per_sec as u64,
                "rebuilding"
            );
            last_log = Instant::now();
        }
    }
    anyhow::bail!("the rebuild consumer ended before catching up")
}

/// Folds `batch` into `next`, keeping only messages through `upto`.
fn commit_upto(next: &Projection, mut batch: Vec<Decoded>, upto: u64) -> anyhow::Result<()> {
    batch.truncate(batch.partition_point(|m| m.raw.seq <= upto));
    next.fold(batch)?;
    Ok(())
}

/// Under the commit lock: folds what `batch` holds up to the live position and, if that brings
/// `next` level with the live projection, switches over. Returns whether it switched.
async fn try_switch(
    ledger: &Arc<Ledger>,
    next: &Arc<Projection>,
    generation: u32,
    batch: Vec<Decoded>,
) -> anyhow::Result<bool> {
    let (ledger, next) = (ledger.clone(), next.clone());
    tokio::task::spawn_blocking(move || {
        let _commit = ledger.commit_lock();
        let target = ledger.current().applied_seq();
        // Level once every message through `target` has been read. (A gap in the stream can
        // leave the last folded sequence short of `target` with nothing left to fold.)
        let read_through = batch.last().map_or(next.applied_seq(), |m| m.raw.seq);
        commit_upto(&next, batch, target)?;
        if read_through < target {
            return Ok(false);
        }
        force_position(&next, target)?;
        ledger.switch_to(generation, next)?;
        Ok(true)
    })
    .await?
}

/// Records `seq` as the applied position of `next` if it is behind (nothing to fold remains).
fn force_position(next: &Projection, seq: u64) -> anyhow::Result<()> {
    if next.applied_seq() < seq {
        next.commit(crate::core::batch::Commit {
            applied_seq: seq,
            ..Default::default()
        })?;
    }
    Ok(())
}
