//! `SDK-HMAC-SHA256` request signatures, as Huawei Cloud's official SDKs make them.
//!
//! Read from the SDK's own signer (`huaweicloudsdkcore/signer/signer.py`):
//!
//! ```text
//! canonical request = METHOD \n canonical URI \n canonical query \n canonical headers \n
//!                     signed headers \n hex(sha256(body))
//! string to sign    = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(canonical request))
//! signature         = hex(hmac_sha256(secret key, string to sign))
//! ```
//!
//! - canonical URI: the path percent-decoded, split on `/`, each segment encoded with RFC 3986
//!   (only `A-Z a-z 0-9 - _ . ~` kept), joined, always ending in `/`;
//! - canonical query: the decoded pairs sorted, each key and value RFC 3986-encoded, joined by `&`
//!   (rebuilt from the decoded query, never copied from the wire);
//! - canonical headers: `name:value` (lower-cased name, trimmed value) for exactly the headers the
//!   `SignedHeaders` list names, in its order, each followed by `\n` (a header listed twice appears
//!   twice);
//! - the body hash is that of the empty string for an empty body, or the `X-Sdk-Content-Sha256`
//!   header when the client sent one.
//!
//! Pure: the caller gives the request's parts, the secret-key lookup and the clock.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The algorithm name, first word of the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Largest accepted difference between `X-Sdk-Date` and the daemon's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 15 * 60;
const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Why a signed request is refused. Each is a 401 with its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The `Authorization` header is not `SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..`.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// No configured access key has this id.
    #[error("unknown access key")]
    UnknownAccessKey,
    /// `x-sdk-date` is missing, not signed, or not `YYYYMMDDTHHMMSSZ`.
    #[error("X-Sdk-Date must be present, signed, and formatted YYYYMMDDTHHMMSSZ")]
    Date,
    /// `X-Sdk-Date` is more than 15 minutes away from the daemon's clock.
    #[error("X-Sdk-Date is more than 15 minutes away from the server's time")]
    StaleDate,
    /// A header named in `SignedHeaders` is not in the request.
    #[error("signed header {0} is missing from the request")]
    MissingHeader(String),
    /// The signature does not match.
    #[error("the request signature does not match")]
    Mismatch,
    /// `X-Sdk-Content-Sha256` is not the SHA-256 of the body received (a body swapped after
    /// signing), or is the SDK's `UNSIGNED-PAYLOAD` marker on a body that is not empty.
    #[error("X-Sdk-Content-Sha256 is not the SHA-256 of the request body")]
    BodyHash,
}

/// The marker the SDK's signer puts in `X-Sdk-Content-Sha256` for a body it does not hash.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `Access=`.
    pub access_key: String,
    /// `SignedHeaders=`, split on `;`.
    pub signed_headers: Vec<String>,
    /// `Signature=`, hex.
    pub signature: String,
}

/// Whether an `Authorization` value claims this algorithm.
pub fn is_signed(authorization: &str) -> bool {
    authorization.trim_start().starts_with(ALGORITHM)
}

/// Parses `SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, SignError> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or(SignError::Malformed("algorithm"))?;
    let (mut access, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignError::Malformed("expected key=value"))?;
        match k.trim() {
            "Access" => access = Some(v.trim().to_owned()),
            "SignedHeaders" => signed = Some(v.trim().to_owned()),
            "Signature" => sig = Some(v.trim().to_owned()),
            _ => return Err(SignError::Malformed("unknown field")),
        }
    }
    let signed_headers: Vec<String> = signed
        .ok_or(SignError::Malformed("SignedHeaders missing"))?
        .split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(SignError::Malformed("empty signed header name"));
    }
    Ok(Authorization {
        access_key: access
            .filter(|a| !a.is_empty())
            .ok_or(SignError::Malformed("Access missing"))?,
        signed_headers,
        signature: sig
            .filter(|s| !s.is_empty())
            .ok_or(SignError::Malformed("Signature missing"))?,
    })
}

/// RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX` (Python's
/// `quote(s, safe='~')`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI of a raw (percent-encoded) path.
pub fn canonical_uri(raw_path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    let mut uri = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The canonical query of a raw query string.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The parts of a request that a signature covers.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path as received (percent-encoded).
    pub path: &'a str,
    /// The query string as received, without `?`.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The canonical request for the given signed headers.
pub fn canonical_request(req: &RequestParts<'_>, signed: &[String]) -> Result<String, SignError> {
    let mut headers = String::new();
    for name in signed {
        let value =
            header(req.headers, name).ok_or_else(|| SignError::MissingHeader(name.clone()))?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(value.trim());
        headers.push('\n');
    }
    let actual = if req.body.is_empty() {
        EMPTY_HASH.to_owned()
    } else {
        hex::encode(Sha256::digest(req.body))
    };
    // The SDK signs the hash it was told (`X-Sdk-Content-Sha256`) instead of hashing a body
    // itself; that hash must then be the body's, or a captured request could carry another
    // body. An empty body is signed as the empty string's hash, whatever marker came with it.
    let body_hash = match header(req.headers, "x-sdk-content-sha256").map(str::trim) {
        None => actual,
        Some(claimed) if req.body.is_empty() && claimed == UNSIGNED_PAYLOAD => actual,
        Some(claimed) if claimed.eq_ignore_ascii_case(&actual) => claimed.to_owned(),
        Some(_) => return Err(SignError::BodyHash),
    };
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed.join(";"),
        body_hash
    ))
}

