//! The ticket-ledger benchmark, a workspace member of its own so that the daemon ships without
//! it: it drives the daemon's release binary as a child process and measures it against limits
//! taken in the same run (the raw read rate of the same stream, a PostgreSQL baseline).
//!
//! 1. Starts its own `nats-server` (JetStream, temp dir, free port) and publishes a realistic
//!    history: N tickets over 10 projects, 200 creators, names from a few thousand words, 2–5
//!    events each, interleaved as an executor running many tickets at once would emit them.
//! 2. Measures the raw read rate of that stream with an ordered consumer and no processing: the
//!    limit.
//! 3. Starts the daemon binary (`serve`, a child process, its own store) and times its ingest
//!    from an empty store, then a blue/green rebuild (`replay`), each as events/s and as a ratio
//!    of the limit.
//! 4. Times list queries through HTTP (p50, p99, max over sequential requests; throughput at 8
//!    concurrent connections), each with its total.
//! 5. Reads the daemon's peak RSS and the store's bytes on disk per ticket.
//! 6. When PostgreSQL answers, loads the same tickets there and asks the same queries (page and
//!    `count(*)`), for the ledger/PostgreSQL ratios.
//! 7. Writes the table to a Markdown file.

pub mod history;
pub mod postgres;
pub mod procs;
pub mod reads;
pub mod report;
mod run;
pub mod setup;
pub mod soak;
pub mod stats;

pub use run::{BenchOptions, run};

/// The daemon binary: `given`, or `ticket-ledger` beside the running one (where
/// `cargo build --release --workspace` leaves both).
pub fn daemon_binary(given: Option<std::path::PathBuf>) -> std::io::Result<std::path::PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?.with_file_name("ticket-ledger")),
    }
}

/// The token the benchmark's daemon is configured with.
pub const BENCH_TOKEN: &str = "bench-token";
