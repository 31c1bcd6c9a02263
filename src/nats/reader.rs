//! The batches ingest and rebuild fold: an ordered push consumer drained by a task of its own,
//! on the reader's own connection ([`super::wire`]) or a subscription of the client library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;

use super::status::{BrokerStatus, Restart};
use super::stream::ce_headers;
use super::wire;
use crate::config::NatsSettings;
use crate::core::batch::{DecodeRules, Decoded, REDRIVE_HEADER, RawMessage, decode_batch};

/// How often the reader's consumer sends a heartbeat when it has nothing to deliver: the
/// heartbeat says how many deliveries were sent, so it is how a lost last delivery (or a lost
/// flow-control request, which would stall the consumer) is noticed.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the reader waits for a message or a heartbeat before it takes the consumer for gone.
const HEARTBEAT_GRACE: Duration = Duration::from_secs(3);

/// How long the consumer may deliver nothing while the stream holds more than it delivered
/// before the reader takes it for stuck and starts another. Heartbeats alone do not show it: a
/// consumer placed on a stream replica that fell behind (a broker bug seen with 2.9 after its
/// node was paused) keeps sending heartbeats that agree with what it sent, and nothing more.
const STALL_GRACE: Duration = Duration::from_secs(5);

/// The stream and consumer sequences of a JetStream delivery, read from its `$JS.ACK.` reply
/// subject: `<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>` after
/// the prefix, or, with domain and account hash in front, 9 tokens or more (ADR-15).
pub fn ack_sequences(reply: &[u8]) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix(b"$JS.ACK.")?;
    let mut tokens: [&[u8]; 9] = [&[]; 9];
    let mut n = 0;
    for t in rest.split(|&b| b == b'.') {
        if let Some(slot) = tokens.get_mut(n) {
            *slot = t;
        }
        n += 1;
    }
    let (stream_seq, consumer_seq) = match n {
        7 => (tokens[3], tokens[4]),
        n if n >= 9 => (tokens[5], tokens[6]),
        _ => return None,
    };
    Some((decimal(stream_seq)?, decimal(consumer_seq)?))
}

/// A non-empty run of ASCII digits that fits a u64 (read from bytes: the reply subject is never
/// made a `str`).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Batches of at most `batch_size` messages of `stream` from sequence `from` on, read and
/// decoded by a task of their own: the consumer keeps being drained (and its flow control
/// answered) and the next batch decoded while the caller folds the previous one, so reading,
/// decoding and folding overlap. Two batches are buffered; the task ends when the receiver is
/// dropped or the consumer cannot be created (its last item is the error).
///
/// The consumer is the same ephemeral ordered push consumer as [`super::ordered_messages`] (no acks,
/// flow control, idle heartbeats). Its deliveries are received on a connection of the reader's
/// own ([`super::wire`], when `nats.own_reader` is on and that connection can be had: not with
/// a server that asks for TLS) or else on a plain subscription of `client`; either way the stream sequence comes straight from
/// the reply subject, once, and no per-message JetStream context is built. A gap (a consumer
/// sequence skipped, a heartbeat that says more was sent, or silence past [`HEARTBEAT_GRACE`])
/// or a lost connection makes the task start a new consumer after the last sequence it passed
/// on, as the client's ordered consumer would; each such restart is logged, because each one
/// makes the server send again what was lost.
pub async fn read_batches(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    nats: &NatsSettings,
    status: Arc<BrokerStatus>,
    (from, batch_size): (u64, usize),
    rules: DecodeRules,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<Vec<Decoded>>>> {
    let decode = move |batch| decode_batch(batch, &rules);
    spawn_reader(client, stream, nats, status, (from, batch_size), decode).await
}

/// [`read_batches`] without the decoding: the messages as they come. The benchmark's raw read
/// through the daemon's own connection (the limit of the way the daemon reads).
pub async fn read_raw(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    nats: &NatsSettings,
    (from, batch_size): (u64, usize),
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<Vec<RawMessage>>>> {
    let status = Arc::new(BrokerStatus::default());
    spawn_reader(client, stream, nats, status, (from, batch_size), |batch| {
        batch
    })
    .await
}

/// Starts the consumer and a task that passes on `each` of its batches (see [`read_batches`]).
async fn spawn_reader<T: Send + 'static>(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    nats: &NatsSettings,
    status: Arc<BrokerStatus>,
    (from, batch_size): (u64, usize),
    each: impl Fn(Vec<RawMessage>) -> T + Send + 'static,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<T>>> {
    let own = match (nats.own_reader, nats.secured()) {
        (true, false) => Some(OwnConnection {
            servers: super::url::servers(&nats.url)?,
            timeout: Duration::from_millis(nats.connect_timeout_ms),
        }),
        (true, true) => {
            if !SECURED_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(
                    "TLS, an NKey or a .creds file is configured: the stream is read through the \
                     client library, which speaks them (the own connection speaks plain TCP)"
                );
            }
            None
        }
        (false, _) => None,
    };
    let mut reader =
        Deliveries::start(client, stream, own, from.max(1), batch_size, status).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let batch = match reader.next_batch().await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            };
            if tx.send(Ok(each(batch))).await.is_err() {
                break;
            }
        }
        reader.stop().await;
    });
    Ok(rx)
}

