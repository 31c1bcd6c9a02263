//! The benchmark's baseline: the same tickets in PostgreSQL with the obvious indexes, asked the
//! same list queries as "page + `count(*)`" — what a user would build instead of the ledger.
//!
//! PostgreSQL is asked directly over its wire protocol (no HTTP layer in front of it, unlike the
//! ledger), with prepared statements, which flatters the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::SinkExt;
use tokio_postgres::{Client, NoTls, types::ToSql};

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
             CREATE INDEX ON {TABLE} (project, gmt_created);
             ANALYZE {TABLE};"
        ))
        .await
        .context("indexing the baseline table")?;
    if client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .is_ok()
    {
        client
            .batch_execute(&format!(
                "CREATE INDEX ON {TABLE} USING gin (lower(order_name) gin_trgm_ops); ANALYZE {TABLE};"
            ))
            .await
            .context("trigram index")?;
    }
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

/// One request: the page and its total, as the API answers them together.
async fn once(client: &Client, sql: &Sql) -> anyhow::Result<i64> {
    let base: Vec<&(dyn ToSql + Sync)> = sql
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut page_params = base.clone();
    if let Some(m) = &sql.marker {
        page_params.push(m);
    }
    client.query(&sql.page, &page_params).await?;
    let total: i64 = client.query_one(&sql.count, &base).await?.get(0);
    Ok(total)
}

/// Times one query like the ledger's: sequential requests for p50/p99/max, then `secs` of 8
/// connections for throughput.
pub async fn measure(
    conninfo: &str,
    client: &Client,
    project: &str,
    query: &str,
    requests: usize,
    secs: u64,
) -> anyhow::Result<Latency> {
    let sql = Arc::new(translate(project, query));
    let total = once(client, &sql).await? as u64;
    let mut times = Vec::with_capacity(requests);
    let deadline = Instant::now() + Duration::from_secs(secs.max(1) * 5);
    for _ in 0..requests {
        let t = Instant::now();
        once(client, &sql).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if Instant::now() > deadline && times.len() >= 20 {
            break; // a slow query: enough samples for its percentiles
        }
    }
    let mut workers = Vec::new();
    for _ in 0..8 {
        let c = Arc::new(connect(conninfo).await.context("baseline connection")?);
        let sql = sql.clone();
        workers.push(move || {
            let (c, sql) = (c.clone(), sql.clone());
            async move { once(&c, &sql).await.is_ok() }
        });
    }
    Ok(Latency::from_times(
        times,
        crate::stats::throughput(workers, secs).await?,
        total,
    ))
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
