//! The run: start a broker, publish, read raw, start the daemon, time ingest, replay and queries,
//! load PostgreSQL, measure memory and disk, write the report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{cpu_secs, dir_size, peak_rss_kib};
use crate::reads::{Limit, RawRead, publish_history, raw_read, raw_read_own};
use crate::setup::{Broker, Daemon};
use crate::stats::{Latency, get_page, measure_path, measure_query};
use crate::{BENCH_TOKEN, postgres, report};

/// Benchmark options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The sizes to run, in tickets: each a run of its own, from a new broker and store.
    pub tickets: Vec<u64>,
    /// Plans on one run of ten tickets in this many (0: none; see [`crate::history`]).
    pub plans_every: u64,
    /// Sequential requests per query kind (for p50/p99/max).
    pub requests: usize,
    /// Seconds of the 8-connection throughput run per query kind.
    pub throughput_secs: u64,
    /// Where to write the Markdown table.
    pub out: PathBuf,
    /// libpq-style connection string of the PostgreSQL baseline (skipped if none answers).
    pub postgres: String,
    /// The daemon binary.
    pub daemon: PathBuf,
}

/// What one size's run measured.
pub struct Run {
    pub tickets: u64,
    pub events: u64,
    pub publish_secs: f64,
    /// The raw reads before the ingest and before the replay.
    pub limits: [Limit; 2],
    pub ingest_rate: f64,
    pub replay_rate: f64,
    /// (nats-server, daemon) CPU µs per event in the ingest and in the replay.
    pub cpu: [(f64, f64); 2],
    /// Each query's name, query string and latencies through HTTP.
    pub rows: Vec<(String, String, Latency)>,
    /// p50 of the first page and of the deep page, alternating.
    pub first_deep_p50: (f64, f64),
    pub baseline: Vec<Option<Latency>>,
    pub pg: report::Postgres,
    /// Peak RSS through the ingest and through the whole run, KiB.
    pub rss_kib: (u64, u64),
    /// The store on disk after a graceful stop, and its records' own bytes.
    pub disk: u64,
    pub records: u64,
    /// Seconds from starting the daemon on the stopped store to its view being whole again.
    pub restart_secs: f64,
    /// Requests/s of `GET /healthz` over 8 connections: what bounds every query's rate.
    pub http_ceiling: f64,
    pub nats_bin: PathBuf,
}

/// Runs the benchmark for each size and writes the report after each (so that a long last size
/// that fails leaves the others written).
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    if !opts.daemon.is_file() {
        bail!(
            "no daemon binary at {}: build it first (`cargo build --release --workspace`) or pass --daemon",
            opts.daemon.display()
        );
    }
    let mut runs = Vec::new();
    for &tickets in &opts.tickets {
        runs.push(measure(&opts, tickets).await?);
        report::write_report(&opts, &runs)?;
    }
    Ok(())
}

