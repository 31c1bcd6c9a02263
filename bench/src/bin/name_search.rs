//! The query view's `name_like` in-process, without HTTP: where the in-process figures in
//! README "Design" and BENCHMARKS.md come from.
//!
//! ```text
//! cargo run --release -p ticket-ledger-bench --bin name-search -- 1000000 kalo kal ka
//! ```
//!
//! Builds the view of the benchmark's history (`tickets` tickets, rows in `order_id` order, as
//! the daemon builds them from the records) and asks `project-0` for each needle 2,000 times
//! (`REPS` to change), printing the total and p50 / p99 / max in µs, after the process's RSS
//! growth (the view, and whatever the freed tickets it was built from left in the heap).

use std::time::Instant;

use ticket_ledger::core::domain::{FilterText, ProjectId};
use ticket_ledger::view::{Index, Query};
use ticket_ledger_bench::history::History;
use ticket_ledger_bench::stats::percentiles;

fn main() {
    let mut args = std::env::args().skip(1);
    let tickets: u64 = args
        .next()
        .map(|s| s.parse().expect("tickets: a number"))
        .unwrap_or(1_000_000);
    let needles: Vec<String> = args.collect();
    let reps: usize = std::env::var("REPS")
        .map(|s| s.parse().expect("REPS: a number"))
        .unwrap_or(2_000);

    let before = ticket_ledger_bench::procs::rss_kib(std::process::id()).unwrap_or(0);
    let mut finals: Vec<_> = History::new(tickets).filter_map(|(_, f)| f).collect();
    finals.sort_by_key(|t| t.order_id);
    let built = Instant::now();
    let index = Index::bulk(finals);
    let build_secs = built.elapsed().as_secs_f64();
    let after = ticket_ledger_bench::procs::rss_kib(std::process::id()).unwrap_or(0);
    println!(
        "view of {tickets} tickets built in {build_secs:.2} s: RSS +{} MiB (an upper bound: it \
         holds what the tickets left)",
        after.saturating_sub(before) / 1024
    );
    let project = ProjectId::parse("project-0").expect("valid");

    for needle in &needles {
        let mut q = Query::all();
        q.name_like = Some(FilterText::parse(needle, "name_like").expect("a valid needle"));
        let mut times = Vec::with_capacity(reps);
        let mut total = 0;
        for _ in 0..reps.max(1) {
            let started = Instant::now();
            total = index.query(&project, &q).total;
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let [p50, p99, max] = percentiles(times);
        println!("{needle}: total {total}, p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs");
    }
}
