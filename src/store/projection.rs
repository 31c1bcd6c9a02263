//! The projection: the durable store and the in-memory query view, kept in step.
//!
//! Writers (the ingest loop, a rebuild) go through [`Projection::commit`]: the batch's tickets go
//! into the query view at once and into a write-behind buffer, and the buffer is written to sled
//! every [`FlushPolicy`] (so a ticket touched by many batches in between is written once, and one
//! flush carries hundreds of thousands of events). The stream
//! position written with a flush is the position the flushed tickets reach, never more: after a
//! crash the daemon resumes there and folds the rest again from the stream, which still holds it.
//! Readers (the API) take the view's read lock, or the buffer before sled for a single record.
//! [`Ledger`] holds the live projection and swaps in a rebuilt one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::seen::Seen;
use super::writer::{Snapshot, WriteBehind, WriteStats};
use super::{Store, StoreError};
use crate::core::batch::{
    Commit, DeadLetter, Decoded, FoldReport, PlanPart, TicketKey, fold_decoded,
};
use crate::core::domain::ProjectId;
use crate::core::fold::Ticket;
use crate::view::{Index, Page, Query};

/// When folded state is written to sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Write once this many stream messages have been folded since the last write...
    pub max_events: u64,
    /// ... or once the oldest unwritten commit is this old.
    pub max_interval: Duration,
    /// sled's page cache, MiB.
    pub cache_mb: u64,
    /// How long opening waits for sled's lock (another process still exiting).
    pub lock_wait: Duration,
    /// Free space the writer leaves on the store's filesystem: below it, writes wait.
    pub min_free_bytes: u64,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            max_events: 50_000,
            max_interval: Duration::from_secs(1),
            cache_mb: super::DEFAULT_CACHE_MB,
            lock_wait: super::DEFAULT_LOCK_WAIT,
            min_free_bytes: 0,
        }
    }
}

/// What has been folded and made visible but not yet handed to the writer.
#[derive(Default)]
struct Pending {
    tickets: FxHashMap<TicketKey, Ticket>,
    /// The parts of plans changed since the last hand-off (their tickets are in `tickets`).
    plan_parts: rustc_hash::FxHashSet<(TicketKey, PlanPart)>,
    dead_letters: BTreeMap<u64, DeadLetter>,
    /// Messages folded since the last hand-off.
    events: u64,
    /// When the oldest commit not yet handed off was made.
    since: Option<Instant>,
    /// Kept across hand-offs.
    seen: Seen,
    /// Tickets a fold has moved out of `tickets` and not yet committed back: a reader of one
    /// waits for the commit (see [`Projection::ticket`]) rather than read an older state.
    taken: rustc_hash::FxHashSet<TicketKey>,
}

/// The projection shared by ingest and the API.
pub struct Projection {
    pub(super) store: Store,
    /// The query view. A rebuilt generation shares the live one's (see [`Ledger::switch_to`]).
    pub(super) index: Arc<RwLock<Index>>,
    /// Whether commits update `index`: not while a rebuild catches up, since the view it shares
    /// is the live one.
    pub(super) maintains_view: AtomicBool,
    /// The position the view reflects while it is not kept (see [`Projection::suspend_view`]).
    view_frozen_at: AtomicU64,
    /// Set when a fold failed halfway (see [`Projection::fold`]).
    poisoned: AtomicBool,
    applied_seq: AtomicU64,
    /// Up to where records may already hold events the stream delivers again (see
    /// [`Store::redo_until`]), as found at opening.
    redo_until: u64,
    pending: Mutex<Pending>,
    /// Signalled when a fold's taken tickets are back in `pending`.
    folded: Condvar,
    /// Messages in `pending` not yet handed to the writer (its `events`, readable unlocked).
    buffered: AtomicU64,
    writer: WriteBehind,
    policy: FlushPolicy,
    /// Declared last, so that it runs after every other field (the writer thread and sled's
    /// handle) is dropped: removes the directory of a generation retired by a switch-over.
    retired: RetireOnDrop,
}

