//! Stored records and plan parts: any bytes decode or are refused, never a panic; a record that
//! decodes encodes back to the same bytes (one encoding per ticket).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    ticket_ledger::fuzz::record(bytes);
});
