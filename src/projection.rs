//! The projection: the durable store and the in-memory query view, kept in step.
//!
//! Writers (the ingest loop, a rebuild) go through [`Projection::commit`]: the batch's tickets go
//! into the query view at once and into a write-behind buffer, and the buffer is written to sled
//! as one atomic batch every [`FlushPolicy`] (so a ticket touched by many batches in between is
//! written once, and one sled write carries hundreds of thousands of events). The stream
//! position written with a flush is the position the flushed tickets reach, never more: after a
//! crash the daemon resumes there and folds the rest again from the stream, which still holds it.
//! Readers (the API) take the view's read lock, or the buffer before sled for a single record.
//! [`Ledger`] holds the live projection and swaps in a rebuilt one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, mpsc};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::batch::{Decoded, TicketKey, fold_decoded};
use crate::domain::ProjectId;
use crate::fold::Ticket;
use crate::index::{Index, Page, Query};
use crate::store::{Commit, DeadLetter, Store, StoreError};

/// When folded state is written to sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Write once this many stream messages have been folded since the last write...
    pub max_events: u64,
    /// ... or once the oldest unwritten commit is this old.
    pub max_interval: Duration,
    /// sled's page cache, MiB.
    pub cache_mb: u64,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            max_events: 50_000,
            max_interval: Duration::from_secs(1),
            cache_mb: crate::store::DEFAULT_CACHE_MB,
        }
    }
}

/// What has been folded and made visible but not yet handed to the writer.
#[derive(Default)]
struct Pending {
    tickets: FxHashMap<TicketKey, Ticket>,
    dead_letters: BTreeMap<u64, DeadLetter>,
    /// Messages folded since the last hand-off.
    events: u64,
    /// When the oldest commit not yet handed off was made.
    since: Option<Instant>,
    /// Kept across hand-offs.
    seen: Seen,
}

/// Which tickets a projection may hold (in the buffer, the write in flight or sled), so that the
/// look-up of one it cannot hold skips sled:
/// - per project, the largest `order_id` held: a ticket above it cannot exist yet. That is most
///   `created` events of new tickets, since executors hand out `order_id`s in increasing order;
/// - a Bloom filter of every ticket held: a ticket it has never seen cannot exist either. That is
///   a `created` that arrives after a later ticket's, as executors running tickets side by side
///   emit them (about half of them in the benchmark's history, each a sled look-up that found
///   nothing). A false positive (about 1%) costs one look-up, never a wrong answer.
#[derive(Default)]
struct Seen {
    newest: FxHashMap<ProjectId, u64>,
    filter: Bloom,
}

impl Seen {
    /// Whether no ticket `key` can exist.
    fn is_unseen(&self, key: &TicketKey) -> bool {
        self.newest.get(&key.0).is_none_or(|&n| key.1 > n) || !self.filter.may_contain(key)
    }

    fn saw(&mut self, project: &ProjectId, order_id: u64) {
        match self.newest.get_mut(project) {
            Some(n) => *n = (*n).max(order_id),
            None => {
                self.newest.insert(project.clone(), order_id);
            }
        }
        self.filter.insert(project.as_str(), order_id);
    }
}

/// A Bloom filter of ticket keys that grows: layers of doubling capacity, each about 1% false
/// positives at its capacity; a key is added to the newest layer and looked for in all. Each
/// key's probes fall in one 64-byte block (one cache miss per layer, not one per probe).
#[derive(Default)]
struct Bloom {
    layers: Vec<BloomLayer>,
}

struct BloomLayer {
    blocks: Vec<[u64; 8]>,
    capacity: usize,
    len: usize,
}

impl Bloom {
    /// Keys the first layer is sized for (1.25 MiB).
    const FIRST: usize = 1 << 20;
    /// Bits per key and probes per key: about 1% false positives.
    const BITS_PER_KEY: usize = 10;
    const PROBES: u32 = 7;

    /// Two independent 64-bit hashes of a key (splitmix64 over FxHash): one picks the block, the
    /// other's 9-bit pieces the bits in it.
    fn hashes(project: &str, order_id: u64) -> (u64, u64) {
        use std::hash::BuildHasher;
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let h = mix(rustc_hash::FxBuildHasher.hash_one((project, order_id)));
        (h, mix(h ^ 0x9e37_79b9_7f4a_7c15))
    }

    fn may_contain(&self, (project, order_id): &TicketKey) -> bool {
        let (h1, h2) = Self::hashes(project.as_str(), *order_id);
        self.layers.iter().any(|l| l.test(h1, h2))
    }

