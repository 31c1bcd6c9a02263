//! `ticket-ledger bench`: the benchmark anyone can run (issue 5), measuring the ledger against the
//! limit measured in the same run.
//!
//! 1. Starts its own `nats-server` (JetStream, temp dir, free port) and publishes a realistic
//!    history: N tickets over 10 projects, 200 creators, names from a few thousand words, 2–5
//!    events each, interleaved as an executor running many tickets at once would emit them.
//! 2. Measures the raw read rate of that stream with an ordered consumer and no processing: the
//!    limit.
//! 3. Starts the daemon binary (`serve`, a child process, its own store) and times its ingest
//!    from an empty store, then a blue/green rebuild (`replay`), each as events/s and as a ratio
//!    of the limit.
//! 4. Times list queries through HTTP (p50, p99, max over sequential requests; throughput at 8
//!    concurrent connections), each with its total.
//! 5. Reads the daemon's peak RSS and the store's bytes on disk per ticket.
//! 6. When PostgreSQL answers, loads the same tickets there and asks the same queries (page and
//!    `count(*)`), for the ledger/PostgreSQL ratios.
//! 7. Writes the table to a Markdown file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;

use crate::config::Settings;
use crate::domain::ProjectId;
use crate::events::{CreatedData, Event, Kind};

/// The token the benchmark's daemon is configured with.
const BENCH_TOKEN: &str = "bench-token";

/// Benchmark options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tickets to generate.
    pub tickets: u64,
    /// Sequential requests per query kind (for p50/p99/max).
    pub requests: usize,
    /// Seconds of the 8-connection throughput run per query kind.
    pub throughput_secs: u64,
    /// Where to write the Markdown table.
    pub out: PathBuf,
    /// libpq-style connection string of the PostgreSQL baseline (skipped if none answers).
    pub postgres: String,
}

/// A small deterministic PRNG (SplitMix64): the same history every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "va", "ze", "bo", "de", "fi", "gu", "ha", "jo",
    "ke", "li", "mo", "ne", "po", "ru", "sa", "ti",
];

/// About 2,000 distinct words.
fn word(rng: &mut Rng) -> String {
    let n = rng.below(2_000);
    let a = SYLLABLES[(n % 24) as usize];
    let b = SYLLABLES[((n / 24) % 24) as usize];
    let c = SYLLABLES[((n / 576) % 24) as usize];
    format!("{a}{b}{c}")
}

