//! The Markdown report.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Context;

use crate::BenchOptions;
use crate::run::Run;

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

/// Writes the report of `runs` to `opts.out`: the cost curve over the sizes, then each size's
/// tables, then PostgreSQL's plans of the largest size.
pub fn write_report(opts: &BenchOptions, runs: &[Run]) -> anyhow::Result<()> {
    let Some(last) = runs.last() else {
        return Ok(());
    };
    let nats_version = Command::new(&last.nats_bin)
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
    let sizes: Vec<String> = opts.tickets.iter().map(u64::to_string).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `ticket-ledger-bench --tickets {} --plans-every {} --requests {} --throughput-secs {}` \
         ({} build) on {} UTC.\n",
        sizes.join(","),
        opts.plans_every,
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
    curve(&mut md, runs);
    for run in runs {
        let _ = writeln!(md, "## {} tickets\n", run.tickets);
        size_section(&mut md, opts, run);
    }
    if !last.pg.plans.is_empty() {
        let _ = writeln!(
            md,
            "## PostgreSQL's plans ({} tickets)\n\n`EXPLAIN (ANALYZE, BUFFERS) EXECUTE` of each query's page and count, prepared and executed six times first in the query's `plan_cache_mode` (so that the plan is the one measured), project-0, after `VACUUM (ANALYZE)`.\n",
            last.tickets
        );
        for (name, plan) in &last.pg.plans {
            let _ = writeln!(md, "### {name}\n\n```text\n{}```\n", plan);
        }
    }
    std::fs::write(&opts.out, md).with_context(|| format!("writing {}", opts.out.display()))?;
    eprintln!("wrote {}", opts.out.display());
    Ok(())
}

/// The cost curve: one row per size, then every query's latencies per size.
fn curve(md: &mut String, runs: &[Run]) {
    let _ = writeln!(
        md,
        "## The cost curve\n\nEach ratio is of the faster raw read measured just before the phase, in the same run.\n\n\
         | tickets | events | ingest events/s (ratio) | replay events/s (ratio) | daemon CPU µs/event (ingest; replay) | peak RSS MiB (ingest; run) | RSS B/ticket (ingest) | disk B/ticket | disk / records | restart to ready s |\n\
         |---:|---:|---:|---:|---|---|---:|---:|---:|---:|"
    );
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.2}; {:.2} | {:.0}; {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            r.tickets,
            r.events,
            r.ingest_rate,
            r.ingest_rate / r.limits[0].best(),
            r.replay_rate,
            r.replay_rate / r.limits[1].best(),
            r.cpu[0].1,
            r.cpu[1].1,
            r.rss_kib.0 as f64 / 1024.0,
            r.rss_kib.1 as f64 / 1024.0,
            r.rss_kib.0 as f64 * 1024.0 / r.tickets as f64,
            r.disk as f64 / r.tickets as f64,
            r.disk as f64 / r.records.max(1) as f64,
            r.restart_secs
        );
    }
    let sizes: Vec<String> = runs
        .iter()
        .map(|r| format!("{} p50 / p99 µs", r.tickets))
        .collect();
    let _ = writeln!(
        md,
        "\nList queries through HTTP, project-0 (a tenth of the tickets), each with its total; and the ledger's throughput at 8 connections over PostgreSQL's:\n\n| query | {} | {} |\n|---|{}",
        sizes.join(" | "),
        runs.iter()
            .map(|r| format!("{} ledger / PostgreSQL req/s", r.tickets))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(2 * runs.len())
    );
    for (i, (name, _, _)) in runs[0].rows.iter().enumerate() {
        let lat: Vec<String> = runs
            .iter()
            .map(|r| {
                r.rows.get(i).map_or("—".into(), |(_, _, l)| {
                    format!("{:.0} / {:.0}", l.p50_us, l.p99_us)
                })
            })
            .collect();
        let ratio: Vec<String> = runs
            .iter()
            .map(
                |r| match (r.rows.get(i), r.baseline.get(i).and_then(Option::as_ref)) {
                    (Some((_, _, l)), Some(b)) => format!("{:.1}×", l.rps / b.rps.max(1e-9)),
                    _ => "—".into(),
                },
            )
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} |",
            lat.join(" | "),
            ratio.join(" | ")
        );
    }
    let _ = writeln!(md);
}

