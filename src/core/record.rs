//! The stored form of a ticket record: postcard (a compact, deterministic varint encoding)
//! of a storage mirror of [`Ticket`], with no I/O.
//!
//! Records were JSON (~690 bytes a ticket at the benchmark's mix); this form is about a third of
//! that and several times faster to write and read, which matters because every ticket is
//! encoded once per flush and decoded whenever a later event finds it only in sled. JSON remains
//! the form of every export (`GET /v1/ledger/records`, the detail endpoint).
//!
//! Why a mirror and not `Ticket`'s own serde derive: that derive is the JSON export's shape (the
//! outcome internally tagged), which postcard cannot write. The mirror borrows the ticket's
//! strings when encoding and writes its history straight from the ticket's entries.
//!
//! The encoding is deterministic (a ticket has exactly one encoding), so two folds of the same
//! stream store byte-identical records, which the crash and replay checks compare.
//!
//! Layout: a version byte, then postcard of the fields in [`Ticket`]'s order, the history last
//! (so that [`decode_head`] reads the fields before it and stops). Enums are their variant's
//! index in declaration order (so reordering [`Status`] or [`Kind`] changes the store format).
//! A hand-written encoder of the same layout was measured against this one (BENCHMARKS.md,
//! "Codecs") and did not earn its keep.

use serde::{Deserialize, Serialize};

use crate::core::domain::{ProjectId, Status, Text};
use crate::core::events::Kind;
use crate::core::fold::{HistoryEntry, Outcome, Ticket};
use crate::core::job::{Batch, Instance, InstanceStatus, Rotation, Script, Target};

const VERSION: u8 = 4;

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ticket record: {0}")]
pub struct RecordError(String);

/// What is written: the ticket's fields, borrowed.
#[derive(Serialize)]
struct RecordRef<'a> {
    project: &'a str,
    order_id: u64,
    order_name: &'a str,
    execute_uuid: &'a str,
    creator: &'a str,
    region_ids: &'a str,
    job_type: &'a str,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    status: Status,
    current_execute_batch_index: Option<u32>,
    duplicates_unrecorded: u64,
    has_plan: bool,
    #[serde(serialize_with = "history_ref")]
    history: &'a [HistoryEntry],
}

#[derive(Serialize)]
struct EntryRef<'a> {
    seq: u64,
    id: &'a str,
    kind: Kind,
    time_ms: i64,
    source: &'a str,
    outcome: OutcomeRef<'a>,
    note: Option<&'a str>,
}

#[derive(Serialize)]
enum OutcomeRef<'a> {
    Applied,
    Duplicate,
    Rejected(&'a str, &'a str),
}

/// The history as a sequence, straight from the ticket's entries.
fn history_ref<S: serde::Serializer>(h: &&[HistoryEntry], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|h| EntryRef {
        seq: h.seq,
        id: &h.id,
        kind: h.kind,
        time_ms: h.time_ms,
        source: &h.source,
        outcome: match &h.outcome {
            Outcome::Applied => OutcomeRef::Applied,
            Outcome::Duplicate => OutcomeRef::Duplicate,
            Outcome::Rejected { code, reason } => OutcomeRef::Rejected(code, reason),
        },
        note: h.note.as_deref(),
    }))
}

/// What is read: every field before the history (the whole record is a `Head` and then its
/// history).
#[derive(Deserialize)]
struct Head {
    project: Text,
    order_id: u64,
    order_name: Text,
    execute_uuid: Text,
    creator: Text,
    region_ids: Text,
    job_type: Text,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    status: Status,
    current_execute_batch_index: Option<u32>,
    duplicates_unrecorded: u64,
    has_plan: bool,
}

#[derive(Deserialize)]
struct Entry {
    seq: u64,
    id: Text,
    kind: Kind,
    time_ms: i64,
    source: Text,
    outcome: StoredOutcome,
    note: Option<String>,
}

impl From<Entry> for HistoryEntry {
    fn from(h: Entry) -> Self {
        HistoryEntry {
            seq: h.seq,
            id: h.id,
            kind: h.kind,
            time_ms: h.time_ms,
            source: h.source,
            outcome: match h.outcome {
                StoredOutcome::Applied => Outcome::Applied,
                StoredOutcome::Duplicate => Outcome::Duplicate,
                StoredOutcome::Rejected(code, reason) => Outcome::Rejected { code, reason },
            },
            note: h.note,
        }
    }
}

#[derive(Deserialize)]
enum StoredOutcome {
    Applied,
    Duplicate,
    Rejected(String, String),
}

/// Encodes a ticket.
pub fn encode(t: &Ticket) -> Vec<u8> {
    let mut w = Vec::with_capacity(128 + 48 * t.history.len());
    encode_into(t, &mut w);
    w
}

