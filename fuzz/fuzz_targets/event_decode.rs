//! The event decoder's two paths agree: the scanner (with its serde fallback) and serde alone
//! decode the same bytes to the same event, or refuse them for the same reason. Neither panics.
//! The first byte picks the subject's kind (so that most inputs get past the subject check),
//! the rest is the payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ticket_ledger::core::events::Kind;
use ticket_ledger::fuzz::{decode_event, decode_event_serde_only};

fuzz_target!(|bytes: &[u8]| {
    let Some((&pick, payload)) = bytes.split_first() else {
        return;
    };
    let kind = Kind::ALL[pick as usize % Kind::ALL.len()];
    let subject = format!("coc.job.script.proj-a.{}", kind.as_str());
    let fast = decode_event(&subject, payload);
    let serde = decode_event_serde_only(&subject, payload);
    assert_eq!(
        fast,
        serde,
        "the scanner and serde disagree on {:?}",
        String::from_utf8_lossy(payload)
    );
});
