//! What the benchmark and the soak start: their own `nats-server` (JetStream, temp dir, free
//! port) and the daemon binary as a child with its own store and a token for the benchmark's
//! principal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use ticket_ledger::config::Settings;

use crate::BENCH_TOKEN;
use crate::procs::{KillOnDrop, free_port};
use crate::stats::readyz;

/// A `nats-server` child and a client of it.
pub struct Broker {
    /// The child (killed on drop).
    pub process: KillOnDrop,
    /// Its pid, for its CPU time.
    pub pid: u32,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// The binary started.
    pub binary: PathBuf,
    /// A client with the daemon's subscription capacity.
    pub client: async_nats::Client,
    /// JetStream on it, the stream created.
    pub js: jetstream::Context,
    /// The daemon's default settings pointed at it.
    pub settings: Settings,
}

impl Broker {
    /// Starts `nats-server` with its store under `dir` and creates the ledger's stream.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let launch = ticket_ledger::nats::server::Launch {
            binary: ticket_ledger::nats::find_binary(Path::new("nats-server"))?,
            host: "127.0.0.1".into(),
            port: None,
            dir: dir.join("js"),
            log: None,
            args: Vec::new(),
        };
        let process = KillOnDrop(launch.command()?.spawn().context("starting nats-server")?);
        let port =
            ticket_ledger::nats::server::reported_port(&launch.dir, Duration::from_secs(15))?;
        let url = format!("nats://127.0.0.1:{port}");
        let mut settings = Settings::defaults();
        settings.nats.url = url.clone();
        let client = loop {
            // The daemon's subscription capacity, so that a raw read drops nothing either.
            let options = async_nats::ConnectOptions::new()
                .subscription_capacity(ticket_ledger::nats::SUBSCRIPTION_CAPACITY);
            if let Ok(c) = options.connect(url.as_str()).await {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let js = jetstream::new(client.clone());
        ticket_ledger::nats::ensure_stream(&js, &settings.nats).await?;
        Ok(Self {
            pid: process.0.id(),
            process,
            url,
            binary: launch.binary,
            client,
            js,
            settings,
        })
    }
}

/// The daemon binary as a child process.
pub struct Daemon {
    /// The child (killed on drop).
    pub process: KillOnDrop,
    /// Its pid, for its CPU time and memory.
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its store.
    pub store: PathBuf,
}

impl Daemon {
    /// Starts `binary serve` on a free port with its store and config under `dir`, reading the
    /// broker at `nats_url`; its principal "bench" may list, get and administer the benchmark's
    /// ten projects.
    pub fn start(binary: &Path, dir: &Path, nats_url: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = dir.join("store");
        let config = dir.join("bench.toml");
        let projects: Vec<String> = (0..10).map(|i| format!("\"project-{i}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "[[auth.principals]]\nname = \"bench\"\nprojects = [{}]\n\
                 actions = [\"coc:job:list\", \"coc:job:get\", \"coc:ledger:admin\"]\n\n\
                 [[auth.tokens]]\nprincipal = \"bench\"\nsha256 = \"{}\"\n\n\
                 [auth]\naccess_keys = []\n",
                projects.join(", "),
                ticket_ledger::http::auth::hash_token(BENCH_TOKEN)
            ),
        )?;
        let process = KillOnDrop(
            Command::new(binary)
                .arg("serve")
                .env("TICKET_LEDGER_CONFIG", &config)
                .env("TICKET_LEDGER_NATS__URL", nats_url)
                .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
                .env("TICKET_LEDGER_STORE__PATH", &store)
                .env("TICKET_LEDGER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .env("TICKET_LEDGER_LOG__LEVEL", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the daemon")?,
        );
        Ok(Self {
            pid: process.0.id(),
            process,
            base: format!("http://127.0.0.1:{port}"),
            store,
        })
    }

    /// Waits until the list view shows every event through `seq`.
    pub async fn wait_view(&mut self, http: &reqwest::Client, seq: u64) -> anyhow::Result<()> {
        loop {
            if let Some(r) = readyz(http, &self.base).await
                && r["view_seq"].as_u64() >= Some(seq)
            {
                return Ok(());
            }
            if let Some(status) = self.process.0.try_wait()? {
                bail!("the daemon exited ({status}); run it by hand to see why");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
