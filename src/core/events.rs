//! Event contract v1: CloudEvents 1.0, structured JSON mode (see `docs/events.md`).
//!
//! Decoding is pure: bytes and a subject in, an [`Event`] or a [`DecodeError`] out. Nothing here
//! touches NATS or sled, so every rejection is unit-tested without I/O. Encoding (for
//! `ticket-ledger emit` and the tests) lives here too, so the two directions cannot drift apart.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::core::domain::{ProjectId, Text};
use crate::core::job::{Operation, Plan};

mod binary;
mod scan;
mod v11;

pub use binary::is_binary;

/// The CloudEvents spec version the contract speaks.
pub const SPEC_VERSION: &str = "1.0";
/// Prefix of every event `type`: `coc.job.script.<kind>`.
pub const TYPE_PREFIX: &str = "coc.job.script.";
/// `job_type` of a `created` event that does not name one.
pub const DEFAULT_JOB_TYPE: &str = "SCRIPT";
/// Longest accepted CloudEvents `id` and `source`, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted text field of `data` (`execute_uuid`, `order_name`, `creator`,
/// `region_ids`, `job_type`), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// What happened to a ticket. The kind is the last token of both the subject and the `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The ticket exists: READY.
    Created,
    /// The executor began running it.
    Started,
    /// An operator paused it.
    Paused,
    /// It runs again after a pause or an abnormal stop.
    Resumed,
    /// It failed but is not over.
    Abnormal,
    /// It completed.
    Finished,
    /// It was cancelled.
    Cancelled,
    /// v1.1: a batch began (`current_execute_batch_index`).
    BatchStarted,
    /// v1.1: an instance began running.
    InstanceStarted,
    /// v1.1: an instance completed.
    InstanceFinished,
    /// v1.1: an instance failed.
    InstanceAbnormal,
    /// v1.1: an instance was cancelled.
    InstanceCancelled,
    /// v1.1: an operator asked the executor for an operation (published by the ledger).
    OperationRequested,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 13] = [
        Kind::Created,
        Kind::Started,
        Kind::Paused,
        Kind::Resumed,
        Kind::Abnormal,
        Kind::Finished,
        Kind::Cancelled,
        Kind::BatchStarted,
        Kind::InstanceStarted,
        Kind::InstanceFinished,
        Kind::InstanceAbnormal,
        Kind::InstanceCancelled,
        Kind::OperationRequested,
    ];

    /// The kind's token in subjects and types.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Started => "started",
            Kind::Paused => "paused",
            Kind::Resumed => "resumed",
            Kind::Abnormal => "abnormal",
            Kind::Finished => "finished",
            Kind::Cancelled => "cancelled",
            Kind::BatchStarted => "batch_started",
            Kind::InstanceStarted => "instance_started",
            Kind::InstanceFinished => "instance_finished",
            Kind::InstanceAbnormal => "instance_abnormal",
            Kind::InstanceCancelled => "instance_cancelled",
            Kind::OperationRequested => "operation_requested",
        }
    }

    /// Parses a subject or type token.
    pub fn parse(raw: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Whether the kind is about one instance of a ticket.
    pub fn is_instance(self) -> bool {
        matches!(
            self,
            Kind::InstanceStarted
                | Kind::InstanceFinished
                | Kind::InstanceAbnormal
                | Kind::InstanceCancelled
        )
    }
}

/// The ticket facts only a `created` event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedData {
    /// Opaque id of the ticket's details page.
    pub execute_uuid: Text,
    /// Ticket name.
    pub order_name: Text,
    /// Who created it.
    pub creator: Text,
    /// The regions it runs in, as COC's `properties.region_ids` string.
    pub region_ids: Text,
    /// Job type (condition key `coc:JobType`); `SCRIPT` unless the event says otherwise.
    pub job_type: Text,
    /// v1.1: the script, its parameters and its batches of hosts, when the event carries any.
    pub plan: Option<Box<Plan>>,
}

/// What an event says beyond the ticket it names (contract v1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Detail {
    /// Nothing: v1 kinds.
    #[default]
    None,
    /// `batch_started`.
    Batch {
        /// The batch that began.
        batch_index: u32,
    },
    /// `instance_*`.
    Instance(InstanceEvent),
    /// `operation_requested`.
    Operation(Box<OperationRequest>),
}

