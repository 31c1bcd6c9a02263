//! A/B of the two hand-written codecs the daemon keeps against the crates that would replace
//! them, on the benchmark's own data; prints the Markdown rows BENCHMARKS.md quotes:
//!
//! - ticket records: `core::record` (the stored form) against postcard over a storage mirror of
//!   `Ticket` (its serde derive is the JSON export's shape, with an internally tagged outcome
//!   that postcard cannot write), converted both ways as a postcard-based store would;
//! - events: `core::events::decode` (the borrowing scanner, serde behind it) against
//!   `decode_with_serde_only` (serde alone, with borrowed fields).
//!
//! ```text
//! cargo run --release -p ticket-ledger-bench --bin codecs -- 200000
//! ```
//!
//! Each measurement is the best of five passes over every record or event (in-process, one
//! thread), so that the machine's drift between passes does not decide it.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use ticket_ledger::core::domain::{ProjectId, Status};
use ticket_ledger::core::events::{self, Event, Kind};
use ticket_ledger::core::fold::{self, HistoryEntry, Outcome, Ticket};
use ticket_ledger::core::record;
use ticket_ledger_bench::history::History;

const PREFIX: &str = "coc.job.script";

/// What a postcard-based store would write: `Ticket`'s fields, the outcome a plain enum.
#[derive(Serialize)]
struct RecordRef<'a> {
    project: &'a str,
    order_id: u64,
    order_name: &'a str,
    execute_uuid: &'a str,
    creator: &'a str,
    region_ids: &'a str,
    job_type: &'a str,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    status: Status,
    /// Written straight from the ticket's entries, without a vector of mirrors.
    #[serde(serialize_with = "history_ref")]
    history: &'a [HistoryEntry],
}

fn history_ref<S: serde::Serializer>(h: &&[HistoryEntry], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|h| EntryRef {
        seq: h.seq,
        id: &h.id,
        kind: h.kind,
        time_ms: h.time_ms,
        source: &h.source,
        outcome: match &h.outcome {
            Outcome::Applied => OutcomeRef::Applied,
            Outcome::Duplicate => OutcomeRef::Duplicate,
            Outcome::Rejected { code, reason } => OutcomeRef::Rejected(code, reason),
        },
    }))
}

#[derive(Serialize)]
struct EntryRef<'a> {
    seq: u64,
    id: &'a str,
    kind: Kind,
    time_ms: i64,
    source: &'a str,
    outcome: OutcomeRef<'a>,
}

#[derive(Serialize)]
enum OutcomeRef<'a> {
    Applied,
    Duplicate,
    Rejected(&'a str, &'a str),
}

/// What it would read back.
#[derive(Deserialize)]
struct Record {
    project: String,
    order_id: u64,
    order_name: String,
    execute_uuid: String,
    creator: String,
    region_ids: String,
    job_type: String,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    status: Status,
    history: Vec<Entry>,
}

/// [`Record`] without its history, the last field: postcard reads fields in order, so this
/// prefix is how a postcard store would skip the history at start-up.
#[derive(Deserialize)]
struct Head {
    project: String,
    order_id: u64,
    order_name: String,
    execute_uuid: String,
    creator: String,
    region_ids: String,
    job_type: String,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    status: Status,
}

fn post_decode_head(b: &[u8]) -> Ticket {
    let (r, _history): (Head, _) = postcard::take_from_bytes(b).expect("a record");
    Ticket {
        project: ProjectId::parse(&r.project).expect("a project id"),
        order_id: r.order_id,
        order_name: r.order_name,
        execute_uuid: r.execute_uuid,
        creator: r.creator,
        region_ids: r.region_ids,
        job_type: r.job_type,
        gmt_created: r.gmt_created,
        gmt_finished: r.gmt_finished,
        execute_costs: r.execute_costs,
        status: r.status,
        history: Vec::new(),
    }
}

#[derive(Deserialize)]
struct Entry {
    seq: u64,
    id: String,
    kind: Kind,
    time_ms: i64,
    source: String,
    outcome: StoredOutcome,
}

#[derive(Deserialize)]
enum StoredOutcome {
    Applied,
    Duplicate,
    Rejected(String, String),
}

fn post_encode(t: &Ticket) -> Vec<u8> {
    let r = RecordRef {
        project: t.project.as_str(),
        order_id: t.order_id,
        order_name: &t.order_name,
        execute_uuid: &t.execute_uuid,
        creator: &t.creator,
        region_ids: &t.region_ids,
        job_type: &t.job_type,
        gmt_created: t.gmt_created,
        gmt_finished: t.gmt_finished,
        execute_costs: t.execute_costs,
        status: t.status,
        history: &t.history,
    };
    // The size is known after one pass; writing into a buffer of that size, as the
    // hand-written encoder sizes its own, leaves postcard no reallocation to pay for.
    let mut out = vec![0u8; postcard::experimental::serialized_size(&r).expect("sizes")];
    postcard::to_slice(&r, &mut out).expect("serialises");
    out
}

