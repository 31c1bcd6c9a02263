//! Domain types that parse instead of validate.
//!
//! Every value that crosses an edge of the daemon (an HTTP query parameter, a header, a field of an
//! event) is turned into one of these types by its `parse` function. A value of the type is valid
//! by construction, so the code behind the edge never checks again.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a raw value could not become a domain value. The API layer maps each variant to a Huawei
/// error code and a message in the caller's language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// `limit` is not an integer in 1..=100.
    #[error("limit must be an integer from {min} to {max}")]
    Limit { min: u32, max: u32 },
    /// `marker` is not a non-negative integer.
    #[error(
        "marker must be a non-negative integer (the order_id of the last ticket of the previous page)"
    )]
    Marker,
    /// `status` is not one of the six statuses.
    #[error("status must be one of READY, PROCESSING, ABNORMAL, PAUSED, CANCELED, FINISHED")]
    Status,
    /// A time bound is not a non-negative integer of milliseconds.
    #[error("{0} must be a non-negative integer of milliseconds since the epoch")]
    Time(&'static str),
    /// `start_time` is after `end_time`.
    #[error("start_time must not be after end_time")]
    TimeOrder,
    /// A free-text filter is empty or longer than allowed.
    #[error("{field} must be 1 to {max} characters long")]
    Text { field: &'static str, max: usize },
    /// A count or sequence parameter is not a non-negative integer.
    #[error("{0} must be a non-negative integer")]
    Number(&'static str),
    /// A project id is empty, too long or has characters a NATS subject token cannot carry.
    #[error("project id must be 1 to 64 characters of letters, digits, '-' or '_'")]
    ProjectId,
}

/// The short text an event and a ticket carry (ids, names, creators, regions, job types, sources).
///
/// Held inline when it is 24 bytes or less, as most such values are: a ticket then costs one
/// allocation for its history instead of one for every field and every entry, which is what
/// decoding, folding and dropping a million tickets spent much of their time on (see the
/// profile in BENCHMARKS.md). It reads as a `&str` everywhere.
pub type Text = compact_str::CompactString;

/// A project (tenant) id: 1–64 ASCII letters, digits, `-` or `_`.
///
/// Huawei project ids are 32 hex characters; the rule is looser so that local setups can use
/// readable names, and strict enough that the id is always one safe NATS subject token.
///
/// The ids a thread has parsed are kept (up to [`ProjectId::KEPT`] of them) and handed out
/// again, so that every ticket key of a project shares one allocation: decoding an event then
/// allocates no id, and comparing two keys of the same project (the fold's maps, the writer's
/// sort) compares pointers, not text.
#[derive(Debug, Clone, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectId(Arc<str>);

/// By the text, with the shared allocation as a shortcut (as equality).
impl Ord for ProjectId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for ProjectId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ProjectId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// By the text, as equality is (equal ids hash alike whether they share an allocation or not).
impl std::hash::Hash for ProjectId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl ProjectId {
    /// Most ids a thread keeps for reuse: far above the tenants one daemon serves, and a bound
    /// on what ids from requests can make it hold.
    pub const KEPT: usize = 4096;

    /// Parses a project id.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        thread_local! {
            static KEPT: std::cell::RefCell<rustc_hash::FxHashSet<Arc<str>>> =
                Default::default();
        }
        if let Some(id) = KEPT.with(|k| k.borrow().get(raw).cloned()) {
            return Ok(Self(id));
        }
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(DomainError::ProjectId);
        }
        let id: Arc<str> = Arc::from(raw);
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() < Self::KEPT {
                k.insert(id.clone());
            }
        });
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProjectId> for String {
    fn from(value: ProjectId) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The status of a ticket, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Created, not yet started.
    Ready,
    /// Running.
    Processing,
    /// Failed in a way that can still be resumed or cancelled: not over.
    Abnormal,
    /// Paused by an operator.
    Paused,
    /// Cancelled: over, with an end time.
    Canceled,
    /// Finished: over, with an end time.
    Finished,
}

impl Status {
    /// Every status, in the order the spec lists them.
    pub const ALL: [Status; 6] = [
        Status::Ready,
        Status::Processing,
        Status::Abnormal,
        Status::Paused,
        Status::Canceled,
        Status::Finished,
    ];

    /// Parses the API spelling (upper case, exact).
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or(DomainError::Status)
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::Processing => "PROCESSING",
            Status::Abnormal => "ABNORMAL",
            Status::Paused => "PAUSED",
            Status::Canceled => "CANCELED",
            Status::Finished => "FINISHED",
        }
    }

    /// A terminal status admits no further transition.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Canceled | Status::Finished)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The page size: 1 to 100, 10 when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    /// Smallest page.
    pub const MIN: u32 = 1;
    /// Largest page.
    pub const MAX: u32 = 100;
    /// The page size when `limit` is absent.
    pub const DEFAULT: PageLimit = PageLimit(10);

    /// Parses the query parameter.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let err = DomainError::Limit {
            min: Self::MIN,
            max: Self::MAX,
        };
        let n: u32 = raw.parse().map_err(|_| err.clone())?;
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(err)
        }
    }

    /// The size as a count.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// The keyset marker: the `order_id` of the last ticket of the previous page. The next page holds