/// Set once the reader has said that a secured connection is read through the library.
static SECURED_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where the reader's own connection goes.
#[derive(Clone)]
struct OwnConnection {
    /// Every server of `nats.url`, tried in order.
    servers: Vec<super::url::ServerUrl>,
    timeout: Duration,
}

/// Where a consumer's deliveries arrive.
enum Feed {
    /// A connection of the reader's own.
    Own(wire::Subscription),
    /// A subscription of the shared client (a server the own connection cannot speak to, or
    /// `nats.own_reader = false`).
    Client(futures::stream::ReadyChunks<async_nats::Subscriber>),
}

/// What the reader needs of one message on the consumer's subject, whichever way it came.
struct Delivery {
    subject: bytes::Bytes,
    reply: Option<bytes::Bytes>,
    payload: bytes::Bytes,
    /// The status code of a heartbeat or flow-control request; `None` for an event.
    status: Option<u16>,
    /// A heartbeat's `Nats-Last-Consumer`: how many deliveries the consumer has sent.
    last_consumer: Option<u64>,
    /// A heartbeat's `Nats-Consumer-Stalled`: where a flow-control answer the server is still
    /// waiting for goes.
    stalled: Option<bytes::Bytes>,
    /// An event's [`REDRIVE_HEADER`].
    redrive_of: Option<u64>,
    /// A binary-mode event's headers (see [`ce_headers`]).
    ce_headers: Vec<(String, String)>,
}

const LAST_CONSUMER: &str = "Nats-Last-Consumer";
const STALLED: &str = "Nats-Consumer-Stalled";

impl Delivery {
    fn from_wire(m: wire::Message) -> Self {
        let status = m.status();
        let number = |name| m.header(name).and_then(|v| v.parse().ok());
        let (last_consumer, stalled, redrive_of) = match (&m.headers, status) {
            (None, _) => (None, None, None),
            (Some(_), Some(_)) => (
                number(LAST_CONSUMER),
                m.header(STALLED)
                    .map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
                None,
            ),
            (Some(_), None) => (None, None, number(REDRIVE_HEADER)),
        };
        let ce_headers = match status {
            None => ce_headers(m.headers()),
            Some(_) => Vec::new(),
        };
        Delivery {
            subject: m.subject,
            reply: m.reply,
            payload: m.payload,
            status,
            last_consumer,
            stalled,
            redrive_of,
            ce_headers,
        }
    }

    fn from_client(m: async_nats::Message) -> Self {
        let header = |name: &str| {
            let h = m.headers.as_ref()?;
            h.iter()
                .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first())
                .map(|v| v.as_str().trim().to_owned())
        };
        let (last_consumer, stalled, redrive_of) = (
            header(LAST_CONSUMER).and_then(|v| v.parse().ok()),
            header(STALLED).map(bytes::Bytes::from),
            header(REDRIVE_HEADER).and_then(|v| v.parse().ok()),
        );
        let ce_headers = m
            .headers
            .as_ref()
            .map_or_else(Vec::new, super::stream::client_ce_headers);
        Delivery {
            subject: bytes::Bytes::copy_from_slice(m.subject.as_bytes()),
            reply: m.reply.map(|r| bytes::Bytes::copy_from_slice(r.as_bytes())),
            status: m.status.map(|s| s.as_u16()),
            payload: m.payload,
            last_consumer,
            stalled,
            redrive_of,
            ce_headers,
        }
    }
}

impl Feed {
    /// Opens the feed for `inbox`: the own connection if asked for and it can be had.
    async fn open(
        client: &async_nats::Client,
        own: Option<&OwnConnection>,
        inbox: &str,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        use futures::StreamExt;
        if let Some(own) = own {
            // The servers of `nats.url` in order (one down, the next of the cluster is tried);
            // whatever stops them all (a server that asks for TLS, every one unreachable)
            // leaves the client library's way.
            for server in &own.servers {
                match wire::Subscription::connect(server, inbox, own.timeout).await {
                    Ok(sub) => return Ok(Feed::Own(sub)),
                    Err(wire::WireError::Unsupported(why)) => {
                        tracing::info!(%why, "reading the stream through the client library");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(server = ?server, error = %e, "the own connection failed; trying the next server");
                    }
                }
            }
        }
        let subscriber = client
            .subscribe(inbox.to_owned())
            .await
            .context("subscribing")?;
        Ok(Feed::Client(subscriber.ready_chunks(batch_size.max(1))))
    }

