//! The NATS wire protocol parser of the own reader: any bytes are an operation, "not complete
//! yet", or a protocol error, never a panic or a length past the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    ticket_ledger::fuzz::wire(bytes);
});
