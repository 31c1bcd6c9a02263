//! The soak: the daemon on a store of N tickets, under steady ingest at a set rate while 8
//! connections send a mix of the list's queries and the detail at a fixed total rate, for
//! minutes; per minute, each query kind's p50/p99, the daemon's RSS, the largest lag and the
//! errors. Then the records export, with the daemon's RSS watched while it streams.
//!
//! Requests run on an open-loop schedule: request k of the run is due at `k / qps` seconds and
//! its latency counts from then, so a daemon that falls behind shows it as latency (queueing)
//! instead of quietly sending fewer requests (the coordinated omission of a closed loop).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::history::History;
use crate::procs::rss_kib;
use crate::reads::{publish_event, publish_history};
use crate::setup::{Broker, Daemon};
use crate::stats::{percentiles, readyz};

/// Soak options.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Tickets in the store before the soak.
    pub tickets: u64,
    /// Minutes of load.
    pub minutes: u64,
    /// Events published per second during the soak.
    pub rate: u64,
    /// Requests per second, in all, over 8 connections.
    pub qps: u64,
    /// The daemon binary.
    pub daemon: PathBuf,
}

/// The records exports after the soak, one after the other.
const EXPORTS: [&str; 3] = ["Records export", "A second export", "A third export"];

/// Query connections.
const CONNECTIONS: u64 = 8;

/// One minute of the soak.
#[derive(Debug, Default, Clone)]
pub struct Minute {
    /// Latencies, µs, by query kind.
    pub latencies: BTreeMap<&'static str, Vec<f64>>,
    /// Failed requests.
    pub errors: u64,
    /// How late the generator started requests whose connection was free when they were due,
    /// µs: its own share of the latencies.
    pub late: Vec<f64>,
    /// The daemon's RSS at the minute's end, KiB.
    pub rss_kib: u64,
    /// The largest lag seen (stream's last sequence minus applied), events.
    pub max_lag: u64,
    /// Events published in the minute.
    pub published: u64,
    /// Tickets the daemon held at the minute's end.
    pub tickets: u64,
}

/// The query mix: the list's kinds as the benchmark asks them, and the detail of a ticket.
fn request(k: u64, tickets: u64) -> (&'static str, String, String) {
    let id = 1 + (k.wrapping_mul(2_654_435_761) % tickets);
    let project = format!("project-{}", id % 10);
    let list = |q: &str| format!("/v1/job/script/orders?{q}");
    let (kind, path) = match k % 8 {
        0 => ("no filter", list("limit=10")),
        1 => ("creator", list("limit=10&creator=creator-7")),
        2 => ("status", list("limit=10&status=ABNORMAL")),
        3 => (
            "creator+status",
            list("limit=10&creator=creator-7&status=FINISHED"),
        ),
        4 => ("name_like", list("limit=10&name_like=kalo")),
        5 => ("deep page", list("limit=10&marker=200")),
        6 => ("processing", list("limit=10&status=PROCESSING")),
        _ => ("detail", format!("/v1/job/script/orders/SCT{id:012}")),
    };
    (kind, path, project)
}

