//! Folding the stream from its first sequence into a projection nobody queries: what
//! `rebuild-store` does into a new generation and `verify` into a scratch store. Both go through
//! the daemon's own reader and fold, with the query view suspended (it is the largest part of a
//! fold, and neither needs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;

use crate::config::Settings;
use crate::nats::BrokerStatus;
use crate::store::Projection;

/// How long the stream may stay silent, with the fold short of `last`, before the rest is taken
/// for a gap (messages deleted from the stream's end).
const SILENCE: Duration = Duration::from_secs(5);

/// Reads the stream from sequence 1 and folds it into `into` through `last`, showing progress
/// under `label`.
pub(crate) async fn fold_stream(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    settings: &Settings,
    into: &Arc<Projection>,
    last: u64,
    label: &'static str,
) -> anyhow::Result<()> {
    into.suspend_view();
    if last == 0 {
        return Ok(());
    }
    let rules = crate::config::decode_rules(&settings.nats, &settings.ingest);
    let status = Arc::new(BrokerStatus::default());
    let from = (1, settings.ingest.batch_size);
    let mut batches =
        crate::nats::read_batches(client, stream, &settings.nats, status, from, rules)
            .await
            .context("the stream's consumer")?;
    let mut meter = super::progress::Meter::new(label, "events");
    let started = Instant::now();
    while into.applied_seq() < last {
        let mut batch = match tokio::time::timeout(SILENCE, batches.recv()).await {
            Ok(Some(batch)) => batch?,
            Ok(None) => bail!(
                "the stream's consumer ended at sequence {}",
                into.applied_seq()
            ),
            // Nothing left to read below `last`: the stream's end was deleted. The stored
            // position stays at what was folded.
            Err(_) => break,
        };
        batch.truncate(batch.partition_point(|m| m.raw.seq <= last));
        let p = into.clone();
        tokio::task::spawn_blocking(move || p.fold(batch)).await??;
        let done = into.applied_seq();
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        meter.show(done, last, &format!("{rate:.0} events/s"));
    }
    meter.finish(true);
    Ok(())
}
