//! The list's query string: any string is a query or a 400, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let _ = ticket_ledger::fuzz::list_query(raw);
});