/// What an instance event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEvent {
    /// The instance's batch.
    pub batch_index: u32,
    /// The instance.
    pub instance_id: u64,
    /// Its output or error, cut to [`crate::core::job::MAX_MESSAGE_BYTES`].
    pub message: Option<String>,
}

/// What `operation_requested` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRequest {
    /// The ticket's `execute_uuid`.
    pub execute_uuid: String,
    /// What was asked.
    pub operation: Operation,
    /// The principal who asked.
    pub requested_by: String,
}

impl OperationRequest {
    /// One line for the ticket's history.
    pub fn note(&self) -> String {
        let mut s = self.operation.operation_type.as_str().to_owned();
        if let Some(b) = self.operation.batch_index {
            s.push_str(&format!(" batch {b}"));
        }
        if let Some(i) = self.operation.instance_id {
            s.push_str(&format!(" instance {i}"));
        }
        format!("{s}, requested by {}", self.requested_by)
    }
}

/// A valid event: what [`decode`] returns and what `emit` encodes. Whether it may be applied is
/// the fold's business, not the decoder's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// CloudEvents `id`: unique per event, the key for duplicate detection; publishers also send
    /// it as `Nats-Msg-Id` so JetStream drops their retries.
    pub id: Text,
    /// CloudEvents `source`: which executor emitted it.
    pub source: Text,
    /// What happened.
    pub kind: Kind,
    /// CloudEvents `time`, in ms since the epoch (sub-millisecond digits are dropped).
    pub time_ms: i64,
    /// The tenant the ticket belongs to.
    pub project: ProjectId,
    /// The ticket's key within its project.
    pub order_id: u64,
    /// Present exactly when `kind` is [`Kind::Created`].
    pub created: Option<CreatedData>,
    /// What v1.1 kinds add; [`Detail::None`] for v1 kinds.
    pub detail: Detail,
}

/// Why bytes on the stream are not a valid event. Each variant has a stable [`code`](Self::code)
/// that dead letters and logs carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than `ingest.max_event_bytes`.
    #[error("event is {size} bytes, larger than the {max}-byte limit")]
    Oversized { size: usize, max: usize },
    /// Not JSON, or JSON that is not an object.
    #[error("payload is not a JSON object: {0}")]
    MalformedJson(String),
    /// A CloudEvents attribute is missing or has the wrong type.
    #[error("invalid CloudEvents envelope: {0}")]
    Envelope(String),
    /// `specversion` other than 1.0.
    #[error("unsupported specversion {0:?}, expected \"1.0\"")]
    SpecVersion(String),
    /// `type` is not `coc.job.script.<kind>` with a known kind.
    #[error("unknown event type {0:?}")]
    UnknownKind(String),
    /// `time` is not RFC 3339.
    #[error("time {0:?} is not an RFC 3339 timestamp")]
    Time(String),
    /// A `data` field is missing, has the wrong type or is out of range.
    #[error("invalid data: {0}")]
    Data(String),
    /// The subject does not say the project and kind that the event does.
    #[error("subject {subject:?} does not match the event (expected {expected:?})")]
    SubjectMismatch { subject: String, expected: String },
    /// A binary-mode header names an attribute that another header named already.
    #[error("the attribute header {0} is given twice")]
    DuplicateAttribute(String),
    /// Binary and structured mode at once.
    #[error("both CloudEvents modes at once: {0}")]
    BothModes(String),
    /// The subject names a project this instance does not hold (`ingest.projects`): passed
    /// over, never dead-lettered.
    #[error("the subject names a project this instance does not hold")]
    NotHeld,
}

impl DecodeError {
    /// Stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::Envelope(_) => "invalid_envelope",
            DecodeError::SpecVersion(_) => "unsupported_specversion",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Time(_) => "invalid_time",
            DecodeError::Data(_) => "invalid_data",
            DecodeError::SubjectMismatch { .. } => "subject_mismatch",
            DecodeError::DuplicateAttribute(_) => "duplicate_attribute",
            DecodeError::BothModes(_) => "both_modes",
            DecodeError::NotHeld => "not_held",
        }
    }
}

