//! Latencies and throughput, measured the same way for the ledger and for PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::BENCH_TOKEN;

/// Latencies of one query kind, and its throughput at 8 connections.
pub struct Latency {
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Slowest, µs.
    pub max_us: f64,
    /// Requests/s at 8 connections.
    pub rps: f64,
    /// The query's total.
    pub total: u64,
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
    /// From sequential request times (µs), a throughput and the total.
    pub fn from_times(times: Vec<f64>, rps: f64, total: u64) -> Self {
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
pub async fn get_page(
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
pub async fn throughput<W, F>(workers: Vec<W>, secs: u64) -> anyhow::Result<f64>
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

/// Times one list query through HTTP.
pub async fn measure_query(
    http: &reqwest::Client,
    base: &str,
    project: &str,
    query: &str,
    requests: usize,
    secs: u64,
) -> anyhow::Result<Latency> {
    let path = format!("/v1/job/script/orders?{query}");
    measure_path(http, base, project, &path, requests, secs).await
}

/// [`measure_query`] of any route; `total` is the answer's `data.total`, or else its
/// `data.total_instances` (a batch page), or 0.
pub async fn measure_path(
    http: &reqwest::Client,
    base: &str,
    project: &str,
    path: &str,
    requests: usize,
    secs: u64,
) -> anyhow::Result<Latency> {
    let url = format!("{base}{path}");
    let first: serde_json::Value = serde_json::from_slice(&get_page(http, &url, project).await?)?;
    let total = first["data"]["total"]
        .as_u64()
        .or_else(|| first["data"]["total_instances"].as_u64())
        .unwrap_or(0);
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        get_page(http, &url, project).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Latency::from_times(
        times,
        page_throughput(http, &url, project, secs).await?,
        total,
    ))
}

/// Requests/s of `url` (as the benchmark's principal, in `project`) that 8 connections reach
/// together in `secs`: how every query's throughput, and the HTTP ceiling, are measured.
pub async fn page_throughput(
    http: &reqwest::Client,
    url: &str,
    project: &str,
    secs: u64,
) -> anyhow::Result<f64> {
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
    throughput(workers, secs).await
}

/// The daemon's `/readyz` body, if it answers.
pub async fn readyz(http: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}