    /// The next deliveries, at least one, or why there are none: the feed ended, or nothing
    /// (not even a heartbeat) arrived for [`HEARTBEAT_GRACE`].
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, (Restart, String)> {
        use futures::StreamExt;
        let silent = || {
            (
                Restart::Silence,
                format!("no message and no heartbeat for {HEARTBEAT_GRACE:?}"),
            )
        };
        match self {
            Feed::Own(sub) => {
                let mut messages = Vec::with_capacity(max.min(4096));
                match sub.next_messages(max, HEARTBEAT_GRACE, &mut messages).await {
                    Ok(()) => Ok(messages.into_iter().map(Delivery::from_wire).collect()),
                    Err(wire::WireError::Silent(_)) => Err(silent()),
                    Err(e) => Err((Restart::Connection, e.to_string())),
                }
            }
            Feed::Client(chunks) => {
                match tokio::time::timeout(HEARTBEAT_GRACE, chunks.next()).await {
                    Ok(Some(c)) => Ok(c.into_iter().map(Delivery::from_client).collect()),
                    Ok(None) => Err((Restart::Connection, "the subscription ended".to_owned())),
                    Err(_) => Err(silent()),
                }
            }
        }
    }

    /// Sends the empty message that answers a flow-control request.
    async fn answer(
        &mut self,
        client: &async_nats::Client,
        reply: bytes::Bytes,
    ) -> anyhow::Result<()> {
        match self {
            Feed::Own(sub) => sub
                .publish_empty(&reply)
                .await
                .context("answering flow control"),
            Feed::Client(_) => {
                let subject = String::from_utf8_lossy(&reply).into_owned();
                client
                    .publish(subject, bytes::Bytes::new())
                    .await
                    .context("answering flow control")
            }
        }
    }

    async fn close(self) {
        if let Feed::Own(sub) = self {
            sub.close().await;
        }
    }
}

/// One ordered push consumer and its feed (see [`read_batches`]).
struct Deliveries {
    client: async_nats::Client,
    stream: jetstream::stream::Stream,
    own: Option<OwnConnection>,
    batch_size: usize,
    consumer: String,
    feed: Feed,
    /// Consumer sequence of the last delivery taken.
    consumer_seq: u64,
    /// Stream sequence the next batch starts at.
    next_seq: u64,
    /// When a delivery last arrived (or the consumer was started).
    progressed: std::time::Instant,
    /// Where restarts are counted, and the stream's last sequence is read.
    status: Arc<BrokerStatus>,
}

impl Deliveries {
    async fn start(
        client: &async_nats::Client,
        stream: &jetstream::stream::Stream,
        own: Option<OwnConnection>,
        from: u64,
        batch_size: usize,
        status: Arc<BrokerStatus>,
    ) -> anyhow::Result<Self> {
        let (consumer, feed) = Self::open(client, stream, own.as_ref(), from, batch_size).await?;
        Ok(Deliveries {
            client: client.clone(),
            stream: stream.clone(),
            own,
            batch_size,
            consumer,
            feed,
            consumer_seq: 0,
            next_seq: from,
            progressed: std::time::Instant::now(),
            status,
        })
    }

