//! The layout of a chunk, the value that holds up to 128 tickets' records under one key (see
//! [`super::records`]): `[order_id u64 BE][len u32 BE][record]...`, ascending by `order_id`.
//! Bytes only: reading and writing sled is the store's.

use crate::core::fold::Ticket;

/// Tickets per chunk, as a power of two. sled's cost is per key written (it copies the tree node
/// a key lands in), so tickets that are created together, in `order_id` order, are stored
/// together: one key for 128 `order_id`s. A project that takes every tenth id (the benchmark's
/// ten projects) fills a 128-id chunk with about 13 tickets. Chunks of 64 ids (about 6) cost
/// about a tenth more daemon CPU per event; chunks of 256 cost about 130 MiB more peak RSS
/// through a 1M-ticket benchmark (sled holds larger nodes), which left too little margin under
/// its 1 GiB target. What a flush rewrites does not grow with the chunk: the tickets live at a
/// flush span a range of ids, and the chunks that range touches are rewritten whatever their
/// size, plus at most one chunk's overhang at each end.
pub(super) const CHUNK_BITS: u32 = 7;

/// The entries of a chunk: (order_id, record bytes), ascending.
pub(super) fn entries(mut v: &[u8]) -> Result<Vec<(u64, &[u8])>, &'static str> {
    let mut out = Vec::with_capacity(1 << CHUNK_BITS);
    while !v.is_empty() {
        if v.len() < 12 {
            return Err("short chunk entry");
        }
        let order = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(v[8..12].try_into().expect("4 bytes")) as usize;
        let rest = &v[12..];
        if rest.len() < len {
            return Err("short chunk record");
        }
        out.push((order, &rest[..len]));
        v = &rest[len..];
    }
    Ok(out)
}

/// `old` with `new` merged in, both ascending by `order_id`, as a chunk's value: a new record
/// replaces the old one of its ticket.
pub(super) fn merged(old: &[(u64, &[u8])], new: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        old.iter()
            .chain(new)
            .map(|(_, r)| 12 + r.len())
            .sum::<usize>(),
    );
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let take_new = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((old_order, _)), Some((new_order, _))) => {
                if old_order == new_order {
                    o.next();
                }
                new_order <= old_order
            }
        };
        let (order, record) = if take_new {
            n.next().expect("peeked")
        } else {
            o.next().expect("peeked")
        };
        out.extend_from_slice(&order.to_be_bytes());
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// The records of `chunk` (ascending by `order_id`), encoded one after another, and where
/// each ends.
pub(super) fn encoded(chunk: &[&Ticket]) -> (Vec<u8>, Vec<usize>) {
    let mut records = Vec::new();
    let mut ends = Vec::with_capacity(chunk.len());
    for t in chunk {
        crate::core::record::encode_into(t, &mut records);
        ends.push(records.len());
    }
    (records, ends)
}

/// Each ticket of `chunk` with its record in `records` (as [`encoded`] laid them out).
pub(super) fn entries_of<'r>(
    chunk: &[&Ticket],
    records: &'r [u8],
    ends: &[usize],
) -> Vec<(u64, &'r [u8])> {
    let starts = std::iter::once(0).chain(ends.iter().copied());
    chunk
        .iter()
        .zip(starts.zip(ends))
        .map(|(t, (start, &end))| (t.order_id, &records[start..end]))
        .collect()
}
