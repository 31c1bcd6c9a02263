//! Publishing the history, and the raw reads of the stream that are the limit each phase is held
//! to.

use std::time::Instant;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use ticket_ledger::config::Settings;
use ticket_ledger::core::fold::Ticket;

use crate::history::History;

/// Publishes one event as an executor does (its `id` as `Nats-Msg-Id`); the acknowledgement to
/// wait for.
pub async fn publish_event(
    js: &jetstream::Context,
    e: &ticket_ledger::core::events::Event,
    prefix: &str,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", e.id.as_str());
    Ok(js
        .publish_with_headers(e.subject(prefix), h, e.to_bytes().into())
        .await?)
}

/// Publishes the generated history (`tickets`, plans on one run of ten in `plans_every`); returns (events, seconds). The final states go to `finals`,
/// for the PostgreSQL baseline.
pub async fn publish_history(
    js: &jetstream::Context,
    (tickets, plans_every): (u64, u64),
    prefix: &str,
    finals: &mut Vec<Ticket>,
) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let mut count = 0u64;
    for (e, last) in History::new(tickets).plans_every(plans_every) {
        acks.push_back(publish_event(js, &e, prefix).await?);
        count += 1;
        finals.extend(last);
        if acks.len() >= 4_000 {
            for a in acks.drain(..2_000) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok((count, start.elapsed().as_secs_f64()))
}

/// Reads the whole stream with an ordered consumer and no processing; returns seconds.
pub async fn raw_read(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &str,
    last: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(stream).await?;
    let start = Instant::now();
    let mut messages = ticket_ledger::nats::ordered_messages(client, &stream, 1).await?;
    let mut n = 0u64;
    while let Some(m) = messages.next().await {
        let _ = m?;
        n += 1;
        if n >= last {
            break;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds to read the whole stream (`last` messages) through the daemon's own connection and
/// consumer ([`ticket_ledger::nats::read_raw`]), in batches of the daemon's size, without decoding.
pub async fn raw_read_own(
    client: &async_nats::Client,
    js: &jetstream::Context,
    settings: &Settings,
    last: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(&settings.nats.stream).await?;
    let start = Instant::now();
    let mut batches = ticket_ledger::nats::read_raw(
        client,
        &stream,
        &settings.nats,
        (1, settings.ingest.batch_size),
    )
    .await?;
    let mut n = 0u64;
    while n < last {
        let batch = batches.recv().await.context("the reader ended")??;
        n += batch.len() as u64;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One raw read of the whole stream: events/s, and CPU µs per event of nats-server and of the
/// benchmark's reader.
#[derive(Clone, Copy)]
pub struct RawRead {
    /// Events/s.
    pub rate: f64,
    /// CPU µs per event of nats-server and of the reader.
    pub cpu: (f64, f64),
}

/// The limit just before a phase: the stream read raw both ways.
#[derive(Clone, Copy)]
pub struct Limit {
    /// Through the client library's ordered consumer.
    pub library: RawRead,
    /// Through the daemon's own connection.
    pub own: RawRead,
}

impl Limit {
    /// The faster of the two reads: what the phase is held to.
    pub fn best(&self) -> f64 {
        self.library.rate.max(self.own.rate)
    }
}
