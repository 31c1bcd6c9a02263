//! `ticket-ledger-bench`: see the crate's docs.

use std::path::PathBuf;

use clap::Parser;

/// The ledger against the raw read rate of the same stream and a PostgreSQL baseline.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Tickets to generate, or a comma-separated list of sizes (`100000,1000000,10000000`),
    /// each run from a new broker and store, the report giving the cost curve over them.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    tickets: Vec<u64>,
    /// Plans with batches and hosts on one run of ten tickets in this many (0: none, 2-5 events
    /// a ticket; the default 10 gives ~24 events a ticket).
    #[arg(long, default_value_t = ticket_ledger_bench::history::PLANS_EVERY)]
    plans_every: u64,
    /// Sequential requests per query kind (for p50/p99/max).
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Seconds of the 8-connection throughput run per query kind.
    #[arg(long, default_value_t = 2)]
    throughput_secs: u64,
    /// Where to write the table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The PostgreSQL baseline's connection string (the baseline is skipped if no server
    /// answers).
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    )]
    postgres: String,
    /// The daemon binary (default: `ticket-ledger` beside this one, as `cargo build --release
    /// --workspace` leaves it).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let daemon = ticket_ledger_bench::daemon_binary(a.daemon)?;
    ticket_ledger_bench::run(ticket_ledger_bench::BenchOptions {
        tickets: a.tickets,
        plans_every: a.plans_every,
        requests: a.requests,
        throughput_secs: a.throughput_secs,
        out: a.out,
        postgres: a.postgres,
        daemon,
    })
    .await
}
