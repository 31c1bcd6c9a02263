//! The durable half of the projection, in sled.
//!
//! One sled tree holds everything, under one-byte key prefixes. A flush — the tickets changed
//! since the last one, the dead letters produced and the stream position reached — is written
//! one key at a time, never as an `apply_batch`: sled 0.34 makes every read in the process take
//! a lock once any batch or transaction has run, and then a detail page waits for each batch
//! and for sled's flusher ahead of it. Single keys leave reads lock-free. The keys go in this
//! order: `m:redo_until` (the position the flush reaches), the dead letters, the chunks of
//! tickets without a plan part in the flush, then — when any ticket's plan changed — the plan
//! journal, the chunks of those tickets and their plan parts, and the position last. sled
//! recovers a prefix of its writes, so after any crash the stored position never runs ahead of
//! the records; records may run ahead of it, up to `m:redo_until`, and a ticket's record then
//! already holds some events the stream will deliver again: the fold skips those
//! ([`Store::redo_until`], [`crate::core::batch::fold_decoded`]). That skip needs a record and
//! its plan to be of one state, which separate keys do not give: so the journal, a file beside
//! sled's, holds the new records and plan parts of the tickets whose plan changed, on disk
//! before any of them is written, and opening a store cut short after it writes them all again
//! ([`Store::replay_plan_journal`]).
//!
//! | key                                   | value                                |
//! |---------------------------------------|--------------------------------------|
//! | `t` project `\0` order_id>>7 (u64 BE) | a chunk: up to 128 tickets' records  |
//! | `p` project `\0` order_id ...          | a ticket's plan ([`super::plans`])   |
//! | `d` seq (u64 BE)                      | dead letter ([`DeadLetter`])         |
//! | `m:applied_seq`                       | last applied stream sequence, u64 BE |
//! | `m:format`                            | store format version, u64 BE         |
//! | `m:redo_until`                        | the position the last flush reaches, u64 BE |
//!
//! Only records are stored; every secondary index lives in memory and is rebuilt at start-up
//! from the records (see [`crate::view`]), because sled writes, not reads, are the bottleneck.

use std::path::Path;
use std::sync::Arc;

use super::StoreError;
use crate::core::batch::{DeadLetter, PlanPart};
use crate::core::domain::ProjectId;
use crate::core::fold::Ticket;

const TICKET: u8 = b't';
const DEAD: u8 = b'd';
const APPLIED_SEQ: &[u8] = b"m:applied_seq";
const FORMAT: &[u8] = b"m:format";
const REDO_UNTIL: &[u8] = b"m:redo_until";
/// How long opening the store waits for its lock to be released, unless configured
/// (`store.lock_wait_ms`).
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// sled's page cache, MiB, unless configured (`store.cache_mb`).
pub const DEFAULT_CACHE_MB: u64 = 16;
/// 8: records count the duplicates their histories no longer hold. 7: records say whether the
/// ticket has a plan, which is stored apart (`p` keys). 6: records in postcard (5 was the same
/// layout written by hand; 4 chunks of 256, 3 of 64, 2 one record per key, 1 JSON). Chunks
/// hold 128 records.
pub(super) const FORMAT_VERSION: u64 = 8;

/// Tickets per chunk, as a power of two. sled's cost is per key written (it copies the tree node
/// a key lands in), so tickets that are created together, in `order_id` order, are stored
/// together: one key for 128 `order_id`s. A project that takes every tenth id (the benchmark's
/// ten projects) fills a 128-id chunk with about 13 tickets. Chunks of 64 ids (about 6) cost
/// about a tenth more daemon CPU per event; chunks of 256 cost about 130 MiB more peak RSS
/// through a 1M-ticket benchmark (sled holds larger nodes), which left too little margin under
/// its 1 GiB target. A chunk is `[order_id u64 BE][len u32 BE][record]...`, ascending. What a
/// flush rewrites does not grow with the chunk: the tickets live at a flush span a range of
/// ids, and the chunks that range touches are rewritten whatever their size, plus at most one
/// chunk's overhang at each end.
const CHUNK_BITS: u32 = 7;

fn chunk_key(project: &ProjectId, order_id: u64) -> Vec<u8> {
    ticket_key(project, order_id >> CHUNK_BITS)
}

/// The entries of a chunk: (order_id, record bytes), ascending.
fn chunk_entries<'a>(key: &[u8], mut v: &'a [u8]) -> Result<Vec<(u64, &'a [u8])>, StoreError> {
    let mut out = Vec::with_capacity(1 << CHUNK_BITS);
    while !v.is_empty() {
        if v.len() < 12 {
            return Err(corrupt(key, "short chunk entry"));
        }
        let order = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(v[8..12].try_into().expect("4 bytes")) as usize;
        let rest = &v[12..];
        if rest.len() < len {
            return Err(corrupt(key, "short chunk record"));
        }
        out.push((order, &rest[..len]));
        v = &rest[len..];
    }
    Ok(out)
}

/// The sled store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The store's directory, where [`SEAL`] lives beside sled's files.
    dir: Arc<Path>,
}

/// A file beside sled's own that holds the position sled last made durable on an explicit
/// flush. sled reads a truncated log as far as it is intact, which looks like a crash before
/// the cut; a position below the seal tells the two apart. Written after sled's flush returns,
/// by rename, and never synced itself: a seal lost to a power cut is only an older one, never
/// one ahead of sled.
const SEAL: &str = "durable-seq";

