//! The `Authorization` header of an AK/SK signature: any value parses or is refused, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let _ = ticket_ledger::fuzz::authorization(value);
});
