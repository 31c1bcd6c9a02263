//! `ticket-ledger`: see the library's docs for the layout.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ticket_ledger::cli::main().await
}