/// One size's run.
async fn measure(opts: &BenchOptions, tickets: u64) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir().context("temp dir")?;
    let broker = Broker::start(tmp.path()).await?;
    let (client, js, settings) = (&broker.client, &broker.js, &broker.settings);
    let (nats_pid, nats_url, nats_bin) = (broker.pid, &broker.url, &broker.binary);

    eprintln!("publishing {tickets} tickets...");
    let mut finals = Vec::new();
    let (events, publish_secs) = publish_history(
        js,
        (tickets, opts.plans_every),
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
        let secs = raw_read(client, js, &settings.nats.stream, events).await?;
        let library = RawRead {
            rate: events as f64 / secs,
            cpu: since(cpu0),
        };
        let cpu0 = (cpu_secs(nats_pid), cpu_secs(0));
        let secs = raw_read_own(client, js, settings, events).await?;
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
    let started = Instant::now();
    let nats_cpu = cpu_secs(nats_pid);
    let mut daemon = Daemon::start(&opts.daemon, tmp.path(), nats_url)?;
    let (pid, base, store) = (daemon.pid, daemon.base.clone(), daemon.store.clone());
    let http = reqwest::Client::new();
    daemon.wait_view(&http, events).await?;
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
    let admin = ticket_ledger::ops::audit::AdminClient::new(&base, BENCH_TOKEN);
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
    let mid = 1_700_000_000_000i64 + (tickets as i64 / 2) * 600;
    let span = (tickets as i64 / 20) * 600;
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
        // What a person types first into a search box, and a needle no name holds.
        ("name_like, 1 char", "limit=10&name_like=k".into()),
        ("name_like, 2 chars", "limit=10&name_like=ka".into()),
        ("name_like, no match", "limit=10&name_like=zz".into()),
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
    // A page of a batch's hosts, as Terraform reads it, of a planned ticket of project-0.
    let planned = (tickets / 2) / 100 * 100;
    if planned > 0 && crate::history::planned(planned, opts.plans_every) {
        let path = format!("/v1/job/script/orders/SCT{planned:012}/batches/1?limit=100");
        let l = measure_path(
            &http,
            &base,
            "project-0",
            &path,
            opts.requests,
            opts.throughput_secs,
        )
        .await
        .context("batch page")?;
        eprintln!(
            "batch page: p50 {:.0}µs p99 {:.0}µs, {:.0} req/s",
            l.p50_us, l.p99_us, l.rps
        );
        rows.push(("batch page".to_string(), path, l));
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
    let http_ceiling = http_ceiling(&http, &base, opts.throughput_secs).await?;
    eprintln!("HTTP ceiling (GET /healthz, 8 connections): {http_ceiling:.0} req/s");
    let rss_kib = peak_rss_kib(pid).unwrap_or(0);

    // The same tickets and queries in PostgreSQL.
    let mut baseline: Vec<Option<Latency>> = Vec::new();
    let mut pg = report::Postgres::default();
    if let Some(client) = postgres::connect(&opts.postgres).await {
        let pg_client = &client;
        eprintln!("loading {} tickets into PostgreSQL...", finals.len());
        let secs = postgres::load(pg_client, &finals).await?;
        eprintln!("loaded, indexed and vacuumed in {secs:.1}s");
        drop(finals);
        pg.settings = postgres::settings(pg_client).await;
        let mut modes = Vec::new();
        for (name, q) in &queries {
            let mode = postgres::faster_mode(&opts.postgres, "project-0", q)
                .await
                .with_context(|| format!("plan mode of {name}"))?;
            modes.push(mode);
            let plan = postgres::explain(&opts.postgres, "project-0", q, mode)
                .await
                .with_context(|| format!("EXPLAIN of {name}"))?;
            pg.plans.push((name.to_string(), plan));
            let l = postgres::measure(
                &opts.postgres,
                "project-0",
                q,
                mode,
                opts.requests,
                opts.throughput_secs,
            )
            .await
            .with_context(|| format!("PostgreSQL query {name}"))?;
            eprintln!(
                "PostgreSQL {name} ({}): p50 {:.0}µs p99 {:.0}µs, {:.0} req/s (total {})",
                mode.setting(),
                l.p50_us,
                l.p99_us,
                l.rps,
                l.total
            );
            pg.modes.push(mode.setting());
            baseline.push(Some(l));
        }
        // The cross-check: one query through pgbench, PostgreSQL's own load generator.
        let (name, q) = &queries[1];
        let secs = opts.throughput_secs.max(5);
        let mode = modes[1];
        pg.pgbench = Some(
            match postgres::pgbench(&opts.postgres, "project-0", q, mode, secs) {
                Ok(tps) => {
                    eprintln!("pgbench -M prepared, 8 clients, {name}: {tps:.0} tps");
                    (name.to_string(), Ok(tps))
                }
                Err(e) => {
                    eprintln!("pgbench cross-check failed: {e:#}");
                    (name.to_string(), Err(format!("{e:#}")))
                }
            },
        );
        postgres::cleanup(pg_client).await;
    }

    // A graceful stop writes everything; then the store is measured at rest.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let stopped = daemon.process.0.wait()?;
    if !stopped.success() {
        bail!("the daemon did not stop cleanly: {stopped}");
    }
    let disk = dir_size(&store);
    let records = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let ledger = ticket_ledger::store::Ledger::open(&store, Default::default())?;
            Ok(ledger.current().store().record_bytes()?)
        })
        .await??
    };
    // Restart to ready: the same store, the view rebuilt from its records.
    let started = Instant::now();
    let mut again = Daemon::start(&opts.daemon, tmp.path(), nats_url)?;
    again.wait_view(&http, events).await?;
    let restart_secs = started.elapsed().as_secs_f64();
    eprintln!("restart to ready: {restart_secs:.2}s");
    drop(again);
    Ok(Run {
        tickets,
        events,
        publish_secs,
        limits: [limit_1, limit_2],
        ingest_rate,
        replay_rate,
        cpu: [ingest_cpu, replay_cpu],
        rows,
        first_deep_p50: (first_p50, deep_p50),
        baseline,
        pg,
        rss_kib: (ingest_rss_kib, rss_kib),
        disk,
        records,
        restart_secs,
        http_ceiling,
        nats_bin: nats_bin.clone(),
    })
}

/// Requests/s of `GET /healthz` (no credentials checked, no work) over the same 8 connections
/// the queries' throughput uses: the most any query can reach through the daemon's HTTP stack
/// with this load generator on this machine, so what bounds a ledger/PostgreSQL ratio.
async fn http_ceiling(http: &reqwest::Client, base: &str, secs: u64) -> anyhow::Result<f64> {
    crate::stats::page_throughput(http, &format!("{base}/healthz"), "project-0", secs).await
}
