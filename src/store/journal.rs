//! The plan journal, a file beside sled's (see [`super::records`]): the new records and plan
//! parts of the tickets whose plan a flush changed, on disk before any of them is written.
//!
//! Its value: the flush's position, then its entries, each a tag, a key and a
//! value, length-prefixed: `[seq u64 BE]([tag u8][key len u32 BE][key][value len u32 BE][value])*`.
//! A [`PART`] is a key and value to write as they are (a plan part); a
//! [`RECORD`] is a ticket's record (`[order_id u64 BE][record]`) to merge into the chunk
//! its key names. Only the tickets whose plan changed are journaled, not their chunks: a chunk
//! holds 128 neighbours, which the redo rule covers on their own.

use crate::core::batch::PlanPart;
use crate::core::fold::Ticket;

pub(super) const PART: u8 = 0;
pub(super) const RECORD: u8 = 1;

/// A journal being written.
pub(super) struct Builder(pub(super) Vec<u8>);

impl Builder {
    pub(super) fn new(seq: u64) -> Self {
        Builder(seq.to_be_bytes().to_vec())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.len() == 8
    }

    /// Adds what `part` of `t`'s plan is now to `writes` (see [`super::plans`]),
    /// and to the journal.
    pub(super) fn part(
        &mut self,
        writes: &mut Vec<(Vec<u8>, Vec<u8>)>,
        t: &Ticket,
        part: PlanPart,
    ) {
        let first = writes.len();
        super::plans::write_part(writes, t, part);
        for (k, v) in &writes[first..] {
            self.push(PART, k, &[v]);
        }
    }

    pub(super) fn push(&mut self, tag: u8, key: &[u8], value: &[&[u8]]) {
        self.0.push(tag);
        self.0.extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.0.extend_from_slice(key);
        let len: usize = value.iter().map(|v| v.len()).sum();
        self.0.extend_from_slice(&(len as u32).to_be_bytes());
        for v in value {
            self.0.extend_from_slice(v);
        }
    }
}

/// A journal read back: the position and the tagged keys and values.
pub(super) type Entries<'v> = (u64, Vec<(u8, &'v [u8], &'v [u8])>);

/// The position and the entries, or why the value is not a journal.
pub(super) fn decode(mut v: &[u8]) -> Result<Entries<'_>, &'static str> {
    fn take<'v>(v: &mut &'v [u8], n: usize) -> Result<&'v [u8], &'static str> {
        let (head, rest) = v.split_at_checked(n).ok_or("short plan journal")?;
        *v = rest;
        Ok(head)
    }
    fn part<'v>(v: &mut &'v [u8]) -> Result<&'v [u8], &'static str> {
        let n = u32::from_be_bytes(take(v, 4)?.try_into().expect("4 bytes"));
        take(v, n as usize)
    }
    let seq = u64::from_be_bytes(take(&mut v, 8)?.try_into().expect("8 bytes"));
    let mut entries = Vec::new();
    while !v.is_empty() {
        let tag = take(&mut v, 1)?[0];
        if tag != PART && tag != RECORD {
            return Err("unknown plan journal entry");
        }
        let key = part(&mut v)?;
        let value = part(&mut v)?;
        if tag == RECORD && value.len() < 8 {
            return Err("short plan journal record");
        }
        entries.push((tag, key, value));
    }
    Ok((seq, entries))
}