    fn insert(&mut self, project: &str, order_id: u64) {
        let (h1, h2) = Self::hashes(project, order_id);
        if self.layers.iter().any(|l| l.test(h1, h2)) {
            return; // (or a false positive: harmless, it only costs a look-up)
        }
        if self.layers.last().is_none_or(|l| l.len >= l.capacity) {
            let capacity = self.layers.last().map_or(Self::FIRST, |l| l.capacity * 2);
            self.layers.push(BloomLayer {
                blocks: vec![[0; 8]; (capacity * Self::BITS_PER_KEY).div_ceil(512)],
                capacity,
                len: 0,
            });
        }
        let layer = self.layers.last_mut().expect("a layer was just made");
        let block = (h1 % layer.blocks.len() as u64) as usize;
        for i in 0..Self::PROBES {
            let bit = (h2 >> (9 * i)) & 511;
            layer.blocks[block][(bit / 64) as usize] |= 1 << (bit % 64);
        }
        layer.len += 1;
    }
}

impl BloomLayer {
    fn test(&self, h1: u64, h2: u64) -> bool {
        let block = &self.blocks[(h1 % self.blocks.len() as u64) as usize];
        (0..Bloom::PROBES).all(|i| {
            let bit = (h2 >> (9 * i)) & 511;
            block[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }
}

/// A write handed to the background writer: everything one flush writes, atomically.
struct Snapshot {
    tickets: FxHashMap<TicketKey, Ticket>,
    dead_letters: BTreeMap<u64, DeadLetter>,
    applied_seq: u64,
}

/// The writer's side: the snapshot being written (readers look there between the buffer and
/// sled), the last one written, and the outcome of the last write.
#[derive(Default)]
struct Writer {
    in_flight: Option<Arc<Snapshot>>,
    /// The snapshot written last, kept until the next write ends: the tickets live when a write
    /// is handed off (a ticket lives for a few thousand events) are the ones the next events
    /// touch, and are found here rather than in sled. What it holds is what sled holds for them,
    /// unless a later state is in the buffer or in flight, which are looked at first.
    last_written: Option<Arc<Snapshot>>,
    failed: Option<String>,
    durable_seq: u64,
    /// The ticket map of a snapshot retired after its write, emptied, for the next hand-off to
    /// fill: the buffer's map then starts at the size it reached before instead of growing from
    /// nothing by rehashing (a copy of every entry each time it doubles, into fresh pages).
    spare: Option<FxHashMap<TicketKey, Ticket>>,
}

impl Writer {
    /// Records that the snapshot in flight is written; returns the one written before it, for
    /// the caller to drop outside the lock.
    fn written(&mut self) -> Option<Arc<Snapshot>> {
        let snap = self.in_flight.take();
        if let Some(s) = &snap {
            self.durable_seq = s.applied_seq;
        }
        self.failed = None;
        std::mem::replace(&mut self.last_written, snap)
    }
}

/// State shared with the writer thread.
struct Shared {
    writer: Mutex<Writer>,
    written: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The projection shared by ingest and the API.
pub struct Projection {
    store: Store,
    /// The query view. A rebuilt generation shares the live one's (see [`Ledger::switch_to`]).
    index: Arc<RwLock<Index>>,
    /// Whether commits update `index`: not while a rebuild catches up, since the view it shares
    /// is the live one.
    maintains_view: AtomicBool,
    /// The position the view reflects while it is not kept (see [`Projection::suspend_view`]).
    view_frozen_at: AtomicU64,
    /// Set when a fold failed halfway (see [`Projection::fold`]).
    poisoned: AtomicBool,
    applied_seq: AtomicU64,
    pending: Mutex<Pending>,
    shared: Arc<Shared>,
    to_writer: Mutex<Option<mpsc::Sender<Arc<Snapshot>>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    policy: FlushPolicy,
}

impl Drop for Projection {
    /// Stops the writer thread and waits for it, so that its handle on sled is gone (and the
    /// store can be opened again) when the projection is.
    fn drop(&mut self) {
        drop(
            self.to_writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(t) = self
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

impl Projection {
    /// Opens the store, rebuilds the query view from its records, and starts the writer thread.
    pub fn open(dir: &Path, policy: FlushPolicy) -> Result<Self, StoreError> {
        let store = Store::open_with_cache(dir, policy.cache_mb)?;
        let mut seen = Seen::default();
        let index = load_view(&store, Some(&mut seen))?;
        let projection = Self::with_view(store, policy, Arc::new(RwLock::new(index)), true)?;
        projection.pending().seen = seen;
        Ok(projection)
    }

    /// Opens an empty generation for a rebuild, sharing `live_view` without updating it until
    /// [`Ledger::switch_to`] patches it to this generation's records. So a rebuild holds one
    /// query view in memory, not two.
    fn open_rebuild(
        dir: &Path,
        policy: FlushPolicy,
        live_view: Arc<RwLock<Index>>,
    ) -> Result<Self, StoreError> {
        Self::with_view(
            Store::open_with_cache(dir, policy.cache_mb)?,
            policy,
            live_view,
            false,
        )
    }

    fn with_view(
        store: Store,
        policy: FlushPolicy,
        index: Arc<RwLock<Index>>,
        maintains_view: bool,
    ) -> Result<Self, StoreError> {
        let applied = store.applied_seq()?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                durable_seq: applied,
                ..Default::default()
            }),
            written: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<Arc<Snapshot>>();
        let (w_store, w_shared) = (store.clone(), shared.clone());
        let writer_thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // Ends when the projection (the sender) is dropped.
                for snap in rx {
                    let result = write_snapshot(&w_store, &snap);
                    drop(snap);
                    let mut w = w_shared.lock();
                    let previous = match result {
                        Ok(()) => w.written(),
                        Err(e) => {
                            tracing::error!(error = %e, "writing to sled failed; retried at the next write");
                            w.failed = Some(e.to_string());
                            None
                        }
                    };
                    drop(w);
                    w_shared.written.notify_all();
                    if let Some(map) = previous.and_then(emptied) {
                        w_shared.lock().spare = Some(map);
                    }
                }
            })
            .map_err(|e| StoreError::Sled(e.into()))?;
        Ok(Self {
            store,
            index,
            maintains_view: AtomicBool::new(maintains_view),
            view_frozen_at: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            applied_seq: AtomicU64::new(applied),
            pending: Mutex::new(Pending::default()),
            shared,
            to_writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(writer_thread)),
            policy,
        })
    }

    /// Stops keeping the query view in step, for folding a long backlog: a row is then built
    /// once per ticket, from sled, by [`Projection::resume_view`], rather than once per batch
    /// that touches the ticket (the view's upkeep is the largest part of a fold). Until then
    /// queries see the view as it was, and [`Projection::view_seq`] says how far that is.
    pub fn suspend_view(&self) {
        let _commits = self.pending();
        if self.maintains_view.swap(false, Ordering::AcqRel) {
            self.view_frozen_at
                .store(self.applied_seq(), Ordering::Release);
        }
    }

    /// Writes everything, builds the view afresh from the records and keeps it in step again.
    /// The old view answers queries until the new one replaces it. Callers serialise commits
    /// (the ledger's commit lock).
    pub fn resume_view(&self) -> Result<(), StoreError> {
        if self.view_kept() {
            return Ok(());
        }
        self.persist()?;
        self.replace_view(&self.store)?;
        self.maintains_view.store(true, Ordering::Release);
        Ok(())
    }

    /// Replaces the (shared) query view by one built from `records`' tickets. The old view
    /// answers queries until then.
    fn replace_view(&self, records: &Store) -> Result<(), StoreError> {
        // The buffer's `Seen` has followed every commit; it need not be rebuilt.
        let index = load_view(records, None)?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// Whether commits keep the query view in step.
    pub fn view_kept(&self) -> bool {
        self.maintains_view.load(Ordering::Acquire)
    }

    /// The stream position the query view reflects.
    pub fn view_seq(&self) -> u64 {
        if self.view_kept() {
            self.applied_seq()
        } else {
            self.view_frozen_at.load(Ordering::Acquire)
        }
    }

    /// The durable store. What it holds may lag the view by up to one [`FlushPolicy`] (and one
    /// write in progress); call [`Projection::persist`] first to read everything from it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Last stream sequence whose effects are visible.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// Last stream sequence whose effects are in sled.
    pub fn durable_seq(&self) -> u64 {
        self.shared.lock().durable_seq
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket's current record: from the write-behind buffer, else from the write in
    /// progress, else from sled.
    pub fn ticket(&self, project: &ProjectId, order_id: u64) -> Result<Option<Ticket>, StoreError> {
        let key = (project.clone(), order_id);
        if let Some(t) = self.pending().tickets.get(&key) {
            return Ok(Some(t.clone()));
        }
        self.cold_ticket(&key)
    }

    fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        if let Some(snap) = self.shared.lock().in_flight.clone()
            && let Some(d) = snap.dead_letters.get(&seq)
        {
            return Ok(Some(d.clone()));
        }
        self.store.dead_letter(seq)
    }

    /// Folds a decoded batch into this projection and commits it (see [`Projection::commit`]).
    /// Returns the commit's dead letters, for the caller's log. Callers serialise commits.
    ///
    /// Tickets in the write-behind buffer are moved into the fold and back, never copied. If a
    /// look-up in sled fails halfway, the tickets already moved out are gone from the buffer, so
    /// the projection refuses every later commit ([`StoreError::Inconsistent`]) until the daemon
    /// restarts from what sled holds.
    pub fn fold(&self, batch: Vec<Decoded>) -> Result<Vec<DeadLetter>, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Inconsistent);
        }
        let applied = self.applied_seq();
        let mut pending = self.pending();
        let folded = fold_decoded(batch, applied, |k| match pending.tickets.remove(k) {
            Some(t) => Ok(Some(t)),
            None if pending.seen.is_unseen(k) => Ok(None),
            None => self.cold_ticket(k),
        });
        let commit = match folded {
            Ok(c) => c,
            Err(e) => {
                self.poisoned.store(true, Ordering::Release);
                tracing::error!(error = %e, "a ticket look-up failed mid-batch: restart the daemon");
                return Err(e);
            }
        };
        if commit.applied_seq <= applied {
            // Everything was at or below the applied position: put the tickets back untouched.
            for t in commit.tickets {
                pending.tickets.insert((t.project.clone(), t.order_id), t);
            }
            return Ok(Vec::new());
        }
        let dead = commit.dead_letters.clone();
        self.commit_locked(&mut pending, commit)?;
        Ok(dead)
    }