    async fn open(
        client: &async_nats::Client,
        stream: &jetstream::stream::Stream,
        own: Option<&OwnConnection>,
        from: u64,
        batch_size: usize,
    ) -> anyhow::Result<(String, Feed)> {
        use jetstream::consumer::{AckPolicy, DeliverPolicy, push};
        let inbox = client.new_inbox();
        // Subscribed before the consumer exists, so that nothing it pushes is missed.
        let feed = Feed::open(client, own, &inbox, batch_size).await?;
        // What the client's ordered consumer asks for, with a shorter heartbeat.
        let consumer = stream
            .create_consumer(push::Config {
                deliver_subject: inbox,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ack_policy: AckPolicy::None,
                max_deliver: 1,
                flow_control: true,
                idle_heartbeat: IDLE_HEARTBEAT,
                memory_storage: true,
                num_replicas: 1,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .context("creating an ordered consumer")?;
        let name = consumer.cached_info().name.clone();
        Ok((name, feed))
    }

    /// The next deliveries, at least one; starts a new consumer after a gap, or when it has
    /// delivered nothing for [`STALL_GRACE`] while the stream holds more.
    async fn next_batch(&mut self) -> anyhow::Result<Vec<RawMessage>> {
        loop {
            let (batch, mut gap) = match self.feed.next(self.batch_size).await {
                Ok(chunk) => self.take_chunk(chunk).await?,
                Err(why) => (Vec::new(), Some(why)),
            };
            if let Some(last) = batch.last() {
                self.next_seq = last.seq + 1;
                self.progressed = std::time::Instant::now();
            }
            let last = self.status.stream_last_seq();
            if gap.is_none() && last >= self.next_seq && self.progressed.elapsed() >= STALL_GRACE {
                let why = format!(
                    "nothing delivered for {STALL_GRACE:?} while the stream holds up to {last}"
                );
                gap = Some((Restart::Stalled, why));
            }
            if let Some((why, gap)) = gap {
                tracing::warn!(reason = %gap, from_seq = self.next_seq, "restarting the consumer");
                self.status.consumer_restarted(why);
                self.restart().await?;
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.stream.delete_consumer(&self.consumer).await;
        let (consumer, feed) = Self::open(
            &self.client,
            &self.stream,
            self.own.as_ref(),
            self.next_seq,
            self.batch_size,
        )
        .await?;
        std::mem::replace(&mut self.feed, feed).close().await;
        self.consumer = consumer;
        self.consumer_seq = 0;
        self.progressed = std::time::Instant::now();
        Ok(())
    }

    /// Deletes the consumer rather than leaving it to the server's inactivity timer.
    async fn stop(self) {
        let _ = self.stream.delete_consumer(&self.consumer).await;
        self.feed.close().await;
    }

    /// The events of one chunk of deliveries, in order, up to the first gap (and why there is
    /// one); answers flow control on the way.
    async fn take_chunk(
        &mut self,
        chunk: Vec<Delivery>,
    ) -> anyhow::Result<(Vec<RawMessage>, Option<(Restart, String)>)> {
        let mut out = Vec::with_capacity(chunk.len());
        for m in chunk {
            if let Some(status) = m.status {
                if status != 100 {
                    tracing::debug!(status, "status message from the consumer");
                    continue;
                }
                // A heartbeat says how far the consumer got (and, if the server still waits for
                // a flow-control answer, where it goes); flow control asks for an answer.
                if let Some(last) = m.last_consumer
                    && last != self.consumer_seq
                {
                    let gap = format!(
                        "the consumer sent up to {last} but {} arrived",
                        self.consumer_seq
                    );
                    return Ok((out, Some((Restart::Heartbeat, gap))));
                }
                for reply in [m.reply, m.stalled].into_iter().flatten() {
                    self.feed.answer(&self.client, reply).await?;
                }
                continue;
            }
            let sequences = m.reply.as_deref().and_then(ack_sequences);
            let Some((seq, cseq)) = sequences else {
                return Ok((
                    out,
                    Some((
                        Restart::Protocol,
                        "a delivery without a JetStream reply subject".into(),
                    )),
                ));
            };
            if cseq != self.consumer_seq + 1 {
                let gap = format!("delivery {cseq} arrived after {}", self.consumer_seq);
                return Ok((out, Some((Restart::Sequence, gap))));
            }
            self.consumer_seq = cseq;
            out.push(RawMessage {
                seq,
                subject: m.subject,
                payload: m.payload,
                redrive_of: m.redrive_of,
                ce_headers: m.ce_headers,
            });
        }
        Ok((out, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_sequences_of_both_reply_formats() {
        assert_eq!(
            ack_sequences(b"$JS.ACK.events.c1.1.42.7.1700000000000000000.3"),
            Some((42, 7))
        );
        assert_eq!(
            ack_sequences(b"$JS.ACK._.ACCHASH.events.c1.1.42.7.1700000000000000000.3.tok"),
            Some((42, 7))
        );
        assert_eq!(
            ack_sequences(b"$JS.ACK.hub.ACCHASH.events.c1.1.42.7.1700000000000000000.3"),
            Some((42, 7))
        );
        assert_eq!(ack_sequences(b"_INBOX.abc"), None);
        assert_eq!(ack_sequences(b"$JS.ACK.events.c1.1.x.7.1.3"), None);
        assert_eq!(ack_sequences(b"$JS.ACK.events.c1.1.42"), None);
        assert_eq!(ack_sequences(b"$JS.ACK.events.c1.1..7.1.3"), None);
        assert_eq!(
            ack_sequences(b"$JS.ACK.events.c1.1.18446744073709551616.7.1.3"),
            None,
            "beyond u64"
        );
    }
}
