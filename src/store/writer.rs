//! The write-behind writer: a thread that writes the projection's buffer to sled, one snapshot
//! at a time, while the next batches fold. Readers look in the snapshot being written (and the
//! one written last) between the buffer and sled, so a ticket is never invisible mid-write.
//!
//! The protocol: [`WriteBehind::hand_off`] waits until no write is in flight, then publishes the
//! snapshot as in flight and sends it to the thread; the thread writes it, records the position
//! it reaches as durable and wakes whoever waits on [`WriteBehind::wait_written`]. One write at a
//! time keeps the stored position in stream order.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use rustc_hash::FxHashMap;

use super::{Store, StoreError};
use crate::core::batch::{DeadLetter, PlanPart, TicketKey};
use crate::core::fold::Ticket;

/// A write handed to the background writer: everything one flush writes (see
/// [`Store::write`] for what a crash in its middle leaves).
pub(super) struct Snapshot {
    pub(super) tickets: FxHashMap<TicketKey, Ticket>,
    /// The parts of the tickets' plans changed since the last snapshot.
    pub(super) plan_parts: rustc_hash::FxHashSet<(TicketKey, PlanPart)>,
    pub(super) dead_letters: BTreeMap<u64, DeadLetter>,
    pub(super) applied_seq: u64,
}

/// The writer's side: the snapshot being written (readers look there between the buffer and
/// sled), the last one written, and the outcome of the last write.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) in_flight: Option<Arc<Snapshot>>,
    /// The snapshot written last, kept until the next write ends: the tickets live when a write
    /// is handed off (a ticket lives for a few thousand events) are the ones the next events
    /// touch, and are found here rather than in sled. What it holds is what sled holds for them,
    /// unless a later state is in the buffer or in flight, which are looked at first.
    pub(super) last_written: Option<Arc<Snapshot>>,
    failed: Option<String>,
    /// Why the write in flight waits (too little free space), while it does.
    stalled: Option<String>,
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

/// What the writes cost so far: how many, how long, how many bytes (keys and values).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct WriteStats {
    /// Flushes written.
    pub writes: u64,
    /// Seconds spent in them.
    pub seconds: f64,
    /// Bytes of keys and values they wrote.
    pub bytes: u64,
}