/// The CloudEvents envelope, its strings borrowed from what it is read from unless they hold
/// escapes. Read with `data` typed (`Envelope<RawData>`) in one pass over the bytes; with `data`
/// left as a tree (`Envelope<Value>`) only when that fails, to name the precise reason.
#[derive(Deserialize)]
struct Envelope<'a, D> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    data: D,
}

impl<D> Envelope<'_, D> {
    /// The attributes, as the checks take them whichever path read them.
    fn attrs(&self) -> scan::Attrs<'_> {
        scan::Attrs {
            specversion: &self.specversion,
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            time: &self.time,
        }
    }
}

/// `data`, its strings borrowed like the envelope's.
#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    project_id: Cow<'a, str>,
    order_id: u64,
    #[serde(borrow)]
    execute_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    order_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    creator: Option<Cow<'a, str>>,
    #[serde(borrow)]
    region_ids: Option<Cow<'a, str>>,
    #[serde(borrow)]
    job_type: Option<Cow<'a, str>>,
    batch_index: Option<u64>,
    instance_id: Option<u64>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    script_uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    script_name: Option<Cow<'a, str>>,
    script_version_uuid: Option<i64>,
    #[serde(borrow)]
    script_version_name: Option<Cow<'a, str>>,
    execute_param: Option<v11::ExecuteParamIn>,
    execute_batches: Option<Vec<v11::BatchIn>>,
    #[serde(borrow)]
    operation_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    requested_by: Option<Cow<'a, str>>,
}

impl RawData<'_> {
    /// The fields, as the checks take them.
    fn fields(&self) -> scan::Data<'_> {
        scan::Data {
            project_id: &self.project_id,
            order_id: self.order_id,
            execute_uuid: self.execute_uuid.as_deref(),
            order_name: self.order_name.as_deref(),
            creator: self.creator.as_deref(),
            region_ids: self.region_ids.as_deref(),
            job_type: self.job_type.as_deref(),
            batch_index: self.batch_index,
            instance_id: self.instance_id,
            message: self.message.as_deref(),
            extra: v11::Extra {
                script_uuid: self.script_uuid.as_deref(),
                script_name: self.script_name.as_deref(),
                script_version_uuid: self.script_version_uuid,
                script_version_name: self.script_version_name.as_deref(),
                execute_param: self.execute_param.as_ref(),
                execute_batches: self.execute_batches.as_deref(),
                operation_type: self.operation_type.as_deref(),
                requested_by: self.requested_by.as_deref(),
            },
        }
    }
}

/// Decodes one message of the stream.
///
/// `subject_prefix` is the part of the subject before `<project_id>.<kind>` (by default
/// `coc.job.script`). The subject must agree with the event so that a subject-based filter or
/// permission can never see a ticket of another tenant than the one its data says.
///
/// The usual payload is read by a scanner that borrows its fields (`scan`); anything unusual
/// goes through serde, first with `data` typed, then, if that fails, through a JSON tree to name
/// the precise reason. Both paths feed the same checks.
pub fn decode(
    subject: &str,
    payload: &[u8],
    subject_prefix: &str,
    max_bytes: usize,
) -> Result<Event, DecodeError> {
    decode_with(subject, payload, subject_prefix, max_bytes, true)
}

/// Decodes a binary-mode message (see [`is_binary`]): its `ce-` headers and `content-type`
/// (names lower-cased, values as received) and the data as its body.
pub fn decode_binary(
    subject: &str,
    headers: &[(String, String)],
    payload: &[u8],
    subject_prefix: &str,
    max_bytes: usize,
) -> Result<Event, DecodeError> {
    within(payload, max_bytes)?;
    binary::decode(subject, headers, payload, subject_prefix)
}

/// [`decode`] without its scanner: serde alone, with borrowed fields. Kept public for the
/// benchmark's A/B of the scanner against serde (BENCHMARKS.md); the daemon calls [`decode`].
pub fn decode_with_serde_only(
    subject: &str,
    payload: &[u8],
    subject_prefix: &str,
    max_bytes: usize,
) -> Result<Event, DecodeError> {
    decode_with(subject, payload, subject_prefix, max_bytes, false)
}