/// The plan journal's file beside sled's own ([`journal`]): kept out of sled, whose cache would
/// hold a value of a whole flush's plans.
const JOURNAL: &str = "plan-journal";

/// sled's file in `dir`, damaged as `detail` says.
fn damaged_file(dir: &Path, detail: String) -> StoreError {
    StoreError::Damaged {
        file: dir.join("db"),
        detail,
    }
}

fn dead_key(seq: u64) -> Vec<u8> {
    let mut key = vec![DEAD];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn ticket_key(project: &ProjectId, order_id: u64) -> Vec<u8> {
    keyed(TICKET, project, order_id)
}

/// `prefix` project `\0` order_id (u64 BE): the key of a ticket's record, and the start of its
/// plan's keys ([`super::plans`]).
pub(super) fn keyed(prefix: u8, project: &ProjectId, order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + project.as_str().len() + 12);
    k.push(prefix);
    k.extend_from_slice(project.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&order_id.to_be_bytes());
    k
}

/// The (project, order_id) of a ticket key, if it is one.
pub fn ticket_key_parts(key: &[u8]) -> Option<(ProjectId, u64)> {
    let rest = key.strip_prefix(&[TICKET])?;
    let (project, order) = rest.split_at(rest.len().checked_sub(9)?);
    let order = order.strip_prefix(&[0])?;
    let project = ProjectId::parse(std::str::from_utf8(project).ok()?).ok()?;
    Some((project, u64::from_be_bytes(order.try_into().ok()?)))
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: hex::encode(key),
        reason: reason.to_string(),
    }
}

/// The keys a flush writes, one at a time, and the bytes written so far.
struct Writes<'a> {
    db: &'a sled::Db,
    /// Bytes of keys and values written, in all.
    bytes: u64,
}

impl Writes<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.bytes += (key.len() + value.len()) as u64;
        self.db.insert(key, value)?;
        Ok(())
    }
}

/// The plan journal's value: the flush's position, then its entries, each a tag, a key and a
/// value, length-prefixed: `[seq u64 BE]([tag u8][key len u32 BE][key][value len u32 BE][value])*`.
/// A [`journal::PART`] is a key and value to write as they are (a plan part); a
/// [`journal::RECORD`] is a ticket's record (`[order_id u64 BE][record]`) to merge into the chunk
/// its key names. Only the tickets whose plan changed are journaled, not their chunks: a chunk
/// holds 128 neighbours, which the redo rule covers on their own.
mod journal {
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

        /// Adds what `part` of `t`'s plan is now to `writes` (see [`super::super::plans`]),
        /// and to the journal.
        pub(super) fn part(
            &mut self,
            writes: &mut Vec<(Vec<u8>, Vec<u8>)>,
            t: &super::Ticket,
            part: super::PlanPart,
        ) {
            let first = writes.len();
            super::super::plans::write_part(writes, t, part);
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
}

fn u64_value(key: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| corrupt(key, "not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The stored bytes of a ticket record (deterministic: see [`crate::core::record`]).
pub fn encode_ticket(t: &Ticket) -> Vec<u8> {
    crate::core::record::encode(t)
}

fn decode_ticket(key: &[u8], v: &[u8]) -> Result<(Ticket, bool), StoreError> {
    crate::core::record::decode_flagged(v).map_err(|e| corrupt(key, e))
}

/// A ticket as exports show it: JSON, readable in audits.
pub fn ticket_json(t: &Ticket) -> Vec<u8> {
    serde_json::to_vec(t).expect("tickets always serialise")
}

fn encode_dead_letter(d: &DeadLetter) -> Vec<u8> {
    let header = serde_json::to_vec(d).expect("dead letters always serialise");
    let mut v = Vec::with_capacity(4 + header.len() + d.payload.len());
    v.extend_from_slice(&(header.len() as u32).to_be_bytes());
    v.extend_from_slice(&header);
    v.extend_from_slice(&d.payload);
    v
}

fn decode_dead_letter(key: &[u8], v: &[u8]) -> Result<DeadLetter, StoreError> {
    let len = v
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| corrupt(key, "short dead letter"))?;
    let header = v
        .get(4..4 + len)
        .ok_or_else(|| corrupt(key, "short dead letter header"))?;
    let mut d: DeadLetter = serde_json::from_slice(header).map_err(|e| corrupt(key, e))?;
    d.payload = v[4 + len..].to_vec();
    Ok(d)
}

impl Store {
    /// Opens (or creates) the store in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_MB, DEFAULT_LOCK_WAIT)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_mb` MiB. Reads are rare
    /// (a ticket not in the write-behind buffer, a detail page), so a small cache is enough.
    ///
    /// Another holder of the store's lock (a process still exiting while its successor starts,
    /// as a supervisor's fast restart does; sled's own threads finishing a write after the
    /// store was dropped) is waited for, up to `lock_wait`, instead of failing at once; then
    /// [`StoreError::Locked`].
    pub fn open_with_cache(
        dir: &Path,
        cache_mb: u64,
        lock_wait: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + lock_wait;
        let mut said = false;
        let damaged = |detail: String| damaged_file(dir, detail);
        let db = loop {
            let config = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_mb * 1024 * 1024)
                .flush_every_ms(Some(200));
            // sled refuses most damage with an error, but a damaged file it misreads can also
            // make it panic: either way the store is refused, never opened half-read.
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|_| damaged("sled panicked while reading it".into()))?;
            match opened {
                Err(sled::Error::Corruption { at, .. }) => {
                    return Err(damaged(match at {
                        Some(at) => format!("sled found corruption at {at:?}"),
                        None => "sled found corruption in its log".into(),
                    }));
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            dir: dir.to_owned(),
                            waited: lock_wait,
                        });
                    }
                    if !said {
                        tracing::info!(dir = %dir.display(), "the store is locked by another holder; waiting for it");
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let store = Self {
            db,
            dir: Arc::from(dir),
        };
        store.read_through().map_err(&damaged)?;
        store.check_seal().map_err(damaged)?;
        match store.db.get(FORMAT)? {
            None => {
                store.db.insert(FORMAT, &FORMAT_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = u64_value(FORMAT, &v)?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format { found });
                }
            }
        }
        store.replay_plan_journal()?;
        Ok(store)
    }