/// the tickets with `order_id < marker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker(u64);

impl Marker {
    /// Parses the query parameter: a non-negative integer.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        raw.parse::<u64>()
            .map(Self)
            .map_err(|_| DomainError::Marker)
    }

    /// The order id the page starts below.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Inclusive bounds on `gmt_created`, in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Lowest `gmt_created` included.
    pub start: i64,
    /// Highest `gmt_created` included.
    pub end: i64,
}

impl TimeRange {
    /// Parses the optional `start_time` and `end_time` parameters together, so that a range whose
    /// start is after its end cannot exist.
    pub fn parse(start: Option<&str>, end: Option<&str>) -> Result<Option<Self>, DomainError> {
        fn bound(raw: Option<&str>, name: &'static str) -> Result<Option<i64>, DomainError> {
            raw.map(|r| {
                r.parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .ok_or(DomainError::Time(name))
            })
            .transpose()
        }
        let start = bound(start, "start_time")?;
        let end = bound(end, "end_time")?;
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        let range = TimeRange {
            start: start.unwrap_or(0),
            end: end.unwrap_or(i64::MAX),
        };
        if range.start > range.end {
            return Err(DomainError::TimeOrder);
        }
        Ok(Some(range))
    }

    /// Whether a creation time lies in the range.
    pub fn contains(&self, ms: i64) -> bool {
        self.start <= ms && ms <= self.end
    }
}

/// A bounded, non-empty free-text filter (`creator`, `name_like`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterText(String);

impl FilterText {
    /// Longest filter text, in characters: longer than any name COC accepts, short enough that a
    /// substring search stays cheap.
    pub const MAX_CHARS: usize = 128;

    /// Parses a filter value for the named parameter.
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, DomainError> {
        let n = raw.chars().count();
        if n == 0 || n > Self::MAX_CHARS {
            return Err(DomainError::Text {
                field,
                max: Self::MAX_CHARS,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_accepts_1_to_100_only() {
        assert_eq!(PageLimit::parse("1").unwrap().get(), 1);
        assert_eq!(PageLimit::parse("100").unwrap().get(), 100);
        for bad in ["0", "101", "-1", "ten", "", "1.5", " 5"] {
            assert!(PageLimit::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn marker_rejects_negative_and_text() {
        assert_eq!(Marker::parse("74").unwrap().get(), 74);
        assert_eq!(Marker::parse("0").unwrap().get(), 0);
        assert_eq!(Marker::parse("-1"), Err(DomainError::Marker));
        assert_eq!(Marker::parse("x"), Err(DomainError::Marker));
    }

    #[test]
    fn status_parses_exact_api_spelling() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Ok(s));
        }
        assert_eq!(Status::parse("processing"), Err(DomainError::Status));
        assert_eq!(Status::parse("CANCELLED"), Err(DomainError::Status));
    }

    #[test]
    fn time_range_orders_and_defaults() {
        assert_eq!(TimeRange::parse(None, None), Ok(None));
        let r = TimeRange::parse(Some("5"), None).unwrap().unwrap();
        assert!(r.contains(5) && r.contains(i64::MAX) && !r.contains(4));
        let r = TimeRange::parse(None, Some("5")).unwrap().unwrap();
        assert!(r.contains(0) && r.contains(5) && !r.contains(6));
        assert_eq!(
            TimeRange::parse(Some("6"), Some("5")),
            Err(DomainError::TimeOrder)
        );
        assert_eq!(
            TimeRange::parse(Some("-1"), None),
            Err(DomainError::Time("start_time"))
        );
        assert_eq!(
            TimeRange::parse(None, Some("soon")),
            Err(DomainError::Time("end_time"))
        );
    }

    #[test]
    fn filter_text_is_bounded() {
        assert!(FilterText::parse("a", "creator").is_ok());
        assert!(FilterText::parse("", "creator").is_err());
        assert!(FilterText::parse(&"é".repeat(128), "name_like").is_ok());
        assert!(FilterText::parse(&"é".repeat(129), "name_like").is_err());
    }

    #[test]
    fn project_ids_are_shared_and_still_equal_by_text() {
        let a = ProjectId::parse("shared-1").unwrap();
        let b = ProjectId::parse("shared-1").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        // A thread that has kept its fill still parses, and its ids compare by text.
        std::thread::spawn(|| {
            for i in 0..ProjectId::KEPT + 10 {
                ProjectId::parse(&format!("p{i}")).unwrap();
            }
            let late = || ProjectId::parse(&format!("p{}", ProjectId::KEPT + 5)).unwrap();
            let (x, y) = (late(), late());
            assert!(!Arc::ptr_eq(&x.0, &y.0));
            assert_eq!(x, y);
            assert_ne!(x, ProjectId::parse("p1").unwrap());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn project_id_is_one_subject_token() {
        assert!(ProjectId::parse("0605767ad0fa4e0aa1d1e1d9bd26f8f1").is_ok());
        assert!(ProjectId::parse("demo-project_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", ">", &"a".repeat(65)] {
            assert!(ProjectId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
