//! Binary-mode CloudEvents (`ce-` headers and a JSON body): any headers and body are decoded or
//! refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<(String, String)>, &[u8])| {
    let (headers, body) = input;
    let _ =
        ticket_ledger::fuzz::decode_binary_event("coc.job.script.proj-a.created", &headers, body);
});
