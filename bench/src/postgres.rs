//! The benchmark's baseline: the same tickets in PostgreSQL with the obvious indexes, asked the
//! same list queries as "page + `count(*)`" — what a user would build instead of the ledger,
//! set up as such a user would: loaded with COPY, indexed, `VACUUM (ANALYZE)`d (so that the
//! visibility map lets counts use index-only scans), and each statement prepared once per
//! connection. PostgreSQL is asked directly over its wire protocol, with no HTTP layer in front
//! of it (unlike the ledger). Its settings and every query's plan go into the report, and one
//! query's throughput is cross-checked with `pgbench -M prepared` at the same 8 clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::SinkExt;
use tokio_postgres::{Client, NoTls, Statement, types::ToSql};

use crate::stats::Latency;
use ticket_ledger::core::fold::Ticket;

const TABLE: &str = "ticket_ledger_bench";

/// Connects, or `None` (with the reason printed) when no server answers.
pub async fn connect(conninfo: &str) -> Option<Client> {
    match tokio_postgres::connect(conninfo, NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(client)
        }
        Err(e) => {
            eprintln!("PostgreSQL baseline skipped: {conninfo}: {e}");
            None
        }
    }
}

fn field(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "\\N".to_owned(), |v| v.to_string())
}

/// Creates the table, loads `tickets` with COPY, then builds the indexes (a trigram GIN index for
/// the name when `pg_trgm` is available). Returns seconds spent.
pub async fn load(client: &Client, tickets: &[Ticket]) -> anyhow::Result<f64> {
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (
                 project text NOT NULL, order_id bigint NOT NULL, order_name text NOT NULL,
                 execute_uuid text NOT NULL, gmt_created bigint NOT NULL, gmt_finished bigint,
                 execute_costs bigint, creator text NOT NULL, status text NOT NULL,
                 region_ids text NOT NULL, PRIMARY KEY (project, order_id));"
        ))
        .await
        .context("creating the baseline table")?;
    let sink = client
        .copy_in(&format!("COPY {TABLE} FROM STDIN"))
        .await
        .context("COPY")?;
    futures::pin_mut!(sink);
    let mut buf = String::with_capacity(1 << 20);
    for t in tickets {
        buf.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            field(t.project.as_str()),
            t.order_id,
            field(&t.order_name),
            field(&t.execute_uuid),
            t.gmt_created,
            opt(t.gmt_finished),
            opt(t.execute_costs),
            field(&t.creator),
            t.status.as_str(),
            field(&t.region_ids),
        ));
        if buf.len() > (1 << 20) {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await?;
        }
    }
    sink.send(bytes::Bytes::from(buf)).await?;
    sink.finish().await?;
    client
        .batch_execute(&format!(
            "CREATE INDEX ON {TABLE} (project, creator, order_id DESC);
             CREATE INDEX ON {TABLE} (project, status, order_id DESC);
             CREATE INDEX ON {TABLE} (project, creator, status, order_id DESC);
             CREATE INDEX ON {TABLE} (project, gmt_created);"
        ))
        .await
        .context("indexing the baseline table")?;
    let trigram = client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .is_ok();
    if trigram {
        client
            .batch_execute(&format!(
                "CREATE INDEX ON {TABLE} USING gin (lower(order_name) gin_trgm_ops)"
            ))
            .await
            .context("trigram index")?;
    }
    // Outside any transaction (VACUUM refuses to run in one): sets the visibility map, without
    // which a count visits the heap for every row, and refreshes the statistics.
    client
        .batch_execute(&format!("VACUUM (ANALYZE) {TABLE}"))
        .await
        .context("VACUUM (ANALYZE)")?;
    Ok(started.elapsed().as_secs_f64())
}

/// One list query as SQL: the page and its count, with their parameters.
struct Sql {
    page: String,
    count: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    marker: Option<i64>,
}

/// Translates the benchmark's query string (`limit=..&creator=..&...`) for `project`.
fn translate(project: &str, query: &str) -> Sql {
    let mut wh = vec!["project = $1".to_owned()];
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(project.to_owned())];
    let mut limit = 10i64;
    let mut marker = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let n = params.len() + 1;
        match &*k {
            "limit" => limit = v.parse().unwrap_or(10),
            "marker" => marker = v.parse().ok(),
            "creator" => {
                wh.push(format!("creator = ${n}"));
                params.push(Box::new(v.into_owned()));
            }
            "status" => {
                wh.push(format!("status = ${n}"));
                params.push(Box::new(v.into_owned()));
            }
            "start_time" => {
                wh.push(format!("gmt_created >= ${n}"));
                params.push(Box::new(v.parse::<i64>().unwrap_or(0)));
            }
            "end_time" => {
                wh.push(format!("gmt_created <= ${n}"));
                params.push(Box::new(v.parse::<i64>().unwrap_or(i64::MAX)));
            }
            "name_like" => {
                wh.push(format!("lower(order_name) LIKE ${n}"));
                params.push(Box::new(format!("%{}%", v.to_lowercase())));
            }
            _ => {}
        }
    }
    let filters = wh.join(" AND ");
    let page_filter = match marker {
        Some(_) => format!("{filters} AND order_id < ${}", params.len() + 1),
        None => filters.clone(),
    };
    Sql {
        page: format!(
            "SELECT order_id, order_name, execute_uuid, gmt_created, gmt_finished, execute_costs, \
             creator, status, region_ids FROM {TABLE} WHERE {page_filter} \
             ORDER BY order_id DESC LIMIT {limit}"
        ),
        count: format!("SELECT count(*) FROM {TABLE} WHERE {filters}"),
        params,
        marker,
    }
}

