//! The auditor's commands, run against a live daemon: a ticket's history, dead letters, redrive,
//! and rebuild with a progress bar (`verify` is [`super::verify`]).
//!
//! The daemon holds sled's lock, so these commands read the live projection through its admin
//! HTTP endpoints (action `coc:ledger:admin`), never by opening the store, and never pause it.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// An HTTP client for the daemon's API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the daemon at `base` (e.g. `http://127.0.0.1:8080`), with a token.
    pub fn new(base: &str, token: &str) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The daemon's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `req` with the token; the response, whatever its status.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.header("X-Auth-Token", &self.token)
            .send()
            .await
            .with_context(|| format!("calling the daemon at {} (is it running?)", self.base))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = self.call(req).await?;
        let status = resp.status();
        let body: Value = resp.json().await.context("reading the daemon's answer")?;
        if !status.is_success() {
            bail!(
                "{status}: {} {}",
                body["error_code"].as_str().unwrap_or(""),
                body["error_msg"].as_str().unwrap_or("")
            );
        }
        Ok(body["data"].clone())
    }

    /// GET a path; the `data` of the answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET a path whose answer is not JSON (the records export): the response, to be read as
    /// it comes, once its status says it succeeded.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .call(self.http.get(format!("{}{path}", self.base)))
            .await?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp)
    }

    /// GET a path in a project (`x-project-id`, when given); the `data` of the answer.
    pub async fn get_as(&self, path: &str, project: Option<&str>) -> anyhow::Result<Value> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(p) = project {
            req = req.header("x-project-id", p);
        }
        self.send(req).await
    }

    /// `GET /readyz`: its status code and body (a 503 is an answer too, not an error).
    pub async fn readyz(&self) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .with_context(|| format!("calling the daemon at {} (is it running?)", self.base))?;
        let code = resp.status().as_u16();
        Ok((code, resp.json().await.context("reading /readyz")?))
    }

    /// `GET /metrics` as text (with the token, for a daemon where it is not open).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .header("X-Auth-Token", &self.token)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("/metrics: {}", resp.status());
        }
        Ok(resp.text().await?)
    }

    /// POST a path with a JSON body; the `data` of the answer.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// Prints a ticket and its history.
pub async fn history(
    c: &AdminClient,
    execute_uuid: &str,
    project: Option<&str>,
) -> anyhow::Result<()> {
    let t = c
        .get_as(&format!("/v1/job/script/orders/{execute_uuid}"), project)
        .await?;
    println!(
        "ticket {} ({}) order_id {} status {} created {} finished {} costs {}",
        t["execute_uuid"].as_str().unwrap_or(""),
        t["order_name"].as_str().unwrap_or(""),
        t["order_id"],
        t["status"].as_str().unwrap_or(""),
        t["gmt_created"],
        t["gmt_finished"],
        t["execute_costs"],
    );
    println!(
        "{:>10}  {:<26}  {:<26}  {:<10}  {:<20}  id",
        "seq", "type", "time", "outcome", "source"
    );
    for e in t["events"].as_array().into_iter().flatten() {
        let mut outcome = e["outcome"].as_str().unwrap_or("").to_owned();
        if let Some(r) = e["reason"].as_str() {
            outcome = format!("{outcome} ({r})");
        }
        println!(
            "{:>10}  {:<26}  {:<26}  {:<10}  {:<20}  {}",
            e["seq"].as_u64().unwrap_or(0),
            e["type"].as_str().unwrap_or(""),
            e["time"].as_str().unwrap_or(""),
            outcome,
            e["source"].as_str().unwrap_or(""),
            e["id"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// Prints the dead letters (pending ones, or all), with counts by reason.
pub async fn dead_letters(c: &AdminClient, all: bool, json: bool) -> anyhow::Result<()> {
    let mut after = 0u64;
    let mut printed_counts = false;
    loop {
        let data = c
            .get(&format!(
                "/v1/ledger/dead-letters?after={after}&limit=1000&all={all}"
            ))
            .await?;
        if !printed_counts && !json {
            eprintln!("pending by reason: {}", data["pending_by_reason"]);
            printed_counts = true;
        }
        let items = data["dead_letters"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return Ok(());
        }
        for d in &items {
            if json {
                println!("{d}");
            } else {
                let payload = d["payload"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| d["payload_hex"].as_str().map(|h| format!("hex:{h}")))
                    .unwrap_or_default();
                let short: String = payload.chars().take(100).collect();
                let redriven = d["redriven_by"]
                    .as_u64()
                    .map(|s| format!(" [redriven as {s}]"))
                    .unwrap_or_default();
                println!(
                    "{:>10}  {:<20}  {}  {}{}\n            payload: {}",
                    d["seq"].as_u64().unwrap_or(0),
                    d["code"].as_str().unwrap_or(""),
                    d["subject"].as_str().unwrap_or(""),
                    d["reason"].as_str().unwrap_or(""),
                    redriven,
                    short
                );
            }
        }
        after = items
            .last()
            .and_then(|d| d["seq"].as_u64())
            .unwrap_or(u64::MAX);
    }
}

/// Republishes pending dead letters (all, or the given sequences).
pub async fn redrive(c: &AdminClient, seqs: &[u64]) -> anyhow::Result<()> {
    let body = if seqs.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "seqs": seqs })
    };
    let data = c.post("/v1/ledger/redrive", body).await?;
    let copies = data["redriven"].as_array().cloned().unwrap_or_default();
    for r in &copies {
        println!(
            "dead letter {} republished as sequence {}",
            r["original_seq"], r["copy_seq"]
        );
    }
    println!("redriven {} dead letter(s)", copies.len());
    Ok(())
}

/// Starts a rebuild and follows it to the switch-over: a progress bar on a terminal, plain
/// progress lines otherwise.
pub async fn replay(c: &AdminClient, accept_partial: bool) -> anyhow::Result<()> {
    c.post(
        &format!("/v1/ledger/replay?accept_partial={accept_partial}"),
        serde_json::json!({}),
    )
    .await?;
    let mut meter = super::progress::Meter::new("rebuild", "events");
    loop {
        let p = c.get("/v1/ledger/replay").await?;
        let done = p["done"].as_u64().unwrap_or(0);
        let total = p["total"].as_u64().unwrap_or(0);
        let rate = p["events_per_sec"].as_f64().unwrap_or(0.0);
        let eta = p["eta_secs"]
            .as_f64()
            .map_or("?".into(), |s| format!("{s:.0}s"));
        meter.show(done, total, &format!("{rate:.0} events/s, ETA {eta}"));
        match p["phase"].as_str() {
            Some("done") => {
                meter.finish(true);
                println!(
                    "rebuild done: generation {} is live, {} tickets, {} events folded",
                    p["generation"], p["tickets"], done
                );
                return Ok(());
            }
            Some("failed") => {
                meter.finish(false);
                bail!("rebuild failed: {}", p["error"].as_str().unwrap_or("?"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