    /// Reads every key and value but the records once, so that damage sled finds only when it
    /// reads a page is found at start-up, not by a query hours later. The records are read
    /// right after by the view's load ([`super::Projection::open`], which names sled's file for
    /// damage found there too), so they are not read twice. It costs a read of the plans and
    /// dead letters at every start (not yet measured at 1M tickets).
    fn read_through(&self) -> Result<(), String> {
        let before = self.db.range(..[TICKET].as_slice());
        let after = self.db.range([TICKET + 1].as_slice()..);
        for kv in before.chain(after) {
            kv.map_err(|e| format!("reading it back: {e}"))?;
        }
        Ok(())
    }

    /// The error for damage sled reports in this store's file.
    pub(super) fn damaged(&self, detail: String) -> StoreError {
        damaged_file(&self.dir, detail)
    }

    /// Refuses a store whose position is below the last one sled made durable (its log lost its
    /// end).
    fn check_seal(&self) -> Result<(), String> {
        let Ok(text) = std::fs::read_to_string(self.dir.join(SEAL)) else {
            return Ok(());
        };
        let Ok(sealed) = text.trim().parse::<u64>() else {
            tracing::warn!(file = %self.dir.join(SEAL).display(), "an unreadable seal, ignored");
            return Ok(());
        };
        let applied = self.applied_seq().map_err(|e| e.to_string())?;
        if applied < sealed {
            return Err(format!(
                "it holds the store through sequence {applied}, but it had been written to disk \
                 through sequence {sealed}: the end of its log is missing"
            ));
        }
        Ok(())
    }

    /// Writes again the records and plan parts of the plan journal, if the flush it belongs to was
    /// cut short after it (its position is beyond the stored one): then every ticket whose plan
    /// that flush changed has its record and its plan of that flush's state, as the skip of
    /// events already held needs (see the module's documentation). A journal of an earlier,
    /// completed flush is left alone.
    fn replay_plan_journal(&self) -> Result<(), StoreError> {
        let path = self.dir.join(JOURNAL);
        let v = match std::fs::read(&path) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let damaged = |detail: &str| StoreError::Damaged {
            file: path.clone(),
            detail: detail.to_owned(),
        };
        let (seq, entries) = journal::decode(&v).map_err(damaged)?;
        // The journal names the position its flush reaches: a flush that completed stored that
        // position, and its tickets may have moved on since, so its journal must not be
        // written again; one beyond the stored position was cut short, and nothing came after.
        let applied = self.applied_seq()?;
        if seq <= applied {
            return Ok(());
        }
        // Its flush's mark may not have reached the disk before the journal did.
        self.raise_redo_until(seq)?;
        tracing::info!(
            applied_seq = applied,
            journal_seq = seq,
            keys = entries.len(),
            "the last write was cut short after its plan journal: writing its plans again"
        );
        for group in entries.chunk_by(|a, b| a.0 == journal::RECORD && b.0 == a.0 && a.1 == b.1) {
            let (tag, key, _) = group[0];
            if tag == journal::PART {
                self.db.insert(key, group[0].2)?;
                continue;
            }
            let records: Vec<(u64, &[u8])> = group
                .iter()
                .map(|(_, _, v)| {
                    let (order, record) = v.split_at(8);
                    (
                        u64::from_be_bytes(order.try_into().expect("8 bytes")),
                        record,
                    )
                })
                .collect();
            let merged = self.merge_into_chunk(key, &records)?;
            self.db.insert(key, merged)?;
        }
        Ok(())
    }

    /// Sets `m:redo_until` to `to`, unless it is already beyond.
    fn raise_redo_until(&self, to: u64) -> Result<(), StoreError> {
        let redo = match self.db.get(REDO_UNTIL)? {
            Some(v) => u64_value(REDO_UNTIL, &v)?.max(to),
            None => to,
        };
        self.db.insert(REDO_UNTIL, &redo.to_be_bytes())?;
        Ok(())
    }