    /// A ticket that is not in the write-behind buffer: from the write in progress, the write
    /// before it, or sled.
    fn cold_ticket(&self, key: &TicketKey) -> Result<Option<Ticket>, StoreError> {
        let snapshots = {
            let w = self.shared.lock();
            [w.in_flight.clone(), w.last_written.clone()]
        };
        for snap in snapshots.into_iter().flatten() {
            if let Some(t) = snap.tickets.get(key) {
                return Ok(Some(t.clone()));
            }
        }
        self.store.ticket(&key.0, key.1)
    }

    /// Makes a batch visible and buffers it for sled, handing the buffer to the writer if the
    /// policy says so. Callers serialise commits (the ledger's commit lock).
    pub fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Inconsistent);
        }
        let mut pending = self.pending();
        self.commit_locked(&mut pending, commit)
    }

    fn commit_locked(&self, pending: &mut Pending, commit: Commit) -> Result<(), StoreError> {
        let before = self.applied_seq();
        if self.maintains_view.load(Ordering::Acquire) {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            for t in &commit.tickets {
                index.upsert(t);
            }
        }
        for t in commit.tickets {
            pending.seen.saw(&t.project, t.order_id);
            pending.tickets.insert((t.project.clone(), t.order_id), t);
        }
        for d in commit.dead_letters {
            pending.dead_letters.insert(d.seq, d);
        }
        for (original, by) in commit.redriven {
            let found = match pending.dead_letters.get_mut(&original) {
                Some(d) => {
                    d.redriven_by = Some(by);
                    None
                }
                None => self.dead_letter(original)?,
            };
            if let Some(mut d) = found {
                d.redriven_by = Some(by);
                pending.dead_letters.insert(original, d);
            }
        }
        pending.events += commit.applied_seq.saturating_sub(before);
        pending.since.get_or_insert_with(Instant::now);
        self.applied_seq
            .fetch_max(commit.applied_seq, Ordering::AcqRel);
        if pending.events >= self.policy.max_events
            || pending
                .since
                .is_some_and(|t| t.elapsed() >= self.policy.max_interval)
        {
            self.hand_off(pending)?;
        }
        Ok(())
    }

    /// Hands the buffer to the writer if its oldest commit is older than the policy allows (the
    /// ingest loop calls this when no message arrives).
    pub fn flush_if_due(&self) -> Result<(), StoreError> {
        let mut pending = self.pending();
        if pending
            .since
            .is_some_and(|t| t.elapsed() >= self.policy.max_interval)
        {
            self.hand_off(&mut pending)?;
        }
        Ok(())
    }

    /// Writes everything visible to sled and forces it to disk; returns the position it
    /// reaches. Callers hold the commit lock, so nothing is committed meanwhile.
    pub fn persist(&self) -> Result<u64, StoreError> {
        let mut pending = self.pending();
        self.hand_off(&mut pending)?;
        drop(pending);
        let seq = self.wait_written()?;
        self.store.flush()?;
        Ok(seq)
    }

    /// Waits until no write is in progress (writing it here if the writer failed); returns the
    /// durable position. One write at a time keeps the stored position in stream order.
    fn wait_written(&self) -> Result<u64, StoreError> {
        let mut w = self.shared.lock();
        loop {
            let Some(snap) = w.in_flight.clone() else {
                return Ok(w.durable_seq);
            };
            if w.failed.is_some() {
                // The writer gave up on it: try once more here, and report if it fails again.
                write_snapshot(&self.store, &snap)?;
                drop(snap);
                let previous = w.written();
                drop(w);
                drop(previous);
                w = self.shared.lock();
                continue;
            }
            w = self
                .shared
                .written
                .wait(w)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Moves the buffer into a snapshot for the writer, after the previous one is written.
    fn hand_off(&self, pending: &mut Pending) -> Result<(), StoreError> {
        let durable = self.wait_written()?;
        let applied = self.applied_seq();
        pending.events = 0;
        pending.since = None;
        if pending.tickets.is_empty() && pending.dead_letters.is_empty() && durable == applied {
            return Ok(());
        }
        let fresh = self.shared.lock().spare.take().unwrap_or_default();
        let snap = Arc::new(Snapshot {
            tickets: std::mem::replace(&mut pending.tickets, fresh),
            dead_letters: std::mem::take(&mut pending.dead_letters),
            applied_seq: applied,
        });
        self.shared.lock().in_flight = Some(snap.clone());
        let to_writer = self.to_writer.lock().unwrap_or_else(|e| e.into_inner());
        if to_writer
            .as_ref()
            .is_none_or(|tx| tx.send(snap.clone()).is_err())
        {
            // No writer thread (it died): write here.
            drop(to_writer);
            write_snapshot(&self.store, &snap)?;
            drop(snap);
            let previous = self.shared.lock().written();
            drop(previous);
        }
        Ok(())
    }

    /// Answers a list query.
    pub fn query(&self, project: &ProjectId, q: &Query) -> Page {
        self.read().query(project, q)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A project's ticket by `execute_uuid`.
    pub fn ticket_by_uuid(
        &self,
        project: &ProjectId,
        execute_uuid: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let order = self.read().order_of(project, execute_uuid);
        match order {
            Some(o) => self.ticket(project, o),
            None => Ok(None),
        }
    }

    /// Number of tickets.
    pub fn ticket_count(&self) -> usize {
        self.read().len()
    }
}

/// A retired snapshot's ticket map, emptied (its tickets dropped, its table kept), unless a
/// reader still holds the snapshot: then it is simply dropped when the reader is done.
fn emptied(snap: Arc<Snapshot>) -> Option<FxHashMap<TicketKey, Ticket>> {
    let mut map = Arc::try_unwrap(snap).ok()?.tickets;
    map.clear();
    Some(map)
}

/// The query view of every ticket in `store`; with `seen`, also records there which tickets it
/// holds (at start-up; a catch-up's buffer already knows).
fn load_view(store: &Store, mut seen: Option<&mut Seen>) -> Result<Index, StoreError> {
    // The records are read and decoded on a thread of their own while this one indexes them.
    const CHUNK: usize = 4096;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Ticket, StoreError>>>(4);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            for t in store.ticket_heads() {
                chunk.push(t);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if tx.send(full).is_err() {
                        return; // the indexing stopped at an error
                    }
                }
            }
            let _ = tx.send(chunk);
        });
        let mut failed = None;
        // Owns the receiver, so that stopping at an error lets the reading thread end too.
        let tickets = rx
            .into_iter()
            .flatten()
            .map_while(|t| t.map_err(|e| failed = Some(e)).ok())
            .inspect(|t| {
                if let Some(seen) = seen.as_deref_mut() {
                    seen.saw(&t.project, t.order_id);
                }
            });
        let index = Index::bulk(tickets);
        match failed {
            Some(e) => Err(e),
            None => Ok(index),
        }
    })
}

