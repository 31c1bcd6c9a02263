//! `soak`: steady ingest and queries against the daemon for minutes (see the crate's `soak`).
//!
//! ```text
//! cargo build --release --workspace
//! target/release/soak --tickets 1000000 --minutes 30 --rate 20000 --qps 2000
//! ```

use std::path::PathBuf;

use clap::Parser;

/// Steady ingest and an open-loop query mix against the daemon, per minute.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Tickets in the store before the soak.
    #[arg(long, default_value_t = 1_000_000)]
    tickets: u64,
    /// Minutes of load.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Events published per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Requests per second, in all, over 8 connections.
    #[arg(long, default_value_t = 2_000)]
    qps: u64,
    /// The daemon binary (default: `ticket-ledger` beside this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let daemon = ticket_ledger_bench::daemon_binary(a.daemon)?;
    let report = ticket_ledger_bench::soak::soak(ticket_ledger_bench::soak::SoakOptions {
        tickets: a.tickets,
        minutes: a.minutes,
        rate: a.rate,
        qps: a.qps,
        daemon,
    })
    .await?;
    println!("{report}");
    Ok(())
}