/// The events of one ticket, in order.
fn ticket_events(rng: &mut Rng, order_id: u64, t0: i64) -> Vec<Event> {
    let project = ProjectId::parse(&format!("project-{}", order_id % 10)).expect("valid");
    let ev = |kind, t: i64, n: u64| Event {
        id: format!("{order_id}-{n}"),
        source: "bench-executor".into(),
        kind,
        time_ms: t,
        project: project.clone(),
        order_id,
        created: None,
    };
    let mut created = ev(Kind::Created, t0, 0);
    created.created = Some(CreatedData {
        execute_uuid: format!("SCT{order_id:012}"),
        order_name: format!("{}-{}-{}", word(rng), word(rng), rng.below(1000)),
        creator: format!("creator-{}", rng.below(200)),
        region_ids: "cn-north-4".into(),
        job_type: "SCRIPT".into(),
    });
    let run = 1_000 + rng.below(600_000) as i64;
    let mut out = vec![created, ev(Kind::Started, t0 + 50, 1)];
    match rng.below(10) {
        0..=5 => out.push(ev(Kind::Finished, t0 + run, 2)),
        6 => out.push(ev(Kind::Cancelled, t0 + run, 2)),
        7 => out.push(ev(Kind::Abnormal, t0 + run, 2)),
        8 => {
            out.push(ev(Kind::Paused, t0 + run / 3, 2));
            out.push(ev(Kind::Resumed, t0 + run / 2, 3));
            out.push(ev(Kind::Finished, t0 + run, 4));
        }
        _ => {} // still PROCESSING
    }
    out
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// CPU seconds (user + system) a process has used so far; 0 for itself when `pid` is 0.
fn cpu_secs(pid: u32) -> f64 {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let mut f = rest.split_whitespace().skip(11);
    let ticks = f.next().and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The benchmark's history: `tickets` tickets, their events interleaved as an executor running
/// about a thousand tickets at once would emit them, the same every time (a fixed seed).
pub struct History {
    rng: Rng,
    tickets: u64,
    next: u64,
    live: Vec<(Vec<Event>, usize)>,
}

impl History {
    /// The history of `tickets` tickets.
    pub fn new(tickets: u64) -> Self {
        History {
            rng: Rng(42),
            tickets,
            next: 1,
            live: Vec::new(),
        }
    }
}

/// An event, and the final state of its ticket (without history) when it is the ticket's last.
pub type HistoryItem = (Event, Option<crate::fold::Ticket>);

impl Iterator for History {
    type Item = HistoryItem;

    fn next(&mut self) -> Option<HistoryItem> {
        const T_BASE: i64 = 1_700_000_000_000;
        while self.live.len() < 1_000 && self.next <= self.tickets {
            let t0 = T_BASE + self.next as i64 * 600;
            self.live
                .push((ticket_events(&mut self.rng, self.next, t0), 0));
            self.next += 1;
        }
        if self.live.is_empty() {
            return None;
        }
        let pick = self.rng.below(self.live.len() as u64) as usize;
        let (events, cursor) = &mut self.live[pick];
        let e = events[*cursor].clone();
        *cursor += 1;
        let mut last = None;
        if *cursor == events.len() {
            let mut t = None;
            for e in events.iter() {
                t = crate::fold::apply(t, e, 0).ticket;
            }
            last = t.map(|mut t| {
                t.history = Vec::new();
                t
            });
            self.live.swap_remove(pick);
        }
        Some((e, last))
    }
}

/// Publishes the generated history; returns (events, seconds). The final states go to `finals`,
/// for the PostgreSQL baseline.
async fn publish_history(
    js: &jetstream::Context,
    tickets: u64,
    prefix: &str,
    finals: &mut Vec<crate::fold::Ticket>,
) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let mut count = 0u64;
    for (e, last) in History::new(tickets) {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", e.id.as_str());
        acks.push_back(
            js.publish_with_headers(e.subject(prefix), h, e.to_bytes().into())
                .await?,
        );
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
async fn raw_read(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &str,
    last: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(stream).await?;
    let start = Instant::now();
    let mut messages = crate::broker::ordered_messages(client, &stream, 1).await?;
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
/// consumer ([`crate::broker::read_raw`]), in batches of the daemon's size, without decoding.
async fn raw_read_own(
    client: &async_nats::Client,
    js: &jetstream::Context,
    settings: &Settings,
    last: u64,
) -> anyhow::Result<f64> {
    let stream = js.get_stream(&settings.nats.stream).await?;
    let start = Instant::now();
    let mut batches = crate::broker::read_raw(
        client,
        &stream,
        &settings.nats,
        1,
        settings.ingest.batch_size,
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
struct RawRead {
    rate: f64,
    cpu: (f64, f64),
}

/// The limit just before a phase: the stream read raw both ways.
#[derive(Clone, Copy)]
struct Limit {
    library: RawRead,
    own: RawRead,
}

impl Limit {
    /// The faster of the two reads: what the phase is held to.
    fn best(&self) -> f64 {
        self.library.rate.max(self.own.rate)
    }
}

async fn readyz(http: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

mod postgres;

/// Latencies of one query kind, and its throughput at 8 connections.
struct Latency {
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    rps: f64,
    total: u64,
}

/// p50, p99 and max of `times`, as every latency of the benchmark is reported (also used by
/// `examples/name_search.rs`, so that its in-process figures are read the same way). Zeros for
/// no times.
pub fn percentiles(mut times: Vec<f64>) -> [f64; 3] {
    if times.is_empty() {
        return [0.0; 3];
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    [pct(0.50), pct(0.99), times[times.len() - 1]]
}

impl Latency {
    fn from_times(times: Vec<f64>, rps: f64, total: u64) -> Self {
        let [p50_us, p99_us, max_us] = percentiles(times);
        Latency {
            p50_us,
            p99_us,
            max_us,
            rps,
            total,
        }
    }
}

/// One list request as the benchmark's principal; an answer that is not a success is an error.
async fn get_page(
    http: &reqwest::Client,
    url: &str,
    project: &str,
) -> anyhow::Result<bytes::Bytes> {
    let r = http
        .get(url)
        .header("X-Auth-Token", BENCH_TOKEN)
        .header("x-project-id", project)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.bytes().await?)
}

/// Requests/s that `workers` reach together in `secs`: each worker runs on its own task and
/// calls its request again and again; only successful requests count. Shared by the ledger's
/// and PostgreSQL's measurements, so both are counted the same way.
async fn throughput<W, F>(workers: Vec<W>, secs: u64) -> anyhow::Result<f64>
where
    W: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut request in workers {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if request().await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn measure_query(
    http: &reqwest::Client,
    base: &str,
    project: &str,
    query: &str,
    requests: usize,
    secs: u64,
) -> anyhow::Result<Latency> {
    let url = format!("{base}/v1/job/script/orders?{query}");
    let first: serde_json::Value = serde_json::from_slice(&get_page(http, &url, project).await?)?;
    let total = first["data"]["total"].as_u64().unwrap_or(0);
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        get_page(http, &url, project).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (url, project): (Arc<str>, Arc<str>) = (url.into(), project.into());
    let workers = (0..8)
        .map(|_| {
            let (http, url, project) = (http.clone(), url.clone(), project.clone());
            move || {
                let (http, url, project) = (http.clone(), url.clone(), project.clone());
                async move { get_page(&http, &url, &project).await.is_ok() }
            }
        })
        .collect();
    Ok(Latency::from_times(
        times,
        throughput(workers, secs).await?,
        total,
    ))
}

/// Runs the benchmark and writes the table.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("temp dir")?;
    let nats_port = free_port()?;
    let nats_bin = crate::broker::find_binary(Path::new("nats-server"))?;
    let nats = KillOnDrop(
        Command::new(&nats_bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(tmp.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?,
    );
    let nats_pid = nats.0.id();
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let mut settings = Settings::defaults();
    settings.nats.url = nats_url.clone();
    let client = loop {
        // The daemon's subscription capacity, so that the raw read drops nothing either.
        let options = async_nats::ConnectOptions::new()
            .subscription_capacity(crate::broker::SUBSCRIPTION_CAPACITY);
        if let Ok(c) = options.connect(nats_url.as_str()).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let js = jetstream::new(client.clone());
    crate::broker::ensure_stream(&js, &settings.nats).await?;

    eprintln!("publishing {} tickets...", opts.tickets);
    let mut finals = Vec::new();
    let (events, publish_secs) = publish_history(
        &js,
        opts.tickets,
        &settings.nats.subject_prefix,
        &mut finals,
    )
    .await?;
    eprintln!("published {events} events in {publish_secs:.1}s");
    let per_event = |secs: f64| secs * 1e6 / events as f64;
    // The limit: the whole stream read raw, through the client library's ordered consumer and
    // through the daemon's own connection, taken again just before the replay, so that each
    // phase is compared with the broker and the machine as they are at the time (both drift over
    // a run of minutes on a shared 2-core machine; every reading is reported).
    let raw_limit = || async {
        let since = |cpu0: (f64, f64)| {
            (
                per_event(cpu_secs(nats_pid) - cpu0.0),
                per_event(cpu_secs(0) - cpu0.1),
            )
        };
        let cpu0 = (cpu_secs(nats_pid), cpu_secs(0));
        let secs = raw_read(&client, &js, &settings.nats.stream, events).await?;
        let library = RawRead {
            rate: events as f64 / secs,
            cpu: since(cpu0),
        };
        let cpu0 = (cpu_secs(nats_pid), cpu_secs(0));
        let secs = raw_read_own(&client, &js, &settings, events).await?;
        let own = RawRead {
            rate: events as f64 / secs,
            cpu: since(cpu0),
        };
        for (how, r) in [("client library", library), ("own connection", own)] {
            eprintln!(
                "raw read ({how}): {:.0} events/s; CPU µs/event: nats-server {:.2}, reader {:.2}",
                r.rate, r.cpu.0, r.cpu.1
            );
        }
        anyhow::Ok(Limit { library, own })
    };
    let limit_1 = raw_limit().await?;

    // The daemon, as a child process with its own store.
    let http_port = free_port()?;
    let store = tmp.path().join("store");
    let base = format!("http://127.0.0.1:{http_port}");
    let config = tmp.path().join("bench.toml");
    let projects: Vec<String> = (0..10).map(|i| format!("\"project-{i}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[[auth.principals]]\nname = \"bench\"\nprojects = [{}]\n\
             actions = [\"coc:job:list\", \"coc:ledger:admin\"]\n\n\
             [[auth.tokens]]\nprincipal = \"bench\"\nsha256 = \"{}\"\n\n\
             [auth]\naccess_keys = []\n",
            projects.join(", "),
            crate::auth::hash_token(BENCH_TOKEN)
        ),
    )?;
    let started = Instant::now();
    let nats_cpu = cpu_secs(nats_pid);
    let mut daemon = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("TICKET_LEDGER_CONFIG", &config)
            .env("TICKET_LEDGER_NATS__URL", &nats_url)
            .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
            .env("TICKET_LEDGER_STORE__PATH", &store)
            .env(
                "TICKET_LEDGER_HTTP__LISTEN",
                format!("127.0.0.1:{http_port}"),
            )
            .env("TICKET_LEDGER_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the daemon")?,
    );
    let pid = daemon.0.id();
    let http = reqwest::Client::new();
    loop {
        if let Some(r) = readyz(&http, &base).await
            && r["view_seq"].as_u64() == Some(events)
        {
            break;
        }
        if let Some(status) = daemon.0.try_wait()? {
            bail!("the daemon exited during ingest ({status}); run it by hand to see why");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let ingest_rate = events as f64 / ingest_secs;
    let ingest_rss_kib = peak_rss_kib(pid).unwrap_or(0);
    let ingest_cpu = (
        per_event(cpu_secs(nats_pid) - nats_cpu),
        per_event(cpu_secs(pid)),
    );
    eprintln!(
        "ingest: {ingest_rate:.0} events/s, peak RSS {} MiB; CPU µs/event: nats-server {:.2}, \
         daemon {:.2}",
        ingest_rss_kib / 1024,
        ingest_cpu.0,
        ingest_cpu.1
    );

    let limit_2 = raw_limit().await?;
    let admin = crate::audit::AdminClient::new(&base, BENCH_TOKEN);
    let started = Instant::now();
    let cpu0 = (cpu_secs(nats_pid), cpu_secs(pid));
    admin
        .post("/v1/ledger/replay", serde_json::json!({}))
        .await?;
    loop {
        let p = admin.get("/v1/ledger/replay").await?;
        match p["phase"].as_str() {
            Some("done") => break,
            Some("failed") => bail!("replay failed: {p}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let replay_secs = started.elapsed().as_secs_f64();
    let replay_rate = events as f64 / replay_secs;
    let replay_cpu = (
        per_event(cpu_secs(nats_pid) - cpu0.0),
        per_event(cpu_secs(pid) - cpu0.1),
    );
    eprintln!(
        "replay: {replay_rate:.0} events/s; CPU µs/event: nats-server {:.2}, daemon {:.2}",
        replay_cpu.0, replay_cpu.1
    );

    // Queries, as the one project "project-0" (about a tenth of the tickets).
    let mid = 1_700_000_000_000i64 + (opts.tickets as i64 / 2) * 600;
    let span = (opts.tickets as i64 / 20) * 600;
    let queries: Vec<(&str, String)> = vec![
        ("no filter", "limit=10".into()),
        ("creator", "limit=10&creator=creator-7".into()),
        ("status", "limit=10&status=ABNORMAL".into()),
        (
            "creator+status",
            "limit=10&creator=creator-7&status=FINISHED".into(),
        ),
        (
            "time range",
            format!("limit=10&start_time={}&end_time={}", mid - span, mid + span),
        ),
        ("name_like", "limit=10&name_like=kalo".into()),
        (
            "all filters",
            format!(
                "limit=10&creator=creator-7&status=FINISHED&name_like=ka&start_time={}&end_time={}",
                mid - 4 * span,
                mid + 4 * span
            ),
        ),
        ("deep page", "limit=10&marker=200".into()),
    ];
    let mut rows = Vec::new();
    for (name, q) in &queries {
        let l = measure_query(
            &http,
            &base,
            "project-0",
            q,
            opts.requests,
            opts.throughput_secs,
        )
        .await
        .with_context(|| format!("query {name}"))?;
        eprintln!(
            "{name}: p50 {:.0}µs p99 {:.0}µs, {:.0} req/s",
            l.p50_us, l.p99_us, l.rps
        );
        rows.push((name.to_string(), q.clone(), l));
    }
    // The deep page against the first page, alternating request by request so that both see
    // the same machine (measured one after the other, they differed by the machine's drift).
    let (first_p50, deep_p50) = {
        let url = |q: &str| format!("{base}/v1/job/script/orders?{q}");
        let (first_url, deep_url) = (url("limit=10"), url("limit=10&marker=200"));
        let mut first = Vec::with_capacity(opts.requests);
        let mut deep = Vec::with_capacity(opts.requests);
        for _ in 0..opts.requests {
            for (u, out) in [(&first_url, &mut first), (&deep_url, &mut deep)] {
                let t = Instant::now();
                get_page(&http, u, "project-0").await?;
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        (
            Latency::from_times(first, 0.0, 0).p50_us,
            Latency::from_times(deep, 0.0, 0).p50_us,
        )
    };
    eprintln!("first page p50 {first_p50:.0}µs, deep page p50 {deep_p50:.0}µs (alternating)");
    let rss_kib = peak_rss_kib(pid).unwrap_or(0);

    // The same tickets and queries in PostgreSQL.
    let mut baseline: Vec<Option<Latency>> = Vec::new();
    let mut pg_version = None;
    if let Some(pg) = postgres::connect(&opts.postgres).await {
        pg_version = pg
            .query_one("SHOW server_version", &[])
            .await
            .ok()
            .map(|r| r.get::<_, String>(0));
        eprintln!("loading {} tickets into PostgreSQL...", finals.len());
        let secs = postgres::load(&pg, &finals).await?;
        eprintln!("loaded and indexed in {secs:.1}s");
        drop(finals);
        for (name, q) in &queries {
            let l = postgres::measure(
                &opts.postgres,
                &pg,
                "project-0",
                q,
                opts.requests,
                opts.throughput_secs,
            )
            .await
            .with_context(|| format!("PostgreSQL query {name}"))?;
            eprintln!(
                "PostgreSQL {name}: p50 {:.0}µs p99 {:.0}µs, {:.0} req/s (total {})",
                l.p50_us, l.p99_us, l.rps, l.total
            );
            baseline.push(Some(l));
        }
        postgres::cleanup(&pg).await;
    }

    // A graceful stop writes everything; then the store is measured at rest.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let stopped = daemon.0.wait()?;
    if !stopped.success() {
        bail!("the daemon did not stop cleanly: {stopped}");
    }
    let disk = dir_size(&store);
    let records = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let ledger = crate::projection::Ledger::open(&store, Default::default())?;
            Ok(ledger.current().store().record_bytes()?)
        })
        .await??
    };
    write_report(
        &opts,
        events,
        publish_secs,
        [limit_1, limit_2],
        ingest_rate,
        replay_rate,
        [ingest_cpu, replay_cpu],
        &rows,
        (first_p50, deep_p50),
        &baseline,
        pg_version.as_deref(),
        (ingest_rss_kib, rss_kib),
        disk,
        records,
        &nats_bin,
    )
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    opts: &BenchOptions,
    events: u64,
    publish_secs: f64,
    limits: [Limit; 2],
    ingest_rate: f64,
    replay_rate: f64,
    [ingest_cpu, replay_cpu]: [(f64, f64); 2],
    rows: &[(String, String, Latency)],
    (first_p50, deep_p50): (f64, f64),
    baseline: &[Option<Latency>],
    pg_version: Option<&str>,
    (ingest_rss_kib, rss_kib): (u64, u64),
    disk: u64,
    records: u64,
    nats_bin: &Path,
) -> anyhow::Result<()> {
    let nats_version = Command::new(nats_bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `ticket-ledger bench --tickets {} --requests {} --throughput-secs {}` \
         ({} build) on {} UTC.\n",
        opts.tickets,
        opts.requests,
        opts.throughput_secs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        now.date()
    );
    let _ = writeln!(
        md,
        "Machine: {cores} cores, {mem}. Versions: ticket-ledger {}, {nats_version}, sled 0.34.\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        md,
        "## Ingest and replay, against the raw read rate of the same stream\n"
    );
    let _ = writeln!(
        md,
        "{} tickets, {events} events (published in {publish_secs:.1} s).\n",
        opts.tickets
    );
    let fastest = limits[0].best().max(limits[1].best());
    let _ = writeln!(
        md,
        "| measure | events/s | ratio of the faster raw read just before | ratio of the fastest raw read of the run | target |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    let mut rate_rows = Vec::new();
    let mut cpu_rows = Vec::new();
    for (limit, phase, rate, cpu, before) in [
        (
            limits[0],
            "ingest from an empty store",
            ingest_rate,
            ingest_cpu,
            "before the ingest",
        ),
        (
            limits[1],
            "replay (blue/green rebuild)",
            replay_rate,
            replay_cpu,
            "before the replay",
        ),
    ] {
        let raw = [
            ("client library's ordered consumer", limit.library),
            ("the daemon's own connection", limit.own),
        ];
        for (how, r) in raw {
            let what = format!("raw read ({how}), {before}");
            rate_rows.push((what.clone(), r.rate, limit.best(), ""));
            cpu_rows.push((format!("{what} (reader: the benchmark)"), r.cpu));
        }
        rate_rows.push((phase.to_owned(), rate, limit.best(), "≥ 0.50"));
        cpu_rows.push((format!("{phase} (reader: the daemon)"), cpu));
    }
    for (what, rate, limit, target) in rate_rows {
        let _ = writeln!(
            md,
            "| {what} | {rate:.0} | {:.2} | {:.2} | {target} |",
            rate / limit,
            rate / fastest
        );
    }
    let _ = writeln!(
        md,
        "\nCPU time per event (user + system, from /proc), the machine's 2 cores shared by both:\n\n\
         | phase | nats-server µs/event | reader µs/event |\n|---|---:|---:|"
    );
    for (phase, (server, reader)) in cpu_rows {
        let _ = writeln!(md, "| {phase} | {server:.2} | {reader:.2} |");
    }
    let _ = writeln!(
        md,
        "\n## List queries through HTTP, project-0 (≈ {} tickets), each with its total\n",
        opts.tickets / 10
    );
    let _ = writeln!(
        md,
        "| query | total | p50 µs | p99 µs | max µs | req/s at 8 connections | PostgreSQL p50 / p99 µs | PostgreSQL req/s | ledger / PostgreSQL req/s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (name, q, l)) in rows.iter().enumerate() {
        let (pg_lat, pg_rps, ratio) = match baseline.get(i).and_then(Option::as_ref) {
            Some(b) => (
                format!("{:.0} / {:.0}", b.p50_us, b.p99_us),
                format!("{:.0}", b.rps),
                format!("{:.1}×", l.rps / b.rps.max(1e-9)),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            md,
            "| {name} (`{q}`) | {} | {:.0} | {:.0} | {:.0} | {:.0} | {pg_lat} | {pg_rps} | {ratio} |",
            l.total, l.p50_us, l.p99_us, l.max_us, l.rps
        );
    }
    let _ = writeln!(
        md,
        "\nPostgreSQL {}: the same tickets (final states), table with primary key (project, order_id) and indexes on (project, creator, order_id), (project, status, order_id), (project, creator, status, order_id), (project, gmt_created) and a pg_trgm GIN index on lower(order_name); each request is the page query plus its `count(*)`, prepared, over the wire protocol directly (no HTTP in front, unlike the ledger).",
        pg_version.unwrap_or("not reachable: baseline not measured")
    );
    let _ = writeln!(
        md,
        "\nDeep page / first page, p50 of {} requests each, alternating: {deep_p50:.0} µs / {first_p50:.0} µs = {:.2} (target ≤ 1.2).",
        opts.requests,
        deep_p50 / first_p50
    );
    let _ = writeln!(md, "\n## Memory and disk\n");
    let _ = writeln!(md, "| measure | value | target |");
    let _ = writeln!(md, "|---|---:|---|");
    let _ = writeln!(
        md,
        "| daemon peak RSS through the ingest | {:.0} MiB | ≤ 1024 MiB |",
        ingest_rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| daemon peak RSS through the whole run (the blue/green rebuild holds two projections) | {:.0} MiB | ≤ 1024 MiB |",
        rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| store on disk | {:.1} MiB ({:.0} B/ticket) | |",
        disk as f64 / 1048576.0,
        disk as f64 / opts.tickets as f64
    );
    let _ = writeln!(
        md,
        "| records' own data (stored keys + values) | {:.1} MiB ({:.0} B/ticket) | |",
        records as f64 / 1048576.0,
        records as f64 / opts.tickets as f64
    );
    let _ = writeln!(
        md,
        "| disk / records | {:.2} | ≤ 3 |",
        disk as f64 / records.max(1) as f64
    );
    let _ = writeln!(
        md,
        "\nThe store is measured after the rebuild and a graceful stop (the old generation is deleted at switch-over)."
    );
    std::fs::write(&opts.out, md).with_context(|| format!("writing {}", opts.out.display()))?;
    eprintln!("wrote {}", opts.out.display());
    Ok(())
}
