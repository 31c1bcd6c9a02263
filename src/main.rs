//! `ticket-ledger`: see the library's docs for the layout.

/// mimalloc rather than glibc's malloc: ingest allocates and frees many small strings per event
/// on several threads, where glibc spent a fifth of the time and kept freed memory in per-thread
/// arenas (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ticket_ledger::cli::main().await
}