/// One size's tables: ingest and replay against the raw reads, the queries against PostgreSQL,
/// memory and disk.
fn size_section(md: &mut String, opts: &BenchOptions, run: &Run) {
    let &Run {
        tickets,
        events,
        publish_secs,
        limits,
        ingest_rate,
        replay_rate,
        cpu: [ingest_cpu, replay_cpu],
        ref rows,
        first_deep_p50: (first_p50, deep_p50),
        ref baseline,
        ref pg,
        rss_kib: (ingest_rss_kib, rss_kib),
        disk,
        records,
        restart_secs,
        http_ceiling,
        ..
    } = run;
    let _ = writeln!(
        md,
        "### Ingest and replay, against the raw read rate of the same stream\n"
    );
    let _ = writeln!(
        md,
        "{tickets} tickets, {events} events (published in {publish_secs:.1} s).\n"
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
        "\n### List queries through HTTP, project-0 (≈ {} tickets), each with its total\n",
        tickets / 10
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
    ceiling_note(md, rows, baseline, http_ceiling);
    let _ = writeln!(
        md,
        "\nDeep page / first page, p50 of {} requests each, alternating: {deep_p50:.0} µs / {first_p50:.0} µs = {:.2} (target ≤ 1.2).",
        opts.requests,
        deep_p50 / first_p50
    );
    let _ = writeln!(md, "\n### Memory and disk\n");
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
        disk as f64 / tickets as f64
    );
    let _ = writeln!(
        md,
        "| records' own data (stored keys + values) | {:.1} MiB ({:.0} B/ticket) | |",
        records as f64 / 1048576.0,
        records as f64 / tickets as f64
    );
    let _ = writeln!(
        md,
        "| disk / records | {:.2} | ≤ 3 |",
        disk as f64 / records.max(1) as f64
    );
    let _ = writeln!(
        md,
        "\nThe store is measured after the rebuild and a graceful stop (the old generation is deleted at switch-over). Restart to ready on it (the daemon started again, until its view is whole): {restart_secs:.2} s.\n"
    );
}

/// What bounds the ledger/PostgreSQL ratios: `GET /healthz` over the same 8 connections, and
/// the queries whose PostgreSQL rate leaves less than 10× under that ceiling.
fn ceiling_note(
    md: &mut String,
    rows: &[(String, String, crate::stats::Latency)],
    baseline: &[Option<crate::stats::Latency>],
    ceiling: f64,
) {
    // The ceiling and the fastest query are within the machine's noise of each other: the
    // larger of the two bounds what a query can reach.
    let (fastest_name, fastest) = rows
        .iter()
        .map(|(name, _, l)| (name.as_str(), l.rps))
        .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let most_rps = ceiling.max(fastest);
    let bounded: Vec<String> = rows
        .iter()
        .zip(baseline)
        .filter_map(|((name, _, _), b)| {
            let b = b.as_ref()?;
            let most = most_rps / b.rps.max(1e-9);
            (most < 10.0).then(|| format!("{name} at most {most:.1}×"))
        })
        .collect();
    let _ = write!(
        md,
        "\nThe HTTP ceiling: `GET /healthz` (no credentials checked, no work) over the same 8 connections reached {ceiling:.0} req/s, the fastest query ({fastest_name}) {fastest:.0} req/s; no request through HTTP goes much faster than the larger, {most_rps:.0} req/s, with this load generator on this machine's two cores."
    );
    if bounded.is_empty() {
        let _ = writeln!(md);
    } else {
        let _ = writeln!(
            md,
            " So the ledger/PostgreSQL ratio this machine can show is bounded below 10× for: {}.",
            bounded.join(", ")
        );
    }
}