/// Patches the shared view from `live`'s records to `next`'s: a merge of both stores in key
/// order; a ticket that differs is upserted, one that is gone is removed. Returns how many.
fn patch_view(live: &Projection, next: &Projection) -> Result<usize, StoreError> {
    let mut changes: Vec<(Vec<u8>, Option<Ticket>)> = Vec::new();
    let mut old = live.store.raw_tickets().peekable();
    let mut new = next.store.raw_tickets().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(old.next().expect("peeked").expect_err("err")),
            (_, Some(Err(_))) => return Err(new.next().expect("peeked").expect_err("err")),
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(Ok(_))) => std::cmp::Ordering::Greater,
            (Some(Ok((ko, _))), Some(Ok((kn, _)))) => ko.cmp(kn),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (k, _) = old.next().expect("peeked")?;
                changes.push((k, None));
            }
            std::cmp::Ordering::Greater => {
                let (k, v) = new.next().expect("peeked")?;
                changes.push((k.clone(), Some(decode_record(&k, &v)?)));
            }
            std::cmp::Ordering::Equal => {
                let (_, vo) = old.next().expect("peeked")?;
                let (k, vn) = new.next().expect("peeked")?;
                if vo != vn {
                    changes.push((k.clone(), Some(decode_record(&k, &vn)?)));
                }
            }
        }
    }
    let n = changes.len();
    if n > 0 {
        let mut index = live.index.write().unwrap_or_else(|e| e.into_inner());
        for (k, t) in changes {
            match t {
                Some(t) => index.upsert(&t),
                None => {
                    if let Some((p, o)) = crate::store::ticket_key_parts(&k) {
                        index.remove(&p, o);
                    }
                }
            }
        }
    }
    Ok(n)
}

