//! The operator's commands against a live daemon, for those without curl: `list` (the list API's
//! filters as flags, a table or `--json`) and `status` (`/readyz` in words).

use anyhow::{Context, bail};
use clap::Args;

use crate::core::events;
use crate::ops::audit::AdminClient;

/// `ticket-ledger list`: the list API's parameters as flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Page size, 1 to 100.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// The last `order_id` of the previous page: the page holds tickets below it.
    #[arg(long)]
    pub marker: Option<u64>,
    /// Exact creator.
    #[arg(long)]
    pub creator: Option<String>,
    /// READY, PROCESSING, ABNORMAL, PAUSED, CANCELED or FINISHED.
    #[arg(long)]
    pub status: Option<String>,
    /// Case-insensitive substring of the name.
    #[arg(long)]
    pub name_like: Option<String>,
    /// Created at or after: RFC 3339 or ms since the epoch.
    #[arg(long)]
    pub start_time: Option<String>,
    /// Created at or before: RFC 3339 or ms since the epoch.
    #[arg(long)]
    pub end_time: Option<String>,
    /// The project (needed when the token grants several).
    #[arg(long)]
    pub project: Option<String>,
    /// Print the API's answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A time flag as ms since the epoch.
fn ms(flag: &str, raw: &str) -> anyhow::Result<String> {
    raw.parse::<i64>()
        .ok()
        .or_else(|| events::parse_time_ms(raw))
        .map(|ms| ms.to_string())
        .with_context(|| format!("--{flag} {raw:?} is neither RFC 3339 nor ms since the epoch"))
}

/// The query string of `a`.
fn query(a: &ListArgs) -> anyhow::Result<String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("limit", &a.limit.to_string());
    if let Some(m) = a.marker {
        q.append_pair("marker", &m.to_string());
    }
    for (k, v) in [
        ("creator", &a.creator),
        ("status", &a.status),
        ("name_like", &a.name_like),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    for (k, v) in [("start_time", &a.start_time), ("end_time", &a.end_time)] {
        if let Some(v) = v {
            q.append_pair(k, &ms(k, v)?);
        }
    }
    Ok(q.finish())
}

/// A duration in ms as people read it: `850 ms`, `20.8 s`, `3.5 min`, `2.1 h`.
fn human_ms(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{s:.1} s")
    } else if ms < 3_600_000 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Lists one page of tickets.
pub async fn list(c: &AdminClient, a: &ListArgs) -> anyhow::Result<()> {
    let page = c
        .get_as(
            &format!("/v1/job/script/orders?{}", query(a)?),
            a.project.as_deref(),
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    let rows = page["data"].as_array().cloned().unwrap_or_default();
    println!(
        "{:>12}  {:<10}  {:<24}  {:>9}  {:<16}  {:<24}  execute_uuid",
        "order_id", "status", "created", "costs", "creator", "name"
    );
    for t in &rows {
        let costs = t["execute_costs"].as_i64().map_or("-".into(), human_ms);
        println!(
            "{:>12}  {:<10}  {:<24}  {:>9}  {:<16}  {:<24}  {}",
            t["order_id"],
            t["status"].as_str().unwrap_or(""),
            t["gmt_created"]
                .as_i64()
                .map_or(String::new(), events::format_time_ms),
            costs,
            t["creator"].as_str().unwrap_or(""),
            t["order_name"].as_str().unwrap_or(""),
            t["execute_uuid"].as_str().unwrap_or(""),
        );
    }
    let total = page["total"].as_u64().unwrap_or(0);
    match rows.last().and_then(|t| t["order_id"].as_u64()) {
        Some(last) if rows.len() as u32 == a.limit => {
            println!("{} of {total}; the next page: --marker {last}", rows.len())
        }
        _ => println!("{} of {total}", rows.len()),
    }
    Ok(())
}

/// Prints `/readyz` in words; an error (exit 1) when the daemon is not ready.
pub async fn status(c: &AdminClient) -> anyhow::Result<()> {
    let (code, r) = c.readyz().await?;
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let connected = r["nats_connected"].as_bool() == Some(true);
    println!(
        "broker:  {}",
        if connected {
            "connected"
        } else {
            "NOT connected"
        }
    );
    // The lag in seconds is a metric (asked of the broker at each scrape), read when open.
    let seconds = c
        .metrics()
        .await
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("ticket_ledger_lag_seconds ")?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(String::new(), |s| format!(", {s:.1} s"));
    println!(
        "applied: sequence {} of the stream's {} (lag {} events{seconds}); {} written to disk",
        n("applied_seq"),
        n("stream_last_seq"),
        n("lag"),
        n("durable_seq")
    );
    let view = n("view_seq");
    if view == n("applied_seq") {
        println!("list:    in step ({} tickets)", n("tickets"));
    } else {
        println!(
            "list:    catching up: answers as of sequence {view} ({} tickets)",
            n("tickets")
        );
    }
    if r["ready"].as_bool() == Some(true) {
        println!("ready");
        Ok(())
    } else {
        bail!("not ready ({code})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_list_query() {
        let a = ListArgs {
            limit: 5,
            marker: Some(9),
            creator: Some("a b".into()),
            status: None,
            name_like: Some("x&y".into()),
            start_time: Some("2023-07-24T12:13:49.451Z".into()),
            end_time: Some("1690200850293".into()),
            project: None,
            json: false,
        };
        assert_eq!(
            query(&a).unwrap(),
            "limit=5&marker=9&creator=a+b&name_like=x%26y&start_time=1690200829451&end_time=1690200850293"
        );
        let mut bad = a;
        bad.start_time = Some("yesterday".into());
        assert!(query(&bad).unwrap_err().to_string().contains("start_time"));
    }

    #[test]
    fn durations_read_as_people_read_them() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(20_842), "20.8 s");
        assert_eq!(human_ms(210_000), "3.5 min");
        assert_eq!(human_ms(7_560_000), "2.1 h");
    }
}