/// [`encode`], appending to `w` (the writer encodes a chunk's records back to back).
pub fn encode_into(t: &Ticket, w: &mut Vec<u8>) {
    let r = RecordRef {
        project: t.project.as_str(),
        order_id: t.order_id,
        order_name: &t.order_name,
        execute_uuid: &t.execute_uuid,
        creator: &t.creator,
        region_ids: &t.region_ids,
        job_type: &t.job_type,
        gmt_created: t.gmt_created,
        gmt_finished: t.gmt_finished,
        execute_costs: t.execute_costs,
        status: t.status,
        current_execute_batch_index: t.current_execute_batch_index,
        duplicates_unrecorded: t.duplicates_unrecorded,
        has_plan: t.plan.is_some(),
        history: &t.history,
    };
    w.push(VERSION);
    // Writing to a vector fails only if serde itself refuses the value, and every field here
    // is a plain integer, string or unit-like enum.
    postcard::serialize_with_flavor(&r, Append(w)).expect("a ticket record always serialises");
}

/// postcard's output appended to a vector in place. (Its own `to_extend` goes through
/// `Extend`, a byte at a time for each length and integer; the writer encodes every ticket
/// it writes, and this is measurably cheaper: see BENCHMARKS.md.)
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a ticket, without its plan (see [`decode_flagged`]).
pub fn decode(bytes: &[u8]) -> Result<Ticket, RecordError> {
    decode_flagged(bytes).map(|(t, _)| t)
}

/// Decodes a ticket, and says whether it has a plan, which is stored apart ([`decode_plan`]).
pub fn decode_flagged(bytes: &[u8]) -> Result<(Ticket, bool), RecordError> {
    let (mut t, has_plan, rest) = head(bytes)?;
    let (entries, rest): (Vec<Entry>, _) = postcard::take_from_bytes(rest).map_err(bad)?;
    if !rest.is_empty() {
        return Err(RecordError("trailing bytes".into()));
    }
    t.history = entries.into_iter().map(HistoryEntry::from).collect();
    Ok((t, has_plan))
}

/// A ticket without its history (left empty): what the query view is built from at start-up,
/// without allocating an audit trail it never shows.
pub fn decode_head(bytes: &[u8]) -> Result<Ticket, RecordError> {
    head(bytes).map(|(t, _, _)| t)
}

fn bad(e: postcard::Error) -> RecordError {
    RecordError(e.to_string())
}

/// The ticket without its history, whether it has a plan, and the bytes after the head.
fn head(bytes: &[u8]) -> Result<(Ticket, bool, &[u8]), RecordError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| RecordError("empty".into()))?;
    if version != VERSION {
        return Err(RecordError(format!("unknown record version {version}")));
    }
    let (h, rest): (Head, _) = postcard::take_from_bytes(body).map_err(bad)?;
    let project =
        ProjectId::parse(&h.project).map_err(|_| RecordError("invalid project id".into()))?;
    let t = Ticket {
        project,
        order_id: h.order_id,
        order_name: h.order_name,
        execute_uuid: h.execute_uuid,
        creator: h.creator,
        region_ids: h.region_ids,
        job_type: h.job_type,
        gmt_created: h.gmt_created,
        gmt_finished: h.gmt_finished,
        execute_costs: h.execute_costs,
        status: h.status,
        current_execute_batch_index: h.current_execute_batch_index,
        duplicates_unrecorded: h.duplicates_unrecorded,
        history: Vec::new(),
        plan: None,
    };
    Ok((t, h.has_plan, rest))
}

/// The stored form of a plan's head: its script.
pub fn encode_plan_head(script: &Script) -> Vec<u8> {
    let mut w = vec![VERSION];
    w = postcard::to_extend(script, w).expect("a script always serialises");
    w
}

/// What is written of one instance: its target, state and history, borrowed.
#[derive(Serialize)]
struct InstanceRef<'a> {
    target: &'a Target,
    status: InstanceStatus,
    gmt_created: Option<i64>,
    gmt_finished: Option<i64>,
    message: Option<&'a str>,
    #[serde(serialize_with = "history_ref")]
    history: &'a [HistoryEntry],
}

#[derive(Serialize)]
struct BatchRef<'a> {
    batch_index: u32,
    rotation_strategy: Rotation,
    properties: Option<&'a str>,
    #[serde(serialize_with = "instances_ref")]
    instances: &'a [Instance],
}

fn instances_ref<S: serde::Serializer>(v: &&[Instance], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|i| InstanceRef {
        target: &i.target,
        status: i.status,
        gmt_created: i.gmt_created,
        gmt_finished: i.gmt_finished,
        message: i.message.as_deref(),
        history: &i.history,
    }))
}

#[derive(Deserialize)]
struct StoredInstance {
    target: Target,
    status: InstanceStatus,
    gmt_created: Option<i64>,
    gmt_finished: Option<i64>,
    message: Option<String>,
    history: Vec<Entry>,
}

#[derive(Deserialize)]
struct StoredBatch {
    batch_index: u32,
    rotation_strategy: Rotation,
    properties: Option<String>,
    instances: Vec<StoredInstance>,
}

/// The stored form of one batch of a plan: its instances with their state and history.
pub fn encode_batch(b: &Batch) -> Vec<u8> {
    let r = BatchRef {
        batch_index: b.batch_index,
        rotation_strategy: b.rotation_strategy,
        properties: b.properties.as_deref(),
        instances: &b.instances,
    };
    postcard::to_extend(&r, vec![VERSION]).expect("a batch always serialises")
}

