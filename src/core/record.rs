//! The stored form of a ticket record: a compact binary encoding, with no I/O.
//!
//! Records were JSON (~690 bytes a ticket at the benchmark's mix); this form is about a third of
//! that and several times faster to write and read, which matters because every ticket is
//! encoded once per flush and decoded whenever a later event finds it only in sled. JSON remains
//! the form of every export (`GET /v1/ledger/records`, the detail endpoint).
//!
//! The encoding is deterministic (a ticket has exactly one encoding), so two folds of the same
//! stream store byte-identical records, which the crash and replay checks compare.
//!
//! Layout: a version byte, then the fields in [`Ticket`]'s order. Integers are LEB128 varints
//! (signed ones zig-zagged), strings are a varint length and UTF-8 bytes, an `Option` is a 0/1
//! byte before its value, enums are one byte: the position in [`Status::ALL`] or [`Kind::ALL`]
//! (so reordering those lists changes the store format).

use crate::core::domain::{ProjectId, Status};
use crate::core::events::Kind;
use crate::core::fold::{HistoryEntry, Outcome, Ticket};

const VERSION: u8 = 1;

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ticket record: {0}")]
pub struct RecordError(&'static str);

/// Encodes a ticket.
pub fn encode(t: &Ticket) -> Vec<u8> {
    let mut w = Vec::with_capacity(128 + 48 * t.history.len());
    encode_into(t, &mut w);
    w
}

/// [`encode`], appending to `w` (the writer encodes a chunk's records back to back).
pub fn encode_into(t: &Ticket, w: &mut Vec<u8>) {
    w.push(VERSION);
    put_str(w, t.project.as_str());
    put_u64(w, t.order_id);
    put_str(w, &t.order_name);
    put_str(w, &t.execute_uuid);
    put_str(w, &t.creator);
    put_str(w, &t.region_ids);
    put_str(w, &t.job_type);
    put_i64(w, t.gmt_created);
    put_opt(w, t.gmt_finished);
    put_opt(w, t.execute_costs);
    w.push(status_byte(t.status));
    put_u64(w, t.history.len() as u64);
    for h in &t.history {
        put_u64(w, h.seq);
        put_str(w, &h.id);
        w.push(kind_byte(h.kind));
        put_i64(w, h.time_ms);
        put_str(w, &h.source);
        match &h.outcome {
            Outcome::Applied => w.push(0),
            Outcome::Duplicate => w.push(1),
            Outcome::Rejected { code, reason } => {
                w.push(2);
                put_str(w, code);
                put_str(w, reason);
            }
        }
    }
}

/// Decodes a ticket.
pub fn decode(bytes: &[u8]) -> Result<Ticket, RecordError> {
    decode_with(bytes, true)
}

/// A ticket without its history (left empty): what the query view is built from at start-up,
/// without allocating an audit trail it never shows.
pub fn decode_head(bytes: &[u8]) -> Result<Ticket, RecordError> {
    decode_with(bytes, false)
}

fn decode_with(bytes: &[u8], with_history: bool) -> Result<Ticket, RecordError> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return Err(RecordError("unknown record version"));
    }
    let project = ProjectId::parse(&r.string()?).map_err(|_| RecordError("invalid project id"))?;
    let order_id = r.u64()?;
    let order_name = r.string()?;
    let execute_uuid = r.string()?;
    let creator = r.string()?;
    let region_ids = r.string()?;
    let job_type = r.string()?;
    let gmt_created = r.i64()?;
    let gmt_finished = r.opt()?;
    let execute_costs = r.opt()?;
    let status = *Status::ALL
        .get(r.byte()? as usize)
        .ok_or(RecordError("unknown status"))?;
    let n = if with_history { r.u64()? as usize } else { 0 };
    let mut history = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let seq = r.u64()?;
        let id = r.string()?;
        let kind = *Kind::ALL
            .get(r.byte()? as usize)
            .ok_or(RecordError("unknown kind"))?;
        let time_ms = r.i64()?;
        let source = r.string()?;
        let outcome = match r.byte()? {
            0 => Outcome::Applied,
            1 => Outcome::Duplicate,
            2 => Outcome::Rejected {
                code: r.string()?,
                reason: r.string()?,
            },
            _ => return Err(RecordError("unknown outcome")),
        };
        history.push(HistoryEntry {
            seq,
            id,
            kind,
            time_ms,
            source,
            outcome,
        });
    }
    if with_history && !r.0.is_empty() {
        return Err(RecordError("trailing bytes"));
    }
    Ok(Ticket {
        project,
        order_id,
        order_name,
        execute_uuid,
        creator,
        region_ids,
        job_type,
        gmt_created,
        gmt_finished,
        execute_costs,
        status,
        history,
    })
}

fn status_byte(s: Status) -> u8 {
    Status::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every status is listed") as u8
}

fn kind_byte(k: Kind) -> u8 {
    Kind::ALL
        .iter()
        .position(|x| *x == k)
        .expect("every kind is listed") as u8
}

fn put_u64(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_i64(w: &mut Vec<u8>, v: i64) {
    put_u64(w, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_opt(w: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => w.push(0),
        Some(v) => {
            w.push(1);
            put_i64(w, v);
        }
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u64(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&b, rest) = self.0.split_first().ok_or(RecordError("truncated"))?;
        self.0 = rest;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError("varint too long"))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn opt(&mut self) -> Result<Option<i64>, RecordError> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(RecordError("bad option tag")),
        }
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let n = self.u64()? as usize;
        if n > self.0.len() {
            return Err(RecordError("truncated string"));
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| RecordError("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            history: vec![
                HistoryEntry {
                    seq: 1,
                    id: "e1".into(),
                    kind: Kind::Created,
                    time_ms: 1_690_200_829_451,
                    source: "exec".into(),
                    outcome: Outcome::Applied,
                },
                HistoryEntry {
                    seq: 2,
                    id: "e1".into(),
                    kind: Kind::Created,
                    time_ms: -5,
                    source: "exec".into(),
                    outcome: Outcome::Duplicate,
                },
                HistoryEntry {
                    seq: u64::MAX,
                    id: "e3".into(),
                    kind: Kind::Finished,
                    time_ms: i64::MIN,
                    source: String::new(),
                    outcome: Outcome::Rejected {
                        code: "ticket_closed".into(),
                        reason: "ticket is CANCELED".into(),
                    },
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
        assert_eq!(decode(&wrong), Err(RecordError("unknown record version")));
    }
}
