//! The Markdown report.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::BenchOptions;
use crate::reads::Limit;
use crate::stats::Latency;

/// What the report says of the PostgreSQL baseline beside its latencies.
#[derive(Default)]
pub struct Postgres {
    /// `SHOW` of the settings that matter, `server_version` first.
    pub settings: Vec<(String, String)>,
    /// `EXPLAIN (ANALYZE, BUFFERS)` of each query's page and count.
    pub plans: Vec<(String, String)>,
    /// The `plan_cache_mode` each query was measured in (the faster of the two).
    pub modes: Vec<&'static str>,
    /// The query cross-checked with `pgbench -M prepared` at 8 clients, and its tps.
    pub pgbench: Option<(String, Result<f64, String>)>,
}

#[allow(clippy::too_many_arguments)]
pub fn write_report(
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
    pg: &Postgres,
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
        "Produced by `ticket-ledger-bench --tickets {} --requests {} --throughput-secs {}` \
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
    let version = pg
        .settings
        .first()
        .map_or("not reachable: baseline not measured", |(_, v)| v.as_str());
    let _ = writeln!(
        md,
        "\nPostgreSQL {version}: the same tickets (final states), loaded with COPY into a table with primary key (project, order_id) and indexes on (project, creator, order_id), (project, status, order_id), (project, creator, status, order_id), (project, gmt_created) and a pg_trgm GIN index on lower(order_name), then `VACUUM (ANALYZE)`; each request is the page query plus its `count(*)`, each statement prepared once per connection, over the wire protocol directly (no HTTP in front, unlike the ledger). Every query's plan is at the end of this file."
    );
    if !pg.settings.is_empty() {
        let list: Vec<String> = pg
            .settings
            .iter()
            .map(|(k, v)| format!("`{k}` = {v}"))
            .collect();
        let _ = writeln!(md, "\nPostgreSQL settings: {}.", list.join(", "));
    }
    if !pg.modes.is_empty() {
        let list: Vec<String> = rows
            .iter()
            .zip(&pg.modes)
            .map(|((name, _, _), mode)| format!("{name} `{mode}`"))
            .collect();
        let _ = writeln!(
            md,
            "\nEach query ran in the `plan_cache_mode` it answered faster in (100 requests in each, measured first; under `auto` a prepared statement switches to a generic plan after five executions, which can be much slower than the custom one): {}.",
            list.join(", ")
        );
    }
    if let Some((name, result)) = &pg.pgbench {
        let ours = rows
            .iter()
            .zip(baseline)
            .find(|((n, _, _), _)| n == name)
            .and_then(|(_, b)| b.as_ref().map(|b| b.rps));
        match (result, ours) {
            (Ok(tps), Some(ours)) => {
                let _ = writeln!(
                    md,
                    "\nCross-check of the baseline's own load: `pgbench -M prepared -c 8 -j 2` (same `plan_cache_mode`) on the {name} query (page + count as one transaction) reached {tps:.0} tps; the benchmark's 8 connections reached {ours:.0} req/s: {:.2} of pgbench (target: within 20%).",
                    ours / tps.max(1e-9)
                );
            }
            (Err(e), _) => {
                let _ = writeln!(md, "\npgbench cross-check of {name} failed: {e}");
            }
            _ => {}
        }
    }
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
    if !pg.plans.is_empty() {
        let _ = writeln!(
            md,
            "\n## PostgreSQL's plans\n\n`EXPLAIN (ANALYZE, BUFFERS) EXECUTE` of each query's page and count, prepared and executed six times first in the query's `plan_cache_mode` (so that the plan is the one measured), project-0, after `VACUUM (ANALYZE)`.\n"
        );
        for (name, plan) in &pg.plans {
            let _ = writeln!(md, "### {name}\n\n```text\n{}```\n", plan);
        }
    }
    std::fs::write(&opts.out, md).with_context(|| format!("writing {}", opts.out.display()))?;
    eprintln!("wrote {}", opts.out.display());
    Ok(())
}
