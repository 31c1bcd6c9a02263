//! CloudEvents binary mode, as the CloudEvents NATS protocol binding defines it: the attributes
//! are `ce-<name>` headers (values percent-encoded where they need it), `content-type` says what
//! the data is, and the data is the message body. It decodes to the same [`Event`] as the
//! structured event with the same attributes, so both fold to the same records.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::{DecodeError, Event, RawData, SPEC_VERSION, TYPE_PREFIX, format_time_ms, scan};

/// What a header value escapes when written: controls, `%` itself and everything not ASCII.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b'%');

/// The attributes every event carries, in the order they are looked for.
const REQUIRED: [&str; 5] = ["specversion", "id", "source", "type", "time"];

/// Whether a message with these headers is in binary mode: it has a `ce-` header.
pub fn is_binary(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, _)| name.starts_with("ce-"))
}

/// Decodes a binary-mode event from its headers (names lower-cased, values as received) and
/// its body. An attribute given twice, or a body that is itself a structured CloudEvent (both
/// modes at once), is refused with its own reason; the other checks are those of structured
/// mode, in the same order.
pub(super) fn decode(
    subject: &str,
    headers: &[(String, String)],
    payload: &[u8],
    subject_prefix: &str,
) -> Result<Event, DecodeError> {
    let mut seen: Vec<&str> = Vec::with_capacity(headers.len());
    let mut attrs: [Option<Cow<'_, str>>; 5] = Default::default();
    let mut content_type = None;
    for (name, value) in headers {
        let is_attribute = name.starts_with("ce-") || name == "content-type";
        if !is_attribute {
            continue;
        }
        if seen.contains(&name.as_str()) {
            return Err(DecodeError::DuplicateAttribute(name.clone()));
        }
        seen.push(name);
        let value = percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| DecodeError::Envelope(format!("header {name} is not UTF-8")))?;
        match name.strip_prefix("ce-") {
            Some(a) => {
                if let Some(i) = REQUIRED.iter().position(|r| *r == a) {
                    attrs[i] = Some(value);
                }
                // Other `ce-` headers are extensions: accepted, not kept, as in structured mode.
            }
            None => content_type = Some(value),
        }
    }
    if let Some(ct) = &content_type {
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/cloudevents+json") {
            return Err(DecodeError::BothModes(
                "content-type says structured mode, and ce- headers say binary mode".into(),
            ));
        }
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(DecodeError::Data(format!(
                "content-type {media:?}: the data must be application/json"
            )));
        }
    }
    let [specversion, id, source, ty, time] = attrs;
    let missing = |i: usize| DecodeError::Envelope(format!("missing header ce-{}", REQUIRED[i]));
    let specversion = specversion.ok_or_else(|| missing(0))?;
    let id = id.ok_or_else(|| missing(1))?;
    let source = source.ok_or_else(|| missing(2))?;
    let ty = ty.ok_or_else(|| missing(3))?;
    let time = time.ok_or_else(|| missing(4))?;
    let tree: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    if tree.get("specversion").is_some() {
        return Err(DecodeError::BothModes(
            "ce- headers say binary mode, and the body is a structured CloudEvent".into(),
        ));
    }
    let data = if tree.is_object() {
        RawData::deserialize(&tree).map_err(|e| DecodeError::Data(e.to_string()))
    } else {
        Err(DecodeError::Data("data must be a JSON object".into()))
    };
    let attrs = scan::Attrs {
        specversion: &specversion,
        id: &id,
        source: &source,
        ty: &ty,
        time: &time,
    };
    let fields = data.as_ref().map(RawData::fields).map_err(Clone::clone);
    super::validate(subject, subject_prefix, (attrs, fields))
}

impl Event {
    /// The binary-mode message of this event: its `ce-` headers (and `content-type`), and the
    /// data as the body. The inverse of binary-mode decoding.
    pub fn to_binary(&self) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let enc = |s: &str| utf8_percent_encode(s, HEADER_VALUE).to_string();
        let headers = vec![
            ("ce-specversion", SPEC_VERSION.to_owned()),
            ("ce-id", enc(&self.id)),
            ("ce-source", enc(&self.source)),
            ("ce-type", format!("{TYPE_PREFIX}{}", self.kind.as_str())),
            ("ce-time", format_time_ms(self.time_ms)),
            ("content-type", "application/json".to_owned()),
        ];
        let body = serde_json::to_vec(&self.to_json()["data"]).expect("JSON always serialises");
        (headers, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::Kind;

    const PREFIX: &str = "coc.job.script";

    /// The events tests' `created`, with an id that needs percent-encoding in a header.
    fn created() -> Event {
        let mut e = super::super::tests::created();
        e.id = "e 1/ü%".into();
        e
    }

    fn owned(h: Vec<(&str, String)>) -> Vec<(String, String)> {
        h.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn binary_and_structured_mode_decode_to_the_same_event() {
        for mut e in [created(), created()] {
            let subject = e.subject(PREFIX);
            let (headers, body) = e.to_binary();
            assert!(
                headers
                    .iter()
                    .any(|(k, v)| *k == "ce-id" && v.contains('%'))
            );
            let binary = decode(&subject, &owned(headers), &body, PREFIX).unwrap();
            let structured = super::super::decode(&subject, &e.to_bytes(), PREFIX, 1 << 16);
            assert_eq!(binary, structured.unwrap());
            assert_eq!(binary, e);
            e.kind = Kind::Started;
            e.created = None;
        }
    }

    #[test]
    fn refusals_name_their_reason() {
        let e = created();
        let subject = e.subject(PREFIX);
        let (headers, body) = e.to_binary();
        let headers = owned(headers);
        let code = |h: &[(String, String)], body: &[u8]| {
            decode(&subject, h, body, PREFIX).unwrap_err().code()
        };
        let mut twice = headers.clone();
        twice.push(("ce-id".into(), "other".into()));
        assert_eq!(code(&twice, &body), "duplicate_attribute");
        assert_eq!(
            code(&headers, &e.to_bytes()),
            "both_modes",
            "a structured body"
        );
        let mut ce_json = headers.clone();
        ce_json.retain(|(k, _)| k != "content-type");
        ce_json.push(("content-type".into(), "application/cloudevents+json".into()));
        assert_eq!(code(&ce_json, &body), "both_modes");
        let mut text = headers.clone();
        text.retain(|(k, _)| k != "content-type");
        text.push(("content-type".into(), "text/plain".into()));
        assert_eq!(code(&text, &body), "invalid_data");
        let no_time: Vec<_> = headers
            .iter()
            .filter(|(k, _)| k != "ce-time")
            .cloned()
            .collect();
        assert_eq!(code(&no_time, &body), "invalid_envelope");
        assert_eq!(code(&headers, b"[1]"), "invalid_data");
        assert_eq!(code(&headers, b"{nope"), "malformed_json");
        let mut bad_time = headers.clone();
        bad_time.retain(|(k, _)| k != "ce-time");
        bad_time.push(("ce-time".into(), "yesterday".into()));
        assert_eq!(code(&bad_time, &body), "invalid_time");
        // An extension is accepted and changes nothing.
        let mut ext = headers.clone();
        ext.push(("ce-traceparent".into(), "00-abc".into()));
        assert_eq!(decode(&subject, &ext, &body, PREFIX).unwrap(), e);
    }
}