    /// The last stream sequence whose effects are stored (0: none).
    pub fn applied_seq(&self) -> Result<u64, StoreError> {
        match self.db.get(APPLIED_SEQ)? {
            None => Ok(0),
            Some(v) => u64_value(APPLIED_SEQ, &v),
        }
    }

    /// Up to where records may hold events beyond the stored position (a flush in pieces was
    /// cut short): 0 when none may.
    pub fn redo_until(&self) -> Result<u64, StoreError> {
        let redo = match self.db.get(REDO_UNTIL)? {
            None => 0,
            Some(v) => u64_value(REDO_UNTIL, &v)?,
        };
        Ok(if redo > self.applied_seq()? { redo } else { 0 })
    }

    /// One ticket.
    pub fn ticket(&self, project: &ProjectId, order_id: u64) -> Result<Option<Ticket>, StoreError> {
        let key = chunk_key(project, order_id);
        let Some(v) = self.db.get(&key)? else {
            return Ok(None);
        };
        let entries = chunk_entries(&key, &v)?;
        match entries.binary_search_by_key(&order_id, |e| e.0) {
            Ok(i) => self.with_plan(decode_ticket(&key, entries[i].1)?).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The ticket with its plan read back, if its record says it has one.
    fn with_plan(&self, (mut t, has_plan): (Ticket, bool)) -> Result<Ticket, StoreError> {
        if has_plan {
            super::plans::load(&self.db, &mut t)?;
        }
        Ok(t)
    }

    /// Every ticket with its plan, in key order (project, then order_id ascending).
    pub fn tickets(&self) -> impl Iterator<Item = Result<Ticket, StoreError>> + '_ {
        self.raw_tickets().map(|r| {
            let (k, v) = r?;
            self.with_plan(decode_ticket(&k, &v)?)
        })
    }

    /// Every ticket's key (`t` project `\0` order_id) and record bytes, in key order: what
    /// replay checks compare.
    pub fn raw_tickets(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.per_chunk(|key, entries| {
            let (project, _) = ticket_key_parts(key).ok_or_else(|| corrupt(key, "chunk key"))?;
            Ok(entries
                .into_iter()
                .map(|(order, record)| Ok((ticket_key(&project, order), record.to_vec())))
                .collect())
        })
    }

    /// Every ticket without its history ([`crate::core::record::decode_head`]), in key order, read
    /// straight from the chunks: what the query view is built from.
    pub fn ticket_heads(&self) -> impl Iterator<Item = Result<Ticket, StoreError>> + '_ {
        self.per_chunk(|key, entries| {
            Ok(entries
                .into_iter()
                .map(|(_, record)| {
                    crate::core::record::decode_head(record).map_err(|e| corrupt(key, e))
                })
                .collect())
        })
    }