fn decode_record(key: &[u8], v: &[u8]) -> Result<Ticket, StoreError> {
    crate::record::decode(v).map_err(|e| StoreError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    })
}

/// Writes one snapshot: its tickets, dead letters and position in one atomic sled batch.
fn write_snapshot(store: &Store, snap: &Snapshot) -> Result<(), StoreError> {
    store.write(
        snap.tickets.values(),
        snap.dead_letters.values(),
        snap.applied_seq,
    )
}

/// Name of the file that says which generation directory is live.
const CURRENT: &str = "CURRENT";

/// The live projection, and the means to replace it by a rebuilt one (blue/green).
///
/// `store.path` holds generation directories (`gen-000001`, ...) and a `CURRENT` file naming the
/// live one. A rebuild fills a new generation beside the live one; [`Ledger::switch_to`] rewrites
/// `CURRENT` atomically (write + rename) and swaps the in-memory handle, so a crash at any point
/// leaves either the old or the new generation live, never a mix.
pub struct Ledger {
    root: PathBuf,
    current: RwLock<(u32, Arc<Projection>)>,
    commit_lock: Mutex<()>,
    policy: FlushPolicy,
    stream_last_seq: AtomicU64,
    broker_connected: AtomicBool,
}

fn gen_dir(root: &Path, generation: u32) -> PathBuf {
    root.join(format!("gen-{generation:06}"))
}