/// A query's two statements, prepared on one connection.
struct Prepared {
    page: Statement,
    count: Statement,
}

async fn prepare(client: &Client, sql: &Sql) -> anyhow::Result<Prepared> {
    Ok(Prepared {
        page: client
            .prepare(&sql.page)
            .await
            .context("preparing the page")?,
        count: client
            .prepare(&sql.count)
            .await
            .context("preparing the count")?,
    })
}

/// The parameters of the page and of the count.
fn params(sql: &Sql) -> (Vec<&(dyn ToSql + Sync)>, Vec<&(dyn ToSql + Sync)>) {
    let base: Vec<&(dyn ToSql + Sync)> = sql
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut page = base.clone();
    if let Some(m) = &sql.marker {
        page.push(m);
    }
    (page, base)
}

/// One request: the page and its total, as the API answers them together.
async fn once(client: &Client, sql: &Sql, st: &Prepared) -> anyhow::Result<i64> {
    let (page, count) = params(sql);
    client.query(&st.page, &page).await?;
    let total: i64 = client.query_one(&st.count, &count).await?.get(0);
    Ok(total)
}

/// Times one query like the ledger's, in `mode`: sequential requests for p50/p99/max, then
/// `secs` of 8 connections for throughput, each connection with the statements prepared once.
pub async fn measure(
    conninfo: &str,
    project: &str,
    query: &str,
    mode: PlanMode,
    requests: usize,
    secs: u64,
) -> anyhow::Result<Latency> {
    let sql = Arc::new(translate(project, query));
    let client = &connect_in(conninfo, mode).await?;
    let st = prepare(client, &sql).await?;
    let total = once(client, &sql, &st).await? as u64;
    let mut times = Vec::with_capacity(requests);
    let deadline = Instant::now() + Duration::from_secs(secs.max(1) * 5);
    for _ in 0..requests {
        let t = Instant::now();
        once(client, &sql, &st).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if Instant::now() > deadline && times.len() >= 20 {
            break; // a slow query: enough samples for its percentiles
        }
    }
    let mut workers = Vec::new();
    for _ in 0..8 {
        let c = connect_in(conninfo, mode).await?;
        let st = Arc::new(prepare(&c, &sql).await?);
        let c = Arc::new(c);
        let sql = sql.clone();
        workers.push(move || {
            let (c, sql, st) = (c.clone(), sql.clone(), st.clone());
            async move { once(&c, &sql, &st).await.is_ok() }
        });
    }
    Ok(Latency::from_times(
        times,
        crate::stats::throughput(workers, secs).await?,
        total,
    ))
}

/// The settings a reader needs to judge the baseline.
pub async fn settings(client: &Client) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in [
        "server_version",
        "shared_buffers",
        "work_mem",
        "effective_cache_size",
        "random_page_cost",
        "max_parallel_workers_per_gather",
        "jit",
    ] {
        if let Ok(row) = client.query_one(&format!("SHOW {name}"), &[]).await {
            out.push((name.to_owned(), row.get::<_, String>(0)));
        }
    }
    out
}

/// The values of a query's parameters as SQL literals, in `translate`'s order (`$1` is the
/// project), for the statements run as text: pgbench's script and `EXPLAIN EXECUTE`.
fn literals(project: &str, query: &str) -> Vec<String> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut values = vec![quote(project)];
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "creator" | "status" => values.push(quote(&v)),
            "start_time" | "end_time" => values.push(v.parse::<i64>().unwrap_or(0).to_string()),
            "name_like" => values.push(quote(&format!("%{}%", v.to_lowercase()))),
            _ => {}
        }
    }
    if let Some(m) = translate(project, query).marker {
        values.push(m.to_string());
    }
    values
}

/// `text` with `$n` replaced by the `n`th literal.
fn bind(text: &str, literals: &[String]) -> String {
    let mut out = text.to_owned();
    for (i, v) in literals.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), v);
    }
    out
}