/// State shared with the writer thread.
struct Shared {
    writer: Mutex<Writer>,
    written: Condvar,
    stats: Mutex<WriteStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer thread and what it shares with the projection. Dropping it stops the thread and
/// waits for it, so that its handle on sled is gone (and the store can be opened again).
pub(super) struct WriteBehind {
    store: Store,
    shared: Arc<Shared>,
    to_writer: Mutex<Option<mpsc::Sender<Arc<Snapshot>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl WriteBehind {
    /// Starts the writer of `store`, whose durable position is `durable_seq`, leaving
    /// `min_free` bytes free on its filesystem.
    pub(super) fn spawn(store: Store, durable_seq: u64, min_free: u64) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                durable_seq,
                ..Default::default()
            }),
            written: Condvar::new(),
            stats: Mutex::new(WriteStats::default()),
        });
        let (tx, rx) = mpsc::channel::<Arc<Snapshot>>();
        let (w_store, w_shared) = (store.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // Ends when the projection (the sender) is dropped.
                while let Ok(snap) = rx.recv() {
                    if !wait_for_space(&w_store, min_free, &w_shared, &rx) {
                        return; // dropped while waiting: the stream still holds it all
                    }
                    let result = write_snapshot(&w_store, &snap, &w_shared);
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
            .map_err(StoreError::Io)?;
        Ok(Self {
            store,
            shared,
            to_writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The writer's state, for readers looking into the snapshots.
    pub(super) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.shared.lock()
    }

    /// Why writes wait, while they do (the store's filesystem is nearly full).
    pub(super) fn stalled(&self) -> Option<String> {
        self.lock().stalled.clone()
    }

    /// Whether a write is in progress, waiting for space included (a failed one counts as not:
    /// the next hand-off retries it, see [`Self::wait_written`]). While writes wait for space
    /// the snapshot waiting is in flight, so a writer that is not busy is not stalled either.
    pub(super) fn busy(&self) -> bool {
        let w = self.lock();
        w.in_flight.is_some() && w.failed.is_none()
    }

    /// Last stream sequence whose effects are in sled.
    pub(super) fn durable_seq(&self) -> u64 {
        self.lock().durable_seq
    }

    /// Waits until no write is in progress (writing it here if the writer failed); returns the
    /// durable position.
    pub(super) fn wait_written(&self) -> Result<u64, StoreError> {
        let mut w = self.shared.lock();
        loop {
            let Some(snap) = w.in_flight.clone() else {
                return Ok(w.durable_seq);
            };
            if w.failed.is_some() {
                // The writer gave up on it: try once more here, and report if it fails again.
                write_snapshot(&self.store, &snap, &self.shared)?;
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

    /// What the writes cost so far.
    pub(super) fn stats(&self) -> WriteStats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An emptied ticket map for the next buffer, if a retired snapshot left one.
    pub(super) fn take_spare(&self) -> FxHashMap<TicketKey, Ticket> {
        self.lock().spare.take().unwrap_or_default()
    }

    /// Makes `snap` the write in flight and hands it to the thread (or writes it here if the
    /// thread is gone). The caller has waited for the previous write ([`Self::wait_written`]).
    pub(super) fn hand_off(&self, snap: Snapshot) -> Result<(), StoreError> {
        let snap = Arc::new(snap);
        self.lock().in_flight = Some(snap.clone());
        let to_writer = self.to_writer.lock().unwrap_or_else(|e| e.into_inner());
        if to_writer
            .as_ref()
            .is_none_or(|tx| tx.send(snap.clone()).is_err())
        {
            // No writer thread (it died): write here.
            drop(to_writer);
            write_snapshot(&self.store, &snap, &self.shared)?;
            drop(snap);
            let previous = self.lock().written();
            drop(previous);
        }
        Ok(())
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        drop(
            self.to_writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A retired snapshot's ticket map, emptied (its tickets dropped, its table kept), unless a
/// reader still holds the snapshot: then it is simply dropped when the reader is done.
fn emptied(snap: Arc<Snapshot>) -> Option<FxHashMap<TicketKey, Ticket>> {
    let mut map = Arc::try_unwrap(snap).ok()?.tickets;
    map.clear();
    Some(map)
}

/// Waits until the store's filesystem has `min_free` bytes free, saying why it waits in
/// `stalled` meanwhile; false if the projection went away first. sled does not survive a write
/// that finds the disk full (every later write fails until it is reopened), so the writer never
/// lets it try.
fn wait_for_space(
    store: &Store,
    min_free: u64,
    shared: &Shared,
    rx: &mpsc::Receiver<Arc<Snapshot>>,
) -> bool {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let free = match store.free_bytes() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the store's free space; writing anyway");
                u64::MAX
            }
        };
        if free >= min_free {
            if shared.lock().stalled.take().is_some() {
                tracing::info!(
                    free_bytes = free,
                    "space on the store's filesystem again; writing"
                );
            }
            return true;
        }
        let reason = format!(
            "writes to the store are paused: {:.1} MiB free on its filesystem, below \
             store.min_free_mb ({} MiB)",
            free as f64 / (1024.0 * 1024.0),
            min_free / (1024 * 1024)
        );
        if shared.lock().stalled.replace(reason.clone()).is_none() {
            tracing::error!(reason, "the store's disk is nearly full");
        }
        match rx.recv_timeout(backoff) {
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            // Never two writes at once: a hand-off waits for the one in flight.
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Writes one snapshot: its tickets, dead letters and position ([`Store::write`]), and counts
/// what it cost.
fn write_snapshot(store: &Store, snap: &Snapshot, shared: &Shared) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let parts = snap
        .plan_parts
        .iter()
        .filter_map(|(key, part)| snap.tickets.get(key).map(|t| (t, *part)));
    let bytes = store.write(
        snap.tickets.values(),
        parts,
        snap.dead_letters.values(),
        snap.applied_seq,
    )?;
    let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    s.writes += 1;
    s.seconds += started.elapsed().as_secs_f64();
    s.bytes += bytes;
    Ok(())
}
