//! The command line: `serve`, `emit` and `hash-token`.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;
use crate::core::domain::ProjectId;
use crate::core::events::{
    self, CreatedData, DEFAULT_JOB_TYPE, Detail, Event, InstanceEvent, Kind, OperationRequest,
};
use crate::core::job::{Operation, OperationType};
use crate::http::auth::hash_token;
use crate::nats::{ensure_stream, server_addrs};
use crate::ops::audit::{self, AdminClient};
use crate::telemetry;

/// Event-sourced ledger of COC script tickets: NATS JetStream events in, sled projection,
/// `GET /v1/job/script/orders` out.
#[derive(Debug, Parser)]
#[command(name = "ticket-ledger", version)]
pub struct Cli {
    /// A TOML file overriding config/default.toml (environment variables override both).
    #[arg(long, global = true, env = "TICKET_LEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: ingest events and serve the API (starts nats-server if none answers).
    Serve,
    /// Publish events: one from flags, or many from a JSON-lines file of CloudEvents.
    Emit(Box<EmitArgs>),
    /// Print the SHA-256 of a token read from standard input (one line), as
    /// `auth.tokens[].sha256` wants it. Not an argument, so that it stays out of shell history
    /// and process lists: `ticket-ledger hash-token < token-file`, or type it and press Enter.
    HashToken,
    /// Show a ticket and every event that touched it, in stream order (action coc:job:get).
    History {
        /// The ticket's execute_uuid.
        execute_uuid: String,
        /// The project (needed when the token grants several).
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List the dead letters: refused events with sequence, reason and payload.
    DeadLetters {
        /// Also list the ones already redriven.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Re-apply pending dead letters in stream order (after their cause is fixed).
    Redrive {
        /// Only these sequences (default: every pending dead letter).
        #[arg(long = "seq")]
        seqs: Vec<u64>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Rebuild the projection from the first event of the stream, beside the live one, and
    /// switch over when caught up; the API keeps answering meanwhile.
    Replay {
        /// Rebuild even if retention dropped the start of the stream.
        #[arg(long)]
        accept_partial: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List tickets, as the list API does: its filters as flags, a table or `--json`
    /// (action coc:job:list).
    List {
        #[command(flatten)]
        list: crate::ops::operator::ListArgs,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// `/readyz` in words: broker connection, lag, the list view; exits 1 when not ready.
    Status {
        /// The daemon's base URL (default: from http.listen).
        #[arg(long)]
        url: Option<String>,
    },
    /// Exit 0 if the daemon answers `GET /healthz` with 200, 1 otherwise: a container's health
    /// check, with no shell or curl in the image.
    Health {
        /// The daemon's base URL (default: from http.listen).
        #[arg(long)]
        url: Option<String>,
        /// Ask `/readyz` instead: ready to serve (caught up, broker connected).
        #[arg(long)]
        ready: bool,
    },
    /// Fold the stream from the start and compare it, record by record, with the live
    /// projection; exits 1 when they differ.
    Verify {
        /// Where the export and the scratch fold go while verify runs (the system's temporary
        /// directory by default); about the store's size is needed.
        #[arg(long)]
        scratch: Option<std::path::PathBuf>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Compare two live replicas record by record (each difference checked against the stream,
    /// since the two read it at their own pace); exits 1 when they disagree.
    Compare {
        /// The first replica's base URL.
        url_a: String,
        /// The second replica's base URL.
        url_b: String,
        /// Where the exports go while compare runs (the system's temporary directory by default).
        #[arg(long)]
        scratch: Option<std::path::PathBuf>,
        /// A token granted coc:ledger:admin on both.
        #[arg(long, env = "TICKET_LEDGER_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// With the daemon stopped: fold the whole stream into a new store generation and make it
    /// live, setting the others aside as `kept-gen-…` (nothing is deleted). The way out of a
    /// store the daemon refuses to open (damaged, another format, `CURRENT` lost).
    RebuildStore {
        /// Build it even if retention dropped the start of the stream.
        #[arg(long)]
        accept_partial: bool,
    },
}

/// How the audit commands reach the running daemon.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The daemon's base URL (default: from http.listen).
    #[arg(long)]
    pub url: Option<String>,
    /// A token with the needed action (coc:ledger:admin for the ledger commands).
    #[arg(long, env = "TICKET_LEDGER_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl DaemonArgs {
    fn client(&self, settings: &Settings) -> AdminClient {
        let url = self.url.clone().unwrap_or_else(|| local_url(settings));
        AdminClient::new(&url, &self.token)
    }
}

/// The daemon's URL from this host, by `http.listen` (a wildcard address as loopback).
fn local_url(settings: &Settings) -> String {
    let mut addr = settings.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// `emit` arguments.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Publish in CloudEvents binary mode: the attributes as `ce-*` headers, the data as the body.
    #[arg(long)]
    pub binary: bool,
    /// A file of CloudEvents, one JSON object per line (`-` reads stdin). Each is published on
    /// the subject its `data.project_id` and `type` name, with its `id` as `Nats-Msg-Id`.
    #[arg(long, conflicts_with_all = ["kind", "project", "order_id"])]
    pub file: Option<PathBuf>,
    /// Subject for lines of --file whose subject cannot be derived (to feed bad events by hand).
    #[arg(long, requires = "file")]
    pub subject: Option<String>,
    /// Event kind.
    #[arg(long, value_parser = parse_kind, required_unless_present = "file")]
    pub kind: Option<Kind>,
    /// Project id.
    #[arg(long, required_unless_present = "file")]
    pub project: Option<String>,
    /// Ticket order id (> 0).
    #[arg(long, required_unless_present = "file")]
    pub order_id: Option<u64>,
    /// Event time: RFC 3339 or ms since the epoch (default: now).
    #[arg(long)]
    pub time: Option<String>,
    /// CloudEvents id (default: a random UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// CloudEvents source.
    #[arg(long, default_value = "ticket-ledger-emit")]
    pub source: String,
    /// `created`: ticket name.
    #[arg(long)]
    pub name: Option<String>,
    /// `created`: creator.
    #[arg(long)]
    pub creator: Option<String>,
    /// `created`: execute_uuid (default: SCT + a random UUID).
    #[arg(long)]
    pub execute_uuid: Option<String>,
    /// `created`: region ids.
    #[arg(long, default_value = "cn-north-4")]
    pub region_ids: String,
    /// `created`: job type.
    #[arg(long, default_value = DEFAULT_JOB_TYPE)]
    pub job_type: String,
    /// `created` (v1.1): a JSON file of the plan's fields of `data` (`script_uuid`,
    /// `script_name`, `script_version_uuid`, `script_version_name`, `execute_param`,
    /// `execute_batches`), as docs/events.md describes them.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// `batch_started`, `instance_*`, `operation_requested`: the batch.
    #[arg(long)]
    pub batch_index: Option<u32>,
    /// `instance_*`, `operation_requested`: the instance.
    #[arg(long)]
    pub instance_id: Option<u64>,
    /// `instance_*`: the instance's output or error (cut to 4 KiB).
    #[arg(long)]
    pub message: Option<String>,
    /// `operation_requested`: CANCEL_INSTANCE, SKIP_BATCH, CANCEL_ORDER, PAUSE_ORDER or
    /// CONTINUE_ORDER.
    #[arg(long)]
    pub operation_type: Option<String>,
    /// `operation_requested`: who asked.
    #[arg(long)]
    pub requested_by: Option<String>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let all: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}

/// Entry point of the binary.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading configuration")?;
    telemetry::init(&settings.log);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Emit(args) => emit(settings, *args).await,
        Command::HashToken => {
            let token = read_token(std::io::stdin().lock())?;
            println!("{}", hash_token(&token));
            Ok(())
        }
        Command::History {
            execute_uuid,
            project,
            daemon,
        } => audit::history(&daemon.client(&settings), &execute_uuid, project.as_deref()).await,
        Command::DeadLetters { all, json, daemon } => {
            audit::dead_letters(&daemon.client(&settings), all, json).await
        }
        Command::Redrive { seqs, daemon } => audit::redrive(&daemon.client(&settings), &seqs).await,
        Command::Replay {
            accept_partial,
            daemon,
        } => audit::replay(&daemon.client(&settings), accept_partial).await,
        Command::List { list, daemon } => {
            crate::ops::operator::list(&daemon.client(&settings), &list).await
        }
        Command::Status { url } => {
            let base = url.unwrap_or_else(|| local_url(&settings));
            crate::ops::operator::status(&AdminClient::new(&base, "")).await
        }
        Command::Health { url, ready } => {
            let base = url.unwrap_or_else(|| local_url(&settings));
            let path = if ready { "/readyz" } else { "/healthz" };
            let status = reqwest::Client::new()
                .get(format!("{}{path}", base.trim_end_matches('/')))
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
                .with_context(|| format!("GET {base}{path}"))?
                .status();
            if !status.is_success() {
                bail!("GET {base}{path}: {status}");
            }
            Ok(())
        }
        Command::RebuildStore { accept_partial } => {
            let r = crate::ops::repair::rebuild_store(&settings, accept_partial).await?;
            println!(
                "generation {} is live: {} tickets, through sequence {}",
                r.generation, r.tickets, r.applied_seq
            );
            for dir in &r.kept {
                println!(
                    "kept {} (delete it when you no longer need it)",
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Compare {
            url_a,
            url_b,
            scratch,
            token,
        } => {
            let (a, b) = (
                AdminClient::new(&url_a, &token),
                AdminClient::new(&url_b, &token),
            );
            let r = super::compare::compare(&settings, (&a, &b), scratch.as_deref()).await?;
            let (sa, sb) = r.anchors;
            for d in &r.differences {
                println!("{d}");
            }
            let verdict = if r.differences.is_empty() {
                "identical"
            } else {
                "DIFFERENT"
            };
            println!(
                "{verdict}: {} tickets, {} differing only by position (checked against the \
                 stream), at sequences {sa} and {sb}",
                r.tickets, r.explained
            );
            if !r.differences.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Verify { scratch, daemon } => {
            let client = daemon.client(&settings);
            let report = super::verify::verify(&settings, &client, scratch.as_deref()).await?;
            if report.differences.is_empty() {
                println!(
                    "identical, {} tickets, through sequence {}",
                    report.tickets, report.through_seq
                );
                Ok(())
            } else {
                for d in &report.differences {
                    println!("{d}");
                }
                println!(
                    "DIFFERENT: {} of {} tickets differ (through sequence {})",
                    report.differences.len(),
                    report.tickets,
                    report.through_seq
                );
                std::process::exit(1);
            }
        }
    }
}

/// The token on the first line of `input`, without its line ending.
fn read_token(mut input: impl BufRead) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("token: ");
    }
    let mut line = String::new();
    input.read_line(&mut line).context("reading the token")?;
    let token = line.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        bail!("no token on standard input (ticket-ledger hash-token < token-file)");
    }
    Ok(token.to_owned())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings).await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    app.run(cancel).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn parse_time(raw: Option<&str>) -> anyhow::Result<i64> {
    match raw {
        None => Ok((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64),
        Some(r) => r
            .parse::<i64>()
            .ok()
            .or_else(|| events::parse_time_ms(r))
            .with_context(|| format!("--time {r:?} is neither RFC 3339 nor ms since the epoch")),
    }
}

fn event_from_flags(a: &EmitArgs) -> anyhow::Result<Event> {
    let kind = a.kind.context("--kind is required")?;
    let project = ProjectId::parse(a.project.as_deref().unwrap_or_default())?;
    let order_id = a.order_id.context("--order-id is required")?;
    let created = if kind == Kind::Created {
        Some(CreatedData {
            execute_uuid: a
                .execute_uuid
                .clone()
                .unwrap_or_else(|| format!("SCT{}", uuid::Uuid::new_v4().simple()))
                .into(),
            order_name: a.name.clone().context("created needs --name")?.into(),
            creator: a.creator.clone().context("created needs --creator")?.into(),
            region_ids: a.region_ids.as_str().into(),
            job_type: a.job_type.as_str().into(),
            plan: None,
        })
    } else {
        None
    };
    let batch = || {
        a.batch_index
            .with_context(|| format!("{kind} needs --batch-index"))
    };
    let detail = match kind {
        Kind::BatchStarted => Detail::Batch {
            batch_index: batch()?,
        },
        k if k.is_instance() => Detail::Instance(InstanceEvent {
            batch_index: batch()?,
            instance_id: a
                .instance_id
                .context("instance events need --instance-id")?,
            message: a.message.clone(),
        }),
        Kind::OperationRequested => {
            let op = a.operation_type.as_deref().unwrap_or_default();
            Detail::Operation(Box::new(OperationRequest {
                execute_uuid: a
                    .execute_uuid
                    .clone()
                    .context("operation_requested needs --execute-uuid")?,
                operation: Operation {
                    operation_type: OperationType::parse(op)
                        .with_context(|| format!("--operation-type {op:?} is not an operation"))?,
                    batch_index: a.batch_index,
                    instance_id: a.instance_id,
                },
                requested_by: a
                    .requested_by
                    .clone()
                    .context("operation_requested needs --requested-by")?,
            }))
        }
        _ => Detail::None,
    };
    let event = Event {
        id: a
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            .into(),
        source: a.source.as_str().into(),
        kind,
        time_ms: parse_time(a.time.as_deref())?,
        project,
        order_id,
        created,
        detail,
    };
    // Whatever the flags made goes through the decoder, so that emit publishes only what the
    // ledger accepts as an event (a plan from --plan included).
    let mut v = event.to_json();
    if let Some(path) = &a.plan {
        anyhow::ensure!(kind == Kind::Created, "--plan goes with --kind created");
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let plan: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a JSON object", path.display()))?;
        v["data"]
            .as_object_mut()
            .expect("data is an object")
            .extend(plan);
    }
    let bytes = serde_json::to_vec(&v).expect("a JSON value serialises");
    events::decode(&event.subject("x"), &bytes, "x", usize::MAX)
        .map_err(|e| anyhow::anyhow!("not a valid event: {e}"))
}

/// One message to publish: subject, payload, and the `Nats-Msg-Id` if the event has an id.
struct Outgoing {
    subject: String,
    payload: Vec<u8>,
    msg_id: Option<String>,
    /// Binary mode's `ce-*` and `content-type` headers (empty: structured mode).
    headers: Vec<(&'static str, String)>,
}

impl Outgoing {
    /// An event in structured mode, or, with `binary`, in binary mode.
    fn of(e: &Event, prefix: &str, binary: bool) -> Self {
        let (headers, payload) = match binary {
            true => e.to_binary(),
            false => (Vec::new(), e.to_bytes()),
        };
        Outgoing {
            subject: e.subject(prefix),
            payload,
            msg_id: Some(e.id.to_string()),
            headers,
        }
    }
}

fn outgoing_from_line(
    line: &str,
    prefix: &str,
    fallback: Option<&str>,
) -> Result<Outgoing, String> {
    let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let derived = value.as_ref().and_then(|v| {
        let project = v.pointer("/data/project_id")?.as_str()?;
        let kind = v.get("type")?.as_str()?.strip_prefix(events::TYPE_PREFIX)?;
        Some(format!("{prefix}.{project}.{kind}"))
    });
    let subject = derived
        .or_else(|| fallback.map(str::to_owned))
        .ok_or("cannot derive the subject from data.project_id and type; pass --subject")?;
    let msg_id = value
        .as_ref()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
    Ok(Outgoing {
        subject,
        payload: line.as_bytes().to_vec(),
        msg_id,
        headers: Vec::new(),
    })
}

/// The `Outgoing` of a line of `--file`, or why the line cannot be published.
fn line_to_outgoing(line: &str, prefix: &str, args: &EmitArgs) -> Result<Outgoing, String> {
    let o = outgoing_from_line(line, prefix, args.subject.as_deref())?;
    if !args.binary {
        return Ok(o);
    }
    // Binary mode is made from the event the line decodes to.
    let e = events::decode(&o.subject, &o.payload, prefix, usize::MAX)
        .map_err(|e| format!("--binary needs a valid event: {e}"))?;
    Ok(Outgoing::of(&e, prefix, true))
}

/// The lines of `reader` as `Outgoing`s, one at a time (blank lines skipped, errors naming
/// their line), so that a file of any size is published in constant memory.
fn outgoing_lines<'a>(
    reader: impl BufRead + 'a,
    prefix: &'a str,
    args: &'a EmitArgs,
) -> impl Iterator<Item = anyhow::Result<Outgoing>> + 'a {
    reader
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(n, line)| {
            let line = line.with_context(|| format!("reading line {}", n + 1))?;
            line_to_outgoing(&line, prefix, args)
                .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))
        })
}

async fn emit(settings: Settings, args: EmitArgs) -> anyhow::Result<()> {
    let prefix = settings.nats.subject_prefix.clone();
    let open = |file: &std::path::Path| -> anyhow::Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    // A file is read twice, each time one line at a time: once to check every line (nothing
    // is published if one is bad), then to publish. Standard input can be read once only: it
    // is published as it comes, and a bad line stops it there.
    if let Some(file) = args.file.as_deref().filter(|f| f.as_os_str() != "-") {
        for checked in outgoing_lines(open(file)?, &prefix, &args) {
            checked?;
        }
    }
    let client = crate::nats::client_options(&settings.nats)
        .await?
        .connect(server_addrs(&settings.nats.url)?)
        .await
        .with_context(|| {
            format!(
                "connecting to NATS at {:?} (is `ticket-ledger serve` running?)",
                crate::nats::url::servers(&settings.nats.url).unwrap_or_default()
            )
        })?;
    let js = jetstream::new(client);
    ensure_stream(&js, &settings.nats).await?;
    let last = match args.file.as_deref() {
        Some(f) if f.as_os_str() == "-" => {
            publish_all(&js, outgoing_lines(std::io::stdin().lock(), &prefix, &args)).await?
        }
        Some(f) => publish_all(&js, outgoing_lines(open(f)?, &prefix, &args)).await?,
        None => {
            let one = Outgoing::of(&event_from_flags(&args)?, &prefix, args.binary);
            publish_all(&js, std::iter::once(Ok(one))).await?
        }
    };
    println!("published through stream sequence {last}");
    Ok(())
}

/// Publishes each `Outgoing` as it comes, with up to a window of acks outstanding; returns the
/// last stream sequence. An error (a bad line of standard input) stops it there, after waiting
/// for the acks of what was published.
async fn publish_all(
    js: &jetstream::Context,
    out: impl Iterator<Item = anyhow::Result<Outgoing>>,
) -> anyhow::Result<u64> {
    const WINDOW: usize = 1000;
    let mut pending = VecDeque::new();
    let mut last = 0;
    let mut total = 0u64;
    let mut stopped = None;
    for o in out {
        let o = match o {
            Ok(o) => o,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        };
        total += 1;
        let mut headers = HeaderMap::new();
        if let Some(id) = &o.msg_id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        for (name, value) in &o.headers {
            headers.insert(*name, value.as_str());
        }
        pending.push_back(
            js.publish_with_headers(o.subject, headers, o.payload.into())
                .await?,
        );
        if pending.len() >= WINDOW {
            let ack = pending.pop_front().expect("non-empty").await?;
            last = last.max(ack.sequence);
        }
    }
    for p in pending {
        let ack = p.await?;
        last = last.max(ack.sequence);
    }
    if let Some(e) = stopped {
        return Err(e.context(format!(
            "stopped after publishing {total} event(s), through stream sequence {last}"
        )));
    }
    if total == 0 {
        bail!("nothing to publish");
    }
    eprintln!("published {total} event(s)");
    Ok(last)
}

#[cfg(test)]
mod tests;