/// How PostgreSQL plans a prepared statement: its default (`auto`: a generic plan once it costs
/// no more than the custom ones, after five executions), or a custom plan at every execution.
/// The baseline takes whichever answers a query faster, as its user would once they saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanMode {
    /// `plan_cache_mode = auto`.
    Auto,
    /// `plan_cache_mode = force_custom_plan`.
    Custom,
}

impl PlanMode {
    /// The setting's value.
    pub fn setting(self) -> &'static str {
        match self {
            PlanMode::Auto => "auto",
            PlanMode::Custom => "force_custom_plan",
        }
    }
}

/// A connection in `mode`.
async fn connect_in(conninfo: &str, mode: PlanMode) -> anyhow::Result<Client> {
    let c = connect(conninfo).await.context("baseline connection")?;
    c.batch_execute(&format!("SET plan_cache_mode = {}", mode.setting()))
        .await?;
    Ok(c)
}

/// The plan mode under which `query` answers faster: p50 of 100 requests in each, after ten
/// that let `auto` settle on its generic plan if it will.
pub async fn faster_mode(conninfo: &str, project: &str, query: &str) -> anyhow::Result<PlanMode> {
    let sql = translate(project, query);
    let mut best = (f64::MAX, PlanMode::Auto);
    for mode in [PlanMode::Auto, PlanMode::Custom] {
        let c = connect_in(conninfo, mode).await?;
        let st = prepare(&c, &sql).await?;
        for _ in 0..10 {
            once(&c, &sql, &st).await?;
        }
        let mut times = Vec::with_capacity(100);
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..100 {
            let t = Instant::now();
            once(&c, &sql, &st).await?;
            times.push(t.elapsed().as_secs_f64());
            if Instant::now() > deadline {
                break;
            }
        }
        let [p50, _, _] = crate::stats::percentiles(times);
        if p50 < best.0 {
            best = (p50, mode);
        }
    }
    Ok(best.1)
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of a query's page and of its count as prepared statements
/// under `mode`, after six executions, so that the plan shown is the one the measurement used
/// (under `auto`, the generic plan if PostgreSQL switched to it).
pub async fn explain(
    conninfo: &str,
    project: &str,
    query: &str,
    mode: PlanMode,
) -> anyhow::Result<String> {
    let c = connect_in(conninfo, mode).await?;
    let sql = translate(project, query);
    let lits = literals(project, query);
    let n = lits.len();
    let page_args = lits.join(", ");
    let count_args = lits[..n - usize::from(sql.marker.is_some())].join(", ");
    let mut out = format!("plan_cache_mode = {}\n", mode.setting());
    for (name, text, args) in [
        ("ledger_page", &sql.page, page_args),
        ("ledger_count", &sql.count, count_args),
    ] {
        out.push_str(&format!("-- {name}: {}\n", bind(text, &lits)));
        c.batch_execute(&format!("PREPARE {name} AS {text}"))
            .await?;
        for _ in 0..6 {
            c.batch_execute(&format!("EXECUTE {name}({args})")).await?;
        }
        let rows = c
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({args})"),
                &[],
            )
            .await
            .with_context(|| format!("EXPLAIN of {name}"))?;
        for r in rows {
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Transactions/s of `pgbench -M prepared` at 8 clients for `secs` in `mode`, each transaction
/// the page and the count of `query` (its parameters written into the script), or why it could
/// not run.
pub fn pgbench(
    conninfo: &str,
    project: &str,
    query: &str,
    mode: PlanMode,
    secs: u64,
) -> anyhow::Result<f64> {
    let sql = translate(project, query);
    let lits = literals(project, query);
    let count = &lits[..lits.len() - usize::from(sql.marker.is_some())];
    let script = format!(
        "{};\n{};\n",
        bind(&sql.page, &lits),
        bind(&sql.count, count)
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("query.sql");
    std::fs::write(&file, script)?;
    let output = std::process::Command::new("pgbench")
        .env(
            "PGOPTIONS",
            format!("-c plan_cache_mode={}", mode.setting()),
        )
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(conninfo)
        .output()
        .context("running pgbench (apt-get install postgresql-client)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Drops the baseline table.
pub async fn cleanup(client: &Client) {
    let _ = client
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_translate_to_page_and_count() {
        let s = translate(
            "p",
            "limit=5&creator=c&status=FINISHED&name_like=Ka&start_time=1&end_time=2&marker=9",
        );
        assert_eq!(s.params.len(), 6);
        assert_eq!(s.marker, Some(9));
        assert!(s.page.contains("order_id < $7") && s.page.ends_with("LIMIT 5"));
        assert!(s.count.starts_with("SELECT count(*)") && !s.count.contains("order_id <"));
        assert!(s.count.contains("lower(order_name) LIKE $4"));
    }
}