fn post_decode(b: &[u8]) -> Ticket {
    let r: Record = postcard::from_bytes(b).expect("a record");
    Ticket {
        project: ProjectId::parse(&r.project).expect("a project id"),
        order_id: r.order_id,
        order_name: r.order_name,
        execute_uuid: r.execute_uuid,
        creator: r.creator,
        region_ids: r.region_ids,
        job_type: r.job_type,
        gmt_created: r.gmt_created,
        gmt_finished: r.gmt_finished,
        execute_costs: r.execute_costs,
        status: r.status,
        history: r
            .history
            .into_iter()
            .map(|h| HistoryEntry {
                seq: h.seq,
                id: h.id,
                kind: h.kind,
                time_ms: h.time_ms,
                source: h.source,
                outcome: match h.outcome {
                    StoredOutcome::Applied => Outcome::Applied,
                    StoredOutcome::Duplicate => Outcome::Duplicate,
                    StoredOutcome::Rejected(code, reason) => Outcome::Rejected { code, reason },
                },
            })
            .collect(),
    }
}

/// Nanoseconds per item of `f` over `n` items: the best of five passes.
fn best_ns(n: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    let mut sink = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        sink = sink.wrapping_add(f());
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    std::hint::black_box(sink);
    best
}

fn main() {
    let tickets: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("tickets: a number"))
        .unwrap_or(200_000);
    // Every event, and every ticket folded with its full history (what sled stores).
    let events: Vec<Event> = History::new(tickets).map(|(e, _)| e).collect();
    let mut folded: std::collections::HashMap<u64, Ticket> = Default::default();
    for (seq, e) in events.iter().enumerate() {
        let before = folded.remove(&e.order_id);
        if let Some(t) = fold::apply(before, e, seq as u64 + 1).ticket {
            folded.insert(e.order_id, t);
        }
    }
    let finals: Vec<Ticket> = folded.into_values().collect();
    let n = finals.len();

    let hand: Vec<Vec<u8>> = finals.iter().map(record::encode).collect();
    let post: Vec<Vec<u8>> = finals.iter().map(post_encode).collect();
    for (t, (h, p)) in finals.iter().zip(hand.iter().zip(&post)) {
        assert_eq!(&record::decode(h).unwrap(), t);
        assert_eq!(&post_decode(p), t);
        assert_eq!(post_decode_head(p).order_id, t.order_id);
    }
    let size = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!("records: {n} tickets with their histories\n");
    println!("| record codec | encode ns | decode ns | decode without history ns | bytes |");
    println!("|---|---:|---:|---:|---:|");
    let enc_hand = best_ns(n, || finals.iter().map(|t| record::encode(t).len()).sum());
    let dec_hand = best_ns(n, || {
        hand.iter()
            .map(|b| record::decode(b).unwrap().history.len())
            .sum()
    });
    let head_hand = best_ns(n, || {
        hand.iter()
            .map(|b| record::decode_head(b).unwrap().order_id as usize)
            .sum()
    });
    println!(
        "| hand-written (`core::record`) | {enc_hand:.0} | {dec_hand:.0} | {head_hand:.0} | {:.0} |",
        size(&hand)
    );
    let enc_post = best_ns(n, || finals.iter().map(|t| post_encode(t).len()).sum());
    let dec_post = best_ns(n, || {
        post.iter().map(|b| post_decode(b).history.len()).sum()
    });
    let head_post = best_ns(n, || {
        post.iter()
            .map(|b| post_decode_head(b).order_id as usize)
            .sum()
    });
    println!(
        "| postcard 1 (serde derive of a storage mirror) | {enc_post:.0} | {dec_post:.0} | {head_post:.0} | {:.0} |",
        size(&post)
    );

    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.subject(PREFIX), e.to_bytes()))
        .collect();
    for (s, p) in &payloads {
        assert_eq!(
            events::decode(s, p, PREFIX, 1 << 20).unwrap(),
            events::decode_with_serde_only(s, p, PREFIX, 1 << 20).unwrap()
        );
    }
    let m = payloads.len();
    let scan = best_ns(m, || {
        payloads
            .iter()
            .map(|(s, p)| events::decode(s, p, PREFIX, 1 << 20).unwrap().order_id as usize)
            .sum()
    });
    let serde = best_ns(m, || {
        payloads
            .iter()
            .map(|(s, p)| {
                events::decode_with_serde_only(s, p, PREFIX, 1 << 20)
                    .unwrap()
                    .order_id as usize
            })
            .sum()
    });
    println!("\nevents: {m} payloads\n");
    println!("| event decoder | ns per event |");
    println!("|---|---:|");
    println!("| scanner, serde behind it (`core::events::decode`) | {scan:.0} |");
    println!("| serde alone, borrowed fields (`decode_with_serde_only`) | {serde:.0} |");
}
