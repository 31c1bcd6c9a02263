//! The codecs on the benchmark's own data, in-process; prints the Markdown rows BENCHMARKS.md
//! quotes:
//!
//! - ticket records: `core::record` (postcard of a storage mirror), per record. (At commit
//!   416bc77 this binary compared the hand-written codec the daemon had then with postcard; the
//!   A/B is in BENCHMARKS.md, and it is why the records are postcard now.)
//! - events: `core::events::decode` (the borrowing scanner, serde behind it) against
//!   `decode_with_serde_only` (serde alone, with borrowed fields): the A/B that keeps the
//!   scanner.
//!
//! ```text
//! cargo run --release -p ticket-ledger-bench --bin codecs -- 200000 [PLANS_EVERY]
//! ```
//!
//! Each measurement is the best of five passes over every record or event (in-process, one
//! thread), so that the machine's drift between passes does not decide it.

use std::time::Instant;

use ticket_ledger::core::events::{self, Event};
use ticket_ledger::core::fold::{self, Ticket};
use ticket_ledger::core::record;
use ticket_ledger_bench::history::History;

const PREFIX: &str = "coc.job.script";

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
    let plans_every: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("plans every: a number"))
        .unwrap_or(ticket_ledger_bench::history::PLANS_EVERY);
    // Every event, and every ticket folded with its full history (what sled stores).
    let events: Vec<Event> = History::new(tickets)
        .plans_every(plans_every)
        .map(|(e, _)| e)
        .collect();
    let mut folded: std::collections::HashMap<u64, Ticket> = Default::default();
    for (seq, e) in events.iter().enumerate() {
        let before = folded.remove(&e.order_id);
        if let Some(t) = fold::apply(before, e, seq as u64 + 1).ticket {
            folded.insert(e.order_id, t);
        }
    }
    let finals: Vec<Ticket> = folded.into_values().collect();
    let n = finals.len();

    let records: Vec<Vec<u8>> = finals.iter().map(record::encode).collect();
    // A plan is stored apart from its ticket's record (`store::plans`): the record holds the rest.
    for (t, r) in finals.iter().zip(&records) {
        let without_plan = Ticket {
            plan: None,
            ..t.clone()
        };
        assert_eq!(record::decode(r).unwrap(), without_plan);
    }
    let bytes = records.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!("records: {n} tickets with their histories\n");
    println!("| record codec | encode ns | decode ns | decode without history ns | bytes |");
    println!("|---|---:|---:|---:|---:|");
    let encode = best_ns(n, || finals.iter().map(|t| record::encode(t).len()).sum());
    let decode = best_ns(n, || {
        records
            .iter()
            .map(|b| record::decode(b).unwrap().history.len())
            .sum()
    });
    let head = best_ns(n, || {
        records
            .iter()
            .map(|b| record::decode_head(b).unwrap().order_id as usize)
            .sum()
    });
    println!("| postcard (`core::record`) | {encode:.0} | {decode:.0} | {head:.0} | {bytes:.0} |");

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