fn versioned(bytes: &[u8]) -> Result<&[u8], RecordError> {
    match bytes.split_first() {
        Some((&VERSION, body)) => Ok(body),
        Some((v, _)) => Err(RecordError(format!("unknown record version {v}"))),
        None => Err(RecordError("empty".into())),
    }
}

fn whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let (v, rest) = postcard::take_from_bytes(versioned(bytes)?).map_err(bad)?;
    if !rest.is_empty() {
        return Err(RecordError("trailing bytes".into()));
    }
    Ok(v)
}

/// A plan from its stored head and batches (in ascending batch order).
pub fn decode_plan<'a>(
    head: &[u8],
    batches: impl IntoIterator<Item = &'a [u8]>,
) -> Result<crate::core::job::Plan, RecordError> {
    let script: Script = whole(head)?;
    let batches = batches
        .into_iter()
        .map(|b| {
            let b: StoredBatch = whole(b)?;
            Ok(std::sync::Arc::new(Batch {
                batch_index: b.batch_index,
                rotation_strategy: b.rotation_strategy,
                properties: b.properties,
                instances: b
                    .instances
                    .into_iter()
                    .map(|i| Instance {
                        target: i.target,
                        status: i.status,
                        gmt_created: i.gmt_created,
                        gmt_finished: i.gmt_finished,
                        message: i.message,
                        history: i.history.into_iter().map(HistoryEntry::from).collect(),
                    })
                    .collect(),
            }))
        })
        .collect::<Result<Vec<_>, RecordError>>()?;
    Ok(crate::core::job::Plan { script, batches })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz target `record_decode`: a varint written longer than it need be
    /// decodes; the ticket it gives then round-trips through the store's own encoding.
    #[test]
    fn an_overlong_varint_decodes_to_a_ticket_that_round_trips() {
        let bytes = [
            0x04, 0x01, 0x37, 0x9b, 0x0d, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0xc5, 0, 0, 0,
        ];
        let t = decode(&bytes).expect("postcard reads it");
        let canonical = encode(&t);
        assert_ne!(canonical, bytes, "the store writes it shorter");
        assert_eq!(decode(&canonical), Ok(t));
    }

    fn ticket() -> Ticket {
        Ticket {
            project: ProjectId::parse("proj-1").unwrap(),
            order_id: 300,
            order_name: "补丁 night".into(),
            execute_uuid: "SCT1".into(),
            creator: "alice".into(),
            region_ids: "cn-north-4".into(),
            job_type: "SCRIPT".into(),
            gmt_created: 1_690_200_829_451,
            gmt_finished: Some(1_690_200_850_293),
            execute_costs: Some(20_842),
            status: Status::Canceled,
            current_execute_batch_index: Some(3),
            duplicates_unrecorded: 5,
            plan: None,
            history: vec![
                HistoryEntry {
                    seq: 1,
                    id: "e1".into(),
                    kind: Kind::Created,
                    time_ms: 1_690_200_829_451,
                    source: "exec".into(),
                    outcome: Outcome::Applied,
                    note: None,
                },
                HistoryEntry {
                    seq: 2,
                    id: "e1".into(),
                    kind: Kind::Created,
                    time_ms: -5,
                    source: "exec".into(),
                    outcome: Outcome::Duplicate,
                    note: Some("PAUSE_ORDER, requested by alice".into()),
                },
                HistoryEntry {
                    seq: u64::MAX,
                    id: "e3".into(),
                    kind: Kind::Finished,
                    time_ms: i64::MIN,
                    source: Text::default(),
                    outcome: Outcome::Rejected {
                        code: "ticket_closed".into(),
                        reason: "ticket is CANCELED".into(),
                    },
                    note: None,
                },
            ],
        }
    }

    #[test]
    fn a_ticket_survives_the_round_trip() {
        let t = ticket();
        assert_eq!(decode(&encode(&t)).unwrap(), t);
        let mut open = t.clone();
        open.gmt_finished = None;
        open.execute_costs = None;
        open.history.clear();
        for s in Status::ALL {
            open.status = s;
            assert_eq!(decode(&encode(&open)).unwrap(), open);
        }
    }

    #[test]
    fn the_head_is_the_ticket_without_its_history() {
        let t = ticket();
        assert!(!t.history.is_empty());
        let head = decode_head(&encode(&t)).unwrap();
        assert_eq!(
            head,
            Ticket {
                history: Vec::new(),
                ..t
            }
        );
    }

    #[test]
    fn it_is_much_smaller_than_json() {
        let t = ticket();
        assert!(encode(&t).len() * 2 < serde_json::to_vec(&t).unwrap().len());
    }

    #[test]
    fn damaged_bytes_are_an_error_never_a_panic() {
        let bytes = encode(&ticket());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut wrong = bytes;
        wrong[0] = 9;
        assert!(
            decode(&wrong)
                .unwrap_err()
                .to_string()
                .contains("unknown record version")
        );
    }
}
