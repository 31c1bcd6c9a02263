//! The broker shell: everything that speaks to NATS JetStream. May use [`crate::core`] and
//! [`crate::config`]; knows nothing of sled, the view or HTTP.
//!
//! - [`url`]: the one reading of `nats.url` (a list of servers, IPv6, credentials).
//! - [`server`]: starting a `nats-server` (the embedded broker, the benchmark's, the tests').
//! - [`stream`]: the event stream's set-up and the client library's ordered consumer.
//! - [`reader`]: the batches ingest and rebuild fold, read on a task of their own.
//! - [`wire`]: the reader's own NATS connection: the protocol for one subscription, no more.
//! - [`status`]: what ingest last saw of the broker, for `/readyz`.
//!
//! When no broker answers and `nats.embedded = "auto"`, the daemon starts `nats-server` as a
//! child with JetStream on and its files under `nats.embedded_dir`, listening where `nats.url`
//! points (so `ticket-ledger emit` and other clients find it), and kills it when it stops.

pub(crate) mod reader;
pub mod server;
pub(crate) mod status;
pub(crate) mod stream;
pub mod url;
pub(crate) mod wire;

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::config::{Embedded, NatsSettings};
pub use reader::{read_batches, read_raw};
pub use server::find_binary;
pub use status::{BrokerStatus, Restart};
pub use stream::{
    SUBSCRIPTION_CAPACITY, ensure_stream, oldest_unapplied, ordered_messages, raw_message,
};

/// A connected client, and the child server if the daemon started one.
pub struct Broker {
    /// The NATS client (reconnects by itself, forever).
    pub client: async_nats::Client,
    /// What ingest sees of the broker, and the client's dropped connections.
    pub status: std::sync::Arc<BrokerStatus>,
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

async fn answers(addr: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The client library's addresses of `nats.url`'s servers, in order.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, url::UrlError> {
    url::servers(url)?
        .iter()
        .map(url::ServerUrl::client_addr)
        .collect()
}

/// The client library's options for `nats`: the connection timeout, TLS (a CA, a client
/// certificate), an NKey seed or a `.creds` file. Every connection the daemon and its commands
/// open starts from these.
pub async fn client_options(s: &NatsSettings) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut o = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(s.connect_timeout_ms));
    if let Some(ca) = &s.tls_ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(cert), Some(key)) => {
            o = o
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => bail!("nats.tls_cert_file and nats.tls_key_file go together"),
    }
    if let Some(seed) = &s.nkey_seed_file {
        let seed = std::fs::read_to_string(seed)
            .with_context(|| format!("reading nats.nkey_seed_file {}", seed.display()))?;
        o = o.nkey(seed.trim().to_owned());
    }
    if let Some(creds) = &s.creds_file {
        o = o
            .credentials_file(creds)
            .await
            .with_context(|| format!("reading nats.creds_file {}", creds.display()))?;
    }
    Ok(o)
}

/// Connects to the configured broker, starting a child `nats-server` first when configured to
/// and nothing answers at the first server of `nats.url`.
pub async fn connect(s: &NatsSettings) -> anyhow::Result<Broker> {
    let first = url::servers(&s.url)?.swap_remove(0);
    let addr = first.addr();
    let timeout = Duration::from_millis(s.connect_timeout_ms);
    let spawn = match s.embedded {
        Embedded::Always => true,
        Embedded::Never => false,
        Embedded::Auto => !answers(&addr, timeout).await,
    };
    let child = if spawn {
        tracing::info!(%addr, "no NATS server answers; starting nats-server");
        let launch = server::Launch {
            binary: find_binary(&s.server_binary)?,
            host: first.host.clone(),
            port: Some(first.port),
            dir: s.embedded_dir.clone(),
            log: Some(s.embedded_dir.join("nats-server.log")),
            args: Vec::new(),
        };
        let mut cmd = tokio::process::Command::from(launch.command()?);
        let child = cmd
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        tracing::info!(binary = %launch.binary.display(), dir = %launch.dir.display(), "nats-server started");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !answers(&addr, timeout).await {
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server did not start listening on {addr} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(child)
    } else {
        None
    };
    let status = std::sync::Arc::new(BrokerStatus::default());
    let counted = status.clone();
    let client = client_options(s)
        .await?
        .event_callback(move |e| {
            let counted = counted.clone();
            async move {
                if matches!(e, async_nats::Event::Disconnected) {
                    counted.disconnected();
                }
            }
        })
        .name("ticket-ledger")
        // Above what a consumer's flow-control window lets the server push ahead of its answer,
        // so that a fold that holds the reader back never makes the client drop deliveries
        // (which would make the consumer start over and the server send them again).
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .retry_on_initial_connect()
        .connect(server_addrs(&s.url)?)
        .await
        .with_context(|| format!("connecting to {:?}", url::servers(&s.url).ok()))?;
    Ok(Broker {
        client,
        status,
        child,
    })
}