/// Runs the soak and returns its report (Markdown).
pub async fn soak(opts: SoakOptions) -> anyhow::Result<String> {
    let tmp = tempfile::tempdir().context("temp dir")?;
    let broker = Broker::start(tmp.path()).await?;
    eprintln!("publishing {} tickets...", opts.tickets);
    let prefix = broker.settings.nats.subject_prefix.clone();
    let (events, secs) = publish_history(
        &broker.js,
        (opts.tickets, crate::history::PLANS_EVERY),
        &prefix,
        &mut Vec::new(),
    )
    .await?;
    eprintln!("published {events} events in {secs:.0}s; starting the daemon");
    let stream_bytes = broker
        .js
        .get_stream(&broker.settings.nats.stream)
        .await?
        .cached_info()
        .state
        .bytes;
    let mut daemon = Daemon::start(&opts.daemon, tmp.path(), &broker.url)?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    daemon.wait_view(&http, events).await?;
    eprintln!(
        "ingested in {:.0}s; soaking for {} minutes",
        started.elapsed().as_secs_f64(),
        opts.minutes
    );

    let minutes: Arc<std::sync::Mutex<Vec<Minute>>> = Arc::new(std::sync::Mutex::new(vec![
            Minute::default();
            opts.minutes as usize
        ]));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(opts.minutes * 60);
    let minute_of = move |at: Instant| (at.duration_since(t0).as_secs() / 60) as usize;

    // Ingest: new tickets after the store's, `rate` events a second in steps of 10 ms.
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (js, published, minutes) = (broker.js.clone(), published.clone(), minutes.clone());
        let prefix = prefix.clone();
        let first = opts.tickets + 1;
        let per_step = (opts.rate / 100).max(1);
        tokio::spawn(async move {
            let mut history = History::of_tickets(first, u64::MAX / 2);
            let mut acks = std::collections::VecDeque::new();
            let mut step = tokio::time::interval(Duration::from_millis(10));
            while Instant::now() < end {
                step.tick().await;
                for _ in 0..per_step {
                    let (e, _) = history.next().expect("endless");
                    acks.push_back(publish_event(&js, &e, &prefix).await?);
                }
                while acks.len() > 2_000 {
                    acks.pop_front().expect("non-empty").await?;
                }
                published.fetch_add(per_step, Ordering::Relaxed);
                let m = minute_of(Instant::now());
                if let Some(m) = minutes.lock().unwrap().get_mut(m) {
                    m.published += per_step;
                }
            }
            for a in acks {
                a.await?;
            }
            anyhow::Ok(())
        })
    };

    // Queries: connection c sends requests c, c + 8, c + 16, ... each at its scheduled time,
    // from a thread of its own with a blocking client (as wrk2 does). The generator shares the
    // two cores with the daemon and the broker, so every hand-off it makes is a wake-up that may
    // wait for a core, counted as the daemon's latency: here a request is one sleep on the OS's
    // timer (tokio's has a millisecond's granularity), one write and one read, with nothing
    // between the schedule and the socket. (A scheduler thread feeding async connections on a
    // runtime of their own, as before, kept the generator itself 2.6–3.8 ms late at p99.)
    let interval = Duration::from_secs_f64(1.0 / opts.qps as f64);
    let mut workers = Vec::new();
    for c in 0..CONNECTIONS {
        let (base, tickets) = (daemon.base.clone(), opts.tickets);
        let minutes = opts.minutes as usize;
        workers.push(
            std::thread::Builder::new()
                .name(format!("soak-conn-{c}"))
                .spawn(move || connection(c, &base, tickets, (t0, end, interval), minutes))?,
        );
    }
    // The watcher: lag every 200 ms, RSS and tickets at each minute's end.
    let mut last_minute = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = minute_of(Instant::now());
        if let Some(r) = readyz(&http, &daemon.base).await {
            let lag = r["stream_last_seq"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(r["applied_seq"].as_u64().unwrap_or(0));
            let mut ms = minutes.lock().unwrap();
            if let Some(m) = ms.get_mut(now) {
                m.max_lag = m.max_lag.max(lag);
                m.tickets = r["tickets"].as_u64().unwrap_or(0);
                m.rss_kib = rss_kib(daemon.pid).unwrap_or(0);
            }
        }
        if now != last_minute {
            eprintln!("minute {} done", last_minute + 1);
            last_minute = now;
        }
    }
    publisher.await??;
    for w in workers {
        let theirs = w.join().expect("a connection thread panicked")?;
        let mut ms = minutes.lock().unwrap();
        for (m, t) in ms.iter_mut().zip(theirs) {
            for (kind, l) in t.latencies {
                m.latencies.entry(kind).or_default().extend(l);
            }
            m.errors += t.errors;
            m.late.extend(t.late);
        }
    }
    // Three times: what the first adds and keeps, and whether the next ones add more.
    let mut export = Vec::new();
    for _ in 0..EXPORTS.len() {
        export.push(export_rss(&http, &daemon).await?);
    }
    let verify = verify_rss(&opts.daemon, tmp.path(), &broker.url, &daemon.base).await?;
    let minutes = minutes.lock().unwrap().clone();
    let sizes = Sizes {
        stream_bytes,
        store_bytes: crate::procs::dir_size(&daemon.store),
        tickets: readyz(&http, &daemon.base)
            .await
            .and_then(|r| r["tickets"].as_u64())
            .unwrap_or(0),
    };
    Ok(report(&opts, events, &minutes, export, verify, sizes))
}

