//! Start-up and shutdown: [`App::build`] opens the store, connects the broker and binds the
//! listener (port 0 works: [`App::port`] tells which one), [`App::run`] serves and ingests until
//! the injected cancellation token fires.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, StoreSettings};
use crate::http::auth::Authenticator;
use crate::http::{Admin, AppState, router};
use crate::metrics::Metrics;
use crate::nats::{self, Broker};
use crate::ops::ingest;
use crate::store::{FlushPolicy, Ledger};

/// A built, not yet running daemon.
pub struct App {
    settings: Settings,
    ledger: Arc<Ledger>,
    auth: Arc<Authenticator>,
    broker: Broker,
    listener: TcpListener,
    port: u16,
}

impl App {
    /// Opens the store (rebuilding the query view), connects to NATS (starting a child server
    /// when configured to) and binds the HTTP listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let auth = Authenticator::from_settings(&settings.auth).context("auth")?;
        auth.refuse_dev_credentials(settings.http.listen, settings.auth.allow_dev_credentials)
            .context("auth")?;
        let path = settings.store.path.clone();
        let policy = flush_policy(&settings.store);
        let ledger = tokio::task::spawn_blocking(move || Ledger::open(&path, policy))
            .await?
            .with_context(|| format!("opening the store at {}", settings.store.path.display()))?;
        tracing::info!(
            tickets = ledger.current().ticket_count(),
            applied_seq = ledger.current().applied_seq(),
            "store open"
        );
        let broker = nats::connect(&settings.nats).await?;
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            settings,
            ledger: Arc::new(ledger),
            auth: Arc::new(auth),
            broker,
            listener,
            port,
        })
    }

    /// The HTTP port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ledger (for tests and tools running in the same process).
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// Serves the API and runs the ingest loop until `cancel` fires; then lets the current batch
    /// finish, flushes the store and stops the child broker, if any.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let broker = self.broker.status.clone();
        let metrics = Arc::new(Metrics::new());
        let listen = self.listener.local_addr()?;
        let state = AppState {
            ledger: self.ledger.clone(),
            auth: self.auth.clone(),
            ready_max_lag: self.settings.http.ready_max_lag,
            ready_max_stale: std::time::Duration::from_millis(
                self.settings.http.ready_max_stale_ms,
            ),
            held: (!self.settings.ingest.projects.is_empty())
                .then(|| self.settings.ingest.projects.clone().into()),
            admin: Arc::new(Admin::new(
                self.broker.client.clone(),
                self.settings.nats.clone(),
                self.settings.ingest.clone(),
            )),
            broker: broker.clone(),
            metrics: metrics.clone(),
            metrics_open: self
                .settings
                .http
                .metrics_open
                .unwrap_or(listen.ip().is_loopback()),
        };
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, embedded_nats = self.broker.is_embedded(), "listening");
        let ingest = on_own_thread(
            "ledger-ingest",
            ingest::run(
                self.broker.client.clone(),
                self.ledger.clone(),
                broker,
                metrics,
                self.settings.nats.clone(),
                self.settings.ingest.clone(),
                cancel.clone(),
            ),
        )?;
        let server = axum::serve(self.listener, router(state))
            .with_graceful_shutdown(cancel.clone().cancelled_owned());
        let served = server.await.context("HTTP server");
        cancel.cancel();
        ingest
            .await
            .context("the ingest thread ended without finishing")?;
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.persist())
            .await?
            .context("writing the store")?;
        self.broker.shutdown().await;
        tracing::info!("stopped");
        served
    }
}

/// Runs `task` on a thread of its own, `name`, with a single-threaded runtime of its own; the
/// receiver gets its output (none if the task panicked). Ingest runs so: reading and decoding a
/// batch on the HTTP server's workers held the requests queued behind that worker for the
/// batch's length; on a thread of its own it shares the cores with the server through the OS's
/// scheduler, a time slice at a time.
fn on_own_thread<F>(
    name: &str,
    task: F,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("the {name} runtime"))?;
    let (done, output) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = done.send(runtime.block_on(task));
        })
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(output)
}

/// The write-behind policy the store settings describe.
pub(crate) fn flush_policy(s: &StoreSettings) -> FlushPolicy {
    FlushPolicy {
        max_events: s.flush_events.max(1),
        max_interval: std::time::Duration::from_millis(s.flush_interval_ms),
        cache_mb: s.cache_mb.max(1),
        lock_wait: std::time::Duration::from_millis(s.lock_wait_ms),
        min_free_bytes: s.min_free_mb.saturating_mul(1024 * 1024),
    }
}
