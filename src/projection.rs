//! The projection: the durable store and the in-memory query view, kept in step.
//!
//! Writers (the ingest loop) go through [`Projection::commit`], which writes sled first and then
//! updates the view, so every row a reader sees is already in sled. Readers (the API) only take
//! the view's read lock.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::domain::ProjectId;
use crate::fold::Ticket;
use crate::index::{Index, Page, Query};
use crate::store::{Commit, Store, StoreError};

/// The projection shared by ingest and the API.
pub struct Projection {
    store: Store,
    index: RwLock<Index>,
    applied_seq: AtomicU64,
    stream_last_seq: AtomicU64,
    broker_connected: AtomicBool,
}

impl Projection {
    /// Opens the store and rebuilds the query view from its records.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(dir)?;
        let mut index = Index::default();
        for t in store.tickets() {
            index.upsert(&t?);
        }
        let applied = store.applied_seq()?;
        Ok(Self {
            store,
            index: RwLock::new(index),
            applied_seq: AtomicU64::new(applied),
            stream_last_seq: AtomicU64::new(0),
            broker_connected: AtomicBool::new(false),
        })
    }

    /// The durable store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Last stream sequence whose effects are stored and visible.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// A ticket's stored record.
    pub fn ticket(&self, project: &ProjectId, order_id: u64) -> Result<Option<Ticket>, StoreError> {
        self.store.ticket(project, order_id)
    }

    /// Writes a batch durably-atomically, then makes it visible to queries.
    pub fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.store.commit(commit)?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        for t in &commit.tickets {
            index.upsert(t);
        }
        drop(index);
        self.applied_seq
            .store(commit.applied_seq, Ordering::Release);
        Ok(())
    }

    /// Answers a list query.
    pub fn query(&self, project: &ProjectId, q: &Query) -> Page {
        self.read().query(project, q)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of tickets.
    pub fn ticket_count(&self) -> usize {
        self.read().len()
    }

    /// Records the broker's view: connected or not, and the stream's last sequence.
    pub fn set_broker_state(&self, connected: bool, stream_last_seq: Option<u64>) {
        self.broker_connected.store(connected, Ordering::Release);
        if let Some(s) = stream_last_seq {
            self.stream_last_seq.fetch_max(s, Ordering::AcqRel);
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