/// Refuses a payload larger than `max_bytes` before any parsing, in either mode.
fn within(payload: &[u8], max_bytes: usize) -> Result<(), DecodeError> {
    if payload.len() > max_bytes {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            max: max_bytes,
        });
    }
    Ok(())
}

fn decode_with(
    subject: &str,
    payload: &[u8],
    subject_prefix: &str,
    max_bytes: usize,
    scanner: bool,
) -> Result<Event, DecodeError> {
    within(payload, max_bytes)?;
    let scanned = if scanner { scan::fields(payload) } else { None };
    match scanned {
        Some(f) => validate(subject, subject_prefix, (f.attrs, Ok(f.data))),
        None => decode_with_serde(subject, payload, subject_prefix),
    }
}

/// The serde path of [`decode`], for every payload the scanner does not take: borrowed fields
/// first, and, if that fails, a JSON tree to name the precise reason.
fn decode_with_serde(
    subject: &str,
    payload: &[u8],
    subject_prefix: &str,
) -> Result<Event, DecodeError> {
    if let Ok(e) = serde_json::from_slice::<Envelope<'_, RawData<'_>>>(payload) {
        return validate(subject, subject_prefix, (e.attrs(), Ok(e.data.fields())));
    }
    let tree = json_object(payload)?;
    let env =
        Envelope::<Value>::deserialize(&tree).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    // The data's verdict waits until the attributes are checked, so that reasons keep their
    // order whichever path decoded the payload.
    let data = typed_data(&env.data);
    let fields = data.as_ref().map(RawData::fields).map_err(Clone::clone);
    validate(subject, subject_prefix, (env.attrs(), fields))
}

/// The checks every payload goes through, whichever path read it, in the order their reasons
/// are reported.
fn validate(
    subject: &str,
    subject_prefix: &str,
    (env, data): (scan::Attrs<'_>, Result<scan::Data<'_>, DecodeError>),
) -> Result<Event, DecodeError> {
    if env.specversion != SPEC_VERSION {
        return Err(DecodeError::SpecVersion(env.specversion.to_owned()));
    }
    check_text("id", env.id, MAX_ID_BYTES).map_err(DecodeError::Envelope)?;
    check_text("source", env.source, MAX_ID_BYTES).map_err(DecodeError::Envelope)?;
    let kind = env
        .ty
        .strip_prefix(TYPE_PREFIX)
        .and_then(Kind::parse)
        .ok_or_else(|| DecodeError::UnknownKind(env.ty.to_owned()))?;
    let time_ms = parse_time_ms(env.time).ok_or_else(|| DecodeError::Time(env.time.to_owned()))?;
    let data = data?;
    let project = ProjectId::parse(data.project_id)
        .map_err(|e| DecodeError::Data(format!("project_id: {e}")))?;
    if data.order_id == 0 {
        return Err(DecodeError::Data("order_id must be greater than 0".into()));
    }
    // `<prefix>.<project>.<kind>`, compared piece by piece.
    let matches = subject
        .strip_prefix(subject_prefix)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_prefix(project.as_str()))
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|r| r == kind.as_str());
    if !matches {
        return Err(DecodeError::SubjectMismatch {
            subject: subject.to_owned(),
            expected: format!("{subject_prefix}.{project}.{}", kind.as_str()),
        });
    }
    let created = if kind == Kind::Created {
        Some(CreatedData {
            execute_uuid: required_text("execute_uuid", data.execute_uuid)?,
            order_name: required_text("order_name", data.order_name)?,
            creator: required_text("creator", data.creator)?,
            region_ids: required_text("region_ids", data.region_ids)?,
            job_type: match data.job_type {
                Some(t) => required_text("job_type", Some(t))?,
                None => Text::const_new(DEFAULT_JOB_TYPE),
            },
            plan: v11::plan(&data.extra)?,
        })
    } else {
        None
    };
    let detail = v11::detail(kind, &data)?;
    Ok(Event {
        id: Text::new(env.id),
        source: Text::new(env.source),
        kind,
        time_ms,
        project,
        order_id: data.order_id,
        created,
        detail,
    })
}