/// The hex signature of a canonical request at a date (`YYYYMMDDTHHMMSSZ`) with a secret key.
pub fn sign(canonical_request: &str, sdk_date: &str, secret: &[u8]) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn parse_sdk_date(raw: &str) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(raw, &fmt)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Verifies a signed request. `secret_of` finds an access key's secret. Returns the access key.
///
/// The date is checked before the signature so that a replayed old request is told so, and the
/// signatures are compared in constant time.
pub fn verify<'k>(
    req: &RequestParts<'_>,
    secret_of: impl Fn(&str) -> Option<&'k [u8]>,
    now: OffsetDateTime,
) -> Result<String, SignError> {
    let auth = header(req.headers, "authorization").ok_or(SignError::Malformed("absent"))?;
    let auth = parse_authorization(auth)?;
    let secret = secret_of(&auth.access_key).ok_or(SignError::UnknownAccessKey)?;
    if !auth.signed_headers.iter().any(|h| h == "x-sdk-date") {
        return Err(SignError::Date);
    }
    let date_raw = header(req.headers, "x-sdk-date").ok_or(SignError::Date)?;
    let date = parse_sdk_date(date_raw.trim()).ok_or(SignError::Date)?;
    if (now - date).whole_seconds().abs() > MAX_SKEW_SECS {
        return Err(SignError::StaleDate);
    }
    let canonical = canonical_request(req, &auth.signed_headers)?;
    let expected = sign(&canonical, date_raw.trim(), secret);
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(auth.access_key)
    } else {
        Err(SignError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    //! Vectors recorded once with the SDK's own signer (huaweicloudsdkcore 3.1.219,
    //! `Signer(ak="AK_TEST", sk="SK_SECRET_TEST").sign(SdkRequest(...))`).
    use super::*;
    use axum::http::HeaderValue;

    const SK: &[u8] = b"SK_SECRET_TEST";
    const DATE: &str = "20261126T101500Z";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn now() -> OffsetDateTime {
        parse_sdk_date(DATE).unwrap() + time::Duration::minutes(3)
    }

    fn check(path: &str, query: Option<&str>, h: &HeaderMap) -> Result<String, SignError> {
        let req = RequestParts {
            method: "GET",
            path,
            query,
            headers: h,
            body: b"",
        };
        verify(&req, |ak| (ak == "AK_TEST").then_some(SK), now())
    }

    #[test]
    fn sdk_vector_with_spaces_and_reserved_characters_in_the_query() {
        let h = headers(&[
            ("x-sdk-date", DATE),
            ("x-project-id", "demo"),
            ("content-type", "application/json"),
            ("host", "127.0.0.1:8080"),
            (
                "authorization",
                "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=b0babd0515cd630177ce92476ce1df5b32366d4797801924b862a5ed1782660c",
            ),
        ]);
        // The wire query the SDK sends for limit=10, name_like="patch night", creator="a+b/c".
        let q = "creator=a%2Bb%2Fc&limit=10&name_like=patch%20night";
        assert_eq!(
            check("/v1/job/script/orders", Some(q), &h),
            Ok("AK_TEST".into())
        );
        // The same pairs in another order and encoding: the canonical query is rebuilt.
        let q2 = "name_like=patch+night&limit=10&creator=a%2bb%2fc";
        assert_eq!(
            check("/v1/job/script/orders", Some(q2), &h),
            Ok("AK_TEST".into())
        );
        // Tampered query.
        let q3 = "creator=a%2Bb%2Fc&limit=100&name_like=patch%20night";
        assert_eq!(
            check("/v1/job/script/orders", Some(q3), &h),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn sdk_vector_without_query() {
        let h = headers(&[
            ("x-sdk-date", DATE),
            ("x-project-id", "demo"),
            ("host", "127.0.0.1:8080"),
            (
                "authorization",
                "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=host;x-project-id;x-sdk-date, Signature=125147a5aaac17967cf0f4da6ae052d43e080479fcb250e732dd7fb9648e13ed",
            ),
        ]);
        assert_eq!(
            check("/v1/job/script/orders", None, &h),
            Ok("AK_TEST".into())
        );
        let mut other_project = h.clone();
        other_project.insert("x-project-id", HeaderValue::from_static("other"));
        assert_eq!(
            check("/v1/job/script/orders", None, &other_project),
            Err(SignError::Mismatch),
            "x-project-id is signed"
        );
    }

    #[test]
    fn sdk_vector_with_an_encoded_path_segment() {
        let h = headers(&[
            ("x-sdk-date", DATE),
            ("x-project-id", "demo"),
            ("x-language", "zh-cn"),
            ("host", "127.0.0.1:8080"),
            (
                "authorization",
                "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=host;x-language;x-project-id;x-sdk-date, Signature=291b57b5b1ee7d9bd8811b8751be183e56788b32f6bd7c4cd7097ac7e3e9a23e",
            ),
        ]);
        assert_eq!(
            check(
                "/v1/job/script/orders/SCT%201~x",
                Some("marker=70&status=FINISHED"),
                &h
            ),
            Ok("AK_TEST".into())
        );
    }

    #[test]
    fn sdk_vector_with_a_header_signed_twice() {
        // Computed with the SDK's _process_canonical_request for
        // SignedHeaders = host;x-project-id;x-project-id;x-sdk-date.
        let h = headers(&[
            ("x-sdk-date", DATE),
            ("x-project-id", "demo"),
            ("host", "127.0.0.1:8080"),
            (
                "authorization",
                "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=host;x-project-id;x-project-id;x-sdk-date, Signature=89661e8f5ae2fe4c64231b934396271dd36ee3f4b1d52d071bf6eef4f5f105f6",
            ),
        ]);
        assert_eq!(
            check("/v1/job/script/orders", Some("name_like=a%20b"), &h),
            Ok("AK_TEST".into())
        );
    }

    /// `X-Sdk-Content-Sha256` is signed in the body's place, so it must be the body's hash; the
    /// SDK's unsigned marker passes only on an empty body.
    #[test]
    fn the_claimed_body_hash_must_be_the_bodys() {
        let body = br#"{"seqs":[3]}"#;
        let hash = hex::encode(Sha256::digest(body));
        let canonical = |claimed: Option<&str>, body: &[u8]| {
            let mut pairs = vec![("host", "h")];
            if let Some(c) = claimed {
                pairs.push(("x-sdk-content-sha256", c));
            }
            let h = headers(&pairs);
            let req = RequestParts {
                method: "POST",
                path: "/v1/ledger/redrive",
                query: None,
                headers: &h,
                body,
            };
            canonical_request(&req, &["host".to_string()])
        };
        let plain = canonical(None, body).unwrap();
        assert!(plain.ends_with(&hash));
        assert_eq!(canonical(Some(&hash), body).unwrap(), plain);
        assert!(canonical(Some(&hash.to_uppercase()), body).is_ok());
        let swapped = br#"{"seqs":[4]}"#;
        assert_eq!(canonical(Some(&hash), swapped), Err(SignError::BodyHash));
        assert_eq!(
            canonical(Some(UNSIGNED_PAYLOAD), body),
            Err(SignError::BodyHash)
        );
        assert!(
            canonical(Some(UNSIGNED_PAYLOAD), b"")
                .unwrap()
                .ends_with(EMPTY_HASH)
        );
        assert_eq!(canonical(Some("0f00"), b""), Err(SignError::BodyHash));
    }

    #[test]
    fn refusals() {
        let base = [
            ("x-sdk-date", DATE),
            ("x-project-id", "demo"),
            ("host", "127.0.0.1:8080"),
        ];
        let with_auth = |auth: &str, extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            pairs.push(("authorization", auth));
            headers(&pairs)
        };
        let good = "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=host;x-project-id;x-sdk-date, Signature=125147a5aaac17967cf0f4da6ae052d43e080479fcb250e732dd7fb9648e13ed";
        let p = "/v1/job/script/orders";
        assert_eq!(
            check(
                p,
                None,
                &with_auth(&good.replace("AK_TEST", "AK_OTHER"), &[])
            ),
            Err(SignError::UnknownAccessKey)
        );
        assert_eq!(
            check(p, None, &with_auth(&good.replace(";x-sdk-date", ""), &[])),
            Err(SignError::Date),
            "x-sdk-date must be signed"
        );
        assert_eq!(
            check(
                p,
                None,
                &with_auth(&good.replace("Signature=1", "Signature=2"), &[])
            ),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            check(p, None, &with_auth("SDK-HMAC-SHA256 Access=AK_TEST", &[])),
            Err(SignError::Malformed("SignedHeaders missing"))
        );
        let h = with_auth(good, &[]);
        let req = RequestParts {
            method: "GET",
            path: p,
            query: None,
            headers: &h,
            body: b"",
        };
        let late = parse_sdk_date(DATE).unwrap() + time::Duration::minutes(16);
        assert_eq!(verify(&req, |_| Some(SK), late), Err(SignError::StaleDate));
        let early = parse_sdk_date(DATE).unwrap() - time::Duration::minutes(16);
        assert_eq!(verify(&req, |_| Some(SK), early), Err(SignError::StaleDate));
        let mut no_host = h.clone();
        no_host.remove("host");
        assert_eq!(
            check(p, None, &no_host),
            Err(SignError::MissingHeader("host".into()))
        );
    }

    #[test]
    fn encoding_matches_python_quote_with_tilde_safe() {
        assert_eq!(encode("a b/c+d~e_f.g-h*"), "a%20b%2Fc%2Bd~e_f.g-h%2A");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(
            canonical_uri("/v1/job/script/orders"),
            "/v1/job/script/orders/"
        );
        assert_eq!(canonical_uri("/a%20b/"), "/a%20b/");
    }
}
