//! Entry points for the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`): every parser that reads
//! bytes from outside, reachable from the fuzz crate without making the modules that hold them
//! public. Each answers only whether the input was accepted; the targets look for panics and
//! for the invariants asserted here.

use crate::core::events::{self, Event};

const PREFIX: &str = "coc.job.script";
const MAX: usize = 64 * 1024;

/// [`events::decode`]: the event, or the code of its rejection.
pub fn decode_event(subject: &str, payload: &[u8]) -> Result<Event, &'static str> {
    events::decode(subject, payload, PREFIX, MAX).map_err(|e| e.code())
}

/// [`events::decode_with_serde_only`], the same way.
pub fn decode_event_serde_only(subject: &str, payload: &[u8]) -> Result<Event, &'static str> {
    events::decode_with_serde_only(subject, payload, PREFIX, MAX).map_err(|e| e.code())
}

/// [`events::decode_binary`]: whether the headers and body are an event.
pub fn decode_binary_event(subject: &str, headers: &[(String, String)], body: &[u8]) -> bool {
    events::decode_binary(subject, headers, body, PREFIX, MAX).is_ok()
}

/// The list's query string parser.
pub fn list_query(raw: &str) -> bool {
    crate::http::orders::parse_query(Some(raw)).is_ok()
}

/// The AK/SK `Authorization` header parser.
pub fn authorization(value: &str) -> bool {
    crate::http::sign::parse_authorization(value).is_ok()
}

/// Record and plan decoding; a ticket that decodes survives its own encoding unchanged. (Not
/// byte for byte: postcard also reads a varint written longer than it need be, which the
/// store never writes.)
pub fn record(bytes: &[u8]) {
    if let Ok((t, _)) = crate::core::record::decode_flagged(bytes) {
        let again = crate::core::record::decode(&crate::core::record::encode(&t));
        assert_eq!(
            again.as_ref(),
            Ok(&t),
            "a ticket changed by its own encoding"
        );
    }
    let _ = crate::core::record::decode_head(bytes);
    let (head, batches) = bytes.split_at(bytes.len() / 2);
    let _ = crate::core::record::decode_plan(head, [batches]);
}

/// The NATS wire parser: an operation never claims more bytes than it was given.
pub fn wire(bytes: &[u8]) {
    if let Ok(Some((_, used))) = crate::nats::wire::parse(bytes) {
        assert!(
            used <= bytes.len(),
            "parsed {used} of {} bytes",
            bytes.len()
        );
    }
}
