//! The event stream: its set-up, and the client library's ordered consumer (what `verify` and
//! the benchmark's raw read use).

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;

use crate::config::NatsSettings;
use crate::core::batch::{REDRIVE_HEADER, RawMessage};

/// Gets the event stream, creating it (file storage, no age limit, `nats.stream_replicas`
/// replicas placed as `nats.stream_placement_*` say) when it is missing. An existing stream is
/// taken as it is: where its replicas or placement differ from the settings, that is logged as
/// a warning and left alone, since changing a shared stream is its operator's decision.
///
/// Two processes may race to create it (the daemon and a publisher starting together); the
/// loser's create fails, so a failed create is followed by another look-up before giving up.
pub async fn ensure_stream(
    js: &jetstream::Context,
    s: &NatsSettings,
) -> anyhow::Result<jetstream::stream::Stream> {
    let mut attempt = 0;
    loop {
        if let Ok(stream) = js.get_stream(&s.stream).await {
            // The look-up brought the stream's info with it.
            for difference in differences(&stream.cached_info().config, s) {
                tracing::warn!(stream = %s.stream, "{difference}; the stream is left as it is");
            }
            return Ok(stream);
        }
        let created = js.create_stream(stream_config(s)).await;
        match created {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt >= 3 => {
                return Err(e).with_context(|| format!("creating stream {}", s.stream));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }
}

/// The stream the settings ask for.
pub fn stream_config(s: &NatsSettings) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: s.stream.clone(),
        subjects: s.subjects.clone(),
        storage: jetstream::stream::StorageType::File,
        max_age: Duration::ZERO,
        num_replicas: s.stream_replicas,
        placement: placement(s),
        ..Default::default()
    }
}

fn placement(s: &NatsSettings) -> Option<jetstream::stream::Placement> {
    (s.stream_placement_cluster.is_some() || !s.stream_placement_tags.is_empty()).then(|| {
        jetstream::stream::Placement {
            cluster: s.stream_placement_cluster.clone(),
            tags: s.stream_placement_tags.clone(),
        }
    })
}

/// How an existing stream differs from what the settings would create, in words.
pub fn differences(found: &jetstream::stream::Config, s: &NatsSettings) -> Vec<String> {
    let mut out = Vec::new();
    if found.num_replicas.max(1) != s.stream_replicas.max(1) {
        out.push(format!(
            "the stream has {} replica(s) where nats.stream_replicas says {}",
            found.num_replicas.max(1),
            s.stream_replicas
        ));
    }
    let wanted = placement(s);
    let cluster =
        |p: &Option<jetstream::stream::Placement>| p.as_ref().and_then(|p| p.cluster.clone());
    let tags = |p: &Option<jetstream::stream::Placement>| {
        let mut t = p.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
        t.sort();
        t
    };
    if wanted.is_some()
        && (cluster(&found.placement) != cluster(&wanted)
            || tags(&found.placement) != tags(&wanted))
    {
        out.push(format!(
            "the stream is placed {:?} where nats.stream_placement_* say {:?}",
            found.placement, wanted
        ));
    }
    out
}

/// The messages of `stream` from sequence `from` on, through the client library's ordered push
/// consumer: no acks, no state on the broker, recreated by the client on a gap. `verify` and the
/// benchmark's raw read (the limit) read the stream this way; ingest and rebuild read the same
/// kind of consumer through [`read_batches`].
pub async fn ordered_messages(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    from: u64,
) -> anyhow::Result<jetstream::consumer::push::Ordered> {
    use jetstream::consumer::{DeliverPolicy, push};
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    consumer.messages().await.context("subscribing")
}

/// Messages a subscription buffers before the client drops them as a slow consumer: above the
/// server's flow-control window of a push consumer (tens of MiB, so up to some 100k small events).
pub const SUBSCRIPTION_CAPACITY: usize = 1 << 18;

/// The sequence, subject, payload and redrive header of a JetStream message.
pub fn raw_message(m: &jetstream::Message) -> anyhow::Result<RawMessage> {
    let seq = m
        .info()
        .map_err(|e| anyhow::anyhow!("reading the message's stream sequence: {e}"))?
        .stream_sequence;
    let redrive_of = m
        .headers
        .as_ref()
        .and_then(|h| h.get(REDRIVE_HEADER))
        .and_then(|v| v.as_str().parse().ok());
    Ok(RawMessage {
        seq,
        subject: bytes::Bytes::copy_from_slice(m.subject.as_bytes()),
        payload: m.payload.clone(),
        redrive_of,
        ce_headers: m.headers.as_ref().map_or_else(Vec::new, client_ce_headers),
    })
}

/// A binary-mode CloudEvent's headers among a message's: its `ce-*` headers and its
/// `content-type`, names lower-cased, values as received, in order; nothing when no header
/// starts with `ce-` (a structured event, whatever else its headers say).
pub(crate) fn ce_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Vec<(String, String)> {
    let is_ce = |n: &str| n.len() > 3 && n.as_bytes()[..3].eq_ignore_ascii_case(b"ce-");
    // Looked over first without allocating: nearly every event is structured.
    if !headers.clone().any(|(n, _)| is_ce(n.trim())) {
        return Vec::new();
    }
    headers
        .map(|(n, v)| (n.trim(), v))
        .filter(|(n, _)| is_ce(n) || n.eq_ignore_ascii_case("content-type"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

/// [`ce_headers`] of the client library's header map (every value of every name).
pub(crate) fn client_ce_headers(h: &async_nats::HeaderMap) -> Vec<(String, String)> {
    ce_headers(h.iter().flat_map(|(name, values)| {
        let name: &str = name.as_ref();
        values.iter().map(move |v| (name, v.as_str()))
    }))
}

/// The stream's last sequence, and the time of the first message after `applied` (`None` when
/// there is none: caught up), for the lag in seconds. A message retention has dropped is
/// replaced by the stream's first one.
pub async fn oldest_unapplied(
    js: &jetstream::Context,
    stream: &str,
    applied: u64,
) -> anyhow::Result<(u64, Option<time::OffsetDateTime>)> {
    let mut stream = js.get_stream(stream).await.context("stream info")?;
    let state = stream.info().await.context("stream info")?.state.clone();
    if applied >= state.last_sequence || state.messages == 0 {
        return Ok((state.last_sequence, None));
    }
    let next = (applied + 1).max(state.first_sequence);
    let m = stream
        .get_raw_message(next)
        .await
        .with_context(|| format!("reading message {next}"))?;
    Ok((state.last_sequence, Some(m.time)))
}