impl Ledger {
    /// Opens the live generation under `root` (creating the first one), and removes any other
    /// generation left by an interrupted rebuild.
    pub fn open(root: &Path, policy: FlushPolicy) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Sled(e.into()))?;
        let current_file = root.join(CURRENT);
        let generation = match std::fs::read_to_string(&current_file) {
            Ok(s) => s
                .trim()
                .strip_prefix("gen-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: CURRENT.into(),
                    reason: format!("unreadable generation {s:?}"),
                })?,
            Err(_) => {
                write_current(root, 1)?;
                1
            }
        };
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("gen-") && e.path() != gen_dir(root, generation) {
                    tracing::info!(dir = %e.path().display(), "removing an unfinished rebuild");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let projection = Projection::open(&gen_dir(root, generation), policy)?;
        Ok(Self {
            root: root.to_owned(),
            current: RwLock::new((generation, Arc::new(projection))),
            commit_lock: Mutex::new(()),
            policy,
            stream_last_seq: AtomicU64::new(0),
            broker_connected: AtomicBool::new(false),
        })
    }

    /// The live projection.
    pub fn current(&self) -> Arc<Projection> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Held by whoever commits to the live projection, so that a switch-over happens between
    /// two commits, never during one.
    pub fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.commit_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes everything the live projection shows to sled, between two commits: what readers
    /// of the store itself (exports, dead letters, shutdown) call first.
    pub fn persist(&self) -> Result<u64, StoreError> {
        let _commit = self.commit_lock();
        self.current().persist()
    }

    /// The directory that holds the generations.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens an empty generation beside the live one, for a rebuild.
    pub fn begin_rebuild(&self) -> Result<(u32, Projection), StoreError> {
        let next = self.current.read().unwrap_or_else(|e| e.into_inner()).0 + 1;
        let dir = gen_dir(&self.root, next);
        let _ = std::fs::remove_dir_all(&dir);
        let live_view = self.current().index.clone();
        Ok((
            next,
            Projection::open_rebuild(&dir, self.policy, live_view)?,
        ))
    }

    /// Makes a rebuilt generation live. The caller holds [`Ledger::commit_lock`] and has brought
    /// `next` to the live projection's applied sequence. The old generation's files are removed
    /// once the last reader lets go of it.
    ///
    /// The rebuilt generation shares the live query view. Before the switch, both generations'
    /// records are compared in key order and the view is patched wherever they differ, so the
    /// view then describes the rebuilt records exactly (usually nothing differs: the same stream
    /// folded by the same code).
    pub fn switch_to(&self, generation: u32, next: Arc<Projection>) -> Result<(), StoreError> {
        next.persist()?;
        let live = self.current();
        live.persist()?;
        // A generation from begin_rebuild shares the live view and has not kept it yet; any other
        // keeps its own view through its commits.
        if Arc::ptr_eq(&live.index, &next.index) && !next.maintains_view.load(Ordering::Acquire) {
            if live.view_kept() {
                let patched = patch_view(&live, &next)?;
                tracing::info!(patched, "rebuilt records compared with the live ones");
            } else {
                // The live view is behind its own records (catching up): nothing to patch from.
                live.replace_view(&next.store)?;
            }
            next.maintains_view.store(true, Ordering::Release);
        }
        write_current(&self.root, generation)?;
        let old = {
            let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, (generation, next))
        };
        let dir = gen_dir(&self.root, old.0);
        std::thread::spawn(move || {
            let mut old = old.1;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(p) => {
                        drop(p);
                        let _ = std::fs::remove_dir_all(&dir);
                        return;
                    }
                    Err(still_shared) => {
                        old = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
        });
        Ok(())
    }

    /// Records the broker's view: connected or not, and the stream's last sequence.
    pub fn set_broker_state(&self, connected: bool, stream_last_seq: Option<u64>) {
        self.broker_connected.store(connected, Ordering::Release);
        if let Some(s) = stream_last_seq {
            self.stream_last_seq.store(s, Ordering::Release);
        }
    }

    /// Whether the ingest loop is connected to JetStream.
    pub fn broker_connected(&self) -> bool {
        self.broker_connected.load(Ordering::Acquire)
    }

    /// Last stream sequence the broker reported (0 if unknown).
    pub fn stream_last_seq(&self) -> u64 {
        self.stream_last_seq.load(Ordering::Acquire)
    }
}