/// One query connection's requests, on its own thread: request `c`, `c + 8`, ... each sent at its
/// due time over one kept-alive connection, its latency counted from then; what it measured,
/// per minute (latencies, errors and the generator's lateness only).
fn connection(
    c: u64,
    base: &str,
    tickets: u64,
    (t0, end, interval): (Instant, Instant, Duration),
    minutes: usize,
) -> anyhow::Result<Vec<Minute>> {
    let agent = ureq::AgentBuilder::new().max_idle_connections(1).build();
    let mut out = vec![Minute::default(); minutes];
    let mut body = Vec::with_capacity(64 * 1024);
    let mut idle_since = t0;
    for k in (c..).step_by(CONNECTIONS as usize) {
        let due = t0 + interval.mul_f64(k as f64);
        if due >= end {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let start = Instant::now();
        let (kind, path, project) = request(k, tickets);
        let ok = agent
            .get(&format!("{base}{path}"))
            .set("X-Auth-Token", crate::BENCH_TOKEN)
            .set("x-project-id", &project)
            .call()
            .ok()
            .is_some_and(|r| {
                body.clear();
                // Read to the end, so the connection is kept for the next request.
                r.into_reader().read_to_end(&mut body).is_ok()
            });
        let done = Instant::now();
        let m = &mut out[((due - t0).as_secs() / 60) as usize];
        if ok {
            m.latencies
                .entry(kind)
                .or_default()
                .push((done - due).as_secs_f64() * 1e6);
        } else {
            m.errors += 1;
        }
        // The generator's own lateness, where the connection was free when due.
        if idle_since <= due {
            m.late.push((start - due).as_secs_f64() * 1e6);
        }
        idle_since = done;
    }
    Ok(out)
}

/// One records export: the daemon's RSS before it, the most it reached while the export
/// streamed and what it was 5 s after (KiB), and the export's bytes.
struct ExportRss {
    before: u64,
    peak: u64,
    after: u64,
    bytes: u64,
}

/// `ticket-ledger verify`'s peak RSS (KiB), its seconds and its verdict line.
struct VerifyRun {
    peak: u64,
    secs: f64,
    verdict: String,
}

/// Exports the records once, watching the daemon's RSS.
async fn export_rss(http: &reqwest::Client, daemon: &Daemon) -> anyhow::Result<ExportRss> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = rss_kib(daemon.pid).unwrap_or(0);
    let mut resp = http
        .get(format!("{}/v1/ledger/records", daemon.base))
        .header("X-Auth-Token", crate::BENCH_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "export: {}", resp.status());
    let (mut bytes, mut peak) = (0u64, before);
    while let Some(piece) = resp.chunk().await? {
        bytes += piece.len() as u64;
        peak = peak.max(rss_kib(daemon.pid).unwrap_or(0));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(daemon.pid).unwrap_or(0);
    Ok(ExportRss {
        before,
        peak,
        after,
        bytes,
    })
}

/// `ticket-ledger verify` against the daemon, as an auditor runs it (its scratch store under
/// `dir`), its peak RSS read from `VmHWM` while it runs.
async fn verify_rss(
    binary: &std::path::Path,
    dir: &std::path::Path,
    nats_url: &str,
    base: &str,
) -> anyhow::Result<VerifyRun> {
    let started = Instant::now();
    let child = tokio::process::Command::new(binary)
        .args(["verify", "--url", base, "--scratch"])
        .arg(dir)
        .env("TICKET_LEDGER_CONFIG", dir.join("bench.toml"))
        .env("TICKET_LEDGER_NATS__URL", nats_url)
        .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
        .env("TICKET_LEDGER_LOG__LEVEL", "error")
        .env("TICKET_LEDGER_TOKEN", crate::BENCH_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting verify")?;
    let pid = child.id().context("verify's pid")?;
    let waited = tokio::spawn(child.wait_with_output());
    let mut peak = 0;
    while !waited.is_finished() {
        peak = peak.max(crate::procs::peak_rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = waited.await??;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let verdict = if out.status.success() {
        first
    } else {
        format!("failed ({}): {first}", out.status)
    };
    Ok(VerifyRun {
        peak,
        secs: started.elapsed().as_secs_f64(),
        verdict,
    })
}

/// What the store and the stream take: the stream's bytes after the history was published,
/// the store's on disk at the end, and the tickets then.
struct Sizes {
    stream_bytes: u64,
    store_bytes: u64,
    tickets: u64,
}

fn report(
    opts: &SoakOptions,
    events: u64,
    minutes: &[Minute],
    export: Vec<ExportRss>,
    verify: VerifyRun,
    sizes: Sizes,
) -> String {
    let kinds: Vec<&str> = (0..8).map(|k| request(k, 1).0).collect();
    let mut out = format!(
        "Soak: {} tickets ({events} events) in the store, then {} minutes of {} events/s of ingest \
         and {} requests/s over {CONNECTIONS} connections (open loop; latency from each \
         request's scheduled time), µs p50/p99; \"late\" is the generator's own lateness in \
         starting a request:\n\n| min | published | tickets | RSS MiB | RSS B/ticket | max lag | errors | late |",
        opts.tickets, opts.minutes, opts.rate, opts.qps
    );
    for k in &kinds {
        out.push_str(&format!(" {k} |"));
    }
    out.push_str("\n|---|---|---|---|---|---|---|---|");
    out.push_str(&"---|".repeat(kinds.len()));
    out.push('\n');
    for (i, m) in minutes.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            m.published,
            m.tickets,
            m.rss_kib / 1024,
            m.rss_kib * 1024 / m.tickets.max(1),
            m.max_lag,
            m.errors
        ));
        let [l50, l99, _] = percentiles(m.late.clone());
        out.push_str(&format!(" {l50:.0}/{l99:.0} |"));
        for k in &kinds {
            let [p50, p99, _] = percentiles(m.latencies.get(k).cloned().unwrap_or_default());
            out.push_str(&format!(" {p50:.0}/{p99:.0} |"));
        }
        out.push('\n');
    }
    for (which, e) in EXPORTS.into_iter().zip(export) {
        let ExportRss {
            before,
            peak,
            after,
            bytes,
        } = e;
        out.push_str(&format!(
            "\n{which} after the soak: {} MiB streamed; the daemon's RSS {} MiB before, at \
             most {} MiB while it streamed (+{} MiB), {} MiB 5 s after.\n",
            bytes / (1024 * 1024),
            before / 1024,
            peak / 1024,
            peak.saturating_sub(before) / 1024,
            after / 1024
        ));
    }
    let VerifyRun {
        peak,
        secs,
        verdict,
    } = verify;
    out.push_str(&format!(
        "\n`ticket-ledger verify` after the exports: \"{verdict}\" in {secs:.0} s, its peak RSS {} MiB.\n",
        peak / 1024
    ));
    out.push_str(&format!(
        "\nThe stream after the history was published: {} MiB for {events} events ({} B/event, \
         one replica). The store at the end: {} MiB for {} tickets ({} B/ticket).\n",
        sizes.stream_bytes >> 20,
        sizes.stream_bytes / events.max(1),
        sizes.store_bytes >> 20,
        sizes.tickets,
        sizes.store_bytes / sizes.tickets.max(1)
    ));
    out
}