/// Removes a retired generation's directory when the last reader of it lets go (see
/// [`Ledger::switch_to`]).
#[derive(Default)]
pub(super) struct RetireOnDrop(Mutex<Option<PathBuf>>);

impl Drop for RetireOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a retired generation");
        }
    }
}

impl Projection {
    /// Opens the store, rebuilds the query view from its records, and starts the writer thread.
    pub fn open(dir: &Path, policy: FlushPolicy) -> Result<Self, StoreError> {
        let store = Store::open_with_cache(dir, policy.cache_mb, policy.lock_wait)?;
        let mut seen = Seen::default();
        let index = load_view(&store, Some(&mut seen)).map_err(|e| match e {
            StoreError::Sled(sled::Error::Corruption { .. }) => {
                store.damaged(format!("reading its records back: {e}"))
            }
            e => e,
        })?;
        let projection = Self::with_view(store, policy, Arc::new(RwLock::new(index)), true)?;
        projection.pending().seen = seen;
        Ok(projection)
    }

    /// Opens an empty generation for a rebuild, sharing `live_view` without updating it until
    /// [`Ledger::switch_to`] patches it to this generation's records. So a rebuild holds one
    /// query view in memory, not two.
    pub(super) fn open_rebuild(
        dir: &Path,
        policy: FlushPolicy,
        live_view: Arc<RwLock<Index>>,
    ) -> Result<Self, StoreError> {
        Self::with_view(
            Store::open_with_cache(dir, policy.cache_mb, policy.lock_wait)?,
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
        let redo_until = store.redo_until()?;
        if redo_until > 0 {
            tracing::info!(
                applied_seq = applied,
                redo_until,
                "the last write was cut short: events up to redo_until that a record already \
                 holds are skipped"
            );
        }
        let writer = WriteBehind::spawn(store.clone(), applied, policy.min_free_bytes)?;
        Ok(Self {
            store,
            index,
            maintains_view: AtomicBool::new(maintains_view),
            view_frozen_at: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            applied_seq: AtomicU64::new(applied),
            redo_until,
            pending: Mutex::new(Pending::default()),
            folded: Condvar::new(),
            buffered: AtomicU64::new(0),
            writer,
            policy,
            retired: RetireOnDrop::default(),
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
    pub(super) fn replace_view(&self, records: &Store) -> Result<(), StoreError> {
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

    /// What this projection's writes to sled have cost so far.
    pub fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    /// Last stream sequence whose effects are in sled.
    pub fn durable_seq(&self) -> u64 {
        self.writer.durable_seq()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket's current record: from the write-behind buffer, else from the write in
    /// progress, else from sled. A ticket a fold holds is waited for: the buffer's state is newer
    /// than the written ones, so reading those meanwhile would answer an older state.
    pub fn ticket(&self, project: &ProjectId, order_id: u64) -> Result<Option<Ticket>, StoreError> {
        let key = (project.clone(), order_id);
        let mut pending = self.pending();
        loop {
            if let Some(t) = pending.tickets.get(&key) {
                return Ok(Some(t.clone()));
            }
            if !pending.taken.contains(&key) {
                break;
            }
            pending = self.folded.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        drop(pending);
        self.cold_ticket(&key)
    }

    fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        if let Some(snap) = self.writer.lock().in_flight.clone()
            && let Some(d) = snap.dead_letters.get(&seq)
        {
            return Ok(Some(d.clone()));
        }
        self.store.dead_letter(seq)
    }

    /// Folds a decoded batch into this projection and commits it (see [`Projection::commit`]).
    /// Returns what the fold did, for the caller's log and metrics. Callers serialise commits.
    ///
    /// Tickets in the write-behind buffer are moved into the fold and back, never copied. The
    /// buffer is locked per look-up and for the commit, not for the whole fold, so that a reader
    /// of another ticket never waits for a batch (one of the moved tickets waits, see
    /// [`Projection::ticket`]). If a look-up in sled fails halfway, the tickets already moved out
    /// are gone from the buffer, so the projection refuses every later commit
    /// ([`StoreError::Inconsistent`]) until the daemon restarts from what sled holds.
    pub fn fold(&self, batch: Vec<Decoded>) -> Result<FoldReport, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Inconsistent);
        }
        self.keep_up_with_writer()?;
        let applied = self.applied_seq();
        let folded = fold_decoded(batch, (applied, self.redo_until), |k| {
            let mut pending = self.pending();
            match pending.tickets.remove(k) {
                Some(t) => {
                    pending.taken.insert(k.clone());
                    Ok(Some(t))
                }
                None if pending.seen.is_unseen(k) => Ok(None),
                None => {
                    drop(pending);
                    self.take_cold_ticket(k)
                }
            }
        });
        let mut pending = self.pending();
        let commit = match folded {
            Ok(c) => c,
            Err(e) => {
                self.poisoned.store(true, Ordering::Release);
                self.give_back(&mut pending, Vec::new());
                tracing::error!(error = %e, "a ticket look-up failed mid-batch: restart the daemon");
                return Err(e);
            }
        };
        if commit.applied_seq <= applied {
            // Everything was at or below the applied position: put the tickets back untouched.
            self.give_back(&mut pending, commit.tickets);
            return Ok(FoldReport::default());
        }
        let report = FoldReport {
            events: commit.events,
            duplicates: commit.duplicates,
            dead_letters: commit.dead_letters.clone(),
        };
        let result = self.commit_locked(&mut pending, commit);
        self.give_back(&mut pending, Vec::new());
        result.map(|()| report)
    }

    /// Puts `tickets` back in the buffer and wakes the readers waiting for the taken ones.
    fn give_back(&self, pending: &mut Pending, tickets: Vec<Ticket>) {
        for t in tickets {
            pending.tickets.insert((t.project.clone(), t.order_id), t);
        }
        pending.taken.clear();
        self.folded.notify_all();
    }

    /// Waits, without holding the buffer, for the write in progress when the buffer has grown
    /// to several flushes' worth behind it: the writer's pace bounds the buffer, and readers of
    /// the buffer never wait for a write.
    fn keep_up_with_writer(&self) -> Result<(), StoreError> {
        if self.buffered.load(Ordering::Acquire) >= self.policy.max_events.saturating_mul(4) {
            self.writer.wait_written()?;
        }
        Ok(())
    }

    /// A ticket that is not in the write-behind buffer: from the write in progress, the write
    /// before it, or sled.
    fn cold_ticket(&self, key: &TicketKey) -> Result<Option<Ticket>, StoreError> {
        let snapshots = {
            let w = self.writer.lock();
            [w.in_flight.clone(), w.last_written.clone()]
        };
        for snap in snapshots.into_iter().flatten() {
            if let Some(t) = snap.tickets.get(key) {
                return Ok(Some(t.clone()));
            }
        }
        self.store.ticket(&key.0, key.1)
    }

    /// [`Projection::cold_ticket`] for the fold, which will put the ticket back in the buffer:
    /// a ticket of the snapshot written last is moved out of it rather than copied, when no
    /// reader holds that snapshot. That snapshot holds what sled holds for its tickets, so a
    /// reader that no longer finds the ticket there reads the same state from sled. Copying was
    /// what the live tickets cost after every hand-off, and a ticket with a plan of hundreds of
    /// hosts is large.
    fn take_cold_ticket(&self, key: &TicketKey) -> Result<Option<Ticket>, StoreError> {
        {
            let mut w = self.writer.lock();
            if let Some(t) = w.in_flight.as_ref().and_then(|s| s.tickets.get(key)) {
                return Ok(Some(t.clone()));
            }
            if let Some(last) = w.last_written.as_mut() {
                let found = match Arc::get_mut(last) {
                    Some(snap) => snap.tickets.remove(key),
                    None => last.tickets.get(key).cloned(),
                };
                if found.is_some() {
                    return Ok(found);
                }
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
        self.keep_up_with_writer()?;
        let mut pending = self.pending();
        self.commit_locked(&mut pending, commit)
    }

    fn commit_locked(&self, pending: &mut Pending, commit: Commit) -> Result<(), StoreError> {
        let before = self.applied_seq();
        if self.maintains_view.load(Ordering::Acquire) {
            // The view's write lock is taken per ticket, not per batch: a list query waits for
            // one ticket's upkeep at most, not a batch's (on a busy machine the committing thread
            // is at times preempted while it holds the lock, and every list query waited). A
            // query may so see part of a batch: every ticket it shows is whole, in a state the
            // stream reached, and no answer ties tickets together beyond that (docs/design.md).
            for t in &commit.tickets {
                self.index
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .upsert(t);
            }
        }
        for t in commit.tickets {
            pending.seen.saw(&t.project, t.order_id);
            pending.tickets.insert((t.project.clone(), t.order_id), t);
        }
        pending.plan_parts.extend(commit.plan_parts);
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
        self.buffered.store(pending.events, Ordering::Release);
        pending.since.get_or_insert_with(Instant::now);
        self.applied_seq
            .fetch_max(commit.applied_seq, Ordering::AcqRel);
        let due = pending.events >= self.policy.max_events
            || pending
                .since
                .is_some_and(|t| t.elapsed() >= self.policy.max_interval);
        // While a write is in progress the buffer keeps what is folded, rather than block the
        // commit (and every reader of the buffer) behind it: the next commit after it hands off,
        // and `keep_up_with_writer` bounds the buffer. While a write waits for space, ingest
        // waits too (see `write_stalled`).
        if due && !self.writer.busy() {
            self.hand_off(pending)?;
        }
        Ok(())
    }

    /// Why writes to sled wait, while they do (the store's filesystem is nearly full): ingest
    /// pauses and `/readyz` says this.
    pub fn write_stalled(&self) -> Option<String> {
        self.writer.stalled()
    }

    /// Hands the buffer to the writer if its oldest commit is older than the policy allows (the
    /// ingest loop calls this when no message arrives).
    pub fn flush_if_due(&self) -> Result<(), StoreError> {
        let mut pending = self.pending();
        if pending
            .since
            .is_some_and(|t| t.elapsed() >= self.policy.max_interval)
            && !self.writer.busy()
        {
            self.hand_off(&mut pending)?;
        }
        Ok(())
    }

    /// Writes everything visible to sled and forces it to disk; returns the position it
    /// reaches. Callers hold the commit lock, so nothing is committed meanwhile.
    pub fn persist(&self) -> Result<u64, StoreError> {
        if let Some(reason) = self.writer.stalled() {
            return Err(StoreError::DiskFull(reason));
        }
        // The write in progress is waited for before the buffer is locked, not with it held.
        self.writer.wait_written()?;
        let mut pending = self.pending();
        self.hand_off(&mut pending)?;
        drop(pending);
        let seq = self.writer.wait_written()?;
        self.store.flush()?;
        Ok(seq)
    }

    /// Moves the buffer into a snapshot for the writer, after the previous one is written.
    fn hand_off(&self, pending: &mut Pending) -> Result<(), StoreError> {
        let durable = self.writer.wait_written()?;
        let applied = self.applied_seq();
        pending.events = 0;
        self.buffered.store(0, Ordering::Release);
        pending.since = None;
        if pending.tickets.is_empty() && pending.dead_letters.is_empty() && durable == applied {
            return Ok(());
        }
        let fresh = self.writer.take_spare();
        self.writer.hand_off(Snapshot {
            tickets: std::mem::replace(&mut pending.tickets, fresh),
            plan_parts: std::mem::take(&mut pending.plan_parts),
            dead_letters: std::mem::take(&mut pending.dead_letters),
            applied_seq: applied,
        })
    }

    /// Marks this generation's directory for removal once the projection is dropped.
    pub(super) fn retire(&self, dir: PathBuf) {
        *self.retired.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
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

#[cfg(test)]
pub(super) mod tests;
