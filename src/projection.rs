//! The projection: the durable store and the in-memory query view, kept in step.
//!
//! Writers (the ingest loop) go through [`Projection::commit`], which writes sled first and then
//! updates the view, so every row a reader sees is already in sled. Readers (the API) only take
//! the view's read lock. [`Ledger`] holds the live projection and swaps in a rebuilt one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::domain::ProjectId;
use crate::fold::Ticket;
use crate::index::{Index, Page, Query};
use crate::store::{Commit, Store, StoreError};

/// The projection shared by ingest and the API.
pub struct Projection {
    store: Store,
    index: RwLock<Index>,
    applied_seq: AtomicU64,
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

    /// A project's ticket by `execute_uuid`.
    pub fn ticket_by_uuid(
        &self,
        project: &ProjectId,
        execute_uuid: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let order = self.read().order_of(project, execute_uuid);
        match order {
            Some(o) => self.store.ticket(project, o),
            None => Ok(None),
        }
    }

    /// Number of tickets.
    pub fn ticket_count(&self) -> usize {
        self.read().len()
    }
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
    stream_last_seq: AtomicU64,
    broker_connected: AtomicBool,
}

fn gen_dir(root: &Path, generation: u32) -> PathBuf {
    root.join(format!("gen-{generation:06}"))
}

impl Ledger {
    /// Opens the live generation under `root` (creating the first one), and removes any other
    /// generation left by an interrupted rebuild.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
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
        let projection = Projection::open(&gen_dir(root, generation))?;
        Ok(Self {
            root: root.to_owned(),
            current: RwLock::new((generation, Arc::new(projection))),
            commit_lock: Mutex::new(()),
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

    /// The directory that holds the generations.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens an empty generation beside the live one, for a rebuild.
    pub fn begin_rebuild(&self) -> Result<(u32, Projection), StoreError> {
        let next = self.current.read().unwrap_or_else(|e| e.into_inner()).0 + 1;
        let dir = gen_dir(&self.root, next);
        let _ = std::fs::remove_dir_all(&dir);
        Ok((next, Projection::open(&dir)?))
    }

    /// Makes a rebuilt generation live. The caller holds [`Ledger::commit_lock`] and has brought
    /// `next` to the live projection's applied sequence. The old generation's files are removed
    /// once the last reader lets go of it.
    pub fn switch_to(&self, generation: u32, next: Arc<Projection>) -> Result<(), StoreError> {
        next.store().flush()?;
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