/// The slow path: parses through a JSON tree to tell a malformed payload from a bad envelope.
/// `data` is left untyped for [`typed_data`] to judge.
/// The payload as a JSON tree, if it is a JSON object.
fn json_object(payload: &[u8]) -> Result<Value, DecodeError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::MalformedJson("not an object".into()));
    }
    Ok(value)
}

fn typed_data(data: &Value) -> Result<RawData<'_>, DecodeError> {
    if !data.is_object() {
        return Err(DecodeError::Data("data must be a JSON object".into()));
    }
    RawData::deserialize(data).map_err(|e| DecodeError::Data(e.to_string()))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{field} must not be empty"))
    } else if value.len() > max {
        Err(format!("{field} is longer than {max} bytes"))
    } else {
        Ok(())
    }
}

fn required_text(field: &str, value: Option<&str>) -> Result<Text, DecodeError> {
    let value =
        value.ok_or_else(|| DecodeError::Data(format!("missing field `{field}` in created")))?;
    check_text(field, value, MAX_TEXT_BYTES).map_err(DecodeError::Data)?;
    Ok(Text::new(value))
}

/// Parses an RFC 3339 timestamp into ms since the epoch, dropping sub-millisecond digits.
///
/// The shape executors send (and `emit` writes), `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, is read
/// by [`parse_utc_ms`]; anything else (an offset, a lowercase `t` or `z`, a leap second, an
/// invalid date) goes to the `time` crate's parser, which decides.
pub fn parse_time_ms(raw: &str) -> Option<i64> {
    parse_utc_ms(raw.as_bytes()).or_else(|| parse_rfc3339_ms(raw))
}

/// Any RFC 3339 timestamp, by the `time` crate's general parser.
fn parse_rfc3339_ms(raw: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (1 to 9 fraction digits) as ms since the epoch, or `None`
/// for anything else, including dates that do not exist. Plain arithmetic for the usual case,
/// where the general parser (about 1.3% of a 300k-ticket ingest profile) walks a format
/// description; a test holds both to the same answers.
fn parse_utc_ms(raw: &[u8]) -> Option<i64> {
    let number = |digits: &[u8]| -> Option<i64> {
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if raw.len() < 20
        || raw[4] != b'-'
        || raw[7] != b'-'
        || raw[10] != b'T'
        || raw[13] != b':'
        || raw[16] != b':'
        || raw.last() != Some(&b'Z')
    {
        return None;
    }
    let (year, month, day) = (
        number(&raw[..4])?,
        number(&raw[5..7])?,
        number(&raw[8..10])?,
    );
    let (hour, minute, second) = (
        number(&raw[11..13])?,
        number(&raw[14..16])?,
        number(&raw[17..19])?,
    );
    let millis = match &raw[19..raw.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            number(fraction)?;
            let mut ms = 0;
            for i in 0..3 {
                ms = ms * 10 + fraction.get(i).map_or(0, |&d| i64::from(d - b'0'));
            }
            ms
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis)
}

/// Formats ms since the epoch as RFC 3339 UTC with millisecond precision, as the contract asks.
pub fn format_time_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// Encoding, for `ticket-ledger emit` and the tests: the inverse of [`decode`].
impl Event {
    /// The subject to publish on.
    pub fn subject(&self, subject_prefix: &str) -> String {
        format!("{subject_prefix}.{}.{}", self.project, self.kind.as_str())
    }

    /// The structured-mode CloudEvent as JSON.
    pub fn to_json(&self) -> Value {
        let mut data = json!({
            "project_id": self.project.as_str(),
            "order_id": self.order_id,
        });
        if let Some(c) = &self.created {
            data["execute_uuid"] = json!(c.execute_uuid);
            data["order_name"] = json!(c.order_name);
            data["creator"] = json!(c.creator);
            data["region_ids"] = json!(c.region_ids);
            data["job_type"] = json!(c.job_type);
            if let Some(p) = &c.plan {
                v11::plan_json(p, &mut data);
            }
        }
        v11::detail_json(&self.detail, &mut data);
        json!({
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": format!("{TYPE_PREFIX}{}", self.kind.as_str()),
            "time": format_time_ms(self.time_ms),
            "datacontenttype": "application/json",
            "data": data,
        })
    }

    /// The payload bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("a JSON value always serialises")
    }
}

#[cfg(test)]
mod tests;