    /// What `each` makes of every chunk's key and entries, flattened, in key order; a chunk that
    /// cannot be read (or that `each` refuses) is one error in its place.
    fn per_chunk<'s, T: 's>(
        &'s self,
        each: impl Fn(&[u8], Vec<(u64, &[u8])>) -> Result<Vec<Result<T, StoreError>>, StoreError> + 's,
    ) -> impl Iterator<Item = Result<T, StoreError>> + 's {
        self.db.scan_prefix([TICKET]).flat_map(move |kv| {
            let items = kv
                .map_err(StoreError::from)
                .and_then(|(k, v)| each(&k, chunk_entries(&k, &v)?));
            items.unwrap_or_else(|e| vec![Err(e)])
        })
    }

    /// Every dead letter, in stream order.
    pub fn dead_letters(&self) -> impl Iterator<Item = Result<DeadLetter, StoreError>> + '_ {
        self.db.scan_prefix([DEAD]).map(|kv| {
            let (k, v) = kv?;
            decode_dead_letter(&k, &v)
        })
    }

    /// One dead letter.
    pub fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        let key = dead_key(seq);
        self.db
            .get(&key)?
            .map(|v| decode_dead_letter(&key, &v))
            .transpose()
    }

    /// Writes tickets, dead letters (new or updated) and the position they reach, one key at a
    /// time (see the module's documentation): after a crash the position is either the new one,
    /// with everything, or the old one, with the records of some tickets ahead of it. Returns
    /// the bytes of keys and values written.
    pub fn write<'a>(
        &self,
        tickets: impl IntoIterator<Item = &'a Ticket>,
        plan_parts: impl IntoIterator<Item = (&'a Ticket, PlanPart)>,
        dead_letters: impl IntoIterator<Item = &'a DeadLetter>,
        applied_seq: u64,
    ) -> Result<u64, StoreError> {
        let mut out = Writes {
            db: &self.db,
            bytes: 0,
        };
        // From here records may run ahead of the stored position. Never lowered: after a flush
        // cut short, the first flushes of the next run reach less far than that one did, and
        // its records stay ahead of them until the position passes it.
        self.raise_redo_until(applied_seq)?;
        out.bytes += (REDO_UNTIL.len() + 8) as u64;
        for d in dead_letters {
            out.put(&dead_key(d.seq), &encode_dead_letter(d))?;
        }
        // In key order, so that each chunk's tickets come together and ascending, and each
        // ticket's plan parts are met beside its chunk.
        let mut tickets: Vec<&Ticket> = tickets.into_iter().collect();
        tickets.sort_unstable_by(|a, b| (&a.project, a.order_id).cmp(&(&b.project, b.order_id)));
        let mut parts: Vec<(&Ticket, PlanPart)> = plan_parts.into_iter().collect();
        parts.sort_unstable_by(|a, b| {
            (&a.0.project, a.0.order_id).cmp(&(&b.0.project, b.0.order_id))
        });
        let mut parts = parts.into_iter().peekable();
        // The chunks of tickets whose plan changed, and the parts: journaled, then written.
        let mut journal = journal::Builder::new(applied_seq);
        let mut after_journal: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for chunk in tickets.chunk_by(|a, b| {
            a.project == b.project && a.order_id >> CHUNK_BITS == b.order_id >> CHUNK_BITS
        }) {
            let key = chunk_key(&chunk[0].project, chunk[0].order_id);
            let (records, ends) = encoded(chunk);
            let new = entries_of(chunk, &records, &ends);
            let value = self.merge_into_chunk(&key, &new)?;
            let last = chunk[chunk.len() - 1];
            let mut planned: Vec<&Ticket> = Vec::new();
            while let Some((t, part)) =
                parts.next_if(|(t, _)| (&t.project, t.order_id) <= (&last.project, last.order_id))
            {
                journal.part(&mut after_journal, t, part);
                if planned.last().is_none_or(|p| p.order_id != t.order_id) {
                    planned.push(t);
                }
            }
            if planned.is_empty() {
                out.put(&key, &value)?;
                continue;
            }
            for t in planned {
                // The record just encoded for the chunk: `new` ascends by order_id.
                let at = new
                    .binary_search_by_key(&t.order_id, |(order, _)| *order)
                    .expect("a planned ticket is in its chunk");
                journal.push(
                    journal::RECORD,
                    &key,
                    &[&t.order_id.to_be_bytes(), new[at].1],
                );
            }
            after_journal.push((key, value));
        }
        for (t, part) in parts {
            journal.part(&mut after_journal, t, part);
        }
        if !journal.is_empty() {
            self.write_journal(&journal.0)?;
            out.bytes += journal.0.len() as u64;
            drop(journal);
            for (k, v) in &after_journal {
                out.put(k, v)?;
            }
        }
        out.put(APPLIED_SEQ, &applied_seq.to_be_bytes())?;
        // Written out now rather than by sled's flusher within 200 ms: a batch did that at the
        // start of the next one (sled rolls its buffer before each batch), so a crash cost at
        // most the flush being written, and it still does. No lock is taken for it.
        self.db.flush()?;
        Ok(out.bytes)
    }

    /// Puts the plan journal beside sled's files, whole and on disk before any key it covers
    /// is written: a file written aside, synced, renamed over the last one, and the directory
    /// synced, so that the journal found later is either the last one whole or an older one.
    fn write_journal(&self, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let tmp = self.dir.join(format!("{JOURNAL}.tmp"));
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(JOURNAL)))
            .and_then(|()| std::fs::File::open(&*self.dir)?.sync_all())
            .map_err(StoreError::Io)
    }

    /// The chunk `key` as stored, with the records `new` (ascending by `order_id`) in it.
    fn merge_into_chunk(&self, key: &[u8], new: &[(u64, &[u8])]) -> Result<Vec<u8>, StoreError> {
        let old = self.db.get(key)?;
        let old = match &old {
            Some(v) => chunk_entries(key, v)?,
            None => Vec::new(),
        };
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
        Ok(out)
    }

    /// Bytes of the records' own data as stored (chunk keys and values), as the benchmark's disk
    /// ratio counts them.
    pub fn record_bytes(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for kv in self
            .db
            .scan_prefix([TICKET])
            .chain(self.db.scan_prefix([super::plans::PLAN]))
        {
            let (k, v) = kv?;
            n += (k.len() + v.len()) as u64;
        }
        Ok(n)
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Read first: whatever a concurrent write adds after this is not covered by the flush.
        let seq = self.applied_seq()?;
        self.db.flush()?;
        let tmp = self.dir.join(format!("{SEAL}.tmp"));
        std::fs::write(&tmp, format!("{seq}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(SEAL)))
            .map_err(StoreError::Io)?;
        Ok(())
    }

    /// Bytes free for this process on the store's filesystem.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = rustix::fs::statvfs(&*self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// The records of `chunk` (ascending by `order_id`), encoded one after another, and where
/// each ends.
fn encoded(chunk: &[&Ticket]) -> (Vec<u8>, Vec<usize>) {
    let mut records = Vec::new();
    let mut ends = Vec::with_capacity(chunk.len());
    for t in chunk {
        crate::core::record::encode_into(t, &mut records);
        ends.push(records.len());
    }
    (records, ends)
}

/// Each ticket of `chunk` with its record in `records` (as [`encoded`] laid them out).
fn entries_of<'r>(chunk: &[&Ticket], records: &'r [u8], ends: &[usize]) -> Vec<(u64, &'r [u8])> {
    let starts = std::iter::once(0).chain(ends.iter().copied());
    chunk
        .iter()
        .zip(starts.zip(ends))
        .map(|(t, (start, &end))| (t.order_id, &records[start..end]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::domain::Status;

    const PER_CHUNK: u64 = 1 << CHUNK_BITS;

    pub(crate) fn ticket(project: &str, order_id: u64) -> Ticket {
        Ticket {
            project: ProjectId::parse(project).unwrap(),
            order_id,
            order_name: "n".into(),
            execute_uuid: "u".into(),
            creator: "c".into(),
            region_ids: "r".into(),
            job_type: "SCRIPT".into(),
            gmt_created: 1,
            gmt_finished: None,
            execute_costs: None,
            status: Status::Ready,
            history: vec![],
            current_execute_batch_index: None,
            duplicates_unrecorded: 0,
            plan: None,
        }
    }

    /// A store whose lock is held is opened once the holder lets go (within the lock wait), not
    /// refused at once; held past it, the error says so.
    #[test]
    fn a_locked_store_is_opened_once_its_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        first.write(&[ticket("a", 1)], [], [], 1).unwrap();
        first.flush().unwrap();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        let second = std::thread::spawn(move || {
            let s = Store::open(&path);
            opened_tx.send(()).unwrap();
            s
        });
        // While the first holds the lock, the second waits rather than failing.
        assert!(
            opened_rx
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "opened while the lock was held"
        );
        drop(first);
        let second = second
            .join()
            .unwrap()
            .expect("opened once the lock was released");
        assert_eq!(second.applied_seq().unwrap(), 1);
    }

    /// Every flush marks the position it reaches before anything else and the position last:
    /// once it is all written nothing is ahead of the position and every record reads back; cut
    /// short, the mark says how far records may be ahead.
    #[test]
    fn a_flush_marks_where_it_reaches_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tickets: Vec<Ticket> = (1..=8_000)
            .map(|i| Ticket {
                order_name: format!("a job with a name long enough to matter {i:>40}").into(),
                ..ticket("a", i)
            })
            .collect();
        store.write(&tickets, [], [], 42).unwrap();
        let redo = store.db.get(REDO_UNTIL).unwrap().expect("marked");
        assert_eq!(u64_value(REDO_UNTIL, &redo).unwrap(), 42);
        assert_eq!(
            (store.applied_seq().unwrap(), store.redo_until().unwrap()),
            (42, 0)
        );
        for t in &tickets {
            assert_eq!(
                store.ticket(&t.project, t.order_id).unwrap().as_ref(),
                Some(t)
            );
        }
        // As a crash before the position leaves it: records ahead of the position.
        store.db.insert(APPLIED_SEQ, &40u64.to_be_bytes()).unwrap();
        assert_eq!(store.redo_until().unwrap(), 42);
        // The next run's first flush reaches less far, and is cut short too: the mark stays
        // where the records ahead reach (a crash test found it lowered, and events folded
        // twice).
        store.write(&tickets[..1], [], [], 41).unwrap();
        store.db.insert(APPLIED_SEQ, &40u64.to_be_bytes()).unwrap();
        assert_eq!(store.redo_until().unwrap(), 42);
        // No plan changed: no journal.
        assert!(!dir.path().join(JOURNAL).exists());
    }

    /// A ticket with a plan of two batches, folded from its `created` event at sequence 1.
    fn planned(order_id: u64) -> Ticket {
        let data = serde_json::json!({
            "project_id": "p", "order_id": order_id, "execute_uuid": "SCT5",
            "order_name": "patch", "creator": "alice", "region_ids": "cn-north-4",
            "script_uuid": "SC1", "script_name": "install", "script_version_uuid": 7,
            "script_version_name": "v7",
            "execute_param": {"resourceful": true, "timeout": 300, "success_rate": 99.5,
                "execute_user": "root", "script_params": []},
            "execute_batches": [
                {"batch_index": 1, "rotation_strategy": "CONTINUE", "target_instances": [
                    {"instance_id": 10, "resource_id": "r10"}]},
                {"batch_index": 2, "rotation_strategy": "PAUSE", "target_instances": [
                    {"instance_id": 30, "resource_id": "r30"}]}]
        });
        let e = event("created", "c", data);
        let t = crate::core::fold::apply(None, &e, 1).ticket.unwrap();
        assert!(t.plan.is_some());
        t
    }

    fn event(kind: &str, id: &str, data: serde_json::Value) -> crate::core::events::Event {
        let v = serde_json::json!({
            "specversion": "1.0", "id": id, "source": "exec",
            "type": format!("coc.job.script.{kind}"), "time": "2026-01-01T00:00:00Z", "data": data,
        });
        let subject = format!("coc.job.script.p.{kind}");
        let bytes = serde_json::to_vec(&v).unwrap();
        crate::core::events::decode(&subject, &bytes, "coc.job.script", 1 << 20).unwrap()
    }

    /// A flush that changed a plan and was cut short after its plan journal (some of the
    /// ticket's keys of the old state, some of the new) is completed when the store is opened:
    /// the record and its plan are of one state again, the new one. A journal whose flush
    /// completed is not written again over what came after it, even when a later flush is cut
    /// short.
    #[test]
    fn a_flush_cut_short_after_its_plan_journal_is_completed_at_opening() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProjectId::parse("p").unwrap();
        let first = planned(5);
        let mut second = Some(first.clone());
        let started = event(
            "instance_started",
            "s",
            serde_json::json!({"project_id": "p", "order_id": 5, "batch_index": 1,
                               "instance_id": 10}),
        );
        crate::core::fold::apply_in_place(&mut second, started, 2);
        // And the ticket's own state moved in the same flush, so its record changed too.
        let second = Ticket {
            status: Status::Processing,
            ..second.unwrap()
        };
        let chunk = chunk_key(&p, 5);
        let batch_1 = {
            let mut k = keyed(super::super::plans::PLAN, &p, 5);
            k.extend_from_slice(&1u32.to_be_bytes());
            k
        };
        let store = {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(
                    [&first, &ticket("a", 1)],
                    [(&first, PlanPart::Whole)],
                    [],
                    1,
                )
                .unwrap();
            let old = |k: &[u8]| store.db.get(k).unwrap().unwrap();
            let (old_chunk, old_batch) = (old(&chunk), old(&batch_1));
            store
                .write(
                    [&second, &ticket("a", 2)],
                    [(&second, PlanPart::Batch(1))],
                    [],
                    2,
                )
                .unwrap();
            // Cut short after the journal: the record's new state lost, the batch's kept, and
            // the mark too (sled had not written it out yet when the journal was on disk).
            assert_ne!(store.db.get(&chunk).unwrap().unwrap(), old_chunk);
            store.db.insert(&chunk, old_chunk).unwrap();
            store.db.insert(REDO_UNTIL, &1u64.to_be_bytes()).unwrap();
            assert_ne!(store.db.get(&batch_1).unwrap().unwrap(), old_batch);
            store
        };
        let store = cut_and_reopen(store, dir.path(), 1);
        assert_eq!(store.ticket(&p, 5).unwrap().as_ref(), Some(&second));
        assert_eq!(
            (store.applied_seq().unwrap(), store.redo_until().unwrap()),
            (1, 2)
        );
        // The flush completes; a later one, with no plan part, changes the ticket again and is
        // cut short: the earlier journal is not its own, so it is left alone.
        store.write([&second], [], [], 2).unwrap();
        let third = Ticket {
            status: Status::Finished,
            ..second.clone()
        };
        store.write([&third], [], [], 3).unwrap();
        let store = cut_and_reopen(store, dir.path(), 2);
        assert_eq!(store.redo_until().unwrap(), 3);
        assert_eq!(store.ticket(&p, 5).unwrap(), Some(third.clone()));
        // Records of a flush cut short earlier reach 10; a plan's flush to 4 is cut short after
        // its journal: the mark stays at 10, and the journal is still written again.
        store.write([&third], [], [], 3).unwrap();
        store.db.insert(REDO_UNTIL, &10u64.to_be_bytes()).unwrap();
        let before = store.db.get(&chunk).unwrap().unwrap();
        let fourth = Ticket {
            order_name: "patched".into(),
            ..third.clone()
        };
        store
            .write([&fourth], [(&fourth, PlanPart::Whole)], [], 4)
            .unwrap();
        store.db.insert(&chunk, before).unwrap();
        let store = cut_and_reopen(store, dir.path(), 3);
        assert_eq!(store.redo_until().unwrap(), 10);
        assert_eq!(store.ticket(&p, 5).unwrap(), Some(fourth));
    }

    /// Leaves `store` as a crash before its last position was written leaves it (the position
    /// back at `applied`, the seal gone with it), and opens it again.
    fn cut_and_reopen(store: Store, dir: &Path, applied: u64) -> Store {
        store
            .db
            .insert(APPLIED_SEQ, &applied.to_be_bytes())
            .unwrap();
        store.flush().unwrap();
        drop(store);
        std::fs::remove_file(dir.join(SEAL)).unwrap();
        Store::open(dir).unwrap()
    }

    /// A journal that is not one (cut, or damaged) is refused at opening, naming its file.
    #[test]
    fn a_damaged_plan_journal_is_refused() {
        assert!(journal::decode(&[0; 7]).is_err());
        let mut j = journal::Builder::new(9);
        j.push(journal::PART, b"k", &[b"val", b"ue"]);
        j.push(journal::RECORD, b"c", &[&5u64.to_be_bytes(), b"r"]);
        let good = j.0;
        let record = [&5u64.to_be_bytes()[..], b"r"].concat();
        assert_eq!(
            journal::decode(&good).unwrap(),
            (
                9,
                vec![
                    (journal::PART, &b"k"[..], &b"value"[..]),
                    (journal::RECORD, &b"c"[..], &record[..])
                ]
            )
        );
        assert!(journal::decode(&good[..good.len() - 1]).is_err());
        let mut unknown = good.clone();
        unknown[8] = 7;
        assert!(journal::decode(&unknown).is_err());
        // At opening, beside a store: refused, naming the file.
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(JOURNAL), &good[..good.len() - 1]).unwrap();
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains(JOURNAL), "{err}");
    }

    /// A store whose sled position is below the one its last flush sealed has lost the end of
    /// its log: refused, naming sled's file.
    #[test]
    fn a_store_behind_its_seal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write(&[ticket("a", 1)], [], [], 7).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SEAL)).unwrap(),
            "7\n"
        );
        Store::open(dir.path()).expect("at its seal: opens");
        std::fs::write(dir.path().join(SEAL), "9\n").unwrap();
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("db") && text.contains("through sequence 9"),
            "{text}"
        );
    }

    /// A store written by another format version is refused with both versions named, and
    /// left as it was.
    #[test]
    fn a_store_of_another_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write(&[ticket("a", 1)], [], [], 1).unwrap();
            store.db.insert(FORMAT, &5u64.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(err, StoreError::Format { found: 5 }), "{err}");
        assert!(
            err.to_string().contains('5') && err.to_string().contains(&FORMAT_VERSION.to_string()),
            "{err}"
        );
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(
            db.get(FORMAT).unwrap().unwrap().as_ref(),
            5u64.to_be_bytes()
        );
        assert!(
            db.get(APPLIED_SEQ).unwrap().is_some(),
            "the data is still there"
        );
    }

    #[test]
    fn records_written_apart_merge_into_their_chunks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Three chunks' worth of ids, written in two halves that interleave in every chunk.
        let n = 3 * PER_CHUNK;
        let evens: Vec<Ticket> = (1..=n / 2).map(|o| ticket("a", o * 2)).collect();
        store.write(&evens, [], [], 1).unwrap();
        // Odd ones between them, one even rewritten, and another project, in no order.
        let mut later: Vec<Ticket> = (0..n / 2).rev().map(|o| ticket("a", o * 2 + 1)).collect();
        let mut changed = ticket("a", PER_CHUNK);
        changed.status = Status::Finished;
        later.push(changed.clone());
        later.push(ticket("b", 3));
        store.write(&later, [], [], 2).unwrap();
        let got: Vec<(String, u64)> = store
            .tickets()
            .map(|t| t.map(|t| (t.project.to_string(), t.order_id)).unwrap())
            .collect();
        let mut want: Vec<(String, u64)> = (1..=n).map(|o| ("a".to_owned(), o)).collect();
        want.push(("b".to_owned(), 3));
        assert_eq!(got, want);
        let a = ProjectId::parse("a").unwrap();
        assert_eq!(store.ticket(&a, PER_CHUNK).unwrap(), Some(changed));
        assert_eq!(
            store.ticket(&a, PER_CHUNK - 1).unwrap(),
            Some(ticket("a", PER_CHUNK - 1))
        );
    }

    #[test]
    fn rewriting_one_ticket_of_a_chunk_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Three chunks and a bit; then one ticket of the second chunk rewritten, and one far
        // beyond the rest.
        let n = 3 * PER_CHUNK + 8;
        let all: Vec<Ticket> = (1..=n).map(|o| ticket("a", o)).collect();
        store.write(&all, [], [], n).unwrap();
        let inner = PER_CHUNK + 6;
        let far = 10 * PER_CHUNK;
        let mut changed = ticket("a", inner);
        changed.status = Status::Processing;
        store
            .write([&changed, &ticket("a", far)], [], [], n + 1)
            .unwrap();
        let got: Vec<Ticket> = store.tickets().map(Result::unwrap).collect();
        assert_eq!(got.len() as u64, n + 1);
        assert_eq!(got[inner as usize - 1], changed);
        assert_eq!(got[inner as usize - 2], ticket("a", inner - 1));
        assert_eq!(got[inner as usize], ticket("a", inner + 1));
        assert_eq!(got[n as usize].order_id, far);
        let keys: Vec<u64> = store
            .raw_tickets()
            .map(|r| ticket_key_parts(&r.unwrap().0).unwrap().1)
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
        assert_eq!(
            store
                .ticket(&ProjectId::parse("a").unwrap(), inner)
                .unwrap(),
            Some(changed)
        );
        assert_eq!(
            store
                .ticket(&ProjectId::parse("a").unwrap(), n + 1)
                .unwrap(),
            None
        );
    }

    #[test]
    fn ticket_keys_split_back_into_project_and_order() {
        let p = ProjectId::parse("proj-1").unwrap();
        assert_eq!(ticket_key_parts(&ticket_key(&p, 258)), Some((p, 258)));
        assert_eq!(ticket_key_parts(b"d12345678"), None);
        assert_eq!(ticket_key_parts(b"t"), None);
    }

    #[test]
    fn a_commit_stores_tickets_dead_letters_and_position_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.applied_seq().unwrap(), 0);
        let dl = DeadLetter {
            seq: 3,
            subject: "s".into(),
            code: "malformed_json".into(),
            reason: "bad".into(),
            payload: vec![0, 159, 146, 150, b'{'],
            redriven_by: None,
            ce_headers: Vec::new(),
        };
        store
            .write(
                &[ticket("a", 2), ticket("a", 10), ticket("b", 1)],
                [],
                [&dl],
                3,
            )
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.applied_seq().unwrap(), 3);
        let all: Vec<_> = store.tickets().map(Result::unwrap).collect();
        let keys: Vec<_> = all
            .iter()
            .map(|t| (t.project.as_str(), t.order_id))
            .collect();
        assert_eq!(keys, [("a", 2), ("a", 10), ("b", 1)]);
        assert_eq!(
            store.ticket(&ProjectId::parse("a").unwrap(), 10).unwrap(),
            Some(ticket("a", 10))
        );
        assert_eq!(
            store.ticket(&ProjectId::parse("b").unwrap(), 10).unwrap(),
            None
        );
        let dls: Vec<_> = store.dead_letters().map(Result::unwrap).collect();
        assert_eq!(dls, [dl]);
    }
}
