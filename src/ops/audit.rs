//! The auditor's commands, run against a live daemon: a ticket's history, dead letters, redrive,
//! rebuild with a progress bar, and `verify`, which recomputes the projection from the stream
//! and compares it record by record with the live one.
//!
//! The daemon holds sled's lock, so these commands read the live projection through its admin
//! HTTP endpoints (action `coc:ledger:admin`), never by opening the store, and never pause it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value;

use crate::config::Settings;
use crate::core::batch::{DecodeRules, MemoryProjection, RawMessage, TicketKey};
use crate::core::events;
use crate::core::fold::Ticket;
use crate::store::ticket_json;

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

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .with_context(|| format!("calling the daemon at {} (is it running?)", self.base))?;
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

    /// The live records and the applied sequence read before they were scanned.
    pub async fn records(&self) -> anyhow::Result<(u64, Vec<(Ticket, Vec<u8>)>)> {
        let resp = self
            .http
            .get(format!("{}/v1/ledger/records", self.base))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .with_context(|| format!("calling the daemon at {} (is it running?)", self.base))?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let body = resp.bytes().await?;
        let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let head: Value = serde_json::from_slice(lines.next().context("empty export")?)?;
        let applied = head["applied_seq"].as_u64().context("no applied_seq")?;
        let records = lines
            .map(|l| Ok((serde_json::from_slice::<Ticket>(l)?, l.to_vec())))
            .collect::<anyhow::Result<_>>()?;
        Ok((applied, records))
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

/// The outcome of `verify`.
#[derive(Debug)]
pub struct VerifyReport {
    /// Tickets compared.
    pub tickets: usize,
    /// The live applied sequence the comparison is anchored at.
    pub through_seq: u64,
    /// Human-readable differences; empty when identical.
    pub differences: Vec<String>,
}

/// Reads the stream from its first message through `upto`.
async fn read_stream(settings: &Settings, upto: u64) -> anyhow::Result<Vec<RawMessage>> {
    let client = crate::nats::client_options(&settings.nats)
        .await?
        .connect(crate::nats::server_addrs(&settings.nats.url)?)
        .await
        .with_context(|| format!("connecting to {}", settings.nats.url))?;
    let js = jetstream::new(client.clone());
    let stream = crate::nats::ensure_stream(&js, &settings.nats).await?;
    let state = stream.get_info().await?.state;
    if state.first_sequence > 1 && state.messages > 0 {
        eprintln!(
            "warning: the stream starts at sequence {}: retention dropped the events before it, \
             so the records of tickets they touched will differ",
            state.first_sequence
        );
    }
    if upto == 0 || state.messages == 0 {
        return Ok(Vec::new());
    }
    if state.last_sequence < upto {
        bail!(
            "the stream ends at {} but the projection is at {upto}",
            state.last_sequence
        );
    }
    let mut messages = crate::nats::ordered_messages(&client, &stream, 1).await?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = crate::nats::raw_message(&m?)?;
        let seq = m.seq;
        if seq <= upto {
            out.push(m);
        }
        if seq >= upto {
            break;
        }
    }
    Ok(out)
}

/// Folds the stream from the start (in memory, the scratch projection) and compares it with the
/// live records, without pausing the daemon.
///
/// The live records are read while ingestion goes on, so the export is anchored at the applied
/// sequence S read before the scan. A record whose history ends at or before S is its state at S
/// and is compared with the fold through S. A record that changed during the scan (its history
/// goes past S) is compared with the fold of its own events through its last sequence, which is
/// what it must be, since every event for a ticket appends to its history.
pub async fn verify(settings: &Settings, c: &AdminClient) -> anyhow::Result<VerifyReport> {
    let (anchor, live) = c.records().await?;
    let last_of = |t: &Ticket| t.last_seq();
    let upto = live
        .iter()
        .map(|(t, _)| last_of(t))
        .max()
        .unwrap_or(0)
        .max(anchor);
    let messages = read_stream(settings, upto).await?;
    let rules = DecodeRules {
        subject_prefix: settings.nats.subject_prefix.clone(),
        max_event_bytes: settings.ingest.max_event_bytes,
    };
    let cut = messages.partition_point(|m| m.seq <= anchor);
    let mut reference = MemoryProjection::default();
    reference.fold(&messages[..cut], &rules);

    // The events of each ticket, for records that moved during the scan.
    let mut by_key: HashMap<TicketKey, Vec<usize>> = HashMap::new();
    if live.iter().any(|(t, _)| last_of(t) > anchor) {
        for (i, m) in messages.iter().enumerate() {
            if let Ok(e) = events::decode(
                &m.subject_text(),
                &m.payload,
                &rules.subject_prefix,
                rules.max_event_bytes,
            ) {
                by_key.entry((e.project, e.order_id)).or_default().push(i);
            }
        }
    }
    let mut differences = Vec::new();
    let mut seen: BTreeMap<TicketKey, ()> = BTreeMap::new();
    for (t, raw) in &live {
        let key = (t.project.clone(), t.order_id);
        seen.insert(key.clone(), ());
        let last = last_of(t);
        let expected = if last <= anchor {
            reference.tickets.get(&key).cloned()
        } else {
            let own: Vec<RawMessage> = by_key
                .get(&key)
                .into_iter()
                .flatten()
                .map(|i| messages[*i].clone())
                .filter(|m| m.seq <= last)
                .collect();
            let mut p = MemoryProjection::default();
            p.fold(&own, &rules);
            p.tickets.get(&key).cloned()
        };
        match expected {
            None => differences.push(format!(
                "{}/{}: in the live store but not in the stream's fold",
                key.0, key.1
            )),
            Some(e) => {
                let want = ticket_json(&e);
                if &want != raw {
                    differences.push(format!(
                        "{}/{}:\n  live:   {}\n  stream: {}",
                        key.0,
                        key.1,
                        String::from_utf8_lossy(raw),
                        String::from_utf8_lossy(&want)
                    ));
                }
            }
        }
    }
    for key in reference.tickets.keys() {
        if !seen.contains_key(key) {
            differences.push(format!(
                "{}/{}: in the stream's fold but not in the live store",
                key.0, key.1
            ));
        }
    }
    Ok(VerifyReport {
        tickets: live.len(),
        through_seq: anchor,
        differences,
    })
}