fn write_current(root: &Path, generation: u32) -> Result<(), StoreError> {
    let tmp = root.join("CURRENT.tmp");
    let io = |e: std::io::Error| StoreError::Sled(e.into());
    std::fs::write(&tmp, format!("gen-{generation:06}\n")).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, root.join(CURRENT)).map_err(io)?;
    std::fs::File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;

    fn ticket(order_id: u64, status: Status) -> Ticket {
        Ticket {
            project: ProjectId::parse("p").unwrap(),
            order_id,
            order_name: format!("job {order_id}"),
            execute_uuid: format!("u{order_id}"),
            creator: "c".into(),
            region_ids: "r".into(),
            job_type: "SCRIPT".into(),
            gmt_created: order_id as i64,
            gmt_finished: None,
            execute_costs: None,
            status,
            history: vec![],
        }
    }

    fn commit(p: &Projection, tickets: Vec<Ticket>, seq: u64) {
        p.commit(Commit {
            tickets,
            applied_seq: seq,
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn write_behind_never_stores_a_position_ahead_of_its_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let policy = FlushPolicy {
            max_events: 1_000,
            max_interval: Duration::from_secs(3600),
            cache_mb: 1,
        };
        let p = Projection::open(dir.path(), policy).unwrap();
        let key = ProjectId::parse("p").unwrap();
        commit(&p, vec![ticket(1, Status::Ready)], 10);
        // Visible at once, not yet in sled.
        assert_eq!(p.applied_seq(), 10);
        assert_eq!(p.durable_seq(), 0);
        assert_eq!(p.store().ticket(&key, 1).unwrap(), None);
        assert_eq!(p.ticket(&key, 1).unwrap().unwrap().status, Status::Ready);
        // 1,000 messages since the last write: handed to the writer with the position they reach.
        commit(&p, vec![ticket(1, Status::Processing)], 1_000);
        commit(&p, vec![ticket(2, Status::Ready)], 1_001);
        assert_eq!(
            p.ticket(&key, 1).unwrap().unwrap().status,
            Status::Processing
        );
        assert!(p.durable_seq() <= 1_000, "1,001 has not been handed off");
        assert_eq!(p.persist().unwrap(), 1_001);
        drop(p);
        // Reopened: exactly what was written, at exactly its position.
        let p = Projection::open(dir.path(), policy).unwrap();
        assert_eq!(p.applied_seq(), 1_001);
        assert_eq!(p.store().applied_seq().unwrap(), 1_001);
        assert_eq!(
            p.store().ticket(&key, 1).unwrap().unwrap().status,
            Status::Processing
        );
        assert_eq!(p.ticket_count(), 2);
    }

    /// Every ticket seen is known to the filter, across its growing layers; tickets never seen
    /// are mostly (not always: it is a Bloom filter) known not to exist.
    #[test]
    fn seen_never_forgets_a_ticket_and_rarely_imagines_one() {
        let mut seen = Seen::default();
        let projects: Vec<ProjectId> = (0..7)
            .map(|i| ProjectId::parse(&format!("p{i}")).unwrap())
            .collect();
        let key = |i: u64| (projects[(i % 7) as usize].clone(), i * 2);
        for i in 0..1_500_000 {
            let (p, o) = key(i);
            seen.saw(&p, o);
        }
        assert!(seen.filter.layers.len() >= 2, "the filter grew");
        assert!((0..1_500_000).all(|i| !seen.is_unseen(&key(i))));
        // Odd order_ids below the newest were never seen.
        let imagined = (0..100_000)
            .filter(|&i| {
                let (p, o) = key(i);
                !seen.is_unseen(&(p, o + 1))
            })
            .count();
        assert!(imagined < 5_000, "{imagined} of 100,000 unseen tickets");
        let (p, newest) = key(1_499_999);
        assert!(seen.is_unseen(&(p, newest + 14)), "above the newest");
    }

    /// A ticket no longer in the buffer is read in its latest written state, whether the last
    /// write (kept for the events that follow it) or only sled holds it.
    #[test]
    fn a_written_ticket_is_read_back_in_its_latest_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
        let key = ProjectId::parse("p").unwrap();
        commit(
            &p,
            vec![ticket(1, Status::Ready), ticket(2, Status::Ready)],
            1,
        );
        p.persist().unwrap();
        commit(&p, vec![ticket(1, Status::Processing)], 2);
        p.persist().unwrap();
        assert_eq!(
            p.ticket(&key, 1).unwrap().unwrap().status,
            Status::Processing
        );
        assert_eq!(p.ticket(&key, 2).unwrap().unwrap().status, Status::Ready);
        commit(&p, vec![ticket(2, Status::Finished)], 3);
        p.persist().unwrap();
        for (order_id, status) in [(1, Status::Processing), (2, Status::Finished)] {
            assert_eq!(p.ticket(&key, order_id).unwrap().unwrap().status, status);
            assert_eq!(
                p.store().ticket(&key, order_id).unwrap().unwrap().status,
                status
            );
        }
    }

    /// Look-ups skip sled only above the largest `order_id` held, and that bound is rebuilt from
    /// sled at start-up: an event for a stored ticket still finds it after a restart.
    #[test]
    fn a_ticket_below_the_newest_is_looked_up_and_found_after_a_restart() {
        use crate::batch::{Decoded, RawMessage};
        use crate::events::{Event, Kind};
        let dir = tempfile::tempdir().unwrap();
        let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
        commit(
            &p,
            vec![ticket(5, Status::Ready), ticket(10, Status::Ready)],
            2,
        );
        p.persist().unwrap();
        drop(p);
        let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
        let started = |order_id: u64, seq: u64| Decoded {
            raw: RawMessage {
                seq,
                subject: Default::default(),
                payload: Default::default(),
                redrive_of: None,
            },
            event: Ok(Event {
                id: format!("e{seq}"),
                source: "s".into(),
                kind: Kind::Started,
                time_ms: 100,
                project: ProjectId::parse("p").unwrap(),
                order_id,
                created: None,
            }),
        };
        // 5 is below the newest (10): looked up in sled and moved on. 11 is above: no ticket.
        let dead = p.fold(vec![started(5, 3), started(11, 4)]).unwrap();
        let key = ProjectId::parse("p").unwrap();
        assert_eq!(
            p.ticket(&key, 5).unwrap().unwrap().status,
            Status::Processing
        );
        assert_eq!(dead.len(), 1, "a start of a ticket that does not exist");
        assert_eq!(dead[0].seq, 4);
    }

    /// While the view is suspended, commits reach the records but not the view, whose position
    /// stays where it was; resuming rebuilds it from the records.
    #[test]
    fn a_suspended_view_stays_put_and_resuming_rebuilds_it_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
        let key = ProjectId::parse("p").unwrap();
        commit(&p, vec![ticket(1, Status::Ready)], 1);
        p.suspend_view();
        commit(
            &p,
            vec![ticket(1, Status::Processing), ticket(2, Status::Ready)],
            3,
        );
        assert!(!p.view_kept());
        assert_eq!((p.applied_seq(), p.view_seq()), (3, 1));
        let page = p.query(&key, &Query::all());
        assert_eq!(page.total, 1);
        assert_eq!(page.data[0].status, Status::Ready);
        // The records are current all along.
        assert_eq!(
            p.ticket(&key, 1).unwrap().unwrap().status,
            Status::Processing
        );
        p.resume_view().unwrap();
        assert_eq!((p.view_kept(), p.view_seq()), (true, 3));
        let page = p.query(&key, &Query::all());
        assert_eq!(page.total, 2);
        assert_eq!(page.data[1].status, Status::Processing);
        commit(&p, vec![ticket(3, Status::Ready)], 4);
        assert_eq!(p.query(&key, &Query::all()).total, 3);
    }

    #[test]
    fn a_rebuild_shares_the_view_and_patches_what_differs_at_the_switch() {
        let root = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(root.path(), FlushPolicy::default()).unwrap();
        let live = ledger.current();
        commit(
            &live,
            vec![
                ticket(1, Status::Ready),
                ticket(2, Status::Ready),
                ticket(3, Status::Ready),
            ],
            3,
        );
        let (generation, next) = ledger.begin_rebuild().unwrap();
        // The rebuilt records differ: 1 is gone, 2 has another status, 4 is new.
        commit(
            &next,
            vec![
                ticket(2, Status::Finished),
                ticket(3, Status::Ready),
                ticket(4, Status::Ready),
            ],
            3,
        );
        let p = ProjectId::parse("p").unwrap();
        let live_ids: Vec<u64> = live
            .query(&p, &Query::all())
            .data
            .iter()
            .map(|r| r.order_id)
            .collect();
        assert_eq!(live_ids, [3, 2, 1], "the live view is untouched meanwhile");
        let _lock = ledger.commit_lock();
        ledger.switch_to(generation, Arc::new(next)).unwrap();
        let now = ledger.current();
        let ids =
            |q: &Query| -> Vec<u64> { now.query(&p, q).data.iter().map(|r| r.order_id).collect() };
        assert_eq!(ids(&Query::all()), [4, 3, 2]);
        let mut finished = Query::all();
        finished.status = Some(Status::Finished);
        assert_eq!(ids(&finished), [2]);
        assert_eq!(now.ticket_count(), 3);
        // Commits to the new generation now keep the view.
        commit(&now, vec![ticket(5, Status::Ready)], 4);
        assert_eq!(ids(&Query::all()), [5, 4, 3, 2]);
    }
}
