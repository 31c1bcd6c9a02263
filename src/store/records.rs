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
use super::chunks::{self, CHUNK_BITS, encoded, entries_of};
use super::journal;
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

fn chunk_key(project: &ProjectId, order_id: u64) -> Vec<u8> {
    ticket_key(project, order_id >> CHUNK_BITS)
}

/// The entries of the chunk stored under `key`: (order_id, record bytes), ascending.
fn chunk_entries<'a>(key: &[u8], v: &'a [u8]) -> Result<Vec<(u64, &'a [u8])>, StoreError> {
    chunks::entries(v).map_err(|e| corrupt(key, e))
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
        Ok(chunks::merged(&old, new))
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

#[cfg(test)]
mod tests;
